//! The container engine seam: the calls the agent makes to containerd (images, container
//! records, rootfs snapshots, tasks), and their real implementation over [`Containerd`].
//! The agent's deploy, stop, supervise and reconcile are unit-tested on a recording fake
//! (`agent::fakes`); [`ContainerdEngine`] keeps its tests against the real containerd
//! (`runtime/tests/`).

use std::future::Future;
use std::time::Duration;

use containerd_client::services::v1::{Container, GetContainerRequest, ListContainersRequest};
use containerd_client::types::Mount;

use super::task::{self, TaskState};
use crate::containerd::Containerd;
use crate::error::{Result, RuntimeError};
use crate::image::{ImageStore, PulledImage, RegistryClient};
use crate::logs::TaskIo;
use crate::userns::{IdMap, Remapper};

/// What the agent asks of its container engine, one namespace's worth. Every call names the
/// container in its error; "already gone" is success where the agent only wants something gone.
pub trait ContainerEngine: Send + Sync + std::fmt::Debug + 'static {
    /// Makes the image runnable on this node (fetched and unpacked when missing).
    fn pull(&self, reference: &str) -> impl Future<Output = Result<PulledImage>> + Send;
    /// The image's top snapshot remapped into `id_map` (built once per range and image).
    fn remapped(
        &self,
        image: &PulledImage,
        id_map: IdMap,
    ) -> impl Future<Output = Result<String>> + Send;

    /// Every container record of the namespace.
    fn containers(&self) -> impl Future<Output = Result<Vec<Container>>> + Send;
    /// One container record, `None` when there is none.
    fn container(&self, id: &str) -> impl Future<Output = Result<Option<Container>>> + Send;
    /// Creates the container record; an existing one with the same id is replaced.
    fn create_container(&self, container: Container) -> impl Future<Output = Result<()>> + Send;
    fn delete_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Sets some labels of the container record.
    fn set_labels(
        &self,
        id: &str,
        labels: &[(&str, String)],
    ) -> impl Future<Output = Result<()>> + Send;

    /// The container's rootfs snapshot on `parent` (idempotent); its mounts.
    fn prepare_rootfs(
        &self,
        id: &str,
        parent: &str,
    ) -> impl Future<Output = Result<Vec<Mount>>> + Send;
    /// The mounts of the container's existing rootfs snapshot.
    fn rootfs_mounts(&self, id: &str) -> impl Future<Output = Result<Vec<Mount>>> + Send;
    fn remove_rootfs(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    fn task_state(&self, id: &str) -> impl Future<Output = Result<TaskState>> + Send;
    /// Creates the task (not yet started) with its stdio on `io`; returns its pid.
    fn create_task(
        &self,
        id: &str,
        rootfs: Vec<Mount>,
        io: &TaskIo,
        id_map: Option<IdMap>,
    ) -> impl Future<Output = Result<u32>> + Send;
    fn start_task(&self, id: &str) -> impl Future<Output = Result<u32>> + Send;
    /// Sends a signal to every process of the container; a missing task is fine.
    fn kill(&self, id: &str, signal: u32) -> impl Future<Output = Result<()>> + Send;
    /// Waits until the task exits; its exit status.
    fn wait(&self, id: &str) -> impl Future<Output = Result<u32>> + Send;
    /// Deletes a stopped (or created) task; a missing one is fine.
    fn delete_task(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Kills whatever runs and deletes the task.
    fn kill_and_delete(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Whether the container's last task was killed for running out of memory.
    fn oom_killed(&self, id: &str) -> bool;
    /// Runs `command` inside the running container as its health probe (`agent::exec`: in
    /// its namespaces, as its user, with its environment); `Err` says what was seen.
    fn exec_probe(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> impl Future<Output = std::result::Result<(), String>> + Send;
}

/// The engine the node runs: containerd over its socket, in the agent's namespace, with the
/// image store (registry pulls into Content and Diff) and the user-namespace remapper.
#[derive(Debug)]
pub struct ContainerdEngine {
    containerd: Containerd,
    images: ImageStore,
    remapper: Remapper,
    snapshotter: String,
}

impl ContainerdEngine {
    pub fn new(containerd: Containerd, registry: RegistryClient, snapshotter: &str) -> Self {
        Self {
            images: ImageStore::new(containerd.clone(), registry, snapshotter),
            remapper: Remapper::new(containerd.clone(), snapshotter),
            containerd,
            snapshotter: snapshotter.to_owned(),
        }
    }

    /// The containerd connection underneath.
    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }
}

impl ContainerEngine for ContainerdEngine {
    async fn pull(&self, reference: &str) -> Result<PulledImage> {
        self.images.pull(reference).await
    }

    async fn remapped(&self, image: &PulledImage, id_map: IdMap) -> Result<String> {
        self.remapper.remapped(image, id_map).await
    }

    async fn containers(&self) -> Result<Vec<Container>> {
        let c = &self.containerd;
        c.containers()
            .list(c.req(ListContainersRequest { filters: vec![] }))
            .await
            .map(|r| r.into_inner().containers)
            .map_err(|s| RuntimeError::containerd("Containers.List", c.namespace(), s))
    }

    async fn container(&self, id: &str) -> Result<Option<Container>> {
        let c = &self.containerd;
        let r = c
            .containers()
            .get(c.req(GetContainerRequest { id: id.to_owned() }))
            .await;
        match r {
            Ok(r) => Ok(r.into_inner().container),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(RuntimeError::containerd("Containers.Get", id, s)),
        }
    }

    async fn create_container(&self, container: Container) -> Result<()> {
        task::create_container(&self.containerd, container).await
    }

    async fn delete_container(&self, id: &str) -> Result<()> {
        task::delete_container(&self.containerd, id).await
    }

    async fn set_labels(&self, id: &str, labels: &[(&str, String)]) -> Result<()> {
        task::set_labels(&self.containerd, id, labels).await
    }

    async fn prepare_rootfs(&self, id: &str, parent: &str) -> Result<Vec<Mount>> {
        task::prepare_rootfs(&self.containerd, &self.snapshotter, id, parent).await
    }

    async fn rootfs_mounts(&self, id: &str) -> Result<Vec<Mount>> {
        task::rootfs_mounts(&self.containerd, &self.snapshotter, id).await
    }

    async fn remove_rootfs(&self, id: &str) -> Result<()> {
        task::remove_rootfs(&self.containerd, &self.snapshotter, id).await
    }

    async fn task_state(&self, id: &str) -> Result<TaskState> {
        task::task_state(&self.containerd, id).await
    }

    async fn create_task(
        &self,
        id: &str,
        rootfs: Vec<Mount>,
        io: &TaskIo,
        id_map: Option<IdMap>,
    ) -> Result<u32> {
        task::create_task(&self.containerd, id, rootfs, io, id_map).await
    }

    async fn start_task(&self, id: &str) -> Result<u32> {
        task::start_task(&self.containerd, id).await
    }

    async fn kill(&self, id: &str, signal: u32) -> Result<()> {
        task::kill(&self.containerd, id, signal).await
    }

    async fn wait(&self, id: &str) -> Result<u32> {
        task::wait(&self.containerd, id).await
    }

    async fn delete_task(&self, id: &str) -> Result<()> {
        task::delete_task(&self.containerd, id).await
    }

    async fn kill_and_delete(&self, id: &str) -> Result<()> {
        task::kill_and_delete(&self.containerd, id).await
    }

    fn oom_killed(&self, id: &str) -> bool {
        task::oom_killed(self.containerd.namespace(), id)
    }

    async fn exec_probe(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> std::result::Result<(), String> {
        let pid = match task::task_state(&self.containerd, id).await {
            Ok(TaskState::Running { pid }) => pid,
            Ok(other) => return Err(format!("the container's task is not running ({other:?})")),
            Err(e) => return Err(e.to_string()),
        };
        super::exec::probe(&self.containerd, id, pid, command, timeout).await
    }
}
