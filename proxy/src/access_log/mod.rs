//! Access logs in ClickHouse: one row per request that matched a route (requests for unknown
//! hosts have no owner to show them to and get none), written to the same store as the
//! containers' logs (`<database>.access_logs`) so the control plane can query both. The path
//! is stored without its query string unless `include_query` is set: query strings carry
//! tokens and personal data more often than paths do.
//!
//! The request path never waits on ClickHouse: [`AccessLog::record`] puts the row on a bounded
//! channel (a full channel drops the row and counts it). A task on the admin runtime batches
//! rows (by count and by age), inserts them, and retries a failed batch until ClickHouse takes
//! it; while it retries, new rows wait in the channel and, once it is full, are dropped and
//! counted. Rows still queued when the process exits are lost: normally the last
//! `batch_max_delay_ms` of traffic, the whole queue during an outage.
//!
//! There is no disk spool, on purpose: access rows are observability, not billing; the proxy
//! shares the control node (and its network) with ClickHouse, so outages are short and the
//! channel (`queue_capacity` rows, ~300 bytes each) rides them out; the Prometheus counters
//! stay exact either way; and the ingress machine's disk is kept out of the request path's
//! failure modes. Container logs, which users need to debug a crash, keep their spool.
//!
//! Every row carries an id assigned once, so a batch sent twice (inserted, then the answer
//! lost) duplicates nothing for readers: the table is a `ReplacingMergeTree` and queries read
//! `LIMIT 1 BY row_id`. Retention is by partition, as for container logs: rows are partitioned
//! by `(date, retention_days)` (the organization's retention, see
//! [`AccessLogSettings::retention_days_by_organization`]) and the control plane's retention job
//! drops partitions whose time has passed.

mod row;
mod settings;
mod writer;

pub use logstore::SchemaError;
pub use logstore::access_logs::{TABLE, ensure_schema};
pub use row::{AccessEntry, AccessRow, MAX_PATH_BYTES};
pub use settings::AccessLogSettings;
pub use writer::{AccessLog, AccessLogStats};
