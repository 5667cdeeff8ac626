//! Access log search and log retention over the real ClickHouse: rows written by the proxy's
//! real access log writer are filtered by status and latency, paged newest first, and another
//! organization can read none of them; the retention job drops an expired partition of both
//! log tables and keeps the others.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Harness, fake_clients, fakes::Fakes};
use proxy::access_log::{AccessEntry, AccessLog, AccessLogSettings, AccessLogStats, AccessRow};
use serde_json::{Value, json};

fn clickhouse_url() -> String {
    std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

fn clickhouse() -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(clickhouse_url())
        .with_validation(false)
}

/// The test's own ClickHouse database, dropped at the end.
struct LogDb(String);

impl Drop for LogDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {}", self.0);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(clickhouse().query(&sql).execute())?;
            anyhow::Ok(())
        })
        .join();
    }
}

const T0: i64 = 1_790_000_000_000_000_000;
const STATUSES: [u16; 5] = [200, 404, 500, 503, 201];

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
    let log_db = LogDb(stackpad_tests::unique_ident("access_api"));
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.clickhouse_url = clickhouse_url();
    config.clickhouse_database = log_db.0.clone();
    config.log_retention_interval_ms = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let fakes = Fakes::new();
    let running = control::daemon::start(&config, listener, fake_clients(&fakes)).await?;
    let h = Harness {
        url: format!("http://{}", running.address),
        running: Some(running),
        db,
        http: reqwest::Client::new(),
    };
    let (org_a, token_a) = h.org("access-a").await;
    let (org_b, token_b) = h.org("access-b").await;
    let (_, service_a) = h
        .service(&token_a, json!({ "name": "web", "image": "x:1" }))
        .await;
    let (_, service_b) = h
        .service(&token_b, json!({ "name": "web", "image": "x:1" }))
        .await;

    // The proxy's writer: 50 requests of A's service, 5 of B's, and one row that names A's
    // service but B's organization (what a misconfigured route would write): A must not see it.
    let stats = Arc::new(AccessLogStats::default());
    let writer = AccessLog::start(
        AccessLogSettings {
            clickhouse_url: clickhouse_url(),
            database: log_db.0.clone(),
            batch_max_delay_ms: 50,
            ..AccessLogSettings::default()
        },
        Arc::clone(&stats),
        &tokio::runtime::Handle::current(),
    );
    let paths: Vec<String> = (0..50)
        .map(|i| {
            if i % 2 == 0 {
                format!("/api/items/{i}")
            } else {
                format!("/static/{i}.css")
            }
        })
        .collect();
    for (i, path) in paths.iter().enumerate() {
        writer.record(AccessEntry {
            ts_ns: T0 + i as i64 * 1_000_000,
            organization_id: &org_a,
            service_id: &service_a,
            deployment_id: "d1",
            method: "GET",
            host: "web.example.test",
            path_and_query: path,
            status: STATUSES[i % 5],
            // 0, 10, .., 490 ms
            duration_us: i as u64 * 10_000,
            response_bytes: 100,
            upstream: "10.200.0.2:3000".into(),
            client_ip: "203.0.113.9".into(),
            ..AccessEntry::default()
        });
    }
    for (i, (org, service)) in [(&org_b, &service_b); 5]
        .into_iter()
        .chain([(&org_b, &service_a)])
        .enumerate()
    {
        writer.record(AccessEntry {
            ts_ns: T0 + 100_000_000 + i as i64,
            organization_id: org,
            service_id: service,
            method: "POST",
            path_and_query: "/b-only",
            status: 500,
            duration_us: 900_000,
            ..AccessEntry::default()
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.rows_sent.load(Ordering::Relaxed) < 56 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.rows_sent.load(Ordering::Relaxed), 56);

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

    // The CLI: `stackpad logs --access` with filters, oldest first, one request per line.
    let dir = tempfile::tempdir()?;
    let cli_config = dir.path().join("cli.json");
    let (code, out) = stackpad(
        &cli_config,
        &["login", "--url", &h.url, "--token", &token_a],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = stackpad(
        &cli_config,
        &[
            "logs",
            "--access",
            "--service",
            &service_a,
            "--status",
            "5xx",
            "--min-duration-ms",
            "400",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].ends_with(" 500 GET web.example.test/api/items/42 420.0ms 100B"),
        "{out}"
    );
    // 42, 43, 47, 48: 5xx (i % 5 in {2, 3}) and at least 400 ms (i >= 40).
    assert!(
        lines[3].ends_with(" 503 GET web.example.test/api/items/48 480.0ms 100B"),
        "{out}"
    );
    Ok(())
}

async fn stackpad(config: &std::path::Path, args: &[&str]) -> (i32, String) {
    use clap::Parser;
    let mut argv = vec!["stackpad", "--config", config.to_str().unwrap()];
    argv.extend_from_slice(args);
    let cli = cli::Cli::try_parse_from(argv).expect("arguments parse");
    let mut out = Vec::new();
    let code = match cli::run(cli, &mut out).await {
        Ok(code) => code,
        Err(e) => {
            out.extend_from_slice(format!("error: {e}").as_bytes());
            2
        }
    };
    (code, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn the_retention_job_drops_expired_partitions_of_both_log_tables() -> anyhow::Result<()> {
    let log_db = LogDb(stackpad_tests::unique_ident("retention"));
    let ch = clickhouse();
    runtime::logship::ensure_schema(&ch, &log_db.0).await?;
    proxy::access_log::ensure_schema(&ch, &log_db.0).await?;
    let today = control::logretention::today();
    // (days ago, retention days): only the first has outlived its retention.
    let partitions: [(u16, u16); 3] = [(20, 14), (5, 14), (20, 30)];

    let mut insert = ch
        .clone()
        .with_database(&log_db.0)
        .insert::<AccessRow>("access_logs")
        .await?;
    for (i, (ago, days)) in partitions.iter().enumerate() {
        let date = today - ago;
        insert
            .write(
                &AccessEntry {
                    ts_ns: i64::from(date) * 86_400_000_000_000 + 1,
                    organization_id: "org",
                    service_id: "svc",
                    ..AccessEntry::default()
                }
                .into_row(i as u64, *days, false),
            )
            .await?;
    }
    insert.end().await?;
    let mut insert = ch
        .clone()
        .with_database(&log_db.0)
        .insert::<runtime::logship::LogRow>("container_logs")
        .await?;
    for (i, (ago, days)) in partitions.iter().enumerate() {
        let date = today - ago;
        insert
            .write(&runtime::logship::LogRow {
                date,
                ts_ns: i64::from(date) * 86_400_000_000_000 + 1,
                line_id: i as u64,
                organization_id: "org".into(),
                project_id: "p".into(),
                environment_id: "e".into(),
                service_id: "svc".into(),
                deployment_id: "d".into(),
                container_id: "c".into(),
                node_id: "n".into(),
                stream: 1,
                truncated: 0,
                line: format!("line {i}").into_bytes(),
                retention_days: *days,
            })
            .await?;
    }
    insert.end().await?;

    let retention = control::logretention::Retention::new(&clickhouse_url(), &log_db.0);
    let dropped = retention.expire(today).await?;
    assert_eq!(dropped, vec![("container_logs", 1), ("access_logs", 1)]);
    for (table, id) in [("container_logs", "line_id"), ("access_logs", "row_id")] {
        let mut kept: Vec<u64> = ch
            .query(&format!("SELECT {id} FROM {}.{table}", log_db.0))
            .fetch_all()
            .await?;
        kept.sort_unstable();
        assert_eq!(kept, vec![1, 2], "{table}");
    }
    // A second pass finds nothing more; a database without the tables is no error.
    assert_eq!(
        retention.expire(today).await?,
        vec![("container_logs", 0), ("access_logs", 0)]
    );
    let empty = control::logretention::Retention::new(
        &clickhouse_url(),
        &stackpad_tests::unique_ident("no_such_db"),
    );
    assert_eq!(
        empty.expire(today).await?,
        vec![("container_logs", 0), ("access_logs", 0)]
    );
    Ok(())
}
