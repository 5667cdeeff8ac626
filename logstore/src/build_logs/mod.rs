//! The `build_logs` table: every line a build printed, written by the control plane while its
//! pipeline watches the build (`control::buildlogs`), read by the control plane's build log
//! API (`GET /deployments/{id}/build-logs`).
//!
//! Same rules as the other tables: SQL that runs on ClickHouse 18.16 (no `DateTime64`, `TTL`,
//! `LowCardinality`), retention by partition `(date, retention_days)`. A line's number is its
//! place in the build's log (buildd replays a build's events from its start, so a watch taken
//! again after a lost connection writes the same numbers): equal `(deployment_id, line_number)`
//! are the same line, and readers take `LIMIT 1 BY line_number` within one deployment.

mod row;

pub use row::{BuildLogRow, STREAM_STDERR, STREAM_STDOUT};

use clickhouse::Client;

use crate::SchemaError;

/// The table, in the configured database.
pub const TABLE: &str = "build_logs";

/// The component its schema steps are recorded under in `schema_migrations`.
pub const COMPONENT: &str = "build_logs";

/// Column names readers query by (the writer's [`BuildLogRow`] fields carry the same names).
pub mod columns {
    pub const DATE: &str = "date";
    pub const TS_NS: &str = "ts_ns";
    pub const ORGANIZATION_ID: &str = "organization_id";
    pub const PROJECT_ID: &str = "project_id";
    pub const ENVIRONMENT_ID: &str = "environment_id";
    pub const SERVICE_ID: &str = "service_id";
    pub const DEPLOYMENT_ID: &str = "deployment_id";
    pub const BUILD_ID: &str = "build_id";
    /// The line's place in its build's log, from 1; the page cursor.
    pub const LINE_NUMBER: &str = "line_number";
    pub const STEP: &str = "step";
    pub const STREAM: &str = "stream";
    pub const LINE: &str = "line";
    pub const RETENTION_DAYS: &str = "retention_days";
}

/// Versioned steps of this table's schema.
pub const MIGRATIONS: [(u32, &str); 1] = [(
    1,
    "CREATE TABLE IF NOT EXISTS {db}.build_logs (
        date Date,
        ts_ns Int64,
        organization_id String,
        project_id String,
        environment_id String,
        service_id String,
        deployment_id String,
        build_id String,
        line_number UInt32,
        step String,
        stream UInt8,
        line String,
        retention_days UInt16
    ) ENGINE = ReplacingMergeTree()
    PARTITION BY (date, retention_days)
    ORDER BY (organization_id, deployment_id, line_number)",
)];

/// Creates the database and applies this table's steps not applied yet.
pub async fn ensure_schema(server: &Client, database: &str) -> Result<(), SchemaError> {
    crate::apply(server, database, COMPONENT, &MIGRATIONS).await
}
