//! Backups of managed services, their policies, restores and timelines (#14; migration 0013).
//! The decisions (what is due, what is stale, what retention drops) are single statements
//! here, safe with two control processes: a due service is claimed with `FOR UPDATE SKIP
//! LOCKED`, and a unique index allows one running backup per service.

use ::api::{BackupKind, BackupState, BackupTrigger, BackupVerification, Engine, RestoreState};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Result, Store, StoreError};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Backup {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub service_id: Uuid,
    pub engine: Engine,
    pub kind: BackupKind,
    pub trigger: BackupTrigger,
    pub state: BackupState,
    pub verification: BackupVerification,
    pub verification_detail: String,
    #[serde(skip)]
    pub object_key: String,
    pub size_bytes: Option<i64>,
    pub dump_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub verified_at: Option<DateTime<Utc>>,
}

const BACKUP_COLUMNS: &str = "id, organization_id, service_id, engine, kind, trigger, state, \
     verification, verification_detail, object_key, size_bytes, dump_bytes, sha256, error, \
     started_at, completed_at, duration_ms, verified_at";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct BackupPolicy {
    pub service_id: Uuid,
    pub interval_seconds: i32,
    pub keep: i32,
    pub next_at: DateTime<Utc>,
    pub failures: i32,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Restore {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub backup_id: Uuid,
    pub service_id: Uuid,
    pub pre_restore_backup_id: Option<Uuid>,
    /// A restore to a point in time: the time (`backup_id` is the base backup it started from).
    pub to_time: Option<DateTime<Utc>>,
    pub state: RestoreState,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct BackupEvent {
    pub step: String,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// Where a managed service runs: its serving deployment's container on a node.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EngineTarget {
    pub organization_id: Uuid,
    pub project_id: Uuid,
    pub environment_id: Uuid,
    pub service_name: String,
    /// `None` for a service that is not managed.
    pub engine: Option<Engine>,
    pub node_id: Option<Uuid>,
    pub node_address: Option<String>,
    pub container_id: Option<String>,
}

/// Per service, what `/metrics` shows of its backups.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BackupSummary {
    pub service_id: Uuid,
    pub organization_id: Uuid,
    pub engine: Engine,
    /// Seconds since the last completed backup ended (`None`: never).
    pub age_seconds: Option<f64>,
    pub size_bytes: Option<i64>,
    pub duration_ms: Option<i64>,
    pub verification: Option<BackupVerification>,
    pub failed_total: i64,
    pub completed_total: i64,
    /// No backup completed for an interval and a grace ([`crate::backups::health`]).
    pub missed: bool,
    /// Missed stretches reported as events on the service.
    pub missed_total: i64,
    /// PostgreSQL: WAL shipping passes that failed, whether it fails now, and seconds since
    /// the newest shipped WAL file was archived (`None`: none shipped, or not PostgreSQL).
    pub wal_failures: i64,
    pub wal_failing: bool,
    pub wal_age_seconds: Option<f64>,
}

impl Store {
    /// Where a managed service's engine runs (`Conflict` when it is not managed).
    pub async fn engine_target(&self, service_id: Uuid) -> Result<EngineTarget> {
        sqlx::query_as(
            "SELECT p.organization_id, s.project_id, s.environment_id, s.name AS service_name, \
             m.engine, d.node_id, n.address AS node_address, d.container_id \
             FROM services s JOIN projects p ON p.id = s.project_id \
             LEFT JOIN managed_services m ON m.service_id = s.id \
             LEFT JOIN deployments d ON d.id = s.current_deployment_id \
             LEFT JOIN nodes n ON n.id = d.node_id WHERE s.id = $1",
        )
        .bind(service_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("service", service_id))
    }

    /// A new running backup (a dump); `Conflict` when one of the service is running already.
    pub async fn create_backup(
        &self,
        organization_id: Uuid,
        service_id: Uuid,
        engine: Engine,
        trigger: BackupTrigger,
    ) -> Result<Backup> {
        self.create_backup_of_kind(
            organization_id,
            service_id,
            engine,
            BackupKind::Dump,
            trigger,
        )
        .await
    }

    /// A new running backup of `kind`; `Conflict` when one of the service is running already.
    pub async fn create_backup_of_kind(
        &self,
        organization_id: Uuid,
        service_id: Uuid,
        engine: Engine,
        kind: BackupKind,
        trigger: BackupTrigger,
    ) -> Result<Backup> {
        let id = Uuid::new_v4();
        let key = format!("org/{organization_id}/service/{service_id}/{id}.spbk");
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO backups (id, organization_id, service_id, engine, kind, trigger, state, object_key) \
             VALUES ($1, $2, $3, $4, $5, $6, 'running', $7) RETURNING {BACKUP_COLUMNS}"
        )))
        .bind(id)
        .bind(organization_id)
        .bind(service_id)
        .bind(engine)
        .bind(kind)
        .bind(trigger)
        .bind(key)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            StoreError::unique(e, || {
                format!("service {service_id} has a backup running already")
            })
        })
    }

    /// Keeps a running backup from being taken for stale.
    pub async fn backup_heartbeat(&self, id: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE backups SET heartbeat_at = clock_timestamp() WHERE id = $1 AND state = 'running'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The object is written whole: record its size and checksum, the backup is good.
    pub async fn complete_backup(
        &self,
        id: Uuid,
        size_bytes: i64,
        dump_bytes: i64,
        sha256: &str,
    ) -> Result<Backup> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE backups SET state = 'completed', size_bytes = $2, dump_bytes = $3, sha256 = $4, \
             completed_at = clock_timestamp(), \
             duration_ms = (extract(epoch FROM clock_timestamp() - started_at) * 1000)::bigint \
             WHERE id = $1 AND state = 'running' RETURNING {BACKUP_COLUMNS}"
        )))
        .bind(id)
        .bind(size_bytes)
        .bind(dump_bytes)
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| {
            StoreError::Conflict(format!(
                "backup {id} is no longer running (failed as stale meanwhile)"
            ))
        })
    }

    pub async fn fail_backup(&self, id: Uuid, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE backups SET state = 'failed', error = $2, completed_at = clock_timestamp(), \
             duration_ms = (extract(epoch FROM clock_timestamp() - started_at) * 1000)::bigint \
             WHERE id = $1 AND state = 'running'",
        )
        .bind(id)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_verification(
        &self,
        id: Uuid,
        verification: BackupVerification,
        detail: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE backups SET verification = $2, verification_detail = $3, \
             verified_at = clock_timestamp() WHERE id = $1",
        )
        .bind(id)
        .bind(verification)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Running backups whose control stopped beating for `stale_secs` become failed; returns
    /// their ids.
    pub async fn fail_stale_backups(&self, stale_secs: f64) -> Result<Vec<(Uuid, Uuid)>> {
        Ok(sqlx::query_as(
            "UPDATE backups SET state = 'failed', completed_at = clock_timestamp(), \
             error = 'the control process running it stopped (no heartbeat for ' || $1::float8 || ' s)' \
             WHERE state = 'running' AND heartbeat_at < clock_timestamp() - make_interval(secs => $1) \
             RETURNING id, service_id",
        )
        .bind(stale_secs)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn backup(&self, organization_id: Uuid, id: Uuid) -> Result<Backup> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {BACKUP_COLUMNS} FROM backups WHERE id = $1 AND organization_id = $2"
        )))
        .bind(id)
        .bind(organization_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("backup", id))
    }

    /// A service's backups, newest first.
    pub async fn backups(&self, service_id: Uuid, limit: i64) -> Result<Vec<Backup>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {BACKUP_COLUMNS} FROM backups WHERE service_id = $1 \
             ORDER BY started_at DESC LIMIT $2"
        )))
        .bind(service_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Completed backups of the service past the newest `keep` of their kind (retention
    /// drops these: `keep` dumps and `keep` base backups are kept).
    pub async fn backups_beyond(&self, service_id: Uuid, keep: i64) -> Result<Vec<Backup>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {BACKUP_COLUMNS} FROM (SELECT *, row_number() OVER \
             (PARTITION BY kind ORDER BY started_at DESC) AS nth FROM backups \
             WHERE service_id = $1 AND state = 'completed') b WHERE nth > $2 ORDER BY started_at"
        )))
        .bind(service_id)
        .bind(keep)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn delete_backup_row(&self, id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM backups WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every managed service gets a policy (defaults: daily, keep 7).
    pub async fn ensure_backup_policies(&self) -> Result<()> {
        sqlx::query(
            "INSERT INTO backup_policies (service_id) SELECT service_id FROM managed_services \
             ON CONFLICT DO NOTHING",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn backup_policy(&self, service_id: Uuid) -> Result<BackupPolicy> {
        self.ensure_backup_policies().await?;
        sqlx::query_as("SELECT * FROM backup_policies WHERE service_id = $1")
            .bind(service_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("backup policy", service_id))
    }

    /// Sets the schedule and retention; the next run is one interval from now.
    pub async fn set_backup_policy(
        &self,
        service_id: Uuid,
        interval_seconds: i32,
        keep: i32,
    ) -> Result<BackupPolicy> {
        Ok(sqlx::query_as(
            "INSERT INTO backup_policies (service_id, interval_seconds, keep, next_at) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $2)) \
             ON CONFLICT (service_id) DO UPDATE SET interval_seconds = $2, keep = $3, \
             next_at = now() + make_interval(secs => $2) RETURNING *",
        )
        .bind(service_id)
        .bind(interval_seconds)
        .bind(keep)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Takes one service whose backup is due and that runs (its policy's next run moves one
    /// interval on); `None` when nothing is due. Two controls never take the same one.
    pub async fn claim_due_backup(&self) -> Result<Option<BackupPolicy>> {
        Ok(sqlx::query_as(
            "UPDATE backup_policies p SET next_at = now() + make_interval(secs => p.interval_seconds) \
             WHERE p.service_id = (SELECT q.service_id FROM backup_policies q \
                 JOIN services s ON s.id = q.service_id \
                 JOIN deployments d ON d.id = s.current_deployment_id \
                 WHERE q.next_at <= now() AND d.container_id IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM backups b WHERE b.service_id = q.service_id AND b.state = 'running') \
                 ORDER BY q.next_at FOR UPDATE OF q SKIP LOCKED LIMIT 1) \
             RETURNING p.*",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// After a scheduled run: a failure is retried after `retry_secs` (and counted), a success
    /// resets the count.
    pub async fn record_scheduled_run(
        &self,
        service_id: Uuid,
        ok: bool,
        retry_secs: f64,
    ) -> Result<()> {
        let sql = if ok {
            "UPDATE backup_policies SET failures = 0 WHERE service_id = $1 AND $2::float8 >= 0"
        } else {
            "UPDATE backup_policies SET failures = failures + 1, \
             next_at = LEAST(next_at, now() + make_interval(secs => $2)) WHERE service_id = $1"
        };
        sqlx::query(sql)
            .bind(service_id)
            .bind(retry_secs)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn add_backup_event(&self, subject_id: Uuid, step: &str, detail: &str) -> Result<()> {
        sqlx::query("INSERT INTO backup_events (subject_id, step, detail) VALUES ($1, $2, $3)")
            .bind(subject_id)
            .bind(step)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn backup_events(&self, subject_id: Uuid) -> Result<Vec<BackupEvent>> {
        Ok(sqlx::query_as(
            "SELECT step, detail, at FROM backup_events WHERE subject_id = $1 ORDER BY id",
        )
        .bind(subject_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn create_restore(
        &self,
        organization_id: Uuid,
        backup_id: Uuid,
        service_id: Uuid,
    ) -> Result<Restore> {
        self.create_restore_to(organization_id, backup_id, service_id, None)
            .await
    }

    /// A new running restore; `to_time` for a point-in-time one.
    pub async fn create_restore_to(
        &self,
        organization_id: Uuid,
        backup_id: Uuid,
        service_id: Uuid,
        to_time: Option<DateTime<Utc>>,
    ) -> Result<Restore> {
        Ok(sqlx::query_as(
            "INSERT INTO backup_restores (id, organization_id, backup_id, service_id, state, to_time) \
             VALUES ($1, $2, $3, $4, 'running', $5) RETURNING *",
        )
        .bind(Uuid::new_v4())
        .bind(organization_id)
        .bind(backup_id)
        .bind(service_id)
        .bind(to_time)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn finish_restore(
        &self,
        id: Uuid,
        pre_restore_backup_id: Option<Uuid>,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE backup_restores SET state = CASE WHEN $3::text IS NULL THEN 'completed' ELSE 'failed' END, \
             error = $3, pre_restore_backup_id = COALESCE($2, pre_restore_backup_id), \
             finished_at = clock_timestamp() WHERE id = $1",
        )
        .bind(id)
        .bind(pre_restore_backup_id)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn restore(&self, organization_id: Uuid, id: Uuid) -> Result<Restore> {
        sqlx::query_as("SELECT * FROM backup_restores WHERE id = $1 AND organization_id = $2")
            .bind(id)
            .bind(organization_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("restore", id))
    }

    /// What `/metrics` shows per managed service.
    pub async fn backup_summaries(&self) -> Result<Vec<BackupSummary>> {
        Ok(sqlx::query_as(
            concat!("SELECT m.service_id, pr.organization_id, m.engine, \
               extract(epoch FROM now() - last.completed_at)::float8 AS age_seconds, \
               last.size_bytes, last.duration_ms, last.verification, \
               (SELECT count(*) FROM backups b WHERE b.service_id = m.service_id AND b.state = 'failed') AS failed_total, \
               (SELECT count(*) FROM backups b WHERE b.service_id = m.service_id AND b.state = 'completed') AS completed_total, \
               COALESCE(p.service_id IS NOT NULL AND ", crate::backup_missed_sql!(), ", false) AS missed, \
               (SELECT count(*) FROM backup_events e WHERE e.subject_id = m.service_id AND e.step = 'backup_missed') AS missed_total, \
               COALESCE(p.wal_failures, 0) AS wal_failures, \
               COALESCE(p.wal_failing_since IS NOT NULL, false) AS wal_failing, \
               (SELECT extract(epoch FROM now() - max(w.archived_at))::float8 FROM backup_wal w WHERE w.service_id = m.service_id) AS wal_age_seconds \
             FROM managed_services m JOIN services s ON s.id = m.service_id \
             JOIN projects pr ON pr.id = s.project_id \
             LEFT JOIN backup_policies p ON p.service_id = m.service_id \
             LEFT JOIN LATERAL (SELECT completed_at, size_bytes, duration_ms, verification FROM backups b \
                 WHERE b.service_id = m.service_id AND b.state = 'completed' \
                 ORDER BY completed_at DESC LIMIT 1) last ON true \
             ORDER BY m.service_id"),
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

/// One archived WAL file stored in the object store (migration 0021).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct WalFile {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub service_id: Uuid,
    pub name: String,
    #[serde(skip)]
    pub object_key: String,
    pub archived_at: DateTime<Utc>,
    pub size_bytes: i64,
    pub wal_bytes: i64,
    pub sha256: String,
}

/// The times a service can be restored to: from its oldest completed base backup's end to its
/// newest archived WAL file.
#[derive(Debug, Clone, Copy, Serialize, sqlx::FromRow)]
pub struct RecoveryWindow {
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Store {
    /// Names of the service's stored WAL files.
    pub async fn wal_names(&self, service_id: Uuid) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT name FROM backup_wal WHERE service_id = $1")
                .bind(service_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Records a WAL file whose object is written whole.
    pub async fn insert_wal(&self, w: &WalFile) -> Result<()> {
        sqlx::query(
            "INSERT INTO backup_wal (id, organization_id, service_id, name, object_key, \
             archived_at, size_bytes, wal_bytes, sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (service_id, name) DO NOTHING",
        )
        .bind(w.id)
        .bind(w.organization_id)
        .bind(w.service_id)
        .bind(&w.name)
        .bind(&w.object_key)
        .bind(w.archived_at)
        .bind(w.size_bytes)
        .bind(w.wal_bytes)
        .bind(&w.sha256)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The service's WAL files archived from `since` on, plus every timeline history, in
    /// archive order. Archive times are whole seconds of the node's clock and `since` is
    /// control's: the files of the minute before `since`'s second come too (a recovery reads
    /// only the files it asks for by name; one left out fails it), as [`Self::wal_expired`]
    /// keeps them.
    pub async fn wal_since(&self, service_id: Uuid, since: DateTime<Utc>) -> Result<Vec<WalFile>> {
        Ok(sqlx::query_as(
            "SELECT id, organization_id, service_id, name, object_key, archived_at, size_bytes, \
             wal_bytes, sha256 FROM backup_wal WHERE service_id = $1 \
             AND (archived_at >= date_trunc('second', $2::timestamptz) - interval '1 minute' \
             OR name LIKE '%.history') \
             ORDER BY archived_at, name",
        )
        .bind(service_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// WAL files no kept base backup needs: archived more than a minute before the second the
    /// oldest completed base backup started (timeline histories are kept). Without the margin
    /// the segment a base backup starts in, archived in the same second as (or, on another
    /// node's clock, just before) the backup's recorded start, was deleted as expired, and
    /// recovering from that backup failed ("could not locate required checkpoint record").
    pub async fn wal_expired(&self, service_id: Uuid) -> Result<Vec<WalFile>> {
        Ok(sqlx::query_as(
            "SELECT id, organization_id, service_id, name, object_key, archived_at, size_bytes, \
             wal_bytes, sha256 FROM backup_wal w WHERE service_id = $1 AND name NOT LIKE '%.history' \
             AND archived_at < (SELECT date_trunc('second', min(started_at)) - interval '1 minute' \
             FROM backups b WHERE b.service_id = $1 AND b.kind = 'base' AND b.state = 'completed')",
        )
        .bind(service_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn delete_wal_row(&self, id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM backup_wal WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest completed base backup of the service that ended at or before `at`.
    pub async fn base_backup_before(
        &self,
        service_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<Backup>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {BACKUP_COLUMNS} FROM backups WHERE service_id = $1 AND kind = 'base' \
             AND state = 'completed' AND completed_at <= $2 ORDER BY completed_at DESC LIMIT 1"
        )))
        .bind(service_id)
        .bind(at)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The times the service can be restored to.
    pub async fn recovery_window(&self, service_id: Uuid) -> Result<RecoveryWindow> {
        Ok(sqlx::query_as(
            "SELECT (SELECT min(completed_at) FROM backups WHERE service_id = $1 AND kind = 'base' \
               AND state = 'completed') AS \"from\", \
             (SELECT max(archived_at) FROM backup_wal WHERE service_id = $1) AS until",
        )
        .bind(service_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Managed PostgreSQL services with a running container (their WAL is shipped).
    pub async fn postgres_services_running(&self) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT s.id FROM services s JOIN managed_services m ON m.service_id = s.id \
             JOIN deployments d ON d.id = s.current_deployment_id \
             WHERE m.engine = 'postgres' AND d.container_id IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
