//! The shipper's series on the node's `/metrics`: lines in, shipped, dropped (by where), cut,
//! failed inserts, and what waits in memory and on disk; read at scrape time and encoded with
//! `prometheus-client`.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::shipper::ClickHouseShipper;

/// Appends the shipper's series to `out`.
pub(super) fn render(shipper: &ClickHouseShipper, out: &mut String) {
    let stats = shipper.stats();
    let counter = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    let mut registry = Registry::default();
    registry.register(
        "stackpad_node_log_lines_received",
        "Container log lines handed to the shipper",
        counter(load(&stats.lines_received)),
    );
    registry.register(
        "stackpad_node_log_lines_shipped",
        "Log lines inserted into ClickHouse",
        counter(load(&stats.lines_shipped)),
    );
    let dropped = Family::<[(&str, &str); 1], Counter>::default();
    dropped
        .get_or_create(&[("reason", "queue")])
        .inc_by(load(&stats.lines_dropped_queue));
    dropped
        .get_or_create(&[("reason", "spool")])
        .inc_by(shipper.lines_dropped_spool());
    registry.register(
        "stackpad_node_log_lines_dropped",
        "Log lines lost: the in-memory queue was full (queue) or the disk spool was (spool)",
        dropped,
    );
    registry.register(
        "stackpad_node_log_lines_truncated",
        "Log lines cut at the line size limit",
        counter(load(&stats.lines_truncated)),
    );
    registry.register(
        "stackpad_node_log_insert_failures",
        "ClickHouse inserts that failed or timed out (their lines were spooled)",
        counter(load(&stats.batches_failed)),
    );
    registry.register(
        "stackpad_node_log_queue_lines",
        "Log lines waiting in memory for the sender",
        gauge(shipper.queue_lines()),
    );
    registry.register(
        "stackpad_node_log_spool_lines",
        "Log lines waiting on disk for ClickHouse",
        gauge(shipper.spool_lines()),
    );
    registry.register(
        "stackpad_node_log_spool_bytes",
        "Size of the on-disk spool",
        gauge(shipper.spool_bytes()),
    );
    prometheus_text::encode(out, &registry).expect("writing to a String cannot fail");
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
