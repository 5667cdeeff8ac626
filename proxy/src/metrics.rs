//! Prometheus metrics, kept in `prometheus-client` counters, gauges and histograms and encoded
//! in the Prometheus text format by the crate.
//!
//! Each upstream set holds its service's [`ServiceMetrics`] (handles into the families), so no
//! map is consulted per request, and recording a request takes no lock: the latency histogram
//! is [`LatencyHistogram`], atomics encoded by prometheus-client (its own `Histogram` takes a
//! mutex on every observation).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Upper bounds of the latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The status classes counted, `1xx` to `5xx`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

type RequestLabels = [(&'static str, String); 2];
type ServiceLabel = [(&'static str, String); 1];

/// A histogram of durations over [`LATENCY_BUCKETS`], kept in atomics: an observation is two
/// relaxed additions (its bucket and the sum), with no lock. Clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram(Arc<LatencyCounts>);

#[derive(Debug, Default)]
struct LatencyCounts {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' total, so the two always agree in one scrape.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One service's request counters (by status class) and latency histogram.
#[derive(Debug)]
pub struct ServiceMetrics {
    by_class: [Counter; 5],
    latency: LatencyHistogram,
}

/// Counters of their own, outside any family (for tests of what holds them).
impl Default for ServiceMetrics {
    fn default() -> Self {
        Self {
            by_class: Default::default(),
            latency: LatencyHistogram::default(),
        }
    }
}

impl ServiceMetrics {
    pub fn record(&self, status: u16, latency: Duration) {
        self.by_class[usize::from((status / 100).clamp(1, 5)) - 1].inc();
        self.latency.observe(latency);
    }
}

/// The per-service families every [`ServiceMetrics`] is a view of.
#[derive(Debug)]
struct ServiceFamilies {
    requests: Family<RequestLabels, Counter>,
    durations: Family<ServiceLabel, LatencyHistogram>,
}

impl ServiceFamilies {
    fn service(&self, service_id: &str) -> ServiceMetrics {
        let class = |c: &str| {
            self.requests
                .get_or_create_owned(&[("service", service_id.to_owned()), ("class", c.to_owned())])
        };
        ServiceMetrics {
            by_class: CLASSES.map(class),
            latency: self
                .durations
                .get_or_create_owned(&[("service", service_id.to_owned())]),
        }
    }
}

/// Everything the proxy counts.
#[derive(Debug)]
pub struct Metrics {
    families: ServiceFamilies,
    services: RwLock<BTreeMap<String, Arc<ServiceMetrics>>>,
    /// Requests that matched no route or were refused before routing (service `""`).
    pub unrouted: ServiceMetrics,
    pub active_requests: Gauge,
    pub active_upgraded: Gauge,
    pub switches_ok: Counter,
    pub switches_failed: Counter,
    pub drains: Counter,
    pub drain_closed_at_deadline: Counter,
    /// Seconds spent draining old sets.
    pub drain_seconds: Counter<f64, AtomicU64>,
    pub upstream_connect_failures: Counter,
    pub passive_ejections: Counter,
    pub rejected_requests: Counter,
    /// The ClickHouse access log writer's counters (zero when it is not configured).
    pub access_log: Arc<crate::access_log::AccessLogStats>,
}

impl Default for Metrics {
    fn default() -> Self {
        let families = ServiceFamilies {
            requests: Family::default(),
            durations: Family::default(),
        };
        let unrouted = families.service("");
        Self {
            families,
            services: RwLock::default(),
            unrouted,
            active_requests: Gauge::default(),
            active_upgraded: Gauge::default(),
            switches_ok: Counter::default(),
            switches_failed: Counter::default(),
            drains: Counter::default(),
            drain_closed_at_deadline: Counter::default(),
            drain_seconds: Counter::default(),
            upstream_connect_failures: Counter::default(),
            passive_ejections: Counter::default(),
            rejected_requests: Counter::default(),
            access_log: Arc::default(),
        }
    }
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
        Arc::clone(
            map.entry(service_id.to_owned())
                .or_insert_with(|| Arc::new(self.families.service(service_id))),
        )
    }

    /// Prometheus text exposition format (0.0.4).
    pub fn render(&self, health: &[UpstreamHealth]) -> String {
        let mut registry = Registry::default();
        registry.register(
            "stackpad_proxy_requests",
            "Responses sent, by service and status class",
            self.families.requests.clone(),
        );
        registry.register(
            "stackpad_proxy_request_duration_seconds",
            "Time from request to response end",
            self.families.durations.clone(),
        );
        registry.register(
            "stackpad_proxy_active_requests",
            "Requests being proxied now",
            self.active_requests.clone(),
        );
        registry.register(
            "stackpad_proxy_active_upgraded_connections",
            "Upgraded (websocket) connections open now",
            self.active_upgraded.clone(),
        );
        let switches = Family::<[(&str, &str); 1], Counter>::default();
        for (result, counter) in [("ok", &self.switches_ok), ("failed", &self.switches_failed)] {
            switches
                .get_or_create(&[("result", result)])
                .inc_by(counter.get());
        }
        registry.register(
            "stackpad_proxy_switches",
            "Upstream switches, by result",
            switches,
        );
        registry.register(
            "stackpad_proxy_drains",
            "Old upstream sets drained after a switch",
            self.drains.clone(),
        );
        registry.register(
            "stackpad_proxy_drain_closed_at_deadline",
            "Connections closed at a drain deadline",
            self.drain_closed_at_deadline.clone(),
        );
        registry.register(
            "stackpad_proxy_drain_seconds",
            "Time spent draining old sets",
            self.drain_seconds.clone(),
        );
        registry.register(
            "stackpad_proxy_upstream_connect_failures",
            "Failed connects to upstreams",
            self.upstream_connect_failures.clone(),
        );
        registry.register(
            "stackpad_proxy_passive_ejections",
            "Upstreams ejected after a connect failure",
            self.passive_ejections.clone(),
        );
        registry.register(
            "stackpad_proxy_rejected_requests",
            "Requests refused by hardening rules",
            self.rejected_requests.clone(),
        );
        let healthy = Family::<[(&str, String); 3], Gauge>::default();
        for h in health {
            let state = if h.draining { "draining" } else { "active" };
            healthy
                .get_or_create(&[
                    ("service", h.service_id.clone()),
                    ("upstream", h.address.clone()),
                    ("state", state.to_owned()),
                ])
                .set(i64::from(h.healthy));
        }
        registry.register(
            "stackpad_proxy_upstream_healthy",
            "1 when the upstream passes its checks",
            healthy,
        );
        self.access_log.register(&mut registry);
        let mut out = String::with_capacity(4096);
        prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
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
