//! The `container_usage` table: one row per running container per sampling interval, written
//! by the node agents' usage sampler (`runtime::usage`), read by the control plane's service
//! metrics (`GET /services/{id}/metrics`) and expired by its retention job.
//!
//! A row carries what the container used *during* its interval (CPU nanoseconds, bytes in and
//! out of its network namespace) and its memory at the sample, so a reader sums rows into time
//! buckets without knowing about counter resets (a restarted container's counters start again
//! at 0: the sampler sees that and counts from 0). Same rules as the other tables: SQL that runs
//! on ClickHouse 18.16 and current servers, retention by partition `(date, retention_days)`.

mod row;

pub use row::UsageRow;

use clickhouse::Client;

use crate::SchemaError;

/// The table, in the configured database.
pub const TABLE: &str = "container_usage";

/// The component its schema steps are recorded under in `schema_migrations`.
pub const COMPONENT: &str = "container_usage";

/// Column names readers query by (the writer's [`UsageRow`] fields carry the same names).
pub mod columns {
    pub const DATE: &str = "date";
    /// The sample's time, the end of its interval.
    pub const TS_NS: &str = "ts_ns";
    pub const ORGANIZATION_ID: &str = "organization_id";
    pub const PROJECT_ID: &str = "project_id";
    pub const ENVIRONMENT_ID: &str = "environment_id";
    pub const SERVICE_ID: &str = "service_id";
    pub const DEPLOYMENT_ID: &str = "deployment_id";
    pub const CONTAINER_ID: &str = "container_id";
    pub const NODE_ID: &str = "node_id";
    /// Length of the interval the deltas cover.
    pub const INTERVAL_MS: &str = "interval_ms";
    /// CPU time used during the interval.
    pub const CPU_NS: &str = "cpu_ns";
    /// Memory in use at the sample.
    pub const MEMORY_BYTES: &str = "memory_bytes";
    /// Memory limit of the container (0: none).
    pub const MEMORY_LIMIT_BYTES: &str = "memory_limit_bytes";
    /// Bytes received by the container during the interval.
    pub const RX_BYTES: &str = "rx_bytes";
    /// Bytes sent by the container during the interval.
    pub const TX_BYTES: &str = "tx_bytes";
    pub const RETENTION_DAYS: &str = "retention_days";
}

/// Versioned steps of this table's schema.
pub const MIGRATIONS: [(u32, &str); 1] = [(
    1,
    "CREATE TABLE IF NOT EXISTS {db}.container_usage (
        date Date,
        ts_ns Int64,
        organization_id String,
        project_id String,
        environment_id String,
        service_id String,
        deployment_id String,
        container_id String,
        node_id String,
        interval_ms UInt32,
        cpu_ns UInt64,
        memory_bytes UInt64,
        memory_limit_bytes UInt64,
        rx_bytes UInt64,
        tx_bytes UInt64,
        retention_days UInt16
    ) ENGINE = MergeTree()
    PARTITION BY (date, retention_days)
    ORDER BY (organization_id, service_id, ts_ns)",
)];

/// Creates the database and applies this table's steps not applied yet.
pub async fn ensure_schema(server: &Client, database: &str) -> Result<(), SchemaError> {
    crate::apply(server, database, COMPONENT, &MIGRATIONS).await
}
