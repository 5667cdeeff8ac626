//! The ClickHouse schema of container logs, applied at start, and retention by partition.
//!
//! The SQL runs on the old server this project's machines have (18.16) and on a current one:
//! no `DateTime64`, no `TTL`, no `LowCardinality`. Retention is by partition instead of `TTL`:
//! rows are partitioned by `(date, retention_days)`, and [`expire_partitions`] drops whole
//! partitions whose `date + retention_days` has passed, which is cheap on any version.

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

/// Drops the partitions whose retention has passed on `today` (days since 1970-01-01); returns
/// how many were dropped.
pub async fn expire_partitions(
    server: &Client,
    database: &str,
    today: u16,
) -> Result<usize, SchemaError> {
    let partitions: Vec<String> = server
        .query(
            "SELECT DISTINCT partition FROM system.parts \
             WHERE database = ? AND table = 'container_logs' AND active",
        )
        .bind(database)
        .fetch_all()
        .await?;
    let mut dropped = 0;
    for partition in partitions {
        let Some((date, days)) = parse_partition(&partition) else {
            continue;
        };
        if u32::from(date) + u32::from(days) < u32::from(today) {
            server
                .query(&format!(
                    "ALTER TABLE {database}.container_logs DROP PARTITION (toDate({date}), {days})"
                ))
                .execute()
                .await?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// `('2026-11-27',14)` (as `system.parts` prints a tuple partition) -> (days since epoch, 14).
fn parse_partition(text: &str) -> Option<(u16, u16)> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (date, days) = inner.split_once(',')?;
    let date = date.trim().trim_matches('\'');
    let mut parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (parts.next()??, parts.next()??, parts.next()??);
    let since_epoch = days_from_civil(year, month, day);
    Some((u16::try_from(since_epoch).ok()?, days.trim().parse().ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_parse_as_system_parts_prints_them() {
        assert_eq!(parse_partition("('1970-01-02',7)"), Some((1, 7)));
        assert_eq!(parse_partition("('2026-11-27', 14)"), Some((20_784, 14)));
        assert_eq!(parse_partition("tuple()"), None);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
