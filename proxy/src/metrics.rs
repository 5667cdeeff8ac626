//! Prometheus metrics: counters and histograms kept in atomics, rendered as text.
//!
//! Hot-path updates touch only atomics: each upstream set holds its service's
//! [`ServiceMetrics`], so no map is consulted per request.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Per-service request counters and latency histogram.
#[derive(Debug, Default)]
pub struct ServiceMetrics {
    /// Responses by status class 1xx..5xx.
    by_class: [AtomicU64; 5],
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
}

impl ServiceMetrics {
    pub fn record(&self, status: u16, latency: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_sum_us
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything the proxy counts.
#[derive(Debug, Default)]
pub struct Metrics {
    services: RwLock<BTreeMap<String, Arc<ServiceMetrics>>>,
    /// Requests that matched no route or were refused before routing.
    pub unrouted: ServiceMetrics,
    pub active_requests: AtomicI64,
    pub active_upgraded: AtomicI64,
    pub switches_ok: AtomicU64,
    pub switches_failed: AtomicU64,
    pub drains: AtomicU64,
    pub drain_closed_at_deadline: AtomicU64,
    pub drain_micros: AtomicU64,
    pub upstream_connect_failures: AtomicU64,
    pub passive_ejections: AtomicU64,
    pub rejected_requests: AtomicU64,
    /// The ClickHouse access log writer's counters (zero when it is not configured).
    pub access_log: Arc<crate::access_log::AccessLogStats>,
}

/// One upstream's health, as rendered.
#[derive(Debug)]
pub struct UpstreamHealth {
    pub service_id: String,
    pub address: String,
    pub healthy: bool,
    pub draining: bool,
}

impl Metrics {
    /// The counters of `service_id`, created on first use.
    pub fn service(&self, service_id: &str) -> Arc<ServiceMetrics> {
        if let Some(m) = self
            .services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(service_id)
        {
            return Arc::clone(m);
        }
        let mut map = self.services.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(service_id.to_owned()).or_default())
    }

    /// Prometheus text exposition format.
    pub fn render(&self, health: &[UpstreamHealth]) -> String {
        let mut out = String::with_capacity(4096);
        let services = self.services.read().unwrap_or_else(|e| e.into_inner());
        let all = services.iter().map(|(k, v)| (k.as_str(), v.as_ref()));
        let all: Vec<(&str, &ServiceMetrics)> =
            all.chain(std::iter::once(("", &self.unrouted))).collect();

        out.push_str(
            "# HELP stackpad_proxy_requests_total Responses sent, by service and status class.\n",
        );
        out.push_str("# TYPE stackpad_proxy_requests_total counter\n");
        for (service, m) in &all {
            for (i, c) in m.by_class.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "stackpad_proxy_requests_total{{service=\"{}\",class=\"{}xx\"}} {}",
                    escape(service),
                    i + 1,
                    c.load(Ordering::Relaxed)
                );
            }
        }
        out.push_str(
            "# HELP stackpad_proxy_request_duration_seconds Time from request to response end.\n",
        );
        out.push_str("# TYPE stackpad_proxy_request_duration_seconds histogram\n");
        for (service, m) in &all {
            let service = escape(service);
            let mut cumulative = 0;
            for (bound, b) in LATENCY_BUCKETS.iter().zip(&m.buckets) {
                cumulative += b.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "stackpad_proxy_request_duration_seconds_bucket{{service=\"{service}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = m.latency_count.load(Ordering::Relaxed);
            let sum = m.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "stackpad_proxy_request_duration_seconds_bucket{{service=\"{service}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "stackpad_proxy_request_duration_seconds_sum{{service=\"{service}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "stackpad_proxy_request_duration_seconds_count{{service=\"{service}\"}} {count}"
            );
        }
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "stackpad_proxy_active_requests",
            "Requests being proxied now.",
            self.active_requests.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "stackpad_proxy_active_upgraded_connections",
            "Upgraded (websocket) connections open now.",
            self.active_upgraded.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP stackpad_proxy_switches_total Upstream switches, by result.\n# TYPE stackpad_proxy_switches_total counter"
        );
        let _ = writeln!(
            out,
            "stackpad_proxy_switches_total{{result=\"ok\"}} {}",
            self.switches_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "stackpad_proxy_switches_total{{result=\"failed\"}} {}",
            self.switches_failed.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "stackpad_proxy_drains_total",
            "Old upstream sets drained after a switch.",
            &self.drains,
        );
        counter(
            &mut out,
            "stackpad_proxy_drain_closed_at_deadline_total",
            "Connections closed at a drain deadline.",
            &self.drain_closed_at_deadline,
        );
        let secs = self.drain_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "# HELP stackpad_proxy_drain_seconds_total Time spent draining old sets.\n# TYPE stackpad_proxy_drain_seconds_total counter\nstackpad_proxy_drain_seconds_total {secs}"
        );
        counter(
            &mut out,
            "stackpad_proxy_upstream_connect_failures_total",
            "Failed connects to upstreams.",
            &self.upstream_connect_failures,
        );
        counter(
            &mut out,
            "stackpad_proxy_passive_ejections_total",
            "Upstreams ejected after a connect failure.",
            &self.passive_ejections,
        );
        counter(
            &mut out,
            "stackpad_proxy_rejected_requests_total",
            "Requests refused by hardening rules.",
            &self.rejected_requests,
        );
        out.push_str("# HELP stackpad_proxy_upstream_healthy 1 when the upstream passes its checks.\n# TYPE stackpad_proxy_upstream_healthy gauge\n");
        for h in health {
            let _ = writeln!(
                out,
                "stackpad_proxy_upstream_healthy{{service=\"{}\",upstream=\"{}\",state=\"{}\"}} {}",
                escape(&h.service_id),
                escape(&h.address),
                if h.draining { "draining" } else { "active" },
                u8::from(h.healthy)
            );
        }
        self.access_log.render(&mut out);
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.service("web").record(200, Duration::from_millis(2));
        m.service("web").record(503, Duration::from_secs(10));
        let text = m.render(&[UpstreamHealth {
            service_id: "web".into(),
            address: "127.0.0.1:1".into(),
            healthy: true,
            draining: false,
        }]);
        assert!(
            text.contains("stackpad_proxy_requests_total{service=\"web\",class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("stackpad_proxy_requests_total{service=\"web\",class=\"5xx\"} 1"));
        assert!(text.contains(
            "stackpad_proxy_request_duration_seconds_bucket{service=\"web\",le=\"0.0025\"} 1"
        ));
        assert!(text.contains(
            "stackpad_proxy_request_duration_seconds_bucket{service=\"web\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("stackpad_proxy_upstream_healthy{service=\"web\",upstream=\"127.0.0.1:1\",state=\"active\"} 1"));
    }

    /// Everything the admin listener's `/metrics` serves (this text, the access log writer's
    /// and the certificates') follows Prometheus' naming conventions.
    #[test]
    fn the_exposition_follows_prometheus_conventions() {
        let m = Metrics::default();
        m.service("web").record(200, Duration::from_millis(2));
        let mut text = m.render(&[UpstreamHealth {
            service_id: "web".into(),
            address: "127.0.0.1:1".into(),
            healthy: false,
            draining: true,
        }]);
        text.push_str(&crate::acme::metrics::AcmeMetrics::default().render(
            &crate::acme::policy::IssuancePolicy::default(),
            std::time::SystemTime::now(),
        ));
        stackpad_tests::prometheus::assert_conventions(&text);
    }
}
