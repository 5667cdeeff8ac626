//! The shipper's batching, retry, spool order, insert timeout and queue bound, on a recording
//! [`FakeInserter`] with paused time: every instant below is exact, in milliseconds since the
//! test started.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::fake::{Answer, FakeInserter};
use super::{ClickHouseShipper, ShipperConfig};
use crate::logs::{LogLabels, LogLine, LogSink, Stream};

/// A shipper on `inserter` with small batches and the default timing: batches of
/// `batch_max_lines` or 500 ms, retry after 2 s, inserts cut at 10 s.
fn shipper(
    inserter: &FakeInserter,
    spool: &tempfile::TempDir,
    configure: impl FnOnce(&mut ShipperConfig),
) -> ClickHouseShipper {
    let mut config = ShipperConfig {
        // Unused: the fake stands in for ClickHouse.
        clickhouse_url: "http://127.0.0.1:9".into(),
        spool_dir: spool.path().to_owned(),
        batch_max_lines: 2,
        queue_capacity: 100,
        ..ShipperConfig::default()
    };
    configure(&mut config);
    assert_eq!(config.batch_max_delay, Duration::from_millis(500));
    assert_eq!(config.retry_interval, Duration::from_secs(2));
    assert_eq!(config.insert_timeout, Duration::from_secs(10));
    ClickHouseShipper::start_with(config, inserter.clone()).unwrap()
}

fn ship(shipper: &ClickHouseShipper, lines: &[&str]) {
    let lines: Vec<LogLine> = lines
        .iter()
        .map(|text| LogLine {
            timestamp_nanos: 1,
            stream: Stream::Stdout,
            line: text.as_bytes().to_vec(),
            truncated: false,
        })
        .collect();
    shipper.ship_lines(&LogLabels::default(), &lines);
}

/// The attempts so far as (milliseconds since `start`, lines, answer).
fn attempts(inserter: &FakeInserter, start: Instant) -> Vec<(u128, Vec<String>, Answer)> {
    inserter
        .attempts()
        .into_iter()
        .map(|a| ((a.at - start).as_millis(), a.lines, a.answer))
        .collect()
}

