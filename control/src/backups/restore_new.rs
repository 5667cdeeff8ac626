//! Restore into a new service (#14 item 6): `new_service` in a restore request. The API makes
//! a managed service of the source's engine (its own generated credentials and its own volume,
//! the source's size) and queues its first deployment; the restore row names the new service,
//! and its timeline shows the deployment (`new_service`, `deploying`, `deployed`) before the
//! restore's own steps. The source is only read: no pre-restore backup, nothing loaded into it.

use std::time::{Duration, Instant};

use ::api::DeploymentState;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{BackupError, Backups, Running};
use crate::store::backups::{Backup, Restore};

/// How long the new service may take to be deployed (pull, initdb, probe).
const DEPLOYED_WITHIN: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(250);

/// The new service a restore goes into: made and queued by the API.
#[derive(Debug, Clone)]
pub struct NewTarget {
    pub service_id: Uuid,
    pub name: String,
    pub deployment_id: Uuid,
}

impl Backups {
    /// Records a restore of `b` (a dump, or with `to` the base backup of a restore to that
    /// time) into the new service, whose first deployment is on its way.
    pub async fn begin_restore_into_new(
        &self,
        organization_id: Uuid,
        b: &Backup,
        to: Option<DateTime<Utc>>,
        target: &NewTarget,
    ) -> Result<Restore, BackupError> {
        let restore = self
            .inner
            .store
            .create_restore_to(organization_id, b.id, target.service_id, to)
            .await?;
        let what = match to {
            Some(t) => format!(
                "service {} at {} (base backup {})",
                b.service_id,
                t.to_rfc3339(),
                b.id
            ),
            None => format!("backup {}", b.id),
        };
        self.event(
            restore.id,
            "started",
            &format!("{what} into the new service {}", target.service_id),
        )
        .await;
        self.event(
            restore.id,
            "new_service",
            &format!(
                "{} {} created with its own credentials and volume; deployment {} queued",
                b.engine.as_str(),
                target.name,
                target.deployment_id
            ),
        )
        .await;
        Ok(restore)
    }

    /// Waits until the new service runs, then restores into it (a dump, or to the time `to`).
    /// The restore fails, naming why, when its deployment does not become ready.
    pub async fn restore_into_new(
        &self,
        restore: &Restore,
        b: &Backup,
        to: Option<DateTime<Utc>>,
        target: &NewTarget,
    ) -> Result<(), BackupError> {
        let r = match self.wait_deployed(restore, target).await {
            Ok(r) => r,
            Err(e) => {
                let reason = e.to_string();
                self.event(restore.id, "failed", &reason).await;
                self.inner
                    .store
                    .finish_restore(restore.id, None, Some(&reason))
                    .await?;
                return Err(e);
            }
        };
        match to {
            Some(t) => self.restore_to_time(restore, b, &r, t).await,
            None => self.restore_into(restore, b, &r, true).await,
        }
    }

    async fn wait_deployed(
        &self,
        restore: &Restore,
        target: &NewTarget,
    ) -> Result<Running, BackupError> {
        self.event(
            restore.id,
            "deploying",
            &format!("deployment {}", target.deployment_id),
        )
        .await;
        let deadline = Instant::now() + DEPLOYED_WITHIN;
        loop {
            let d = self
                .inner
                .store
                .deployment(restore.organization_id, target.deployment_id)
                .await?;
            match d.state {
                DeploymentState::Ready => break,
                DeploymentState::Failed
                | DeploymentState::Cancelled
                | DeploymentState::Superseded => {
                    return Err(BackupError::NewService(format!(
                        "deployment {} of {} ended {}: {}",
                        d.id,
                        target.name,
                        d.state.as_str(),
                        d.failure_reason.as_deref().unwrap_or("no reason given")
                    )));
                }
                _ if Instant::now() > deadline => {
                    return Err(BackupError::NewService(format!(
                        "deployment {} of {} still {} after {} s",
                        d.id,
                        target.name,
                        d.state.as_str(),
                        DEPLOYED_WITHIN.as_secs()
                    )));
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
        let r = self.running(target.service_id).await?;
        self.event(
            restore.id,
            "deployed",
            &format!("container {} on {}", r.container, r.address),
        )
        .await;
        Ok(r)
    }
}
