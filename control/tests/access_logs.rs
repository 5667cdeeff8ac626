//! Access log search and log retention over the real ClickHouse: rows written as the proxy
//! writes them (the `logstore` contract's `access_logs` table) are filtered by status and
//! latency, paged newest first, and another organization can read none of them; the retention
//! job drops an expired partition of both log tables and keeps the others.

mod common;

use std::collections::HashSet;

use common::log_rows::{
    NS_PER_DAY, T0, access_row, build_log_row, date_of, log_row, requests, write_access_logs,
    write_build_logs, write_container_logs,
};
use common::{Harness, fake_clients, fakes::Fakes};
use logstore::access_logs::AccessRow;
use logstore::container_logs::{LogRow, STREAM_STDOUT};
use logstore::{access_logs, container_logs};
use serde_json::{Value, json};
use stackpad_tests::db::ClickHouseDb;

async fn search(h: &Harness, token: &str, query: &str) -> (u16, Value) {
    h.call("GET", query, token, None).await
}

fn statuses(page: &Value) -> Vec<u64> {
    page["requests"]
        .as_array()
        .map(|r| r.iter().map(|r| r["status"].as_u64().unwrap()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn access_logs_are_filtered_paged_and_scoped_to_the_organization() -> anyhow::Result<()> {
    let log_db = ClickHouseDb::create("access_api").await?;
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.clickhouse_url = log_db.url().to_owned();
    config.clickhouse_database = log_db.name().to_owned();
    config.log_retention_interval_ms = 0;
    let fakes = Fakes::new();
    let h = Harness::start_with(db, &config, fake_clients(&fakes)).await?;
    let (org_a, token_a) = h.org("access-a").await;
    let (org_b, token_b) = h.org("access-b").await;
    let (_, service_a) = h
        .service(&token_a, json!({ "name": "web", "image": "x:1" }))
        .await;
    let (_, service_b) = h
        .service(&token_b, json!({ "name": "web", "image": "x:1" }))
        .await;

    // 50 requests of A's service, 5 of B's, and one row that names A's service but B's
    // organization (what a misconfigured route would write): A must not see it.
    let mut rows = requests(&org_a, &service_a);
    for (i, (org, service)) in [(&org_b, &service_b); 5]
        .into_iter()
        .chain([(&org_b, &service_a)])
        .enumerate()
    {
        rows.push(AccessRow {
            method: "POST".into(),
            path: "/b-only".into(),
            status: 500,
            duration_us: 900_000,
            ..access_row(T0 + 100_000_000 + i as i64, 100 + i as u64, org, service)
        });
    }
    write_access_logs(&log_db, &rows).await?;

    let path = format!("/services/{service_a}/access-logs");
    let (status, all) = search(&h, &token_a, &format!("{path}?limit=1000")).await;
    assert_eq!(status, 200, "{all}");
    let requests = all["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), 50, "{all}");
    assert_eq!(requests[0]["path"], "/static/49.css", "newest first");
    assert_eq!(requests[49]["path"], "/api/items/0");
    assert_eq!(requests[0]["duration_ms"], 490.0);
    assert_eq!(requests[0]["upstream"], "10.200.0.2:3000");
    assert!(all["next_cursor"].is_null());
    assert!(!all.to_string().contains("/b-only"), "{all}");

    // Status: a class, a code, a range, a list.
    let (_, page) = search(&h, &token_a, &format!("{path}?status=5xx&limit=1000")).await;
    let s = statuses(&page);
    assert_eq!(s.len(), 20);
    assert!(s.iter().all(|s| (500..600).contains(s)), "{page}");
    let (_, page) = search(&h, &token_a, &format!("{path}?status=404")).await;
    assert_eq!(statuses(&page), vec![404; 10]);
    let (_, page) = search(&h, &token_a, &format!("{path}?status=500-502,201")).await;
    assert_eq!(statuses(&page).len(), 20);
    assert!(!statuses(&page).contains(&503));

    // Latency, with status and path text.
    let (_, page) = search(&h, &token_a, &format!("{path}?min_duration_ms=400")).await;
    assert_eq!(page["requests"].as_array().unwrap().len(), 10, "{page}");
    assert!(
        page["requests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["duration_ms"].as_f64().unwrap() >= 400.0)
    );
    let (_, page) = search(
        &h,
        &token_a,
        &format!("{path}?status=5xx&min_duration_ms=250&q=API"),
    )
    .await;
    // i in 25..50, status 5xx (i % 5 in {2, 3}), even i (/api): 28, 32, 38, 42, 48.
    let got: Vec<&str> = page["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        [
            "/api/items/48",
            "/api/items/42",
            "/api/items/38",
            "/api/items/32",
            "/api/items/28"
        ]
    );

    // Time range (until is exclusive).
    let (_, page) = search(
        &h,
        &token_a,
        &format!("{path}?since={}&until={}", T0 + 10_000_000, T0 + 20_000_000),
    )
    .await;
    assert_eq!(page["requests"].as_array().unwrap().len(), 10, "{page}");

    // Pages of 7 cover everything once.
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("{path}?limit=7&cursor={c}"),
            None => format!("{path}?limit=7"),
        };
        let (status, page) = search(&h, &token_a, &q).await;
        assert_eq!(status, 200, "{page}");
        for r in page["requests"].as_array().unwrap() {
            assert!(
                seen.insert(r["cursor"].as_str().unwrap().to_owned()),
                "row twice: {r}"
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 50);

    // Organization B: A's service does not exist for it; its own shows only its rows.
    let (status, body) = search(&h, &token_b, &path).await;
    assert_eq!(status, 404, "{body}");
    let (status, page) = search(&h, &token_b, &format!("/services/{service_b}/access-logs")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(statuses(&page), vec![500; 5]);

    // Bad filters name their parameter.
    for (query, name) in [
        ("status=6xx", "status"),
        ("min_duration_ms=-1", "min_duration_ms"),
        ("limit=0", "limit"),
    ] {
        let (status, body) = search(&h, &token_a, &format!("{path}?{query}")).await;
        assert!(status == 422 || status == 400, "{query}: {status} {body}");
        assert!(body.to_string().contains(name), "{query}: {body}");
    }

    Ok(())
}

#[tokio::test]
async fn the_retention_job_drops_expired_partitions_of_every_log_table() -> anyhow::Result<()> {
    let log_db = ClickHouseDb::create("retention").await?;
    let ch = log_db.client();
    let today = control::logretention::today();
    // (days ago, retention days): only the first has outlived its retention.
    let partitions: [(u16, u16); 3] = [(20, 14), (5, 14), (20, 30)];
    let at = |ago: u16| i64::from(today - ago) * NS_PER_DAY + 1;
    let requests: Vec<AccessRow> = partitions
        .iter()
        .enumerate()
        .map(|(i, &(ago, days))| AccessRow {
            retention_days: days,
            ..access_row(at(ago), i as u64, "org", "svc")
        })
        .collect();
    write_access_logs(&log_db, &requests).await?;
    let lines: Vec<LogRow> = partitions
        .iter()
        .enumerate()
        .map(|(i, &(ago, days))| LogRow {
            deployment_id: "d".into(),
            container_id: "c".into(),
            node_id: "n".into(),
            retention_days: days,
            ..log_row(
                at(ago),
                i as u64,
                "org",
                "svc",
                STREAM_STDOUT,
                &format!("line {i}"),
            )
        })
        .collect();
    write_container_logs(&log_db, &lines).await?;
    let builds: Vec<_> = partitions
        .iter()
        .enumerate()
        .map(|(i, &(ago, days))| logstore::build_logs::BuildLogRow {
            date: date_of(at(ago)),
            ts_ns: at(ago),
            retention_days: days,
            ..build_log_row("org", "d", i as u32, "step", "line")
        })
        .collect();
    write_build_logs(&log_db, &builds).await?;

    let retention = control::logretention::Retention::new(log_db.url(), log_db.name());
    let dropped = retention.expire(today).await?;
    assert_eq!(
        dropped,
        vec![
            ("container_logs", 1),
            ("access_logs", 1),
            ("build_logs", 1),
            ("container_usage", 0)
        ]
    );
    for (table, id) in [
        (container_logs::TABLE, container_logs::columns::LINE_ID),
        (access_logs::TABLE, access_logs::columns::ROW_ID),
        (logstore::build_logs::TABLE, "toUInt64(line_number)"),
    ] {
        let mut kept: Vec<u64> = ch
            .query(&format!("SELECT {id} FROM {}.{table}", log_db.name()))
            .fetch_all()
            .await?;
        kept.sort_unstable();
        assert_eq!(kept, vec![1, 2], "{table}");
    }
    // A second pass finds nothing more; a database without the tables is no error.
    assert_eq!(
        retention.expire(today).await?,
        vec![
            ("container_logs", 0),
            ("access_logs", 0),
            ("build_logs", 0),
            ("container_usage", 0)
        ]
    );
    let empty = control::logretention::Retention::new(
        log_db.url(),
        &stackpad_tests::unique_ident("no_such_db"),
    );
    assert_eq!(
        empty.expire(today).await?,
        vec![
            ("container_logs", 0),
            ("access_logs", 0),
            ("build_logs", 0),
            ("container_usage", 0)
        ]
    );
    Ok(())
}