fn lines(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

async fn at(start: Instant, ms: u64) {
    sleep_until(start + Duration::from_millis(ms)).await;
}

fn stat(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[tokio::test(start_paused = true)]
async fn a_batch_goes_when_full_or_when_its_first_line_is_batch_max_delay_old() {
    let start = Instant::now();
    let spool = tempfile::tempdir().unwrap();
    let inserter = FakeInserter::default();
    let shipper = shipper(&inserter, &spool, |c| c.batch_max_lines = 3);

    ship(&shipper, &["a", "b", "c"]);
    at(start, 1).await;
    assert_eq!(
        attempts(&inserter, start),
        [(0, lines(&["a", "b", "c"]), Answer::Ok)],
        "a full batch goes at once"
    );

    ship(&shipper, &["d"]);
    at(start, 300).await;
    ship(&shipper, &["e"]);
    at(start, 500).await;
    assert_eq!(
        inserter.attempts().len(),
        1,
        "a batch that is neither full nor 500 ms old waits"
    );
    at(start, 502).await;
    assert_eq!(
        attempts(&inserter, start)[1..],
        [(501, lines(&["d", "e"]), Answer::Ok)],
        "500 ms after its first line"
    );
    assert_eq!(stat(&shipper.stats().lines_shipped), 5);
    assert_eq!(stat(&shipper.stats().batches_failed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_insert_spools_the_batch_and_the_next_attempt_waits_retry_interval() {
    let start = Instant::now();
    let spool = tempfile::tempdir().unwrap();
    let inserter = FakeInserter::scripted(&[Answer::Fail, Answer::Fail]);
    let shipper = shipper(&inserter, &spool, |_| {});

    ship(&shipper, &["a", "b"]);
    at(start, 1).await;
    assert_eq!(stat(&shipper.stats().batches_failed), 1);
    assert_eq!(shipper.spool_lines(), 2, "the failed batch is on disk");
    let files: Vec<_> = std::fs::read_dir(spool.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, ["00000000000000000000-2.batch"]);

    at(start, 1999).await;
    assert_eq!(
        inserter.attempts().len(),
        1,
        "no retry before retry_interval"
    );
    at(start, 4001).await;
    assert_eq!(
        attempts(&inserter, start),
        [
            (0, lines(&["a", "b"]), Answer::Fail),
            (2000, lines(&["a", "b"]), Answer::Fail),
            (4000, lines(&["a", "b"]), Answer::Ok),
        ]
    );
    assert_eq!(stat(&shipper.stats().batches_failed), 2);
    assert_eq!(stat(&shipper.stats().lines_shipped), 2);
    assert_eq!((shipper.spool_lines(), shipper.spool_bytes()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn after_recovery_the_spool_goes_in_order_before_new_lines() {
    let start = Instant::now();
    let spool = tempfile::tempdir().unwrap();
    let inserter = FakeInserter::scripted(&[Answer::Fail]);
    let shipper = shipper(&inserter, &spool, |_| {});

    ship(&shipper, &["a", "b"]);
    at(start, 1000).await;
    ship(&shipper, &["c", "d"]);
    at(start, 1001).await;
    assert_eq!(
        inserter.attempts().len(),
        1,
        "while the spool holds data, a new batch queues behind it"
    );
    assert_eq!(shipper.spool_lines(), 4);

    // Past retry_at (2000) and before the sender's idle wake-up (3000): the next batch brings
    // the spool out first.
    at(start, 2500).await;
    ship(&shipper, &["e", "f"]);
    at(start, 2501).await;
    assert_eq!(
        attempts(&inserter, start),
        [
            (0, lines(&["a", "b"]), Answer::Fail),
            (2500, lines(&["a", "b"]), Answer::Ok),
            (2500, lines(&["c", "d"]), Answer::Ok),
            (2500, lines(&["e", "f"]), Answer::Ok),
        ]
    );
    assert_eq!(stat(&shipper.stats().lines_shipped), 6);
    assert_eq!((shipper.spool_lines(), shipper.spool_bytes()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_insert_that_hangs_is_cut_at_insert_timeout_and_counts_as_failed() {
    let start = Instant::now();
    let spool = tempfile::tempdir().unwrap();
    let inserter = FakeInserter::scripted(&[Answer::Hang]);
    let shipper = shipper(&inserter, &spool, |_| {});

    ship(&shipper, &["a", "b"]);
    at(start, 9999).await;
    assert_eq!(stat(&shipper.stats().batches_failed), 0, "still waiting");
    assert_eq!(shipper.spool_lines(), 0);
    at(start, 10_001).await;
    assert_eq!(stat(&shipper.stats().batches_failed), 1);
    assert_eq!(shipper.spool_lines(), 2, "the cut batch is spooled");

    // Retried retry_interval after the cut.
    at(start, 12_001).await;
    assert_eq!(
        attempts(&inserter, start),
        [
            (0, lines(&["a", "b"]), Answer::Hang),
            (12_000, lines(&["a", "b"]), Answer::Ok),
        ]
    );
    assert_eq!(stat(&shipper.stats().lines_shipped), 2);
    assert_eq!(shipper.spool_lines(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_and_counts_while_the_sender_waits() {
    let start = Instant::now();
    let spool = tempfile::tempdir().unwrap();
    let inserter = FakeInserter::scripted(&[Answer::Hang]);
    let shipper = shipper(&inserter, &spool, |c| c.queue_capacity = 2);

    // 1,2 hang in the insert; 3,4 wait for the sender; 5,6 are the collector's next batch; 7,8
    // fill the queue; 9 finds it full.
    for (ms, pair) in (1..).zip([["1", "2"], ["3", "4"], ["5", "6"]]) {
        ship(&shipper, &pair);
        at(start, ms).await;
    }
    ship(&shipper, &["7", "8", "9"]);
    let stats = shipper.stats();
    assert_eq!(stat(&stats.lines_received), 9);
    assert_eq!(stat(&stats.lines_dropped_queue), 1);
    assert_eq!(shipper.queue_lines(), 2);

    at(start, 12_001).await;
    let sent: Vec<_> = attempts(&inserter, start)
        .into_iter()
        .map(|(ms, lines, _)| (ms, lines))
        .collect();
    assert_eq!(
        sent,
        [
            (0, lines(&["1", "2"])),
            (12_000, lines(&["1", "2"])),
            (12_000, lines(&["3", "4"])),
            (12_000, lines(&["5", "6"])),
            (12_000, lines(&["7", "8"])),
        ]
    );
    assert_eq!(stat(&stats.lines_shipped), 8);
    assert_eq!(stat(&stats.lines_dropped_queue), 1, "nothing else lost");
    assert_eq!(stat(&stats.batches_failed), 1);
}
