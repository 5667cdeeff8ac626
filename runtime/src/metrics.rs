//! The agent's Prometheus metrics, served with `prometheus-client`: containers by state, starts
//! and failures, pull and start durations, and per-container CPU and memory read from the
//! cgroups at scrape time.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Histogram buckets in seconds.
const BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 10.0, 60.0];

/// Counters and histograms the agent updates as it works.
#[derive(Debug)]
pub struct Metrics {
    starts: Counter,
    failures: Counter,
    exits: Counter,
    oom_kills: Counter,
    pull_errors: Counter,
    pulls: Histogram,
    deploys: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            starts: Counter::default(),
            failures: Counter::default(),
            exits: Counter::default(),
            oom_kills: Counter::default(),
            pull_errors: Counter::default(),
            pulls: Histogram::new(BUCKETS),
            deploys: Histogram::new(BUCKETS),
        }
    }
}

/// One container's resource use, for the per-container series.
#[derive(Debug, Clone)]
pub struct ContainerUsage {
    pub container_id: String,
    pub project_id: String,
    pub service: String,
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
}

/// The labels of the per-container series.
type ContainerLabels = [(&'static str, String); 3];

impl ContainerUsage {
    fn labels(&self) -> ContainerLabels {
        [
            ("container_id", self.container_id.clone()),
            ("project_id", self.project_id.clone()),
            ("service", self.service.clone()),
        ]
    }
}

impl Metrics {
    pub fn count_start(&self) {
        self.starts.inc();
    }
    pub fn count_failure(&self) {
        self.failures.inc();
    }
    pub fn count_exit(&self, oom: bool) {
        self.exits.inc();
        if oom {
            self.oom_kills.inc();
        }
    }
    pub fn observe_pull(&self, d: Duration, ok: bool) {
        if ok {
            self.pulls.observe(d.as_secs_f64());
        } else {
            self.pull_errors.inc();
        }
    }
    pub fn observe_start(&self, d: Duration) {
        self.deploys.observe(d.as_secs_f64());
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, states: &[(&str, u64)], usage: &[ContainerUsage]) -> String {
        let mut registry = Registry::default();
        let containers = Family::<[(&str, String); 1], Gauge>::default();
        for (state, n) in states {
            containers
                .get_or_create(&[("state", (*state).to_owned())])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        registry.register(
            "stackpad_node_containers",
            "Containers by state",
            containers,
        );
        for (name, help, counter) in [
            (
                "stackpad_node_container_starts",
                "Processes started (first starts and restarts)",
                &self.starts,
            ),
            (
                "stackpad_node_deploy_failures",
                "Deploys that failed",
                &self.failures,
            ),
            (
                "stackpad_node_container_exits",
                "Container processes that exited",
                &self.exits,
            ),
            (
                "stackpad_node_container_oom_kills",
                "Container processes killed for memory",
                &self.oom_kills,
            ),
            (
                "stackpad_node_pull_errors",
                "Image pulls that failed",
                &self.pull_errors,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "stackpad_node_pull_duration_seconds",
            "Image pull (resolve, fetch, unpack) time",
            self.pulls.clone(),
        );
        registry.register(
            "stackpad_node_deploy_duration_seconds",
            "Deploy call to healthy",
            self.deploys.clone(),
        );
        let cpu = Family::<ContainerLabels, Counter<f64, AtomicU64>>::default();
        let memory = Family::<ContainerLabels, Gauge>::default();
        for u in usage {
            cpu.get_or_create(&u.labels()).inc_by(u.cpu_seconds);
            memory
                .get_or_create(&u.labels())
                .set(i64::try_from(u.memory_bytes).unwrap_or(i64::MAX));
        }
        registry.register(
            "stackpad_node_container_cpu_seconds",
            "CPU time of the container's cgroup",
            cpu,
        );
        registry.register(
            "stackpad_node_container_memory_bytes",
            "Memory in use by the container's cgroup",
            memory,
        );
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_containers() {
        let m = Metrics::default();
        m.count_start();
        m.observe_pull(Duration::from_millis(30), true);
        m.observe_start(Duration::from_millis(150));
        let text = m.render(
            &[("healthy", 2)],
            &[ContainerUsage {
                container_id: "sp-1".into(),
                project_id: "p".into(),
                service: "web".into(),
                cpu_seconds: 1.5,
                memory_bytes: 1024,
            }],
        );
        assert!(text.contains("stackpad_node_containers{state=\"healthy\"} 2"));
        assert!(text.contains("stackpad_node_container_starts_total 1"));
        assert!(text.contains("stackpad_node_pull_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("stackpad_node_deploy_duration_seconds_count 1"));
        assert!(text.contains("stackpad_node_container_memory_bytes{container_id=\"sp-1\",project_id=\"p\",service=\"web\"} 1024"));
        stackpad_tests::prometheus::assert_conventions(&text);
    }

    /// The node's whole `/metrics`: these series, the eBPF traffic counters and the log
    /// shipper's, follow Prometheus' naming conventions.
    #[tokio::test]
    async fn the_exposition_follows_prometheus_conventions() {
        let dir = tempfile::tempdir().unwrap();
        let shipper = crate::logship::ClickHouseShipper::start(crate::logship::ShipperConfig {
            clickhouse_url: "http://127.0.0.1:9".into(),
            spool_dir: dir.path().to_owned(),
            ..crate::logship::ShipperConfig::default()
        })
        .unwrap();
        let mut text = Metrics::default().render(&[("healthy", 1)], &[]);
        crate::logs::LogSink::render_metrics(&shipper, &mut text);
        text.push_str(&ebpf::render_prometheus(&[(
            vec![("container", "sp-1".to_owned())],
            ebpf::Counters::default(),
        )]));
        stackpad_tests::prometheus::assert_conventions(&text);
    }
}
