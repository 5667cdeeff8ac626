//! Stop (SIGTERM, grace period, SIGKILL) and remove (everything the container had: task,
//! record, snapshot, isolation entries, network endpoint and address, logs).

use std::sync::Arc;
use std::time::Duration;

use super::record::{self, Entry, State, Status};
use super::{Agent, ContainerEngine, task};
use crate::error::{Result, RuntimeError};
use crate::network::ContainerNetwork;

const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;

impl<E: ContainerEngine, N: ContainerNetwork> Agent<E, N> {
    /// Stops the container's process; its restart policy no longer applies until a deploy.
    pub async fn stop(&self, container_id: &str, grace: Option<Duration>) -> Result<Status> {
        let entry = self
            .entry(container_id)
            .ok_or_else(|| RuntimeError::NotFound {
                container_id: container_id.to_owned(),
            })?;
        let _op = self.op_lock(container_id).await;
        let grace = grace
            .unwrap_or_else(|| Duration::from_millis(u64::from(entry.status().spec.stop_grace_ms)));
        self.stop_entry(&entry, grace).await?;
        Ok(entry.status())
    }

    async fn stop_entry(&self, entry: &Arc<Entry>, grace: Duration) -> Result<()> {
        let id = entry.status().container_id;
        entry.update(|s| s.wanted_running = false);
        self.engine
            .set_labels(&id, &[(record::LABEL_DESIRED, "stopped".into())])
            .await?;
        if matches!(
            self.engine.task_state(&id).await?,
            task::TaskState::Running { .. }
        ) {
            self.engine.kill(&id, SIGTERM).await?;
            if !self.wait_gone(&id, grace).await? {
                self.engine.kill(&id, SIGKILL).await?;
                self.wait_gone(&id, Duration::from_secs(10)).await?;
            }
        }
        self.engine.delete_task(&id).await?;
        entry.update(|s| {
            if s.state != State::Failed {
                s.state = State::Stopped;
            }
            s.pid = 0;
        });
        Ok(())
    }

    /// Waits up to `limit` for the task to stop running; true when it did.
    async fn wait_gone(&self, id: &str, limit: Duration) -> Result<bool> {
        let wait = self.engine.wait(id);
        match tokio::time::timeout(limit, wait).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if e.is_not_found() => Ok(true),
            // The exit waiter deleted the task meanwhile (its shim closed the connection).
            Ok(Err(e)) => match self.engine.task_state(id).await? {
                task::TaskState::Running { .. } => Err(e),
                _ => Ok(true),
            },
            Err(_) => Ok(false),
        }
    }

    /// Removes the container and everything it held. Unknown containers are fine (returns
    /// false); a running one needs `force`.
    pub async fn remove(&self, container_id: &str, force: bool) -> Result<bool> {
        let _op = self.op_lock(container_id).await;
        let bridge = match self.entry(container_id) {
            Some(entry) => {
                let s = entry.status();
                if s.state.is_running() && !force {
                    return Err(RuntimeError::Running {
                        container_id: container_id.to_owned(),
                    });
                }
                self.stop_entry(&entry, Duration::ZERO).await?;
                entry.stop_watchers();
                let _ = self.isolation.detach(&self.isolation_endpoint(&s));
                s.bridge
            }
            None => match self.stored_bridge(container_id).await? {
                Some(b) => b,
                None => return Ok(false),
            },
        };
        self.teardown(container_id, &bridge).await?;
        self.remove_entry(container_id);
        Ok(true)
    }

    /// The bridge label of a container containerd has but the agent does not track.
    async fn stored_bridge(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .engine
            .container(id)
            .await?
            .and_then(|c| c.labels.get(record::LABEL_BRIDGE).cloned()))
    }

    /// Deletes every part of a container that exists; idempotent, used by remove, failed
    /// deploys and reconcile.
    pub(crate) async fn teardown(&self, id: &str, bridge: &str) -> Result<()> {
        self.engine.kill_and_delete(id).await?;
        self.engine.delete_container(id).await?;
        self.engine.remove_rootfs(id).await?;
        self.logs.remove(id);
        self.networks.detach(id, bridge).await?;
        Ok(())
    }
}
