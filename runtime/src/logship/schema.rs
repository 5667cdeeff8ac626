//! The ClickHouse schema of container logs, applied at start.
//!
//! The SQL runs on the old server this project's machines have (18.16) and on a current one:
//! no `DateTime64`, no `TTL`, no `LowCardinality`. Retention is by partition instead of `TTL`:
//! rows are partitioned by `(date, retention_days)`, and the control plane's retention job
//! (`control::logretention`, one per cluster) drops whole partitions whose
//! `date + retention_days` has passed, which is cheap on any version.

use clickhouse::Client;

/// Versioned steps of this component's schema; applied ones are recorded in `schema_migrations`.
const MIGRATIONS: [(u32, &str); 1] = [(
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

const COMPONENT: &str = "container_logs";

pub use logstore::SchemaError;

/// Creates the database and applies this component's steps not applied yet.
pub async fn ensure_schema(server: &Client, database: &str) -> Result<(), SchemaError> {
    logstore::apply(server, database, COMPONENT, &MIGRATIONS).await
}
