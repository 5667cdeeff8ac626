//! The `access_log_clickhouse` section of the proxy's configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where and how access log rows are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessLogSettings {
    /// ClickHouse's HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub clickhouse_url: String,
    /// The database of the log store (shared with container logs).
    pub database: String,
    /// A batch is inserted when it has this many rows...
    pub batch_max_rows: usize,
    /// ...or when its first row is this old.
    pub batch_max_delay_ms: u64,
    /// Rows waiting in memory; past it rows are dropped (and counted), never waited for.
    pub queue_capacity: usize,
    /// Wait after a failed insert before trying the same batch again.
    pub retry_interval_ms: u64,
    /// Time one insert may take before it counts as failed.
    pub insert_timeout_ms: u64,
    /// Retention of rows whose organization is not listed below.
    pub default_retention_days: u16,
    /// Retention by organization id (the organization's plan).
    pub retention_days_by_organization: BTreeMap<String, u16>,
    /// Store the query string with the path. Off by default: query strings carry tokens,
    /// e-mail addresses and search terms more often than paths do.
    pub include_query: bool,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        Self {
            clickhouse_url: "http://127.0.0.1:8123".into(),
            database: "stackpad_logs".into(),
            batch_max_rows: 10_000,
            batch_max_delay_ms: 1_000,
            queue_capacity: 100_000,
            retry_interval_ms: 2_000,
            insert_timeout_ms: 10_000,
            default_retention_days: 14,
            retention_days_by_organization: BTreeMap::new(),
            include_query: false,
        }
    }
}

impl AccessLogSettings {
    /// Refuses values the writer cannot work with: `(key, reason)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let err = |key, reason: &str| Err((key, reason.to_owned()));
        if !self.clickhouse_url.starts_with("http://")
            && !self.clickhouse_url.starts_with("https://")
        {
            return err(
                "access_log_clickhouse.clickhouse_url",
                "must start with http:// or https://",
            );
        }
        if self.database.is_empty()
            || !self
                .database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return err(
                "access_log_clickhouse.database",
                "must be letters, digits and _",
            );
        }
        if self.batch_max_rows == 0 {
            return err("access_log_clickhouse.batch_max_rows", "must be at least 1");
        }
        if self.queue_capacity < self.batch_max_rows {
            return err(
                "access_log_clickhouse.queue_capacity",
                "must be at least batch_max_rows",
            );
        }
        for (key, v) in [
            (
                "access_log_clickhouse.batch_max_delay_ms",
                self.batch_max_delay_ms,
            ),
            (
                "access_log_clickhouse.retry_interval_ms",
                self.retry_interval_ms,
            ),
            (
                "access_log_clickhouse.insert_timeout_ms",
                self.insert_timeout_ms,
            ),
        ] {
            if v == 0 {
                return err(key, "must be above 0");
            }
        }
        if self.default_retention_days == 0
            || self
                .retention_days_by_organization
                .values()
                .any(|d| *d == 0)
        {
            return err(
                "access_log_clickhouse.default_retention_days",
                "retention must be at least 1 day",
            );
        }
        Ok(())
    }

    pub fn retention_days(&self, organization_id: &str) -> u16 {
        self.retention_days_by_organization
            .get(organization_id)
            .copied()
            .unwrap_or(self.default_retention_days)
    }

    pub(super) fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_key() {
        AccessLogSettings::default().validate().unwrap();
        let bad = AccessLogSettings {
            queue_capacity: 1,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().0,
            "access_log_clickhouse.queue_capacity"
        );
        let bad = AccessLogSettings {
            clickhouse_url: "127.0.0.1:8123".into(),
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().0,
            "access_log_clickhouse.clickhouse_url"
        );
        let s: AccessLogSettings = serde_json::from_str(
            r#"{"clickhouse_url":"http://ch:8123","retention_days_by_organization":{"org-a":90}}"#,
        )
        .unwrap();
        assert_eq!((s.retention_days("org-a"), s.retention_days("b")), (90, 14));
        assert!(serde_json::from_str::<AccessLogSettings>(r#"{"url":"x"}"#).is_err());
    }
}
