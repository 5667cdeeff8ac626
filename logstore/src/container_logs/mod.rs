//! The `container_logs` table: written by the node agents' log shipper, read by the control
//! plane's log search and retention job.
//!
//! The SQL runs on the old server this project's machines have (18.16) and on a current one:
//! no `DateTime64`, no `TTL`, no `LowCardinality`. Retention is by partition instead of `TTL`:
//! rows are partitioned by `(date, retention_days)`, and the control plane's retention job
//! (`control::logretention`, one per cluster) drops whole partitions whose
//! `date + retention_days` has passed, which is cheap on any version.

mod row;

pub use row::{LogRow, STREAM_STDERR, STREAM_STDOUT};

use clickhouse::Client;

use crate::SchemaError;

/// The table, in the configured database.
pub const TABLE: &str = "container_logs";

/// The component its schema steps are recorded under in `schema_migrations`.
pub const COMPONENT: &str = "container_logs";

/// Column names readers query by (the writers' [`LogRow`] fields carry the same names).
pub mod columns {
    pub const DATE: &str = "date";
    pub const TS_NS: &str = "ts_ns";
    /// Equal ids are the same line: readers take `LIMIT 1 BY line_id`.
    pub const LINE_ID: &str = "line_id";
    pub const ORGANIZATION_ID: &str = "organization_id";
    pub const PROJECT_ID: &str = "project_id";
    pub const ENVIRONMENT_ID: &str = "environment_id";
    pub const SERVICE_ID: &str = "service_id";
    pub const DEPLOYMENT_ID: &str = "deployment_id";
    pub const CONTAINER_ID: &str = "container_id";
    pub const NODE_ID: &str = "node_id";
    pub const STREAM: &str = "stream";
    pub const TRUNCATED: &str = "truncated";
    pub const LINE: &str = "line";
    pub const RETENTION_DAYS: &str = "retention_days";
}

/// Versioned steps of this table's schema; applied ones are recorded in `schema_migrations`.
pub const MIGRATIONS: [(u32, &str); 1] = [(
    1,
    "CREATE TABLE IF NOT EXISTS {db}.container_logs (
        date Date,
        ts_ns Int64,
        line_id UInt64,
        organization_id String,
        project_id String,
        environment_id String,
        service_id String,
        deployment_id String,
        container_id String,
        node_id String,
        stream UInt8,
        truncated UInt8,
        line String,
        retention_days UInt16
    ) ENGINE = ReplacingMergeTree()
    PARTITION BY (date, retention_days)
    ORDER BY (organization_id, service_id, ts_ns, line_id)",
)];

/// Creates the database and applies this table's steps not applied yet.
pub async fn ensure_schema(server: &Client, database: &str) -> Result<(), SchemaError> {
    crate::apply(server, database, COMPONENT, &MIGRATIONS).await
}
