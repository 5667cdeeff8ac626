//! The row a build log line becomes.

use serde::{Deserialize, Serialize};

/// What the build step printed to its standard output.
pub const STREAM_STDOUT: u8 = 1;
/// Its standard error, and the build's own failure report.
pub const STREAM_STDERR: u8 = 2;

/// One row of `build_logs` (column order matters: RowBinary follows it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct BuildLogRow {
    /// Days since 1970-01-01 (ClickHouse `Date`) of the line, the partition key with
    /// `retention_days`.
    pub date: u16,
    /// When the build printed it, nanoseconds since the epoch.
    pub ts_ns: i64,
    pub organization_id: String,
    pub project_id: String,
    pub environment_id: String,
    pub service_id: String,
    pub deployment_id: String,
    /// buildd's build id (the deployment id today).
    pub build_id: String,
    /// Place in the build's log, from 1.
    pub line_number: u32,
    /// E.g. `clone`, `[build 3/5] RUN npm run build`, `result`.
    pub step: String,
    pub stream: u8,
    /// The text, secrets already redacted.
    pub line: String,
    pub retention_days: u16,
}
