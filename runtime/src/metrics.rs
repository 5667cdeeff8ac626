//! The agent's Prometheus metrics: containers by state, starts and failures, pull and start
//! durations, and per-container CPU and memory read from the cgroups.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Histogram buckets in seconds.
const BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 10.0, 60.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += s;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

/// Counters and histograms the agent updates as it works.
#[derive(Debug, Default)]
pub struct Metrics {
    starts: AtomicU64,
    failures: AtomicU64,
    exits: AtomicU64,
    oom_kills: AtomicU64,
    pull_errors: AtomicU64,
    pulls: Mutex<Histogram>,
    deploys: Mutex<Histogram>,
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

impl Metrics {
    pub fn count_start(&self) {
        self.starts.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_exit(&self, oom: bool) {
        self.exits.fetch_add(1, Ordering::Relaxed);
        if oom {
            self.oom_kills.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub fn observe_pull(&self, d: Duration, ok: bool) {
        if ok {
            self.pulls.lock().expect("metrics lock").observe(d);
        } else {
            self.pull_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub fn observe_start(&self, d: Duration) {
        self.deploys.lock().expect("metrics lock").observe(d);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, states: &[(&str, u64)], usage: &[ContainerUsage]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP stackpad_node_containers Containers by state.\n# TYPE stackpad_node_containers gauge"
        );
        for (state, n) in states {
            let _ = writeln!(out, "stackpad_node_containers{{state=\"{state}\"}} {n}");
        }
        for (name, help, v) in [
            (
                "stackpad_node_container_starts_total",
                "Processes started (first starts and restarts).",
                &self.starts,
            ),
            (
                "stackpad_node_deploy_failures_total",
                "Deploys that failed.",
                &self.failures,
            ),
            (
                "stackpad_node_container_exits_total",
                "Container processes that exited.",
                &self.exits,
            ),
            (
                "stackpad_node_container_oom_kills_total",
                "Container processes killed for memory.",
                &self.oom_kills,
            ),
            (
                "stackpad_node_pull_errors_total",
                "Image pulls that failed.",
                &self.pull_errors,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        self.pulls.lock().expect("metrics lock").render(
            &mut out,
            "stackpad_node_pull_duration_seconds",
            "Image pull (resolve, fetch, unpack) time.",
        );
        self.deploys.lock().expect("metrics lock").render(
            &mut out,
            "stackpad_node_deploy_duration_seconds",
            "Deploy call to healthy.",
        );
        let _ = writeln!(
            out,
            "# HELP stackpad_node_container_cpu_seconds_total CPU time of the container's cgroup.\n# TYPE stackpad_node_container_cpu_seconds_total counter"
        );
        for u in usage {
            let _ = writeln!(
                out,
                "stackpad_node_container_cpu_seconds_total{{container_id=\"{}\",project_id=\"{}\",service=\"{}\"}} {}",
                u.container_id, u.project_id, u.service, u.cpu_seconds
            );
        }
        let _ = writeln!(
            out,
            "# HELP stackpad_node_container_memory_bytes Memory in use by the container's cgroup.\n# TYPE stackpad_node_container_memory_bytes gauge"
        );
        for u in usage {
            let _ = writeln!(
                out,
                "stackpad_node_container_memory_bytes{{container_id=\"{}\",project_id=\"{}\",service=\"{}\"}} {}",
                u.container_id, u.project_id, u.service, u.memory_bytes
            );
        }
        out
    }
}

/// CPU seconds and memory bytes of a container from its cgroup v1 directories.
pub fn cgroup_usage(namespace: &str, container_id: &str) -> (f64, u64) {
    let read = |p: String| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let cpu = read(format!(
        "/sys/fs/cgroup/cpuacct/{namespace}/{container_id}/cpuacct.usage"
    ))
    .unwrap_or(0);
    let mem = read(format!(
        "/sys/fs/cgroup/memory/{namespace}/{container_id}/memory.usage_in_bytes"
    ))
    .unwrap_or(0);
    (cpu as f64 / 1e9, mem)
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
