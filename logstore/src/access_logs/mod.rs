//! The `access_logs` table: written by the proxy, read by the control plane's access log
//! search and retention job.
//!
//! The SQL runs on the old server this project's machines have (18.16) and on a current one:
//! no `DateTime64`, no `TTL`, no `LowCardinality`. Retention is by partition: rows are
//! partitioned by `(date, retention_days)` and the control plane drops whole partitions whose
//! `date + retention_days` has passed. The order key serves the queries: one organization's
//! service, newest first, in a time range. Versions are recorded in the `schema_migrations`
//! table the node agents' log shipper also uses (component `access_logs`).

mod row;

pub use row::AccessRow;

use clickhouse::Client;

use crate::SchemaError;

/// The table, in the configured database.
pub const TABLE: &str = "access_logs";

/// The component its schema steps are recorded under in `schema_migrations`.
pub const COMPONENT: &str = "access_logs";

/// Column names readers query by (the writer's [`AccessRow`] fields carry the same names).
pub mod columns {
    pub const DATE: &str = "date";
    pub const TS_NS: &str = "ts_ns";
    /// Equal ids are the same request: readers take `LIMIT 1 BY row_id`.
    pub const ROW_ID: &str = "row_id";
    pub const ORGANIZATION_ID: &str = "organization_id";
    pub const PROJECT_ID: &str = "project_id";
    pub const ENVIRONMENT_ID: &str = "environment_id";
    pub const SERVICE_ID: &str = "service_id";
    pub const DEPLOYMENT_ID: &str = "deployment_id";
    pub const ROUTE_ID: &str = "route_id";
    pub const METHOD: &str = "method";
    pub const HOST: &str = "host";
    pub const PATH: &str = "path";
    pub const STATUS: &str = "status";
    pub const DURATION_US: &str = "duration_us";
    pub const REQUEST_BYTES: &str = "request_bytes";
    pub const RESPONSE_BYTES: &str = "response_bytes";
    pub const UPSTREAM: &str = "upstream";
    pub const CLIENT_IP: &str = "client_ip";
    pub const REQUEST_ID: &str = "request_id";
    pub const RETENTION_DAYS: &str = "retention_days";
}

/// Versioned steps of this table's schema.
pub const MIGRATIONS: [(u32, &str); 1] = [(
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

/// Creates the database and applies this table's steps not applied yet.
pub async fn ensure_schema(server: &Client, database: &str) -> Result<(), SchemaError> {
    crate::apply(server, database, COMPONENT, &MIGRATIONS).await
}
