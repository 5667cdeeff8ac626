//! Ships every container's log lines to ClickHouse: the [`LogSink`](crate::logs::LogSink) the
//! node agent hands lines to.
//!
//! `ship` never blocks the container: it puts the line on a bounded in-memory queue (a full
//! queue drops the line and counts it). A background task batches lines (by count and by time)
//! and inserts them. When ClickHouse does not answer, batches go to a bounded on-disk
//! [`Spool`](spool::Spool) and are sent in order once it is back; while the spool holds data,
//! new batches queue behind it so order is kept. When the spool is full the oldest segments are
//! dropped and counted. Every line carries an id assigned once, so a batch sent twice (sent,
//! then the answer lost) yields duplicates only in storage: queries read `LIMIT 1 BY line_id`.
//!
//! The sender reaches ClickHouse through the `Inserter` seam (`inserter.rs`); its timing
//! (batch delay, insert timeout, retry) is on tokio's clock.

#[cfg(test)]
mod fake;
mod inserter;
mod metrics;
mod shipper;
mod spool;
#[cfg(test)]
mod tests;

pub use logstore::SchemaError;
pub use logstore::container_logs::{LogRow, STREAM_STDERR, STREAM_STDOUT, ensure_schema};
pub use shipper::{ClickHouseShipper, ShipperConfig, ShipperStats};
pub use spool::{Spool, SpoolError};
