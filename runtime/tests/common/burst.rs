//! A burst from one real container (busybox `seq`, as fast as it can print) through the node
//! agent's log path, with and without shipping, and with a ClickHouse that stalls: every line is
//! accounted for (stored in ClickHouse or, while it stalls, spooled on disk, or counted as
//! dropped on the node's `/metrics`). Run by `tests/log_burst.rs` (the accounting) and by
//! `examples/log_burst_bench.rs` for `bench/logs/run` (whether shipping slows the container),
//! each including it next to `common` (`#[path]`), so other tests do not build it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use runtime::agent::State;
use runtime::isolation::IsolationDisabled;
use runtime::logs::{LogLabels, LogLine, LogSink, NoShipping};
use runtime::logship::{ClickHouseShipper, ShipperConfig};
use stackpad_tests::db::ClickHouseDb;

use crate::common::TestNode;

/// Lines the container prints on stdout; one more on stderr carries its own timing.
pub const LINES: u64 = 300_000;

/// Hands lines to whichever sink the test set last (one agent, one image, several variants).
#[derive(Debug)]
struct SwitchSink(Mutex<Arc<dyn LogSink>>);

impl SwitchSink {
    fn set(&self, sink: Arc<dyn LogSink>) {
        *self.0.lock().expect("sink lock") = sink;
    }
}

impl LogSink for SwitchSink {
    fn ship(&self, labels: &LogLabels, line: &LogLine) {
        let sink = self.0.lock().expect("sink lock").clone();
        sink.ship(labels, line);
    }

    fn ship_lines(&self, labels: &LogLabels, lines: &[LogLine]) {
        let sink = self.0.lock().expect("sink lock").clone();
        sink.ship_lines(labels, lines);
    }

    fn render_metrics(&self, out: &mut String) {
        let sink = self.0.lock().expect("sink lock").clone();
        sink.render_metrics(out);
    }
}

