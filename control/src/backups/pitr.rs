//! PostgreSQL point-in-time recovery (#14 items 5 and 6): continuous WAL archiving shipped to
//! the backup store, base backups, and restores to a time.
//!
//! The engine archives each finished WAL file into `$PGDATA/stackpad_wal` on its volume
//! (`archive_timeout` bounds how long a commit waits: 60 s by default). Each scheduler pass
//! ships them: the agent lists them (`WAL_LIST`), each one not stored yet is read
//! (`WAL_READ`), compressed, sealed and written like a backup, recorded in `backup_wal` with
//! the time PostgreSQL archived it, and only then removed from the volume (`WAL_REMOVE`).
//! A file shipped twice (control stopped between the store and the removal) is recorded once.
//!
//! A base backup (`pg_basebackup`, a `backups` row of kind `base`) is taken after each
//! scheduled dump. Retention keeps `keep` of each kind and drops the WAL archived before the
//! oldest kept base backup started. The recovery window runs from the oldest base backup's
//! end to the newest archived WAL file.
//!
//! A restore to time T: the WAL is first switched in the source (one more commit, so the
//! archive reaches past T) and shipped; T is checked against the window (422 outside it);
//! the current data of the target is kept as a `pre_restore` dump when it is the source;
//! then the newest base backup ended before T and the WAL archived from its start up to the
//! first file archived after T are staged in the target container, and `PG_RECOVER` makes
//! the engine replay them to T and promote (a new timeline) before it serves again.

use ::api::{BackupKind, BackupTrigger, Engine};
use chrono::{DateTime, Utc};
use proto::node::v1 as n;
use uuid::Uuid;

use super::{BackupError, Backups, Running};
use crate::store::backups::{Backup, RecoveryWindow, Restore, WalFile};

/// The form the agent takes a recovery target in (UTC).
pub fn target_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

/// One line of `WAL_LIST`: name, archive time (unix seconds), size.
pub fn parse_wal_list(out: &str) -> Vec<(String, DateTime<Utc>, u64)> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.to_owned();
            let at = DateTime::from_timestamp(f.next()?.parse().ok()?, 0)?;
            let size = f.next()?.parse().ok()?;
            Some((name, at, size))
        })
        .collect()
}

/// The WAL a recovery to `to` from a base backup started at `since` replays: every file
/// archived from `since` on up to the first archived after `to` (the one holding `to`), and
/// every timeline history.
pub fn wal_needed(files: Vec<WalFile>, to: DateTime<Utc>) -> Vec<WalFile> {
    let mut out = Vec::new();
    let mut past = false;
    for f in files {
        if f.name.ends_with(".history") {
            out.push(f);
            continue;
        }
        if past {
            continue;
        }
        past = f.archived_at > to;
        out.push(f);
    }
    out
}

impl Backups {
    /// Ships the WAL files the service's engine archived: stored, recorded, then removed from
    /// its volume. Returns how many were stored.
    pub async fn ship_wal(&self, r: &Running) -> Result<usize, BackupError> {
        if r.engine != Engine::Postgres {
            return Err(BackupError::NotPostgres(r.service_id));
        }
        let engines = &self.inner.engines;
        let listed = engines
            .output(
                &r.address,
                &r.container,
                r.engine,
                n::EngineCommand::WalList,
                "",
            )
            .await?;
        let stored: std::collections::HashSet<String> = self
            .inner
            .store
            .wal_names(r.service_id)
            .await?
            .into_iter()
            .collect();
        let mut shipped = 0;
        for (name, archived_at, size) in parse_wal_list(&listed) {
            if !stored.contains(&name) {
                let id = Uuid::new_v4();
                let org = r.target.organization_id;
                let object_key =
                    format!("org/{org}/service/{}/wal/{name}-{id}.spwal", r.service_id);
                let read = engines
                    .command(
                        &r.address,
                        &r.container,
                        r.engine,
                        n::EngineCommand::WalRead,
                        &name,
                        n::Compression::Zstd,
                    )
                    .await?;
                let (sealed, _) = self.seal_into(org, id, &object_key, read, None).await?;
                if sealed.dump != size {
                    return Err(BackupError::Objects {
                        store: self.inner.settings.store.clone(),
                        message: format!(
                            "WAL file {name}: {} bytes read, {size} listed",
                            sealed.dump
                        ),
                    });
                }
                self.inner
                    .store
                    .insert_wal(&WalFile {
                        id,
                        organization_id: org,
                        service_id: r.service_id,
                        name: name.clone(),
                        object_key,
                        archived_at,
                        size_bytes: sealed.size as i64,
                        wal_bytes: sealed.dump as i64,
                        sha256: sealed.sha256,
                    })
                    .await?;
                shipped += 1;
            }
            engines
                .output(
                    &r.address,
                    &r.container,
                    r.engine,
                    n::EngineCommand::WalRemove,
                    &name,
                )
                .await?;
        }
        if shipped > 0 {
            tracing::info!(service = %r.service_id, shipped, "WAL shipped");
        }
        Ok(shipped)
    }

