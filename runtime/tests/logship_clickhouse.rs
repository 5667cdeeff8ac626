//! The log shipper against the real ClickHouse from `scripts/services`: lines arrive with their
//! labels and in order; an outage spools to disk and loses nothing; a lost answer duplicates
//! nothing in query results; the spool stays bounded and counts what it drops.
//!
//! Outages are emulated by a TCP relay each test owns in front of ClickHouse (the shared server
//! keeps running for the other tests).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use runtime::logs::{LogLabels, LogLine, LogSink, Stream};
use runtime::logship::{ClickHouseShipper, ShipperConfig};
use stackpad_tests::db::ClickHouseDb;
use tokio::io::AsyncWriteExt;

const UP: u8 = 0;
const DOWN: u8 = 1;
/// Forward requests but cut the connection before ClickHouse's answer reaches the shipper.
const LOSE_ANSWERS: u8 = 2;

fn clickhouse_url() -> String {
    std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// A relay on 127.0.0.1:<ephemeral> in front of ClickHouse whose mode the test switches; a
/// switch cuts the connections open at that moment (the shipper's pooled keep-alives too).
struct Relay {
    url: String,
    mode: tokio::sync::watch::Sender<u8>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    fn set(&self, mode: u8) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay() -> anyhow::Result<Relay> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let target = clickhouse_url().trim_start_matches("http://").to_owned();
    let (mode, watch) = tokio::sync::watch::channel(UP);
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut watch = watch.clone();
            let mode = *watch.borrow_and_update();
            let target = target.clone();
            tokio::spawn(async move {
                if mode == DOWN {
                    let _ = client.shutdown().await;
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                if mode == UP {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.changed() => {}
                    }
                } else {
                    // Client -> server only; once the request is in, give ClickHouse time to
                    // act on it, then hang up without relaying its answer.
                    let (mut client_read, _client_write) = client.into_split();
                    let (_server_read, mut server_write) = server.into_split();
                    let _ = tokio::time::timeout(
                        Duration::from_millis(800),
                        tokio::io::copy(&mut client_read, &mut server_write),
                    )
                    .await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
        }
    });
    Ok(Relay { url, mode, task })
}

/// Lines of `container` as queries see them: one per line id, in time order.
async fn stored_lines(db: &ClickHouseDb, container: &str) -> anyhow::Result<Vec<(i64, String)>> {
    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    struct Line {
        ts_ns: i64,
        #[serde(with = "serde_bytes")]
        line: Vec<u8>,
    }
    let rows: Vec<Line> = db
        .client()
        .query(&format!(
            "SELECT ts_ns, line FROM {}.container_logs WHERE container_id = ? \
             ORDER BY ts_ns, line_id LIMIT 1 BY line_id",
            db.name()
        ))
        .bind(container)
        .fetch_all()
        .await
        .with_context(|| format!("ClickHouse at {}: run scripts/services up", db.url()))?;
    Ok(rows
        .into_iter()
        .map(|r| (r.ts_ns, String::from_utf8_lossy(&r.line).into_owned()))
        .collect())
}

/// On the raw table (no de-duplication): rows, distinct line ids, distinct (line id, time,
/// text).
async fn raw_counts(db: &ClickHouseDb, container: &str) -> anyhow::Result<(u64, u64, u64)> {
    Ok(db
        .client()
        .query(&format!(
            "SELECT count(), uniqExact(line_id), uniqExact(line_id, ts_ns, line) \
             FROM {}.container_logs WHERE container_id = ?",
            db.name()
        ))
        .bind(container)
        .fetch_one()
        .await?)
}

async fn stored_rows(db: &ClickHouseDb, container: &str) -> anyhow::Result<u64> {
    Ok(db
        .client()
        .query(&format!(
            "SELECT count() FROM {}.container_logs WHERE container_id = ?",
            db.name()
        ))
        .bind(container)
        .fetch_one()
        .await?)
}

fn config(db: &ClickHouseDb, url: &str, spool: &std::path::Path) -> ShipperConfig {
    ShipperConfig {
        clickhouse_url: url.to_owned(),
        database: db.name().to_owned(),
        node_id: "node-test".into(),
        batch_max_lines: 1000,
        batch_max_delay: Duration::from_millis(100),
        queue_capacity: 200_000,
        spool_dir: spool.to_owned(),
        retry_interval: Duration::from_millis(200),
        insert_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

fn labels(container: &str) -> LogLabels {
    LogLabels {
        container_id: container.into(),
        organization_id: "org-a".into(),
        project_id: "proj".into(),
        environment_id: "prod".into(),
        service_id: "web".into(),
        deployment_id: "dep-1".into(),
    }
}

fn line(i: i64, text: String) -> LogLine {
    LogLine {
        timestamp_nanos: 1_790_000_000_000_000_000 + i,
        stream: Stream::Stdout,
        line: text.into_bytes(),
        truncated: false,
    }
}

async fn wait_for(
    db: &ClickHouseDb,
    container: &str,
    count: usize,
    within: Duration,
) -> anyhow::Result<Vec<(i64, String)>> {
    let deadline = Instant::now() + within;
    loop {
        let lines = stored_lines(db, container).await.unwrap_or_default();
        if lines.len() >= count || Instant::now() > deadline {
            return Ok(lines);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spool_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "stackpad-logship-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

#[tokio::test]
async fn lines_arrive_in_order_with_their_labels() -> anyhow::Result<()> {
    let db = ClickHouseDb::create("logs_test").await?;
    let spool = spool_dir("order");
    let shipper = ClickHouseShipper::start(config(&db, &clickhouse_url(), &spool))?;
    let n = 10_000;
    for i in 0..n {
        shipper.ship(&labels("c-order"), &line(i, format!("line {i}")));
    }
    let lines = wait_for(&db, "c-order", n as usize, Duration::from_secs(10)).await?;
    ensure!(
        lines.len() == n as usize,
        "{} of {n} lines searchable",
        lines.len()
    );
    for (i, (ts, text)) in lines.iter().enumerate() {
        ensure!(
            *text == format!("line {i}") && *ts == 1_790_000_000_000_000_000 + i as i64,
            "line {i}: {text}"
        );
    }
    let labelled: u64 = db
        .client()
        .query(&format!(
            "SELECT count() FROM {}.container_logs WHERE organization_id = 'org-a' AND project_id = 'proj' \
             AND environment_id = 'prod' AND service_id = 'web' AND deployment_id = 'dep-1' AND node_id = 'node-test'",
            db.name()
        ))
        .fetch_one()
        .await?;
    ensure!(labelled == n as u64, "{labelled} rows carry the labels");
    std::fs::remove_dir_all(&spool)?;
    Ok(())
}

#[tokio::test]
async fn an_outage_loses_nothing_and_a_lost_answer_duplicates_nothing() -> anyhow::Result<()> {
    let db = ClickHouseDb::create("logs_test").await?;
    let relay = relay().await?;
    let spool = spool_dir("outage");
    let shipper = ClickHouseShipper::start(config(&db, &relay.url, &spool))?;
    shipper.ship(&labels("c-outage"), &line(0, "before".into()));
    ensure!(
        wait_for(&db, "c-outage", 1, Duration::from_secs(10))
            .await?
            .len()
            == 1
    );

    relay.set(DOWN);
    for i in 1..=3000 {
        shipper.ship(&labels("c-outage"), &line(i, format!("during {i}")));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while shipper.spool_lines() < 3000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        shipper.spool_lines() == 3000,
        "spooled {} of 3000 lines",
        shipper.spool_lines()
    );

    // The first sends after the outage reach ClickHouse but their answers are lost: retried.
    relay.set(LOSE_ANSWERS);
    // Rows land although the shipper sees its sends fail: it will send them again.
    let deadline = Instant::now() + Duration::from_secs(15);
    while stored_rows(&db, "c-outage").await? <= 1 {
        ensure!(
            Instant::now() < deadline,
            "no send reached ClickHouse in 15 s while its answers were lost"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        shipper.spool_lines() > 0,
        "the spool forgot batches whose answers were lost"
    );
    relay.set(UP);
    for i in 3001..=3100 {
        shipper.ship(&labels("c-outage"), &line(i, format!("after {i}")));
    }
    let lines = wait_for(&db, "c-outage", 3101, Duration::from_secs(15)).await?;
    ensure!(
        lines.len() == 3101,
        "{} of 3101 lines after the outage",
        lines.len()
    );
    ensure!(
        lines.windows(2).all(|w| w[0].0 < w[1].0),
        "lines out of order or duplicated"
    );
    // On the raw table, not through the de-duplicating query: the re-sent batches are the only
    // duplicates, each an exact copy of its line (same id, time and text), and no line is lost.
    let (rows, ids, distinct) = raw_counts(&db, "c-outage").await?;
    ensure!(
        ids == 3101 && distinct == 3101 && rows >= 3101,
        "raw table: {rows} rows, {ids} line ids, {distinct} distinct lines (want 3101 ids, each \
         duplicate an exact copy)"
    );
    // The last rows can show in ClickHouse a moment before the shipper has read the insert's
    // answer and removed their spool segment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shipper.spool_bytes() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        shipper.spool_bytes() == 0 && shipper.lines_dropped_spool() == 0,
        "spool holds {} bytes, dropped {} lines",
        shipper.spool_bytes(),
        shipper.lines_dropped_spool()
    );
    std::fs::remove_dir_all(&spool)?;
    Ok(())
}

#[tokio::test]
async fn a_full_spool_stays_bounded_and_counts_drops_and_long_lines_are_cut() -> anyhow::Result<()>
{
    let db = ClickHouseDb::create("logs_test").await?;
    let relay = relay().await?;
    relay.set(DOWN);
    let spool = spool_dir("full");
    let mut config = config(&db, &relay.url, &spool);
    config.spool_max_bytes = 1 << 20;
    config.max_line_bytes = 4096;
    let shipper = ClickHouseShipper::start(config)?;
    let text = "x".repeat(1000);
    for i in 0..5000 {
        shipper.ship(&labels("c-full"), &line(i, text.clone()));
        if i % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while shipper.lines_dropped_spool() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        shipper.spool_bytes() <= 1 << 20,
        "spool holds {} bytes",
        shipper.spool_bytes()
    );
    ensure!(
        shipper.lines_dropped_spool() > 0,
        "nothing counted as dropped"
    );

    // A 1 MiB line and invalid UTF-8, once ClickHouse is back.
    relay.set(UP);
    let mut huge = line(10_000, String::new());
    huge.line = vec![b'y'; 1 << 20];
    shipper.ship(&labels("c-huge"), &huge);
    let mut binary = line(10_001, String::new());
    binary.line = vec![0xff, 0xfe, b'o', b'k'];
    shipper.ship(&labels("c-huge"), &binary);
    let lines = wait_for(&db, "c-huge", 2, Duration::from_secs(10)).await?;
    ensure!(lines.len() == 2);
    ensure!(
        lines[0].1.len() == 4096,
        "a 1 MiB line was stored as {} bytes",
        lines[0].1.len()
    );
    let truncated: u64 = db
        .client()
        .query(&format!(
            "SELECT count() FROM {}.container_logs WHERE container_id = 'c-huge' AND truncated = 1",
            db.name()
        ))
        .fetch_one()
        .await?;
    ensure!(truncated >= 1, "the cut line is not marked truncated");
    ensure!(lines[1].1.ends_with("ok"));
    std::fs::remove_dir_all(&spool)?;
    Ok(())
}