/// Deploys the burst container, waits for it to exit; its own measure of its run (seconds,
/// from /proc/uptime before and after `seq`) and its container id.
async fn burst(node: &TestNode, project: &str, sink_name: &str) -> anyhow::Result<(f64, String)> {
    let script = format!(
        "read a _ < /proc/uptime; seq 1 {LINES}; read b _ < /proc/uptime; echo \"burst-elapsed $a $b\" >&2"
    );
    let mut spec = node.shell(project, sink_name, &script);
    spec.resources.cpu_millis = 1000;
    let s = node.agent.deploy(spec).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = node.agent.status(&s.container_id)?;
        if st.state == State::Stopped || st.state == State::Failed {
            ensure!(st.exit_code == 0, "burst container failed: {st:?}");
            break;
        }
        if Instant::now() > deadline {
            bail!("burst container still running after 60 s: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The timing line is the last the container writes, on stderr: the stdout reader may
    // still be behind it, so it is not necessarily last in the file.
    for _ in 0..300 {
        let (lines, _) = node
            .agent
            .logs(&s.container_id, LINES as usize + 1, false)?;
        if let Some(t) = lines.iter().rev().find_map(|l| {
            let text = String::from_utf8_lossy(&l.line);
            let mut f = text.strip_prefix("burst-elapsed ")?.split(' ');
            let a: f64 = f.next()?.parse().ok()?;
            let b: f64 = f.next()?.parse().ok()?;
            Some(b - a)
        }) {
            println!("{sink_name}: {t:.2} s");
            return Ok((t, s.container_id));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the container's timing line never reached its log")
}

/// Waits until the shipper has accounted for every line: shipped, spooled or dropped.
async fn settled(shipper: &ClickHouseShipper) -> anyhow::Result<()> {
    let stats = shipper.stats();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let received = stats.lines_received.load(Ordering::Relaxed);
        let accounted = stats.lines_shipped.load(Ordering::Relaxed)
            + stats.lines_dropped_queue.load(Ordering::Relaxed)
            + shipper.lines_dropped_spool()
            + shipper.spool_lines();
        if received == LINES + 1 && accounted == received && shipper.queue_lines() == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("lines unaccounted for after 60 s: received {received}, accounted {accounted}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The container's own time for the burst (seconds, fastest of the rounds) per variant.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Lines go to the files and the live feed only.
    pub baseline: f64,
    /// Lines are also shipped to ClickHouse.
    pub shipping: f64,
    /// The shipper's ClickHouse accepts connections and never answers.
    pub stalled: f64,
    /// Lines stored in ClickHouse over all rounds.
    pub stored: u64,
}

/// `rounds` rounds of the three variants, interleaved (a burst of other load on the machine
/// does not land on one variant only), each checked line by line; the fastest time of each.
pub async fn rounds(rounds: usize) -> anyhow::Result<Timings> {
    let db = ClickHouseDb::create("logs_burst").await?;

    let switch = Arc::new(SwitchSink(Mutex::new(Arc::new(NoShipping))));
    let node =
        TestNode::start_with_sink("burst", Arc::new(IsolationDisabled), switch.clone()).await?;
    let project = stackpad_tests::unique_name("p");
    let spool = tempfile::tempdir()?;

    // A "ClickHouse" that accepts connections and never answers: inserts hang until their
    // timeout, the queue fills, the rest goes to the spool or is dropped.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let stall_url = format!("http://{}", stall.local_addr()?);
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((c, _)) = stall.accept().await {
            open.push(c);
        }
    });

    let (mut baseline, mut shipping, mut stalled) = (f64::MAX, f64::MAX, f64::MAX);
    let mut stored_total = 0;
    for round in 0..rounds {
        switch.set(Arc::new(NoShipping));
        let (t, _) = burst(&node, &project, "quiet").await?;
        baseline = baseline.min(t);

        let shipper = ClickHouseShipper::start(ShipperConfig {
            clickhouse_url: db.url().to_owned(),
            database: db.name().to_owned(),
            node_id: "burst-test".into(),
            spool_dir: spool.path().join(format!("ok-{round}")),
            ..ShipperConfig::default()
        })?;
        switch.set(Arc::new(shipper.clone()));
        let (t, container) = burst(&node, &project, "shipped").await?;
        shipping = shipping.min(t);
        settled(&shipper).await?;
        let stats = shipper.stats();
        let shipped = stats.lines_shipped.load(Ordering::Relaxed);
        let dropped = stats.lines_dropped_queue.load(Ordering::Relaxed);
        let (stored, texts): (u64, u64) = db
            .client()
            .query(&format!(
                "SELECT uniqExact(line_id), uniqExact(line) FROM {}.container_logs \
                 WHERE container_id = ?",
                db.name()
            ))
            .bind(&container)
            .fetch_one()
            .await
            .context("counting stored lines")?;
        let text = node.agent.log_metrics();
        assert_eq!(
            stored + dropped,
            LINES + 1,
            "stored {stored} + dropped {dropped} != printed\n{text}"
        );
        assert_eq!(stored, shipped, "stored rows vs the shipped counter");
        assert_eq!(texts, stored, "a stored line was damaged or duplicated");
        assert_eq!(
            metric(
                &text,
                "stackpad_node_log_lines_dropped_total{reason=\"queue\"}"
            ),
            Some(dropped),
            "{text}"
        );
        assert_eq!(
            metric(&text, "stackpad_node_log_lines_shipped_total"),
            Some(shipped),
            "{text}"
        );
        stored_total += stored;

        let stuck = ClickHouseShipper::start(ShipperConfig {
            clickhouse_url: stall_url.clone(),
            database: db.name().to_owned(),
            node_id: "burst-test".into(),
            spool_dir: spool.path().join(format!("stalled-{round}")),
            queue_capacity: 50_000,
            spool_max_bytes: 1 << 20,
            insert_timeout: Duration::from_secs(1),
            ..ShipperConfig::default()
        })?;
        switch.set(Arc::new(stuck.clone()));
        let (t, _) = burst(&node, &project, "stalled").await?;
        stalled = stalled.min(t);
        settled(&stuck).await?;
        let text = node.agent.log_metrics();
        let dropped =
            stuck.stats().lines_dropped_queue.load(Ordering::Relaxed) + stuck.lines_dropped_spool();
        assert_eq!(
            stuck.spool_lines() + dropped,
            LINES + 1,
            "spooled + dropped != printed\n{text}"
        );
        assert!(dropped > 0, "a 1 MiB spool cannot hold the burst\n{text}");
        assert_eq!(stuck.stats().lines_shipped.load(Ordering::Relaxed), 0);
        let counted = metric(
            &text,
            "stackpad_node_log_lines_dropped_total{reason=\"queue\"}",
        )
        .unwrap_or(0)
            + metric(
                &text,
                "stackpad_node_log_lines_dropped_total{reason=\"spool\"}",
            )
            .unwrap_or(0);
        assert_eq!(counted, dropped, "{text}");
    }
    held.abort();
    Ok(Timings {
        baseline,
        shipping,
        stalled,
        stored: stored_total,
    })
}
