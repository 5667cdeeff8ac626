//! What the certificate manager did and what it serves, on the proxy's `/metrics`: certificates
//! by state and seconds to expiry per domain, orders started and how they ended, and orders a
//! rate limit held back. Counters live for the process; certificate gauges are computed from
//! the installed validities at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

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

/// Certificate and ACME counters of one proxy instance.
#[derive(Debug, Default)]
pub struct AcmeMetrics {
    orders_started: AtomicU64,
    orders_issued: AtomicU64,
    orders_failed: AtomicU64,
    rate_limited: [AtomicU64; 4],
    /// Validity of the certificate served per domain.
    served: Mutex<BTreeMap<String, CertificateValidity>>,
}

impl AcmeMetrics {
    pub fn order_started(&self) {
        self.orders_started.fetch_add(1, Ordering::Relaxed);
    }

    pub fn order_issued(&self) {
        self.orders_issued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn order_failed(&self) {
        self.orders_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// A due order was held back by `limit` (counted once per certificate pass).
    pub fn rate_limited(&self, limit: Limit) {
        let index = LIMITS.iter().position(|(l, _)| *l == limit).unwrap_or(0);
        self.rate_limited[index].fetch_add(1, Ordering::Relaxed);
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

    /// The Prometheus text of these metrics at `now`.
    pub fn render(&self, policy: &IssuancePolicy, now: SystemTime) -> String {
        let mut out = String::new();
        let served = self.served.lock().map(|s| s.clone()).unwrap_or_default();
        let (mut valid, mut renewal_due, mut expired) = (0u64, 0u64, 0u64);
        for validity in served.values() {
            if validity.not_after <= now {
                expired += 1;
            } else if renewal_point(policy, *validity) <= now {
                renewal_due += 1;
            } else {
                valid += 1;
            }
        }
        out.push_str(
            "# HELP stackpad_proxy_certificates Certificates served, by state (renewal_due: past \
             2/3 of their lifetime).\n# TYPE stackpad_proxy_certificates gauge\n",
        );
        for (state, count) in [
            ("valid", valid),
            ("renewal_due", renewal_due),
            ("expired", expired),
        ] {
            let _ = writeln!(
                out,
                "stackpad_proxy_certificates{{state=\"{state}\"}} {count}"
            );
        }
        out.push_str(
            "# HELP stackpad_proxy_certificate_expiry_seconds Seconds until the served \
             certificate of a domain expires (negative once expired).\n\
             # TYPE stackpad_proxy_certificate_expiry_seconds gauge\n",
        );
        for (domain, validity) in &served {
            let seconds = match validity.not_after.duration_since(now) {
                Ok(left) => left.as_secs_f64(),
                Err(past) => -past.duration().as_secs_f64(),
            };
            let _ = writeln!(
                out,
                "stackpad_proxy_certificate_expiry_seconds{{domain=\"{}\"}} {seconds:.0}",
                domain.replace(['\\', '"', '\n'], "_")
            );
        }
        out.push_str(
            "# HELP stackpad_proxy_acme_orders_started_total ACME orders this instance placed.\n\
             # TYPE stackpad_proxy_acme_orders_started_total counter\n",
        );
        let _ = writeln!(
            out,
            "stackpad_proxy_acme_orders_started_total {}",
            self.orders_started.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP stackpad_proxy_acme_orders_completed_total ACME orders this instance \
             finished, by result.\n# TYPE stackpad_proxy_acme_orders_completed_total counter\n",
        );
        for (result, count) in [
            ("issued", &self.orders_issued),
            ("failed", &self.orders_failed),
        ] {
            let _ = writeln!(
                out,
                "stackpad_proxy_acme_orders_completed_total{{result=\"{result}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP stackpad_proxy_acme_rate_limited_total Certificate passes in which a due \
             order was held back by a rate limit, by limit.\n\
             # TYPE stackpad_proxy_acme_rate_limited_total counter\n",
        );
        for (index, (_, name)) in LIMITS.iter().enumerate() {
            let _ = writeln!(
                out,
                "stackpad_proxy_acme_rate_limited_total{{limit=\"{name}\"}} {}",
                self.rate_limited[index].load(Ordering::Relaxed)
            );
        }
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
