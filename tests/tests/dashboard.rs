//! The operator files in `deploy/` against the daemons' real `/metrics` renderers: every metric
//! the Grafana dashboard queries is one a daemon serves, every daemon's text follows Prometheus'
//! conventions, and the scrape config points at the addresses `scripts/platform` gives them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use stackpad_tests::prometheus::{convention_problems, defined_names};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `/metrics` text of each daemon, as its handler assembles it, with some data in it.
async fn expositions() -> Vec<(&'static str, String)> {
    let spool = tempfile::tempdir().expect("temp dir");
    let shipper = runtime::logship::ClickHouseShipper::start(runtime::logship::ShipperConfig {
        clickhouse_url: "http://127.0.0.1:9".into(),
        spool_dir: spool.path().to_owned(),
        ..runtime::logship::ShipperConfig::default()
    })
    .expect("shipper");
    let node_metrics = runtime::metrics::Metrics::default();
    node_metrics.observe_start(Duration::from_millis(300));
    let mut node = node_metrics.render(
        &[("healthy", 1)],
        &[runtime::metrics::ContainerUsage {
            container_id: "sp-1".into(),
            project_id: "p".into(),
            service: "web".into(),
            cpu_seconds: 1.0,
            memory_bytes: 1 << 20,
        }],
    );
    node.push_str(&ebpf::render_prometheus(&[(
        vec![("project", "p".to_owned()), ("service", "web".to_owned())],
        ebpf::Counters::default(),
    )]));
    runtime::logs::LogSink::render_metrics(&shipper, &mut node);

    let proxy_metrics = proxy::metrics::Metrics::default();
    proxy_metrics
        .service("web")
        .record(200, Duration::from_millis(3));
    let mut proxy = proxy_metrics.render(&[proxy::metrics::UpstreamHealth {
        service_id: "web".into(),
        address: "10.200.0.2:8080".into(),
        healthy: true,
        draining: false,
    }]);
    // A family without samples is not written at all: one served certificate.
    let acme = proxy::acme::metrics::AcmeMetrics::default();
    let now = SystemTime::now();
    acme.served(
        "example.com",
        proxy::acme::policy::CertificateValidity {
            not_before: now,
            not_after: now + Duration::from_secs(86_400),
        },
    );
    proxy.push_str(&acme.render(&proxy::acme::policy::IssuancePolicy::default(), now));

    let http = control::metrics::HttpMetrics::default();
    http.record(200, Duration::from_millis(4));
    let control = control::metrics::render(
        &http,
        Some(&control::metrics::StoreCounts {
            deployments: vec![("ready".into(), 1)],
            nodes: vec![("compute".into(), "up".into(), 1)],
            domains: vec![("verified".into(), 1)],
            waiting_for_room: 0,
        }),
    );

    let buildd = buildd::metrics::Metrics::default().render(1, 2);
    vec![
        ("stackpad-node", node),
        ("stackpad-proxy", proxy),
        ("stackpad-control", control),
        ("stackpad-buildd", buildd),
    ]
}

/// Every `stackpad_...` name in the dashboard's queries.
fn dashboard_names(dashboard: &serde_json::Value) -> BTreeSet<String> {
    let mut exprs = Vec::new();
    collect_exprs(dashboard, &mut exprs);
    assert!(!exprs.is_empty(), "the dashboard has no queries");
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("stackpad_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_served_by_a_daemon() {
    let texts = expositions().await;
    let mut served = BTreeSet::new();
    for (daemon, text) in &texts {
        let problems = convention_problems(text);
        assert!(
            problems.is_empty(),
            "{daemon}'s /metrics breaks Prometheus conventions:\n  {}",
            problems.join("\n  ")
        );
        served.extend(defined_names(text));
    }
    let path = repo().join("deploy/grafana/stackpad.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read the dashboard"))
            .expect("the dashboard is JSON");
    let used = dashboard_names(&dashboard);
    let unknown: Vec<&String> = used.difference(&served).collect();
    assert!(
        unknown.is_empty(),
        "{} queries metrics no daemon serves: {unknown:?}",
        path.display()
    );
    // Every area the dashboard is for has at least one panel.
    for needed in [
        "stackpad_proxy_requests_total",
        "stackpad_proxy_request_duration_seconds_bucket",
        "stackpad_proxy_switches_total",
        "stackpad_proxy_upstream_healthy",
        "stackpad_container_bytes_total",
        "stackpad_container_drops_total",
        "stackpad_node_log_lines_shipped_total",
        "stackpad_node_log_lines_dropped_total",
        "stackpad_node_log_spool_bytes",
        "stackpad_buildd_builds_total",
        "stackpad_control_deployments",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
}

#[test]
fn the_scrape_config_has_a_job_per_daemon_on_the_platform_addresses() {
    let config = std::fs::read_to_string(repo().join("deploy/prometheus.yml"))
        .expect("read deploy/prometheus.yml");
    let platform =
        std::fs::read_to_string(repo().join("scripts/platform")).expect("read scripts/platform");
    for job in [
        "stackpad-node",
        "stackpad-proxy",
        "stackpad-control",
        "stackpad-buildd",
    ] {
        assert!(
            config.contains(&format!("job_name: {job}")),
            "no scrape job {job}"
        );
    }
    let targets: Vec<&str> = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- targets: [\""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert_eq!(targets.len(), 4, "{targets:?}");
    for target in targets {
        assert!(
            platform.contains(target),
            "scrape target {target} is not an address scripts/platform gives a daemon"
        );
    }
}
