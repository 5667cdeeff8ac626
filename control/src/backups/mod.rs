//! Backups of managed databases and caches (#14 items 5-8): taken on demand
//! (`POST /services/{id}/backups`) and on each service's schedule, proven by a verification
//! restore, restorable into the service or a new one.
//!
//! A backup: the node agent runs the engine's own consistent dump inside the service's running
//! container (`EngineDump`: `pg_dump -Fc -Z0`, `mariadb-dump --single-transaction`, `redis-cli
//! --rdb -`) and streams it here, compressed with zstd by the agent where it is made (a
//! MariaDB dump comes plain: control counts its rows, and compresses it itself); control seals
//! it with the organization's backup key and checksums the stored bytes ([`format`]), writing through
//! `object_store` ([`objects`]: a local directory or S3). The row turns `completed` only after
//! the object is written whole and its SHA-256 recorded; anything else leaves it `failed`
//! (with the reason) or, if control died, `running` until the scheduler fails it as stale.
//!
//! Verification: the stored object is read back, its checksum and every frame checked while it
//! is streamed (`EngineLoad`) into a throwaway container of the engine on the service's node
//! (no volume; removed afterwards), then the engine's check counts what it holds; the backup is
//! marked `verified` (with the counts) or `failed` (with the reason). A PostgreSQL base backup
//! is verified by a throwaway recovery: it and the WAL up to its end are staged in the
//! container and replayed (`PG_RECOVER`) before the check. A flipped byte fails the
//! frame's decryption or the checksum, and the agent, which restores only once the stream's
//! `end` arrives, restores nothing.
//!
//! Restore: into the same service (a `pre_restore` backup of the current data is taken first)
//! or into another managed service of the same engine, or into a new one made for it
//! ([`restore_new`]); the steps are a timeline (`backup_events`, like a deployment's events).

pub mod deleted;
pub mod engines;
pub mod format;
pub mod health;
pub mod load;
pub mod metrics;
pub mod objects;
pub mod pitr;
pub mod restore_new;
pub mod rowcount;
pub mod scheduler;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::api::{BackupTrigger, BackupVerification, Engine};
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use proto::node::v1 as n;
use uuid::Uuid;

use crate::clients::tls::PlatformTls;
use crate::managed;
use crate::store::backups::{Backup, EngineTarget, Restore};
use crate::store::{Store, StoreError};
use engines::{EngineError, GrpcEngines};
use format::{FormatError, Sealer};
pub use objects::BackupSettings;

/// Bytes of dump per message sent to an agent.
const LOAD_PIECE: usize = 1 << 20;
/// Pieces of dump (and of sealed bytes) queued between the reading task and the sealing thread.
const SEAL_QUEUE: usize = 16;
/// How often a running backup tells the database it is alive.
const HEARTBEAT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("service {0} is not a managed database or cache: it has no backups")]
    NotManaged(Uuid),
    #[error("service {0} has no running container to back up or restore into (deploy it first)")]
    NotRunning(Uuid),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("object store {store}: {message}")]
    Objects { store: String, message: String },
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("backup {0} is not completed: only a completed backup can be restored")]
    NotCompleted(Uuid),
    #[error("service {0} is not a managed postgres: point-in-time recovery is for postgres")]
    NotPostgres(Uuid),
    #[error("{0}")]
    OutsideWindow(String),
    #[error("the verification restore differs from the dump: {0}")]
    Mismatch(String),
    #[error(
        "backup {0} is a base backup: it is restored to a point in time (POST /services/{{id}}/backups/restore with to_time)"
    )]
    BaseBackup(Uuid),
    #[error("the new service: {0}")]
    NewService(String),
    #[error("backup {backup} is of {backup_engine}, service {service} runs {service_engine}")]
    EngineMismatch {
        backup: Uuid,
        backup_engine: Engine,
        service: Uuid,
        service_engine: Engine,
    },
}

