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

/// Creates the database and applies the steps not applied yet.
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
