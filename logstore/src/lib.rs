//! The ClickHouse log store's contract between its writers (the node agent writes
//! [`container_logs`] and [`container_usage`], the proxy [`access_logs`], the control plane
//! [`build_logs`]) and its reader (the control plane): each table's name, row type, column
//! names and versioned schema steps. [`apply`] applies the steps not applied yet and records
//! them in `<database>.schema_migrations`; idempotent, and safe when two writers start at once
//! (every step is `IF NOT EXISTS`).

pub mod access_logs;
pub mod build_logs;
pub mod container_logs;
pub mod container_usage;

use clickhouse::Client;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("invalid ClickHouse database name {0:?}: use letters, digits and _")]
    DatabaseName(String),
    #[error("ClickHouse schema step {version} of {component}: {source}")]
    Step {
        component: &'static str,
        version: u32,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("ClickHouse: {0}")]
    Query(#[from] clickhouse::error::Error),
}

/// Creates `database` and applies the `steps` of `component` not applied yet; `{db}` in a
/// step's SQL stands for the database.
pub async fn apply(
    server: &Client,
    database: &str,
    component: &'static str,
    steps: &[(u32, &str)],
) -> Result<(), SchemaError> {
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
    for &(version, sql) in steps {
        let applied: u64 = server
            .query(&format!(
                "SELECT count() FROM {database}.schema_migrations WHERE component = ? AND version = ?"
            ))
            .bind(component)
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
            .map_err(|source| SchemaError::Step {
                component,
                version,
                source,
            })?;
        server
            .query(&format!(
                "INSERT INTO {database}.schema_migrations (component, version, applied_at) \
                 VALUES (?, ?, now())"
            ))
            .bind(component)
            .bind(version)
            .execute()
            .await?;
    }
    Ok(())
}