    /// Ships the WAL of every running managed PostgreSQL (one scheduler pass); failures are
    /// logged and retried on the next pass (the files stay on the volume).
    pub async fn ship_all_wal(&self) -> usize {
        let services = match self.inner.store.postgres_services_running().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the services whose WAL is shipped");
                return 0;
            }
        };
        let mut total = 0;
        for service in services {
            let result = match self.running(service).await {
                Ok(r) => self.ship_wal(&r).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(n) => {
                    total += n;
                    self.wal_shipping_outcome(service, Ok(())).await;
                }
                Err(e) => {
                    tracing::warn!(%service, error = %e, "WAL shipping failed; retried next pass");
                    self.wal_shipping_outcome(service, Err(&e.to_string()))
                        .await;
                }
            }
        }
        total
    }

    /// Deletes the WAL no kept base backup needs (object first).
    pub async fn expire_wal(&self, service_id: Uuid) -> Result<usize, BackupError> {
        let mut removed = 0;
        for old in self.inner.store.wal_expired(service_id).await? {
            match self.inner.objects.delete(&self.path(&old.object_key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    self.inner.store.delete_wal_row(old.id).await?;
                    removed += 1;
                }
                Err(e) => return Err(self.objects_error(e)),
            }
        }
        Ok(removed)
    }

    /// Takes a base backup of a managed PostgreSQL (after a scheduled dump, or on demand), and
    /// verifies it when backups are verified (a throwaway recovery of it and its WAL).
    pub async fn take_base(
        &self,
        service_id: Uuid,
        trigger: BackupTrigger,
    ) -> Result<Backup, BackupError> {
        let (b, r) = self
            .begin_kind(service_id, BackupKind::Base, trigger)
            .await?;
        self.take_and_verify(b, r).await
    }

    /// The times the service can be restored to.
    pub async fn recovery_window(&self, service_id: Uuid) -> Result<RecoveryWindow, BackupError> {
        Ok(self.inner.store.recovery_window(service_id).await?)
    }

    /// Checks `to` against the source's window (after switching and shipping its WAL when it
    /// runs) and records a restore of the base backup to use into `into`.
    pub async fn begin_restore_to_time(
        &self,
        organization_id: Uuid,
        source: Uuid,
        into: Uuid,
        to: DateTime<Utc>,
    ) -> Result<(Restore, Backup, Running), BackupError> {
        let base = self.base_for_time(source, to).await?;
        let r = self.running(into).await?;
        if r.engine != Engine::Postgres {
            return Err(BackupError::EngineMismatch {
                backup: base.id,
                backup_engine: Engine::Postgres,
                service: into,
                service_engine: r.engine,
            });
        }
        let restore = self
            .inner
            .store
            .create_restore_to(organization_id, base.id, into, Some(to))
            .await?;
        self.event(
            restore.id,
            "started",
            &format!(
                "service {source} at {} (base backup {}) into service {into}",
                to.to_rfc3339(),
                base.id
            ),
        )
        .await;
        Ok((restore, base, r))
    }

    /// The base backup a restore of `source` to `to` starts from, once `to` is checked against
    /// the source's recovery window (after switching and shipping its WAL when it runs).
    pub async fn base_for_time(
        &self,
        source: Uuid,
        to: DateTime<Utc>,
    ) -> Result<Backup, BackupError> {
        let engine = self
            .inner
            .store
            .engine_target(source)
            .await?
            .engine
            .ok_or(BackupError::NotManaged(source))?;
        if engine != Engine::Postgres {
            return Err(BackupError::NotPostgres(source));
        }
        let now = Utc::now();
        if to > now {
            return Err(BackupError::OutsideWindow(format!(
                "{} is in the future (now {})",
                to.to_rfc3339(),
                now.to_rfc3339()
            )));
        }
        let before = self.inner.store.recovery_window(source).await?;
        match before.from {
            None => {
                return Err(BackupError::OutsideWindow(format!(
                    "service {source} has no base backup yet: nothing to recover from \
                     (one is taken after each scheduled backup)"
                )));
            }
            Some(from) if to < from => {
                return Err(BackupError::OutsideWindow(format!(
                    "{} is before the recovery window of service {source}, which starts at {}",
                    to.to_rfc3339(),
                    from.to_rfc3339()
                )));
            }
            Some(_) => {}
        }
        // The archive reaches the present: one more commit, switched, archived and shipped.
        if let Ok(r) = self.running(source).await {
            self.inner
                .engines
                .output(
                    &r.address,
                    &r.container,
                    r.engine,
                    n::EngineCommand::WalSwitch,
                    "",
                )
                .await?;
            self.ship_wal(&r).await?;
        }
        let window = self.inner.store.recovery_window(source).await?;
        let (Some(from), Some(until)) = (window.from, window.until) else {
            return Err(BackupError::OutsideWindow(format!(
                "service {source} has no archived WAL yet: nothing to recover from"
            )));
        };
        if to < from || to > until {
            return Err(BackupError::OutsideWindow(format!(
                "{} is outside the recovery window of service {source}: {} to {}",
                to.to_rfc3339(),
                from.to_rfc3339(),
                until.to_rfc3339()
            )));
        }
        self.inner
            .store
            .base_backup_before(source, to)
            .await?
            .ok_or_else(|| {
                BackupError::OutsideWindow(format!(
                    "no base backup of service {source} ended before {}",
                    to.to_rfc3339()
                ))
            })
    }

    /// Runs a restore to a time: the current data kept first when the target is the source,
    /// then the base backup and the WAL staged in the target and recovered to the time.
    pub async fn restore_to_time(
        &self,
        restore: &Restore,
        base: &Backup,
        r: &Running,
        to: DateTime<Utc>,
    ) -> Result<(), BackupError> {
        self.run_restore(
            restore,
            base.service_id,
            r,
            self.stage_and_recover(restore.id, base, &r.address, &r.container, to),
        )
        .await
    }

    /// Stages the base backup `base` and the WAL a recovery to `to` replays in the PostgreSQL
    /// `container` on the node at `address`, then recovers it (the steps are events of
    /// `subject`: a restore, or the backup being verified).
    pub(crate) async fn stage_and_recover(
        &self,
        subject: Uuid,
        base: &Backup,
        address: &str,
        container: &str,
        to: DateTime<Utc>,
    ) -> Result<String, BackupError> {
        let engines = &self.inner.engines;
        self.event(
            subject,
            "staging_base_backup",
            &format!("{} bytes stored", base.size_bytes.unwrap_or(0)),
        )
        .await;
        let load = engines.load_kind(
            address,
            container,
            Engine::Postgres,
            n::EngineLoadKind::PgBase,
            "",
            "",
        )?;
        self.stream_into(base, load).await?;
        let files = self
            .inner
            .store
            .wal_since(base.service_id, base.started_at)
            .await?;
        let files = wal_needed(files, to);
        let bytes: i64 = files.iter().map(|f| f.wal_bytes).sum();
        self.event(
            subject,
            "staging_wal",
            &format!("{} WAL files, {bytes} bytes", files.len()),
        )
        .await;
        for f in &files {
            let load = engines.load_kind(
                address,
                container,
                Engine::Postgres,
                n::EngineLoadKind::PgWal,
                &f.name,
                "",
            )?;
            self.stream_object(f.organization_id, f.id, &f.object_key, &f.sha256, load)
                .await?;
        }
        let time = target_time(to);
        self.event(subject, "recovering", &format!("replaying to {time}"))
            .await;
        let load = engines.load_kind(
            address,
            container,
            Engine::Postgres,
            n::EngineLoadKind::PgRecover,
            "",
            &time,
        )?;
        Ok(load.finish().await?.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal(name: &str, at: i64) -> WalFile {
        WalFile {
            id: Uuid::nil(),
            organization_id: Uuid::nil(),
            service_id: Uuid::nil(),
            name: name.into(),
            object_key: String::new(),
            archived_at: DateTime::from_timestamp(at, 0).unwrap(),
            size_bytes: 0,
            wal_bytes: 0,
            sha256: String::new(),
        }
    }

    #[test]
    fn the_wal_needed_ends_with_the_first_file_archived_after_the_target() {
        let files = vec![
            wal("000000010000000000000002", 100),
            wal("000000010000000000000003", 160),
            wal("000000010000000000000004", 220),
            wal("00000002.history", 230),
            wal("000000020000000000000005", 280),
        ];
        let to = DateTime::from_timestamp(170, 0).unwrap();
        let names: Vec<String> = wal_needed(files, to).into_iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004",
                "00000002.history"
            ]
        );
    }

    #[test]
    fn wal_list_lines_and_target_times() {
        let l = parse_wal_list("000000010000000000000003 1796611200 16777216\nbad line\n");
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].2, 16_777_216);
        let t = DateTime::parse_from_rfc3339("2026-12-07T02:38:34.325269Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(target_time(t), "2026-12-07 02:38:34.325269+00");
    }
}
