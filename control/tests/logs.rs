//! Log search over the real ClickHouse: lines written as the node agents write them (rows of
//! the `logstore` contract's `container_logs` table) are found by text, paged newest first with
//! a cursor, followed live from a cursor, and another organization cannot read them.

mod common;

use std::time::{Duration, Instant};

use common::log_rows::{log_row, write_container_logs};
use common::{Harness, fake_clients, fakes::Fakes};
use logstore::container_logs::{LogRow, STREAM_STDERR, STREAM_STDOUT};
use serde_json::{Value, json};
use stackpad_tests::db::ClickHouseDb;

/// Line `i` of `service`, one microsecond after line `i - 1`; `ERROR` lines on stderr.
fn line(organization_id: &str, service_id: &str, i: i64, text: &str) -> LogRow {
    let stream = if text.starts_with("ERROR") {
        STREAM_STDERR
    } else {
        STREAM_STDOUT
    };
    let ts_ns = 1_790_000_000_000_000_000 + i * 1000;
    log_row(ts_ns, i as u64, organization_id, service_id, stream, text)
}

async fn lines(h: &Harness, token: &str, query: &str) -> (u16, Value) {
    h.call("GET", query, token, None).await
}

#[tokio::test]
async fn logs_are_searched_paged_followed_and_scoped_to_the_organization() -> anyhow::Result<()> {
    let log_db = ClickHouseDb::create("logs_api").await?;
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.clickhouse_url = log_db.url().to_owned();
    config.clickhouse_database = log_db.name().to_owned();
    // The rows are dated 2026-09 (fixed cursors): the retention job would drop their
    // partitions mid-test (it did: the followed lines vanished), as in the other log tests.
    config.log_retention_interval_ms = 0;
    let fakes = Fakes::new();
    let h = Harness::start_with(db, &config, fake_clients(&fakes)).await?;
    let (org_a, token_a) = h.org("logs-a").await;
    let (_, token_b) = h.org("logs-b").await;
    let (_, service) = h
        .service(&token_a, json!({ "name": "web", "image": "x:1" }))
        .await;

    let rows: Vec<LogRow> = (0..300)
        .map(|i| {
            let text = if i % 10 == 0 {
                format!("ERROR request {i} failed")
            } else {
                format!("ok {i}")
            };
            line(&org_a, &service, i, &text)
        })
        .collect();
    write_container_logs(&log_db, &rows).await?;

    // All 300 searchable, newest first.
    let path = format!("/services/{service}/logs");
    let (status, page) = lines(&h, &token_a, &format!("{path}?limit=1000")).await;
    assert_eq!(status, 200, "{page}");
    let all = page["lines"].as_array().expect("lines");
    assert_eq!(all.len(), 300, "{page}");
    assert_eq!(all[0]["line"], "ok 299");
    assert_eq!(all[299]["line"], "ERROR request 0 failed");

    // Text search, case-insensitive, with the stream filter.
    let (_, errors) = lines(&h, &token_a, &format!("{path}?q=error&stream=stderr")).await;
    let errors = errors["lines"].as_array().expect("lines").clone();
    assert_eq!(errors.len(), 30);
    assert!(
        errors
            .iter()
            .all(|l| l["line"].as_str().unwrap().starts_with("ERROR"))
    );

    // Pages of 120: 120 + 120 + 60, no line twice.
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("{path}?limit=120&cursor={c}"),
            None => format!("{path}?limit=120"),
        };
        let (status, page) = lines(&h, &token_a, &q).await;
        assert_eq!(status, 200, "{page}");
        for l in page["lines"].as_array().unwrap() {
            assert!(
                seen.insert(l["cursor"].as_str().unwrap().to_owned()),
                "line twice: {l}"
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 300);

    // Another organization: the service does not exist for it.
    let (status, body) = lines(&h, &token_b, &path).await;
    assert_eq!(status, 404, "{body}");
    // Bad input names the parameter.
    let (status, body) = lines(&h, &token_a, &format!("{path}?stream=both")).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("stream"), "{body}");

    // Follow from the newest line seen: exactly the lines shipped afterwards arrive.
    let from = all[0]["cursor"].as_str().unwrap().to_owned();
    let response = h
        .http
        .get(format!("{}{path}/follow?cursor={from}", h.url))
        .bearer_auth(&token_a)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let live: Vec<LogRow> = (300..305)
        .map(|i| line(&org_a, &service, i, &format!("live {i}")))
        .collect();
    write_container_logs(&log_db, &live).await?;
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while text.matches("\ndata:").count() + usize::from(text.starts_with("data:")) < 5
        && Instant::now() < deadline
    {
        match tokio::time::timeout(Duration::from_secs(1), futures::StreamExt::next(&mut body))
            .await
        {
            Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk?)),
            Ok(None) => break,
            Err(_) => {}
        }
    }
    for i in 300..305 {
        assert!(
            text.contains(&format!("live {i}")),
            "follow missed line {i}: {text}"
        );
    }
    assert!(
        !text.contains("ok 299"),
        "follow repeated an old line: {text}"
    );
    Ok(())
}
