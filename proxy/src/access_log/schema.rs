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

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("invalid ClickHouse database name {0:?}: use letters, digits and _")]
    DatabaseName(String),
    #[error("ClickHouse schema step {version} of {COMPONENT}: {source}")]
    Step {
        version: u32,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("ClickHouse: {0}")]
    Query(#[from] clickhouse::error::Error),
}

/// Creates the database and applies the steps not applied yet (idempotent; two proxies
/// starting at once both succeed).
pub async fn ensure_schema(server: &Client, database: &str) -> Result<(), SchemaError> {
    if database.is_empty()
        || !database
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(SchemaError::DatabaseName(database.to_owned()));
    }
    server
        .query(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
        .execute()
        .await?;
    server
        .query(&format!(
            "CREATE TABLE IF NOT EXISTS {database}.schema_migrations \
             (component String, version UInt32, applied_at DateTime) \
             ENGINE = MergeTree() ORDER BY (component, version)"
        ))
        .execute()
        .await?;
    for (version, sql) in MIGRATIONS {
        let applied: u64 = server
            .query(&format!(
                "SELECT count() FROM {database}.schema_migrations WHERE component = ? AND version = ?"
            ))
            .bind(COMPONENT)
            .bind(version)
            .fetch_one()
            .await?;
        if applied > 0 {
            continue;
        }
        server
            .query(&sql.replace("{db}", database))
            .execute()
            .await
            .map_err(|source| SchemaError::Step { version, source })?;
        server
            .query(&format!(
                "INSERT INTO {database}.schema_migrations (component, version, applied_at) \
                 VALUES (?, ?, now())"
            ))
            .bind(COMPONENT)
            .bind(version)
            .execute()
            .await?;
    }
    Ok(())
}