impl BackupError {
    /// A caller's mistake (4xx) rather than a failure of the platform.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            BackupError::NotManaged(_)
                | BackupError::NotRunning(_)
                | BackupError::NotCompleted(_)
                | BackupError::NotPostgres(_)
                | BackupError::OutsideWindow(_)
                | BackupError::BaseBackup(_)
                | BackupError::EngineMismatch { .. }
                | BackupError::Store(StoreError::Conflict(_))
        )
    }
}

/// A service's engine, node and container, checked to be running.
#[derive(Debug, Clone)]
pub struct Running {
    pub service_id: Uuid,
    pub target: EngineTarget,
    pub engine: Engine,
    pub address: String,
    pub container: String,
}

/// Where the time of a stored object went: waiting for the source's next piece (the engine's
/// dump through the agent), waiting for room in the sealing thread's queue (the thread is
/// behind the dump), sealing, and compressing unless the agent did (in that thread, beside
/// the dump), and writing to the object store.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stages {
    /// The pieces the source sent (their count says what each cost: a message, a queue slot).
    pub pieces: u64,
    /// The agent sent its zstd stream: this side only sealed it.
    pub compressed_by_agent: bool,
    pub source: Duration,
    pub queue: Duration,
    pub seal: Duration,
    pub store: Duration,
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "waiting for the dump {} ms ({} pieces{}), for the sealing thread {} ms, {} {} ms (beside the dump), storing {} ms",
            self.source.as_millis(),
            self.pieces,
            if self.compressed_by_agent {
                ", compressed by the agent"
            } else {
                ""
            },
            self.queue.as_millis(),
            if self.compressed_by_agent {
                "sealing"
            } else {
                "compressing and sealing"
            },
            self.seal.as_millis(),
            self.store.as_millis()
        )
    }
}

/// Takes, verifies, restores and expires backups.
#[derive(Debug, Clone)]
pub struct Backups {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    engines: GrpcEngines,
    objects: Arc<dyn ObjectStore>,
    prefix: String,
    settings: BackupSettings,
    registry: String,
}

