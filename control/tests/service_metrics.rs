//! `GET /services/{id}/metrics` over the real ClickHouse: samples written as the node agents
//! write them (`logstore::container_usage`) become CPU cores, memory and bytes/s per bucket,
//! summed over the service's containers; another organization's service is a 404 and rows of
//! another organization are never counted; a bad step is refused naming the field; the
//! retention job expires the table's old partitions like the logs'.

mod common;

use common::{Harness, fake_clients, fakes::Fakes};
use logstore::container_usage::{self, UsageRow};
use serde_json::json;
use stackpad_tests::db::ClickHouseDb;

const S: i64 = 1_000_000_000;
/// A minute boundary (seconds divisible by 60).
const BASE: i64 = 1_790_000_040 * S;

fn sample(org: &str, service: &str, container: &str, at: i64, cpu_ns: u64, mem: u64) -> UsageRow {
    UsageRow {
        date: u16::try_from(at / (86_400 * S)).unwrap(),
        ts_ns: at,
        organization_id: org.into(),
        service_id: service.into(),
        container_id: container.into(),
        node_id: "compute-1".into(),
        interval_ms: 10_000,
        cpu_ns,
        memory_bytes: mem,
        memory_limit_bytes: 256 << 20,
        rx_bytes: 6_000,
        tx_bytes: 1_200,
        retention_days: 14,
        ..UsageRow::default()
    }
}

async fn write(db: &ClickHouseDb, rows: &[UsageRow]) -> anyhow::Result<()> {
    container_usage::ensure_schema(&db.client(), db.name()).await?;
    let client = db.client().with_database(db.name());
    let mut insert = client.insert::<UsageRow>(container_usage::TABLE).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(())
}

#[tokio::test]
async fn usage_is_bucketed_summed_over_containers_and_scoped() -> anyhow::Result<()> {
    let log_db = ClickHouseDb::create("usage_api").await?;
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.clickhouse_url = log_db.url().to_owned();
    config.clickhouse_database = log_db.name().to_owned();
    config.log_retention_interval_ms = 0;
    let fakes = Fakes::new();
    let h = Harness::start_with(db, &config, fake_clients(&fakes)).await?;
    let (org_a, token_a) = h.org("usage-a").await;
    let (org_b, token_b) = h.org("usage-b").await;
    let (_, service_a) = h
        .service(&token_a, json!({ "name": "web", "image": "x:1" }))
        .await;

    // Minute 0: two containers, 6 samples each; container 1 busy half a core (5 s of CPU per
    // 10 s), container 2 a tenth. Minute 2: container 1 alone. Minute 1 has nothing.
    let mut rows = Vec::new();
    for k in 0..6 {
        let at = BASE + (k * 10 + 5) * S;
        rows.push(sample(
            &org_a,
            &service_a,
            "c1",
            at,
            5 * S as u64,
            100 << 20,
        ));
        rows.push(sample(
            &org_a,
            &service_a,
            "c2",
            at,
            S as u64,
            (40 + k as u64) << 20,
        ));
        // Another organization's row naming A's service is never counted.
        rows.push(sample(&org_b, &service_a, "cb", at, 60 * S as u64, 1 << 30));
    }
    rows.push(sample(
        &org_a,
        &service_a,
        "c1",
        BASE + 125 * S,
        10 * S as u64,
        90 << 20,
    ));
    write(&log_db, &rows).await?;

    let path = format!("/services/{service_a}/metrics");
    let window = format!("since={}&until={}", BASE, BASE + 180 * S);
    let (status, body) = h
        .call(
            "GET",
            &format!("{path}?{window}&step_seconds=60"),
            &token_a,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["step_seconds"], 60);
    let points = body["points"].as_array().expect("points");
    assert_eq!(points.len(), 2, "empty buckets are left out: {body}");
    let first = &points[0];
    assert_eq!(first["t"], BASE / S);
    assert_eq!(first["containers"], 2);
    // (6 * 5 s + 6 * 1 s) of CPU in 60 s = 0.6 cores.
    assert!(
        (first["cpu_cores"].as_f64().unwrap() - 0.6).abs() < 1e-9,
        "{first}"
    );
    // Container 1 averages 100 MiB, container 2 42.5 MiB.
    assert_eq!(first["memory_bytes"], (100 << 20) + (85 << 19));
    assert_eq!(first["memory_limit_bytes"], 2 * (256 << 20));
    // 12 samples of 6000 bytes in over 60 s.
    assert!((first["rx_bytes_per_second"].as_f64().unwrap() - 1200.0).abs() < 1e-9);
    assert!((first["tx_bytes_per_second"].as_f64().unwrap() - 240.0).abs() < 1e-9);
    assert_eq!(points[1]["t"], BASE / S + 120);
    assert_eq!(points[1]["containers"], 1);
    assert_eq!(points[1]["memory_bytes"], 90 << 20);

    // A default step for the window (10 s for 3 minutes): one point per sample time.
    let (status, body) = h
        .call("GET", &format!("{path}?{window}"), &token_a, None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["step_seconds"], 10);
    assert_eq!(body["points"].as_array().unwrap().len(), 7, "{body}");

    // Bad input names its field.
    for (query, field) in [
        (format!("{window}&step_seconds=5"), "step_seconds"),
        (
            format!("since={}&until={}&step_seconds=10", BASE, BASE + 86_400 * S),
            "step_seconds",
        ),
        (format!("since={}&until={}", BASE + S, BASE), "since"),
        ("since=yesterday".to_owned(), "since"),
    ] {
        let (status, body) = h
            .call("GET", &format!("{path}?{query}"), &token_a, None)
            .await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    // Another organization: 404, not an empty chart.
    let (status, _) = h
        .call("GET", &format!("{path}?{window}"), &token_b, None)
        .await;
    assert_eq!(status, 404);

    // The retention job drops the table's expired partitions (the rows above are from 2026;
    // "today" 30 days later is past their 14 days).
    let today = u16::try_from(BASE / (86_400 * S)).unwrap() + 30;
    let retention = control::logretention::Retention::new(log_db.url(), log_db.name());
    let dropped = retention.expire(today).await?;
    assert!(
        dropped.contains(&(container_usage::TABLE, 1)),
        "{dropped:?}"
    );
    let (_, body) = h
        .call("GET", &format!("{path}?{window}"), &token_a, None)
        .await;
    assert_eq!(body["points"], json!([]));
    Ok(())
}
