//! The ClickHouse schema of access logs, applied when the writer starts.
//!
//! The SQL runs on the old server this project's machines have (18.16) and on a current one:
//! no `DateTime64`, no `TTL`, no `LowCardinality`. Retention is by partition: rows are
//! partitioned by `(date, retention_days)` and the control plane drops whole partitions whose
//! `date + retention_days` has passed. The order key serves the queries: one organization's
//! service, newest first, in a time range. Versions are recorded in the `schema_migrations`
//! table the node agents' log shipper also uses (component `access_logs`).

use clickhouse::Client;

/// The table, in the configured database.
pub const TABLE: &str = "access_logs";

const COMPONENT: &str = "access_logs";

/// Versioned steps of this component's schema.
const MIGRATIONS: [(u32, &str); 1] = [(
    1,
    "CREATE TABLE IF NOT EXISTS {db}.access_logs (
        date Date,
        ts_ns Int64,
        row_id UInt64,
        organization_id String,
        project_id String,
        environment_id String,
        service_id String,
        deployment_id String,
        route_id String,
        method String,
        host String,
        path String,
        status UInt16,
        duration_us UInt64,
        request_bytes UInt64,
        response_bytes UInt64,
        upstream String,
        client_ip String,
        request_id String,
        retention_days UInt16
    ) ENGINE = ReplacingMergeTree()
    PARTITION BY (date, retention_days)
    ORDER BY (organization_id, service_id, ts_ns, row_id)",
)];

pub use logstore::SchemaError;

/// Creates the database and applies this component's steps not applied yet.
pub async fn ensure_schema(server: &Client, database: &str) -> Result<(), SchemaError> {
    logstore::apply(server, database, COMPONENT, &MIGRATIONS).await
}
