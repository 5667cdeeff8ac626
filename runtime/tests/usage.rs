//! The usage sampler on real containers and the real ClickHouse: a container spinning on half a
//! core is stored as about half a core, a web container's memory is its cgroup's, and requests
//! sent to it show as bytes in and out of its network namespace.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use common::TestNode;
use logstore::container_usage::UsageRow;
use runtime::usage::{UsageConfig, run};
use stackpad_tests::db::ClickHouseDb;

async fn stored(db: &ClickHouseDb) -> anyhow::Result<Vec<UsageRow>> {
    db.client()
        .query(&format!(
            "SELECT ?fields FROM {}.container_usage ORDER BY ts_ns",
            db.name()
        ))
        .fetch_all()
        .await
        .with_context(|| format!("ClickHouse at {}: run scripts/services up", db.url()))
}

#[tokio::test]
async fn samples_of_real_containers_reach_clickhouse_as_per_interval_use() -> anyhow::Result<()> {
    let db = ClickHouseDb::create("usage").await?;
    let node = TestNode::start("usage").await?;
    let mut burn = node.shell("p-usage", "burn", "while :; do :; done");
    burn.resources.cpu_millis = 500;
    let burn = node.agent.deploy(burn).await?;
    let web = node.agent.deploy(node.web("p-usage", "web")).await?;
    let ip = web.ip.context("the web container has no address")?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(run(
        node.agent.clone(),
        UsageConfig {
            clickhouse_url: db.url().to_owned(),
            database: db.name().to_owned(),
            node_id: "node-usage".into(),
            interval: Duration::from_millis(500),
            default_retention_days: 3,
            retention_days_by_organization: HashMap::from([("org".to_owned(), 30)]),
        },
        stopped,
    ));
    // Traffic to the web container while the sampler runs: 40 requests.
    let mut sent = 0;
    for _ in 0..40 {
        let (code, _) = common::http_get(ip, 8080, "/").await?;
        ensure!(
            code == 200 || code == 404,
            "the web container answered {code}"
        );
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop.send(true)?;
    sampler.await?;

    let rows = stored(&db).await?;
    let of = |id: &str| {
        rows.iter()
            .filter(|r| r.container_id == id)
            .collect::<Vec<_>>()
    };
    let (burn_rows, web_rows) = (of(&burn.container_id), of(&web.container_id));
    ensure!(
        burn_rows.len() >= 4 && web_rows.len() >= 4,
        "too few samples: {} and {}",
        burn_rows.len(),
        web_rows.len()
    );
    // Every row carries the container's labels, the node, its limit and its retention.
    for r in &rows {
        ensure!(
            r.organization_id == "org" && r.project_id == "p-usage" && r.node_id == "node-usage"
        );
        ensure!(
            r.retention_days == 30 && r.memory_limit_bytes == 64 << 20,
            "{r:?}"
        );
        ensure!(r.interval_ms > 0 && r.memory_bytes > 0, "{r:?}");
    }
    ensure!(burn_rows[0].service_id == "svc-burn" && web_rows[0].service_id == "svc-web");
    // Half a core, give or take the CFS period and shared cores.
    let cpu: u64 = burn_rows.iter().map(|r| r.cpu_ns).sum();
    let span_ms: u64 = burn_rows.iter().map(|r| u64::from(r.interval_ms)).sum();
    let cores = cpu as f64 / 1e6 / span_ms as f64;
    ensure!(
        (0.2..=0.6).contains(&cores),
        "the spinning container used {cores:.3} cores (limit 0.5)"
    );
    // Each request is at least ~40 bytes in and a status line out.
    let rx: u64 = web_rows.iter().map(|r| r.rx_bytes).sum();
    let tx: u64 = web_rows.iter().map(|r| r.tx_bytes).sum();
    ensure!(
        rx >= sent * 40 && tx >= sent * 17,
        "{sent} requests showed as {rx} bytes in, {tx} out"
    );
    let web_cpu: u64 = web_rows.iter().map(|r| r.cpu_ns).sum();
    ensure!(
        web_cpu > 0,
        "the web container used no CPU serving {sent} requests"
    );
    Ok(())
}
