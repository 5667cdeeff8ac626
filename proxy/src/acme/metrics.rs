//! What the certificate manager did and what it serves, on the proxy's `/metrics`: certificates
//! by state and seconds to expiry per domain, orders started and how they ended, and orders a
//! rate limit held back. Counters live for the process; certificate gauges are computed from
//! the installed validities at scrape time.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::policy::{CertificateValidity, IssuancePolicy, Limit, renewal_point};

const LIMITS: [(Limit, &str); 4] = [
    (Limit::OrdersPerAccount, "orders_per_account"),
    (
        Limit::CertificatesPerRegisteredDomain,
        "certificates_per_registered_domain",
    ),
    (Limit::DuplicateCertificates, "duplicate_certificates"),
    (
        Limit::FailedValidationsPerHost,
        "failed_validations_per_host",
    ),
];

type Labels = [(&'static str, &'static str); 1];

/// Certificate and ACME counters of one proxy instance.
#[derive(Debug)]
pub struct AcmeMetrics {
    orders_started: Counter,
    /// Orders finished, by `result` (issued, failed).
    orders_completed: Family<Labels, Counter>,
    /// Due orders held back, by `limit`.
    rate_limited: Family<Labels, Counter>,
    /// Validity of the certificate served per domain.
    served: Mutex<BTreeMap<String, CertificateValidity>>,
}

impl Default for AcmeMetrics {
    fn default() -> Self {
        let orders_completed = Family::default();
        for result in ["issued", "failed"] {
            let _ = orders_completed.get_or_create(&[("result", result)]);
        }
        let rate_limited = Family::default();
        for (_, name) in LIMITS {
            let _ = rate_limited.get_or_create(&[("limit", name)]);
        }
        Self {
            orders_started: Counter::default(),
            orders_completed,
            rate_limited,
            served: Mutex::default(),
        }
    }
}

impl AcmeMetrics {
    pub fn order_started(&self) {
        self.orders_started.inc();
    }

    pub fn order_issued(&self) {
        self.orders_completed
            .get_or_create(&[("result", "issued")])
            .inc();
    }

    pub fn order_failed(&self) {
        self.orders_completed
            .get_or_create(&[("result", "failed")])
            .inc();
    }

    /// A due order was held back by `limit` (counted once per certificate pass).
    pub fn rate_limited(&self, limit: Limit) {
        let name = LIMITS
            .iter()
            .find(|(l, _)| *l == limit)
            .map_or(LIMITS[0].1, |(_, name)| *name);
        self.rate_limited.get_or_create(&[("limit", name)]).inc();
    }

    /// `domain` is served with a certificate of `validity` from now on.
    pub fn served(&self, domain: &str, validity: CertificateValidity) {
        if let Ok(mut served) = self.served.lock() {
            served.insert(domain.to_owned(), validity);
        }
    }

    /// `domain` no longer has a certificate of its own.
    pub fn removed(&self, domain: &str) {
        if let Ok(mut served) = self.served.lock() {
            served.remove(domain);
        }
    }

    /// The Prometheus text (format 0.0.4) of these metrics at `now`.
    pub fn render(&self, policy: &IssuancePolicy, now: SystemTime) -> String {
        let served = self.served.lock().map(|s| s.clone()).unwrap_or_default();
        let by_state = Family::<Labels, Gauge>::default();
        for state in ["valid", "renewal_due", "expired"] {
            let _ = by_state.get_or_create(&[("state", state)]);
        }
        let expiry = Family::<[(&str, String); 1], Gauge>::default();
        for (domain, validity) in &served {
            let state = if validity.not_after <= now {
                "expired"
            } else if renewal_point(policy, *validity) <= now {
                "renewal_due"
            } else {
                "valid"
            };
            by_state.get_or_create(&[("state", state)]).inc();
            let seconds = match validity.not_after.duration_since(now) {
                Ok(left) => left.as_secs_f64(),
                Err(past) => -past.duration().as_secs_f64(),
            };
            expiry
                .get_or_create(&[("domain", domain.replace(['\\', '"', '\n'], "_"))])
                .set(seconds.round() as i64);
        }
        let mut registry = Registry::default();
        registry.register(
            "stackpad_proxy_certificates",
            "Certificates served, by state (renewal_due: past 2/3 of their lifetime)",
            by_state,
        );
        registry.register(
            "stackpad_proxy_certificate_expiry_seconds",
            "Seconds until the served certificate of a domain expires (negative once expired)",
            expiry,
        );
        registry.register(
            "stackpad_proxy_acme_orders_started",
            "ACME orders this instance placed",
            self.orders_started.clone(),
        );
        registry.register(
            "stackpad_proxy_acme_orders_completed",
            "ACME orders this instance finished, by result",
            self.orders_completed.clone(),
        );
        registry.register(
            "stackpad_proxy_acme_rate_limited",
            "Certificate passes in which a due order was held back by a rate limit, by limit",
            self.rate_limited.clone(),
        );
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn validity(now: SystemTime, age_days: u64, lifetime_days: u64) -> CertificateValidity {
        let day = Duration::from_secs(86_400);
        let not_before = now - day * age_days as u32;
        CertificateValidity {
            not_before,
            not_after: not_before + day * lifetime_days as u32,
        }
    }

    #[test]
    fn certificates_are_counted_by_state_with_seconds_to_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let metrics = AcmeMetrics::default();
        metrics.served("fresh.example.com", validity(now, 1, 90));
        metrics.served("old.example.com", validity(now, 70, 90));
        metrics.served("gone.example.com", validity(now, 100, 90));
        metrics.served("removed.example.com", validity(now, 1, 90));
        metrics.removed("removed.example.com");
        metrics.order_started();
        metrics.order_issued();
        metrics.rate_limited(Limit::FailedValidationsPerHost);
        let text = metrics.render(&IssuancePolicy::default(), now);
        for line in [
            "stackpad_proxy_certificates{state=\"valid\"} 1",
            "stackpad_proxy_certificates{state=\"renewal_due\"} 1",
            "stackpad_proxy_certificates{state=\"expired\"} 1",
            "stackpad_proxy_certificate_expiry_seconds{domain=\"fresh.example.com\"} 7689600",
            "stackpad_proxy_certificate_expiry_seconds{domain=\"gone.example.com\"} -864000",
            "stackpad_proxy_acme_orders_started_total 1",
            "stackpad_proxy_acme_orders_completed_total{result=\"issued\"} 1",
            "stackpad_proxy_acme_orders_completed_total{result=\"failed\"} 0",
            "stackpad_proxy_acme_rate_limited_total{limit=\"failed_validations_per_host\"} 1",
            "stackpad_proxy_acme_rate_limited_total{limit=\"orders_per_account\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("removed.example.com"), "{text}");
    }
}
