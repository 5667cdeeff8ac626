//! What goes wrong with a service's backups, as events on the service and numbers on
//! `/metrics` (#14 items 7 and 8).
//!
//! The service's own timeline is `backup_events` with the service's id as subject (a backup's
//! and a restore's timelines use theirs); `GET /services/{id}/backups` answers it as `events`:
//! - `backup_failed`: a backup of the service failed (the backup's own timeline has the steps),
//!   or a scheduled run could not start one (no running container, an unreachable node);
//! - `backup_verification_failed`: its verification restore failed (why);
//! - `backup_missed`: the schedule passed without a backup: none completed for one interval
//!   plus a grace of half an interval (at most an hour) since the last one (or since the policy
//!   began), whatever the cause (the node down, every run failing, no scheduler running). One
//!   event per such stretch (`backup_policies.missed_at`, cleared once a backup completes);
//! - `wal_shipping_failed` / `wal_shipping_resumed`: a PostgreSQL's WAL could not be shipped
//!   (once when it starts failing, with the error), and later could again.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Backups;
use crate::store::{Store, StoreError};

/// The SQL condition "the policy `p`'s service missed its backup" (see the module doc), a
/// macro so that the statements using it stay static strings.
#[macro_export]
macro_rules! backup_missed_sql {
    () => {
        "now() > COALESCE((SELECT max(b.completed_at) FROM backups b \
           WHERE b.service_id = p.service_id AND b.state = 'completed' AND b.kind = 'dump'), p.created_at) \
         + make_interval(secs => p.interval_seconds + LEAST(p.interval_seconds / 2, 3600))"
    };
}

/// A service whose backup was just found missed.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Missed {
    pub service_id: Uuid,
    pub last_completed: Option<DateTime<Utc>>,
    pub interval_seconds: i32,
    pub failures: i32,
    pub last_error: Option<String>,
}

impl Missed {
    /// The event's detail.
    pub fn detail(&self) -> String {
        let since = match self.last_completed {
            Some(t) => format!("no backup since {}", t.format("%Y-%m-%d %H:%M:%S UTC")),
            None => "no backup yet".to_owned(),
        };
        let mut d = format!("{since} (scheduled every {} s)", self.interval_seconds);
        if self.failures > 0 {
            d.push_str(&format!(
                "; {} scheduled run(s) failed in a row",
                self.failures
            ));
        }
        if let Some(e) = &self.last_error {
            d.push_str(&format!("; last error: {e}"));
        }
        d
    }
}

/// Marks the services whose backup is missed and not reported yet (returned), and clears
/// the mark of those backed up since.
pub async fn mark_missed(store: &Store) -> Result<Vec<Missed>, StoreError> {
    sqlx::query(concat!(
        "UPDATE backup_policies p SET missed_at = NULL WHERE missed_at IS NOT NULL AND NOT (",
        backup_missed_sql!(),
        ")"
    ))
    .execute(&store.pool)
    .await?;
    Ok(sqlx::query_as(concat!(
        "UPDATE backup_policies p SET missed_at = now() WHERE missed_at IS NULL AND ",
        backup_missed_sql!(),
        " RETURNING p.service_id, \
           (SELECT max(b.completed_at) FROM backups b WHERE b.service_id = p.service_id \
              AND b.state = 'completed' AND b.kind = 'dump') AS last_completed, \
           p.interval_seconds, p.failures, \
           (SELECT b.error FROM backups b WHERE b.service_id = p.service_id AND b.state = 'failed' \
              ORDER BY b.started_at DESC LIMIT 1) AS last_error"
    ))
    .fetch_all(&store.pool)
    .await?)
}

/// Records a WAL shipping pass of the service; returns the event to add on a change (the
/// first failure of a stretch, or the first success after failures).
pub async fn record_wal_shipping(
    store: &Store,
    service_id: Uuid,
    outcome: Result<(), &str>,
) -> Result<Option<(&'static str, String)>, StoreError> {
    match outcome {
        Err(error) => {
            let first: Option<bool> = sqlx::query_scalar(
                "UPDATE backup_policies p SET wal_failures = p.wal_failures + 1, wal_error = $2, \
                   wal_failing_since = COALESCE(p.wal_failing_since, now()) \
                 FROM (SELECT service_id, wal_failing_since AS before FROM backup_policies \
                       WHERE service_id = $1 FOR UPDATE) o \
                 WHERE p.service_id = o.service_id RETURNING o.before IS NULL",
            )
            .bind(service_id)
            .bind(error)
            .fetch_optional(&store.pool)
            .await?;
            Ok((first == Some(true)).then(|| ("wal_shipping_failed", error.to_owned())))
        }
        Ok(()) => {
            let since: Option<DateTime<Utc>> = sqlx::query_scalar(
                "UPDATE backup_policies p SET wal_failing_since = NULL, wal_error = NULL \
                 FROM (SELECT service_id, wal_failing_since AS before FROM backup_policies \
                       WHERE service_id = $1 AND wal_failing_since IS NOT NULL FOR UPDATE) o \
                 WHERE p.service_id = o.service_id RETURNING o.before",
            )
            .bind(service_id)
            .fetch_optional(&store.pool)
            .await?;
            Ok(since.map(|t| {
                (
                    "wal_shipping_resumed",
                    format!(
                        "WAL shipped again (failing since {})",
                        t.format("%Y-%m-%d %H:%M:%S UTC")
                    ),
                )
            }))
        }
    }
}

/// The service's own events (newest first, at most `limit`).
pub async fn service_events(
    store: &Store,
    service_id: Uuid,
    limit: i64,
) -> Result<Vec<crate::store::backups::BackupEvent>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT step, detail, at FROM backup_events WHERE subject_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(service_id)
    .bind(limit)
    .fetch_all(&store.pool)
    .await?)
}

impl Backups {
    /// An event on the service's own timeline (see the module doc).
    pub(crate) async fn service_event(&self, service_id: Uuid, step: &str, detail: &str) {
        tracing::warn!(service = %service_id, step, detail, "backup event on the service");
        self.event(service_id, step, detail).await;
    }

    /// Reports each newly missed backup as an event on its service.
    pub async fn report_missed(&self) -> Result<usize, StoreError> {
        let missed = mark_missed(self.store()).await?;
        for m in &missed {
            self.service_event(m.service_id, "backup_missed", &m.detail())
                .await;
        }
        Ok(missed.len())
    }

    /// Records the outcome of shipping the service's WAL, with an event when it changes.
    pub(crate) async fn wal_shipping_outcome(&self, service_id: Uuid, outcome: Result<(), &str>) {
        match record_wal_shipping(self.store(), service_id, outcome).await {
            Ok(Some((step, detail))) => self.service_event(service_id, step, &detail).await,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(service = %service_id, error = %e, "cannot record the WAL shipping outcome")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_detail_says_since_when_and_why() {
        let m = Missed {
            service_id: Uuid::nil(),
            last_completed: Some(DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
            interval_seconds: 86_400,
            failures: 3,
            last_error: Some("node agent at 10.0.0.1:7100: unreachable".into()),
        };
        assert_eq!(
            m.detail(),
            "no backup since 2023-11-14 22:13:20 UTC (scheduled every 86400 s); 3 scheduled \
             run(s) failed in a row; last error: node agent at 10.0.0.1:7100: unreachable"
        );
        let never = Missed {
            last_completed: None,
            failures: 0,
            last_error: None,
            ..m
        };
        assert_eq!(never.detail(), "no backup yet (scheduled every 86400 s)");
    }
}
