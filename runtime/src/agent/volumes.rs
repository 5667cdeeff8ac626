//! The agent's side of volumes: one running container per volume (checked under a per-service
//! lock when a deploy starts), each mounted before a task starts, removed only when asked.

use super::record::Status;
use super::{Agent, ContainerEngine};
use crate::error::{Result, RuntimeError};
use crate::network::ContainerNetwork;
use crate::spec::DeploySpec;
use crate::volume::VolumeInfo;

/// A volume and the running container that holds it, if one does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeState {
    pub info: VolumeInfo,
    pub held_by: Option<String>,
}

fn lock_key(service_id: &str) -> String {
    format!("volumes/{service_id}")
}

/// Whether a container holds its volumes: its process runs or is to run again (restart
/// policy, reconcile).
fn holds(s: &Status) -> bool {
    s.state.is_running() || s.wanted_running
}

impl<E: ContainerEngine, N: ContainerNetwork> Agent<E, N> {
    /// The running container (other than `except`) holding the service's volume `name`.
    fn volume_holder(&self, service_id: &str, name: &str, except: &str) -> Option<String> {
        self.list(None, None)
            .into_iter()
            .filter(|s| s.container_id != except && holds(s))
            .filter(|s| s.spec.workload.service_id == service_id)
            .find(|s| s.spec.volumes.iter().any(|v| v.name == name))
            .map(|s| s.container_id)
    }

    /// For a deploy with volumes: the service's volume lock (held until the new container is
    /// tracked), after checking no other running container holds one of them.
    pub(crate) async fn claim_volumes(
        &self,
        id: &str,
        spec: &DeploySpec,
    ) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>> {
        if spec.volumes.is_empty() {
            return Ok(None);
        }
        let service = &spec.workload.service_id;
        let guard = self.op_lock(&lock_key(service)).await;
        for v in &spec.volumes {
            if let Some(holder) = self.volume_holder(service, &v.name, id) {
                return Err(RuntimeError::VolumeBusy {
                    volume: format!("{service}/{}", v.name),
                    container_id: holder,
                });
            }
        }
        Ok(Some(guard))
    }

    /// Creates, grows and mounts the container's volumes as needed (before each task: after a
    /// reboot the mounts are gone, and the bind must never fall through to the empty mount
    /// point).
    pub(crate) async fn mount_volumes(&self, status: &Status) -> Result<()> {
        if status.spec.volumes.is_empty() {
            return Ok(());
        }
        let id_map = status.id_map.ok_or_else(|| {
            RuntimeError::invalid(
                "volumes",
                format!(
                    "container {} has no user-namespace range to own its volumes",
                    status.container_id
                ),
            )
        })?;
        let volumes = self.volumes.clone();
        let service = status.spec.workload.service_id.clone();
        let wanted = status.spec.volumes.clone();
        tokio::task::spawn_blocking(move || {
            for v in &wanted {
                volumes.ensure(&service, &v.name, v.size_bytes, id_map)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| RuntimeError::invalid("volumes", format!("mount task failed: {e}")))?
    }

    /// Deletes a service's volume (or all of them when `name` is `None`) with its data;
    /// refused while a running container holds it. The names removed.
    pub async fn remove_volumes(
        &self,
        service_id: &str,
        name: Option<&str>,
    ) -> Result<Vec<String>> {
        if service_id.is_empty() || service_id.contains('/') || service_id.starts_with('.') {
            return Err(RuntimeError::invalid(
                "service_id",
                format!("{service_id:?} must be a service id"),
            ));
        }
        let _guard = self.op_lock(&lock_key(service_id)).await;
        let names = match name {
            Some(n) if self.volumes.names(service_id)?.iter().any(|x| x == n) => vec![n.to_owned()],
            Some(_) => vec![],
            None => self.volumes.names(service_id)?,
        };
        for n in &names {
            if let Some(holder) = self.volume_holder(service_id, n, "") {
                return Err(RuntimeError::VolumeBusy {
                    volume: format!("{service_id}/{n}"),
                    container_id: holder,
                });
            }
        }
        let volumes = self.volumes.clone();
        let service = service_id.to_owned();
        let targets = names.clone();
        tokio::task::spawn_blocking(move || {
            for n in &targets {
                volumes.remove(&service, n)?;
            }
            Ok::<_, RuntimeError>(())
        })
        .await
        .map_err(|e| RuntimeError::invalid("volumes", format!("remove task failed: {e}")))??;
        Ok(names)
    }

    /// The volumes on this node (or one service's), with the container holding each.
    pub fn volumes(&self, service_id: Option<&str>) -> Result<Vec<VolumeState>> {
        Ok(self
            .volumes
            .list(service_id)?
            .into_iter()
            .map(|info| VolumeState {
                held_by: self.volume_holder(&info.service_id, &info.name, ""),
                info,
            })
            .collect())
    }
}