impl Backups {
    pub fn new(
        store: Store,
        settings: BackupSettings,
        registry: &str,
        tls: Option<Arc<PlatformTls>>,
    ) -> Result<Self, objects::StoreConfigError> {
        let (objects, prefix) = objects::open(&settings)?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                engines: GrpcEngines::with_tls(tls),
                objects,
                prefix,
                settings,
                registry: registry.to_owned(),
            }),
        })
    }

    pub fn settings(&self) -> &BackupSettings {
        &self.inner.settings
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.inner.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.inner.prefix))
        }
    }

    fn objects_error(&self, e: impl std::fmt::Display) -> BackupError {
        BackupError::Objects {
            store: self.inner.settings.store.clone(),
            message: e.to_string(),
        }
    }

    /// Where the service's engine runs; errors when it is not managed or not running.
    pub async fn running(&self, service_id: Uuid) -> Result<Running, BackupError> {
        let target = self.inner.store.engine_target(service_id).await?;
        let engine = target.engine.ok_or(BackupError::NotManaged(service_id))?;
        let (Some(address), Some(container)) =
            (target.node_address.clone(), target.container_id.clone())
        else {
            return Err(BackupError::NotRunning(service_id));
        };
        Ok(Running {
            service_id,
            target,
            engine,
            address,
            container,
        })
    }

    /// A new running backup row of the service (checked to be managed and running).
    pub async fn begin(
        &self,
        service_id: Uuid,
        trigger: BackupTrigger,
    ) -> Result<(Backup, Running), BackupError> {
        self.begin_kind(service_id, ::api::BackupKind::Dump, trigger)
            .await
    }

    /// [`Backups::begin`] of a backup of `kind` (a base backup: PostgreSQL only).
    pub async fn begin_kind(
        &self,
        service_id: Uuid,
        kind: ::api::BackupKind,
        trigger: BackupTrigger,
    ) -> Result<(Backup, Running), BackupError> {
        let r = self.running(service_id).await?;
        if kind == ::api::BackupKind::Base && r.engine != Engine::Postgres {
            return Err(BackupError::NotPostgres(service_id));
        }
        let b = self
            .inner
            .store
            .create_backup_of_kind(
                r.target.organization_id,
                service_id,
                r.engine,
                kind,
                trigger,
            )
            .await?;
        let what = match kind {
            ::api::BackupKind::Base => "base backup",
            ::api::BackupKind::Dump => "dump",
        };
        self.event(
            b.id,
            "started",
            &format!("{} {what} on {}", r.engine.as_str(), r.address),
        )
        .await;
        Ok((b, r))
    }

    async fn event(&self, subject: Uuid, step: &str, detail: &str) {
        if let Err(e) = self
            .inner
            .store
            .add_backup_event(subject, step, detail)
            .await
        {
            tracing::warn!(%subject, step, error = %e, "cannot record a backup event");
        }
    }

    /// Dumps, seals and stores; the row is `completed` on success, `failed` with the reason
    /// otherwise (the partial object is removed).
    pub async fn take(&self, b: &Backup, r: &Running) -> Result<Backup, BackupError> {
        let started = Instant::now();
        match self.write_object(b, r).await {
            Ok((sealed, stages)) => {
                let done = self
                    .inner
                    .store
                    .complete_backup(b.id, sealed.size as i64, sealed.dump as i64, &sealed.sha256)
                    .await?;
                self.event(
                    b.id,
                    "completed",
                    &format!(
                        "{} bytes stored ({} bytes of dump) in {} ms ({stages}), sha256 {}",
                        sealed.size,
                        sealed.dump,
                        started.elapsed().as_millis(),
                        sealed.sha256
                    ),
                )
                .await;
                tracing::info!(backup = %b.id, service = %b.service_id, size = sealed.size, "backup completed");
                Ok(done)
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(backup = %b.id, service = %b.service_id, error = %reason, "backup failed");
                self.inner.store.fail_backup(b.id, &reason).await?;
                self.event(b.id, "failed", &reason).await;
                self.service_event(
                    b.service_id,
                    "backup_failed",
                    &format!("{} backup {}: {reason}", b.kind.as_str(), b.id),
                )
                .await;
                Err(e)
            }
        }
    }

    async fn write_object(
        &self,
        b: &Backup,
        r: &Running,
    ) -> Result<(format::Sealed, Stages), BackupError> {
        let command = match b.kind {
            ::api::BackupKind::Base => n::EngineCommand::BaseBackup,
            ::api::BackupKind::Dump => n::EngineCommand::Dump,
        };
        // MariaDB: the rows per table of the dump's own snapshot, checked after the
        // verification restore (`rowcount`), so control reads that dump uncompressed and
        // compresses it itself; every other is compressed by the agent, where it is made.
        let count_rows = r.engine == Engine::Mariadb && b.kind == ::api::BackupKind::Dump;
        let compression = if count_rows {
            n::Compression::None
        } else {
            n::Compression::Zstd
        };
        let mut dump = self
            .inner
            .engines
            .command(&r.address, &r.container, r.engine, command, "", compression)
            .await?;
        let rows = count_rows.then(|| dump.count_mariadb_rows());
        let sealed = self
            .seal_into(b.organization_id, b.id, &b.object_key, dump, Some(b.id))
            .await?;
        if let Some(rows) = rows {
            self.record_row_counts(b.id, &rows).await?;
        }
        Ok(sealed)
    }

    /// Compresses (unless the agent did), seals (nonces from `id`) and writes `dump` to
    /// `object_key`; beats the backup `heartbeat` meanwhile. Nothing is left in the store
    /// when it fails.
    ///
    /// Three stages overlap, as `pg_dump | zstd` does: this task reads the dump, a blocking
    /// thread compresses and seals what it read ([`Sealer`], fed through a bounded queue), and
    /// this task writes the sealed bytes. Compressing in the reading loop stalled the dump
    /// for as long as zstd ran (7.7 of a 12.9 s backup of 1 GB, bench/backup).
    async fn seal_into(
        &self,
        organization_id: Uuid,
        id: Uuid,
        object_key: &str,
        mut dump: engines::DumpStream,
        heartbeat: Option<Uuid>,
    ) -> Result<(format::Sealed, Stages), BackupError> {
        let key = format::organization_key(self.inner.store.secrets(), organization_id);
        let mut stages = Stages::default();
        // The first piece says what the agent sends: its zstd stream is only framed and
        // sealed here, a plain dump (an agent asked for none, or that predates compressing)
        // is compressed here; the stored object is the same.
        let t = Instant::now();
        let mut first = dump.next().await?;
        stages.source += t.elapsed();
        let given = dump.compression() == n::Compression::Zstd;
        stages.compressed_by_agent = given;
        let mut sealer = Sealer::new(
            key,
            id,
            if given {
                format::Plain::Zstd
            } else {
                format::Plain::Dump
            },
        )?;
        let path = self.path(object_key);
        let upload = self
            .inner
            .objects
            .put_multipart(&path)
            .await
            .map_err(|e| self.objects_error(e))?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, 8 << 20);
        let (piece_tx, mut piece_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(SEAL_QUEUE);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(SEAL_QUEUE);
        // Ends when the queue closes (the dump ended or was abandoned) or the writer went
        // away; what it returns counts only when the dump ended whole.
        let sealing = tokio::task::spawn_blocking(
            move || -> Result<Option<(format::Sealed, Duration)>, FormatError> {
                let mut busy = Duration::ZERO;
                while let Some(piece) = piece_rx.blocking_recv() {
                    let t = Instant::now();
                    let out = sealer.push(&piece)?;
                    busy += t.elapsed();
                    if !out.is_empty() && out_tx.blocking_send(out).is_err() {
                        return Ok(None);
                    }
                }
                let t = Instant::now();
                let (tail, sealed) = sealer.finish()?;
                busy += t.elapsed();
                if out_tx.blocking_send(tail).is_err() {
                    return Ok(None);
                }
                Ok(Some((sealed, busy)))
            },
        );
        let read = async {
            let mut beat = Instant::now();
            loop {
                let piece = match first.take() {
                    Some(p) => p,
                    None => {
                        let t = Instant::now();
                        let Some(piece) = dump.next().await? else {
                            break;
                        };
                        stages.source += t.elapsed();
                        piece
                    }
                };
                stages.pieces += 1;
                let t = Instant::now();
                if piece_tx.send(piece).await.is_err() {
                    // The sealing thread stopped: its result says why.
                    break;
                }
                stages.queue += t.elapsed();
                if let Some(b) = heartbeat
                    && beat.elapsed() >= HEARTBEAT
                {
                    beat = Instant::now();
                    self.inner.store.backup_heartbeat(b).await?;
                }
            }
            drop(piece_tx);
            Ok::<(), BackupError>(())
        };
        let mut store = Duration::ZERO;
        let write = async {
            while let Some(out) = out_rx.recv().await {
                let t = Instant::now();
                writer
                    .wait_for_capacity(2)
                    .await
                    .map_err(|e| self.objects_error(e))?;
                writer.write(&out);
                store += t.elapsed();
            }
            Ok::<(), BackupError>(())
        };
        let result = tokio::try_join!(read, write);
        // On an error the queues are dropped with the futures: the thread stops at its next
        // piece.
        let sealed = match result {
            Ok(_) => match sealing.await {
                Ok(Ok(Some((sealed, busy)))) => {
                    stages.seal = busy;
                    Ok(sealed)
                }
                Ok(Ok(None)) => Err(BackupError::Format(FormatError::Compress(
                    "the sealed bytes were not all written".into(),
                ))),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(BackupError::Format(FormatError::Compress(format!(
                    "the sealing thread failed: {e}"
                )))),
            },
            Err(e) => Err(e),
        };
        let mut sealed = match sealed {
            Ok(s) => s,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        if given {
            sealed.dump = dump.raw_bytes();
        }
        let t = Instant::now();
        writer.finish().await.map_err(|e| self.objects_error(e))?;
        stages.store = store + t.elapsed();
        Ok((sealed, stages))
    }

    /// Streams the stored object of `b` into `load`, checking it; sends the end only when
    /// the whole object checked out. Where the time went ([`load::LoadStages`]).
    async fn stream_into(
        &self,
        b: &Backup,
        load: engines::LoadStream,
    ) -> Result<load::LoadStages, BackupError> {
        let expected = b.sha256.clone().ok_or(BackupError::NotCompleted(b.id))?;
        self.stream_object(b.organization_id, b.id, &b.object_key, &expected, load)
            .await
    }

    /// Restores `b` into a throwaway container of its engine on the service's node and checks
    /// it; records `verified` (with what the engine holds) or `failed` (with why).
    pub async fn verify(&self, b: &Backup, r: &Running) -> Result<BackupVerification, BackupError> {
        let started = Instant::now();
        let container = self.start_verify_container(b, r).await;
        self.verify_in(b, r, container, started).await
    }

    /// The throwaway container of `b`'s engine a verification restores into (no volume; on
    /// the service's node); its id.
    async fn start_verify_container(&self, b: &Backup, r: &Running) -> Result<String, BackupError> {
        let deployment = format!("verify-{}", b.id);
        let password = managed::generate_password();
        let (mut env, secrets) = managed::container_env(r.engine, &password);
        env.extend(secrets);
        let memory = managed::default_memory_bytes(r.engine);
        env.insert("STACKPAD_MEMORY_LIMIT_BYTES".into(), memory.to_string());
        let request = n::DeployRequest {
            workload: Some(n::Workload {
                organization_id: b.organization_id.to_string(),
                project_id: r.target.project_id.to_string(),
                environment_id: r.target.environment_id.to_string(),
                service_id: format!("{}-verify", b.service_id),
                service_name: "backup-verify".into(),
                deployment_id: deployment,
                service_type: match r.engine.kind() {
                    ::api::ServiceKind::Cache => n::ServiceType::Cache,
                    _ => n::ServiceType::Database,
                } as i32,
                ..Default::default()
            }),
            image: managed::image(&self.inner.registry, r.engine),
            env: env.into_iter().collect(),
            resources: Some(n::Resources {
                cpu_millis: 1000,
                memory_bytes: memory,
                pids_limit: 512,
            }),
            health_check: Some(n::HealthCheck {
                probe: Some(n::health_check::Probe::Exec(n::ExecProbe {
                    command: managed::probe(r.engine),
                })),
                interval_ms: 200,
                timeout_ms: 5_000,
                deadline_ms: 120_000,
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(self
            .inner
            .engines
            .start_scratch(&r.address, request)
            .await?)
    }

    async fn remove_verify_container(&self, b: &Backup, r: &Running, container: &str) {
        if let Err(e) = self
            .inner
            .engines
            .remove_scratch(&r.address, container)
            .await
        {
            tracing::warn!(backup = %b.id, error = %e, "cannot remove the verification container");
        }
    }

    /// [`Backups::verify`] into `container` (started since `started`, e.g. while the backup
    /// was taken), which is removed afterwards.
    async fn verify_in(
        &self,
        b: &Backup,
        r: &Running,
        container: Result<String, BackupError>,
        started: Instant,
    ) -> Result<BackupVerification, BackupError> {
        self.event(
            b.id,
            "verifying",
            &format!("throwaway {} container on {}", r.engine.as_str(), r.address),
        )
        .await;
        let outcome: Result<String, BackupError> = async {
            let container = container?;
            let result: Result<String, BackupError> = async {
                match b.kind {
                    ::api::BackupKind::Dump => {
                        // A throwaway container: nothing to keep, fed as the object is read.
                        let load = self
                            .inner
                            .engines
                            .load(&r.address, &container, r.engine, true)?;
                        self.stream_into(b, load).await?;
                    }
                    ::api::BackupKind::Base => {
                        // The engine archived the WAL up to the backup's end before
                        // pg_basebackup returned: stored first, then replayed.
                        self.ship_wal(r).await?;
                        let to = b.completed_at.unwrap_or_else(chrono::Utc::now);
                        self.stage_and_recover(b.id, b, &r.address, &container, to)
                            .await?;
                    }
                }
                self.check_restored(b, r, &container).await
            }
            .await;
            self.remove_verify_container(b, r, &container).await;
            result
        }
        .await;
        let (verdict, detail) = match &outcome {
            Ok(check) => (BackupVerification::Verified, check.clone()),
            Err(e) => (BackupVerification::Failed, e.to_string()),
        };
        self.event(
            b.id,
            match verdict {
                BackupVerification::Verified => "verified",
                _ => "verification_failed",
            },
            &format!("{detail} ({} ms)", started.elapsed().as_millis()),
        )
        .await;
        self.inner
            .store
            .set_verification(b.id, verdict, &detail)
            .await?;
        if verdict == BackupVerification::Failed {
            self.service_event(
                b.service_id,
                "backup_verification_failed",
                &format!("backup {}: {detail}", b.id),
            )
            .await;
        }
        tracing::info!(backup = %b.id, verdict = verdict.as_str(), %detail, "backup verification");
        Ok(verdict)
    }

    /// Takes a backup and, when configured, verifies it (a dump restored, a base backup
    /// recovered with its WAL, in a throwaway container). The throwaway container starts
    /// while the backup is taken, so its start is hidden behind the dump (bench/backup).
    pub async fn take_and_verify(&self, b: Backup, r: Running) -> Result<Backup, BackupError> {
        if !self.inner.settings.verify {
            self.take(&b, &r).await?;
        } else {
            let (taken, container) =
                tokio::join!(self.take(&b, &r), self.start_verify_container(&b, &r));
            let done = match taken {
                Ok(done) => done,
                Err(e) => {
                    if let Ok(c) = container {
                        self.remove_verify_container(&b, &r, &c).await;
                    }
                    return Err(e);
                }
            };
            // The verification's time: what it adds after the backup is stored.
            self.verify_in(&done, &r, container, Instant::now()).await?;
        }
        Ok(self.inner.store.backup(b.organization_id, b.id).await?)
    }

    /// A backup that can be restored: completed, and a dump (a base backup is restored to a
    /// time, `POST /services/{id}/backups/restore`).
    pub async fn restorable(
        &self,
        organization_id: Uuid,
        backup_id: Uuid,
    ) -> Result<Backup, BackupError> {
        let b = self.inner.store.backup(organization_id, backup_id).await?;
        if b.state != ::api::BackupState::Completed {
            return Err(BackupError::NotCompleted(b.id));
        }
        if b.kind == ::api::BackupKind::Base {
            return Err(BackupError::BaseBackup(b.id));
        }
        Ok(b)
    }

    /// A new restore row of `backup` into `into` (checked: completed, same engine, running).
    pub async fn begin_restore(
        &self,
        organization_id: Uuid,
        backup_id: Uuid,
        into: Uuid,
    ) -> Result<(Restore, Backup, Running), BackupError> {
        let b = self.restorable(organization_id, backup_id).await?;
        let r = self.running(into).await?;
        if r.engine != b.engine {
            return Err(BackupError::EngineMismatch {
                backup: b.id,
                backup_engine: b.engine,
                service: into,
                service_engine: r.engine,
            });
        }
        let restore = self
            .inner
            .store
            .create_restore(organization_id, b.id, into)
            .await?;
        self.event(
            restore.id,
            "started",
            &format!("backup {} into service {into}", b.id),
        )
        .await;
        Ok((restore, b, r))
    }

    /// Runs a restore: a `pre_restore` backup of the current data first when the target is the
    /// backup's own service, then the stored object streamed into the engine.
    pub async fn restore(
        &self,
        restore: &Restore,
        b: &Backup,
        r: &Running,
    ) -> Result<(), BackupError> {
        self.restore_into(restore, b, r, false).await
    }

    /// [`Backups::restore`]; `fresh`: the target is a service made for this restore (nothing
    /// in it to keep), which the agent loads as the object is read.
    pub(crate) async fn restore_into(
        &self,
        restore: &Restore,
        b: &Backup,
        r: &Running,
        fresh: bool,
    ) -> Result<(), BackupError> {
        self.run_restore(restore, b.service_id, r, async {
            self.event(
                restore.id,
                "restoring",
                &format!("{} bytes stored", b.size_bytes.unwrap_or(0)),
            )
            .await;
            let load = self
                .inner
                .engines
                .load(&r.address, &r.container, r.engine, fresh)?;
            // The completed event tells where the time went (bench/backup reads it).
            Ok(self.stream_into(b, load).await?.to_string())
        })
        .await
    }

    /// The frame of every restore (of a backup or to a time): when the target is the source
    /// service its current data is kept as a `pre_restore` backup first, then `work` loads the
    /// engine; the timeline ends `completed` or `failed` and the row is finished with the
    /// pre-restore backup either way.
    pub(crate) async fn run_restore(
        &self,
        restore: &Restore,
        source_service: Uuid,
        r: &Running,
        work: impl std::future::Future<Output = Result<String, BackupError>>,
    ) -> Result<(), BackupError> {
        let mut pre = None;
        let result: Result<String, BackupError> = async {
            if r.service_id == source_service {
                self.event(
                    restore.id,
                    "pre_restore_backup",
                    "keeping the current data first",
                )
                .await;
                let (kept, kr) = self.begin(r.service_id, BackupTrigger::PreRestore).await?;
                pre = Some(kept.id);
                let kept = self.take(&kept, &kr).await?;
                self.event(
                    restore.id,
                    "pre_restore_backup_completed",
                    &format!("backup {}", kept.id),
                )
                .await;
            }
            work.await
        }
        .await;
        match result {
            // The timeline first: a reader seeing the end sees its last step.
            Ok(detail) => {
                self.event(restore.id, "completed", &detail).await;
                self.inner
                    .store
                    .finish_restore(restore.id, pre, None)
                    .await?;
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                self.event(restore.id, "failed", &reason).await;
                self.inner
                    .store
                    .finish_restore(restore.id, pre, Some(&reason))
                    .await?;
                Err(e)
            }
        }
    }

    /// Deletes the completed backups of the service beyond the newest `keep` (object first;
    /// a row whose object cannot be deleted stays for the next pass).
    pub async fn apply_retention(&self, service_id: Uuid, keep: i64) -> Result<usize, BackupError> {
        let mut removed = 0;
        for old in self.inner.store.backups_beyond(service_id, keep).await? {
            match self.inner.objects.delete(&self.path(&old.object_key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    self.inner.store.delete_backup_row(old.id).await?;
                    removed += 1;
                }
                Err(e) => return Err(self.objects_error(e)),
            }
        }
        Ok(removed)
    }

    /// The stored object's bytes (tests and tools).
    pub async fn object_path(&self, b: &Backup) -> ObjectPath {
        self.path(&b.object_key)
    }

    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.objects
    }
}
