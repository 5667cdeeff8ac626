//! The retention job of the log store: drops the partitions of `container_logs` and
//! `container_usage` (node agents), `access_logs` (proxies) and `build_logs` (this control
//! plane) whose retention has passed.
//!
//! Both tables are partitioned by `(date, retention_days)`, the writer stamping each row with
//! its organization's retention, so expiry needs no knowledge of organizations: a partition
//! goes when `date + retention_days < today`. Dropping a partition is cheap and works on
//! ClickHouse 18.16, which has no `TTL`. The job runs here, in the control plane, because
//! there is one control plane per cluster (and many node agents and proxies, which would all
//! issue the same drops) and it already holds the log store's address.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::sync::watch;

/// The tables whose partitions expire.
pub const TABLES: [&str; 4] = [
    logstore::container_logs::TABLE,
    logstore::access_logs::TABLE,
    logstore::build_logs::TABLE,
    logstore::container_usage::TABLE,
];

#[derive(Debug, thiserror::Error)]
#[error("log retention (ClickHouse at {url}, table {table}): {source}")]
pub struct RetentionError {
    url: String,
    table: String,
    #[source]
    source: clickhouse::error::Error,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Part {
    partition_id: String,
    partition: String,
    /// Days since 1970-01-01.
    min_date: u16,
}

/// Whether a partition of day `date` as `system.parts` prints it (`('2026-11-27',14)`) has
/// outlived its retention on `today` (days since the epoch). Partitions of another shape are
/// never dropped.
pub fn expired(date: u16, partition: &str, today: u16) -> bool {
    let days = partition
        .trim()
        .strip_suffix(')')
        .and_then(|p| p.rsplit_once(','))
        .and_then(|(_, d)| d.trim().parse::<u16>().ok());
    days.is_some_and(|days| u32::from(date) + u32::from(days) < u32::from(today))
}

/// Days since 1970-01-01 now.
pub fn today() -> u16 {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 86_400;
    u16::try_from(days).unwrap_or(u16::MAX)
}

/// Drops expired partitions of the log store.
#[derive(Clone)]
pub struct Retention {
    client: clickhouse::Client,
    url: String,
    database: String,
}

impl std::fmt::Debug for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retention")
            .field("url", &self.url)
            .field("database", &self.database)
            .finish()
    }
}

impl Retention {
    pub fn new(url: &str, database: &str) -> Self {
        Self {
            client: clickhouse::Client::default()
                .with_url(url)
                .with_validation(false),
            url: url.to_owned(),
            database: database.to_owned(),
        }
    }

    /// One pass over [`TABLES`] on `today`; returns the partitions dropped per table. A table
    /// that does not exist yet has nothing to drop.
    pub async fn expire(&self, today: u16) -> Result<Vec<(&'static str, usize)>, RetentionError> {
        let mut dropped = Vec::new();
        for table in TABLES {
            let error = |source| RetentionError {
                url: self.url.clone(),
                table: table.to_owned(),
                source,
            };
            let parts: Vec<Part> = self
                .client
                .query(
                    // Every part of a partition has the same date: it is in the key.
                    "SELECT DISTINCT partition_id, partition, min_date \
                     FROM system.parts WHERE database = ? AND table = ? AND active",
                )
                .bind(&self.database)
                .bind(table)
                .fetch_all()
                .await
                .map_err(error)?;
            let mut n = 0;
            for part in parts {
                if !expired(part.min_date, &part.partition, today) {
                    continue;
                }
                self.client
                    .query(&format!(
                        "ALTER TABLE {}.{table} DROP PARTITION ID ?",
                        self.database
                    ))
                    .bind(&part.partition_id)
                    .execute()
                    .await
                    .map_err(error)?;
                n += 1;
            }
            dropped.push((table, n));
        }
        Ok(dropped)
    }

    /// Expires every `interval` until `shutdown` (failures are logged and retried at the next
    /// pass).
    pub async fn run(self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.expire(today()).await {
                Ok(dropped) => {
                    for (table, n) in dropped.into_iter().filter(|(_, n)| *n > 0) {
                        tracing::info!(table, partitions = n, "expired log partitions dropped");
                    }
                }
                Err(error) => tracing::warn!(%error, "log retention pass failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_expires_the_day_after_its_retention() {
        // 2026-11-27 is day 20_784.
        let p = "('2026-11-27',14)";
        assert!(!expired(20_784, p, 20_784 + 14));
        assert!(expired(20_784, p, 20_784 + 15));
        assert!(expired(20_784, "('2026-11-27', 1)", 20_786));
        assert!(!expired(20_784, "tuple()", 30_000));
        assert!(!expired(20_784, "20261127", 30_000));
        assert!(!expired(u16::MAX, "('x',65535)", u16::MAX));
    }
}
