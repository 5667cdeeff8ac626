//! Every daemon's `/metrics`, as a scraper reads it, against the text its hand-written renderer
//! served before the daemons moved to `prometheus-client` (#20): the same families with the same
//! types and help, the same samples with the same labels and values. The references in
//! `tests/fixtures/metrics/` were rendered by the old code from the same inputs as below.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use stackpad_tests::prometheus::{assert_conventions, assert_same_scrape};

fn reference(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/metrics")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading the reference {}: {e}", path.display()))
}

fn check(name: &str, text: &str) {
    assert_conventions(text);
    assert_same_scrape(&reference(name), text);
}

#[tokio::test]
async fn the_node_serves_what_it_served() {
    let m = runtime::metrics::Metrics::default();
    m.count_start();
    m.count_start();
    m.count_failure();
    m.count_exit(true);
    m.count_exit(false);
    m.observe_pull(Duration::from_millis(30), true);
    m.observe_pull(Duration::from_secs(3), true);
    m.observe_pull(Duration::from_secs(1), false);
    m.observe_start(Duration::from_millis(150));
    m.observe_start(Duration::from_secs(90));
    let usage = |id: &str, service: &str, cpu: f64, mem: u64| runtime::metrics::ContainerUsage {
        container_id: id.into(),
        project_id: "p1".into(),
        service: service.into(),
        cpu_seconds: cpu,
        memory_bytes: mem,
    };
    let mut text = m.render(
        &[("healthy", 2), ("exited", 1)],
        &[
            usage("sp-1", "web", 1.5, 1024),
            usage("sp-2", "worker", 0.25, 1 << 30),
        ],
    );
    let mut counters = ebpf::Counters::default();
    (counters.out_bytes, counters.out_packets) = (1500, 3);
    (counters.in_bytes, counters.in_packets) = (64, 1);
    text.push_str(&ebpf::render_prometheus(&[
        (
            vec![
                ("project", "p1".to_owned()),
                ("service", "w\"e\\b\n".to_owned()),
            ],
            counters,
        ),
        (vec![("container", "sp-2".to_owned())], {
            counters.in_bytes = 7;
            counters
        }),
    ]));
    let spool = tempfile::tempdir().expect("temp dir");
    let shipper = runtime::logship::ClickHouseShipper::start(runtime::logship::ShipperConfig {
        // Nothing listens there, and nothing is shipped: every series stays at zero.
        clickhouse_url: "http://127.0.0.1:9".into(),
        spool_dir: spool.path().to_owned(),
        ..runtime::logship::ShipperConfig::default()
    })
    .expect("shipper");
    runtime::logs::LogSink::render_metrics(&shipper, &mut text);
    check("node.prom", &text);
}

#[test]
fn the_proxy_serves_what_it_served() {
    let m = proxy::metrics::Metrics::default();
    m.service("web").record(200, Duration::from_millis(2));
    m.service("web").record(503, Duration::from_secs(10));
    m.service("web").record(101, Duration::from_micros(300));
    m.service("a\"p\\i").record(404, Duration::from_millis(30));
    m.unrouted.record(421, Duration::from_millis(1));
    m.active_requests.inc_by(3);
    m.active_upgraded.inc_by(1);
    m.switches_ok.inc_by(2);
    m.switches_failed.inc_by(1);
    m.drains.inc_by(2);
    m.drain_closed_at_deadline.inc_by(4);
    m.drain_seconds.inc_by(1.5);
    m.upstream_connect_failures.inc_by(5);
    m.passive_ejections.inc_by(6);
    m.rejected_requests.inc_by(7);
    m.access_log.rows_sent.inc_by(8);
    m.access_log.rows_dropped.inc_by(9);
    m.access_log.insert_failures.inc_by(10);
    m.access_log.rows_pending.inc_by(11);
    let mut text = m.render(&[
        proxy::metrics::UpstreamHealth {
            service_id: "web".into(),
            address: "127.0.0.1:1".into(),
            healthy: true,
            draining: false,
        },
        proxy::metrics::UpstreamHealth {
            service_id: "a\"p\\i".into(),
            address: "127.0.0.1:2".into(),
            healthy: false,
            draining: true,
        },
    ]);
    let acme = proxy::acme::metrics::AcmeMetrics::default();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let day = Duration::from_secs(86_400);
    let validity = |age: u32, lifetime: u32| proxy::acme::policy::CertificateValidity {
        not_before: now - day * age,
        not_after: now - day * age + day * lifetime,
    };
    acme.served("fresh.example.com", validity(1, 90));
    acme.served("old.example.com", validity(70, 90));
    acme.served("gone.example.com", validity(100, 90));
    acme.order_started();
    acme.order_started();
    acme.order_issued();
    acme.order_failed();
    acme.rate_limited(proxy::acme::policy::Limit::DuplicateCertificates);
    text.push_str(&acme.render(&proxy::acme::policy::IssuancePolicy::default(), now));
    check("proxy.prom", &text);
}

#[test]
fn control_serves_what_it_served() {
    let http = control::metrics::HttpMetrics::default();
    http.record(201, Duration::from_millis(7));
    http.record(404, Duration::from_millis(30));
    http.record(500, Duration::from_secs(20));
    let counts = control::metrics::StoreCounts {
        deployments: vec![("ready".into(), 3), ("failed".into(), 1)],
        nodes: vec![
            ("compute".into(), "up".into(), 2),
            ("build".into(), "do\"wn".into(), 1),
        ],
        domains: vec![("verified".into(), 2), ("pending".into(), 0)],
        waiting_for_room: 0,
    };
    check(
        "control.prom",
        &control::metrics::render(&http, Some(&counts)),
    );
    check(
        "control-store-down.prom",
        &control::metrics::render(&http, None),
    );
}

#[test]
fn buildd_serves_what_it_served() {
    let m = buildd::metrics::Metrics::default();
    m.record_outcome(
        buildd::metrics::Outcome::Succeeded,
        Some(Duration::from_secs(7)),
    );
    m.record_outcome(
        buildd::metrics::Outcome::Succeeded,
        Some(Duration::from_millis(61_500)),
    );
    m.record_outcome(
        buildd::metrics::Outcome::Failed,
        Some(Duration::from_secs(4000)),
    );
    m.record_outcome(buildd::metrics::Outcome::TimedOut, None);
    m.record_outcome(buildd::metrics::Outcome::Cancelled, None);
    m.record_steps(3, 4);
    check("buildd.prom", &m.render(2, 5));
    check(
        "buildd-idle.prom",
        &buildd::metrics::Metrics::default().render(0, 0),
    );
}
