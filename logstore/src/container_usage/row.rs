//! The row one container's sample becomes.

use serde::{Deserialize, Serialize};

/// One row of `container_usage` (column order matters: RowBinary follows it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct UsageRow {
    /// Days since 1970-01-01 (ClickHouse `Date`) of the sample, the partition key with
    /// `retention_days`.
    pub date: u16,
    /// When the sample was taken, nanoseconds since the epoch.
    pub ts_ns: i64,
    pub organization_id: String,
    pub project_id: String,
    pub environment_id: String,
    pub service_id: String,
    pub deployment_id: String,
    pub container_id: String,
    pub node_id: String,
    /// Time since the container's previous sample.
    pub interval_ms: u32,
    /// CPU time the container's cgroup used during the interval.
    pub cpu_ns: u64,
    /// Memory in use by the container's cgroup at the sample.
    pub memory_bytes: u64,
    /// The container's memory limit, 0 when it has none.
    pub memory_limit_bytes: u64,
    /// Bytes into / out of the container's network namespace during the interval.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub retention_days: u16,
}
