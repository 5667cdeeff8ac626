//! The shipper's series on the node's `/metrics`: lines in, shipped, dropped (by where), cut,
//! failed inserts, and what waits in memory and on disk.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::shipper::ClickHouseShipper;

/// Appends the shipper's series to `out`.
pub(super) fn render(shipper: &ClickHouseShipper, out: &mut String) {
    let stats = shipper.stats();
    let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    let mut series = |name: &str, kind: &str, help: &str, values: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in values {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    series(
        "stackpad_node_log_lines_received_total",
        "counter",
        "Container log lines handed to the shipper.",
        &[("", load(&stats.lines_received))],
    );
    series(
        "stackpad_node_log_lines_shipped_total",
        "counter",
        "Log lines inserted into ClickHouse.",
        &[("", load(&stats.lines_shipped))],
    );
    series(
        "stackpad_node_log_lines_dropped_total",
        "counter",
        "Log lines lost: the in-memory queue was full (queue) or the disk spool was (spool).",
        &[
            ("{reason=\"queue\"}", load(&stats.lines_dropped_queue)),
            ("{reason=\"spool\"}", shipper.lines_dropped_spool()),
        ],
    );
    series(
        "stackpad_node_log_lines_truncated_total",
        "counter",
        "Log lines cut at the line size limit.",
        &[("", load(&stats.lines_truncated))],
    );
    series(
        "stackpad_node_log_insert_failures_total",
        "counter",
        "ClickHouse inserts that failed or timed out (their lines were spooled).",
        &[("", load(&stats.batches_failed))],
    );
    series(
        "stackpad_node_log_queue_lines",
        "gauge",
        "Log lines waiting in memory for the sender.",
        &[("", shipper.queue_lines())],
    );
    series(
        "stackpad_node_log_spool_lines",
        "gauge",
        "Log lines waiting on disk for ClickHouse.",
        &[("", shipper.spool_lines())],
    );
    series(
        "stackpad_node_log_spool_bytes",
        "gauge",
        "Size of the on-disk spool.",
        &[("", shipper.spool_bytes())],
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::logs::{LogLabels, LogLine, LogSink, Stream};
    use crate::logship::{ClickHouseShipper, ShipperConfig};

    #[tokio::test]
    async fn renders_every_series_with_drops_by_reason() {
        let dir = tempfile::tempdir().unwrap();
        let shipper = ClickHouseShipper::start(ShipperConfig {
            // Nothing listens there: lines stay queued or spooled.
            clickhouse_url: "http://127.0.0.1:9".into(),
            spool_dir: dir.path().to_owned(),
            batch_max_lines: 1,
            queue_capacity: 1,
            batch_max_delay: Duration::from_secs(60),
            ..ShipperConfig::default()
        })
        .unwrap();
        let line = LogLine {
            timestamp_nanos: 1,
            stream: Stream::Stdout,
            line: b"x".to_vec(),
            truncated: false,
        };
        for _ in 0..3 {
            shipper.ship(&LogLabels::default(), &line);
        }
        let mut text = String::new();
        shipper.render_metrics(&mut text);
        assert!(
            text.contains("stackpad_node_log_lines_received_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE stackpad_node_log_lines_dropped_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("stackpad_node_log_lines_dropped_total{reason=\"queue\"} "),
            "{text}"
        );
        assert!(
            text.contains("stackpad_node_log_lines_dropped_total{reason=\"spool\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("stackpad_node_log_spool_bytes "), "{text}");
        // With a queue of one and no sender running yet, two of three were dropped.
        assert_eq!(
            shipper
                .stats()
                .lines_dropped_queue
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
    }
}
