//! The backup scheduler, one loop per control process like the other background loops: each
//! pass fails the running backups whose control stopped (stale heartbeat), gives every managed
//! service a policy (daily, keep 7), then takes the due ones one at a time. Claiming is one
//! statement with `FOR UPDATE SKIP LOCKED` (two controls never take the same service), and a
//! unique index lets one backup of a service run at a time. A failed run is retried after
//! `retry_after_ms`; a completed one is verified, then retention drops the oldest beyond `keep`.
//! Every pass also ships the archived WAL of each running PostgreSQL ([`super::pitr`]), and a
//! scheduled PostgreSQL dump is followed by a base backup (the start of its point-in-time
//! recovery), whose retention also drops the WAL no kept base backup needs. A failed run, a
//! missed schedule and a WAL shipping failure are events on the service ([`super::health`]).

use std::time::Duration;

use ::api::BackupTrigger;
use tokio::sync::watch;

use super::{BackupError, Backups};

/// Backups taken per pass at most (the rest wait for the next pass).
const PER_PASS: usize = 8;

impl Backups {
    /// Runs passes every `interval` until shutdown.
    pub async fn run_scheduler(self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.pass().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(taken = n, "scheduled backups pass"),
                Err(e) => tracing::warn!(error = %e, "scheduled backups pass failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One pass; returns how many backups it attempted.
    pub async fn pass(&self) -> Result<usize, BackupError> {
        let settings = self.settings().clone();
        let retry = settings.retry_after_ms as f64 / 1000.0;
        let store = self.store().clone();
        for (id, service) in store
            .fail_stale_backups(settings.stale_after_ms as f64 / 1000.0)
            .await?
        {
            tracing::warn!(backup = %id, %service, "running backup without heartbeat failed as stale");
            self.event(
                id,
                "failed",
                "its control process stopped (stale heartbeat)",
            )
            .await;
            self.service_event(
                service,
                "backup_failed",
                &format!("backup {id}: its control process stopped (stale heartbeat)"),
            )
            .await;
            store.record_scheduled_run(service, false, retry).await?;
        }
        store.ensure_backup_policies().await?;
        self.ship_all_wal().await;
        let mut attempted = 0;
        while attempted < PER_PASS {
            let Some(policy) = store.claim_due_backup().await? else {
                break;
            };
            attempted += 1;
            let outcome = match self
                .begin(policy.service_id, BackupTrigger::Scheduled)
                .await
            {
                Ok((b, r)) => match self.take_and_verify(b, r).await {
                    Ok(done) if done.engine == ::api::Engine::Postgres => self
                        .take_base(policy.service_id, BackupTrigger::Scheduled)
                        .await
                        .map(|_| ()),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = &outcome {
                tracing::warn!(service = %policy.service_id, error = %e, "scheduled backup failed; retried later");
                if matches!(e, BackupError::NotManaged(_) | BackupError::NotRunning(_)) {
                    // No backup row was made: the service's timeline is where it shows.
                    self.service_event(
                        policy.service_id,
                        "backup_failed",
                        &format!("the scheduled backup could not start: {e}"),
                    )
                    .await;
                }
            }
            store
                .record_scheduled_run(policy.service_id, outcome.is_ok(), retry)
                .await?;
            if outcome.is_ok() {
                match self
                    .apply_retention(policy.service_id, i64::from(policy.keep))
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(service = %policy.service_id, removed = n, "backup retention")
                    }
                    Err(e) => {
                        tracing::warn!(service = %policy.service_id, error = %e, "backup retention failed; tried again next time")
                    }
                }
                if let Err(e) = self.expire_wal(policy.service_id).await {
                    tracing::warn!(service = %policy.service_id, error = %e, "WAL retention failed; tried again next time");
                }
            }
        }
        let keep = std::time::Duration::from_millis(settings.deleted_keep_ms);
        if let Err(e) = self.sweep_deleted_objects(keep).await {
            tracing::warn!(error = %e, "removing deleted services' backup objects failed; tried again next pass");
        }
        if let Err(e) = self.report_missed().await {
            tracing::warn!(error = %e, "cannot look for missed backups");
        }
        Ok(attempted)
    }
}
