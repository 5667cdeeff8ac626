//! Recording fakes of the agent's seams, for its unit tests: a container engine keeping
//! containers, snapshots and tasks in memory, and a network handing out addresses and
//! answering health probes as the test says. Both record every call with the (paused) time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

use containerd_client::services::v1::Container;
use containerd_client::types::Mount;
use tokio::sync::watch;
use tokio::time::Instant;

use super::ContainerEngine;
use super::task::TaskState;
use crate::error::{Result, RuntimeError};
use crate::image::{ImageConfig, PulledImage};
use crate::logs::TaskIo;
use crate::network::{ContainerNetwork, Endpoint, Subnet};
use crate::spec::HealthSpec;
use crate::userns::IdMap;

pub const SIGTERM: u32 = 15;
pub const SIGKILL: u32 = 9;

/// One call the agent made to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Pull(String),
    Remap(String),
    CreateContainer(String),
    DeleteContainer(String),
    SetLabels(String, Vec<(String, String)>),
    PrepareRootfs(String),
    RemoveRootfs(String),
    CreateTask(String),
    StartTask(String),
    Kill(String, u32),
    DeleteTask(String),
}

#[derive(Debug, Default)]
struct EngineState {
    containers: BTreeMap<String, Container>,
    snapshots: BTreeSet<String>,
    tasks: HashMap<String, TaskState>,
    calls: Vec<(Instant, Call)>,
    next_pid: u32,
    /// Signals the containers' processes ignore (SIGKILL cannot be).
    ignored: BTreeSet<u32>,
    /// Why pulls fail, if they do.
    pull_error: Option<String>,
}

/// containerd in memory. A task's process runs until a signal it does not ignore (exit
/// status 128 + signal) or [`FakeEngine::exit`].
#[derive(Debug)]
pub struct FakeEngine {
    state: Mutex<EngineState>,
    /// Bumped on every task change (what `wait` waits on).
    tasks_changed: watch::Sender<u64>,
}

fn not_found(op: &'static str, id: &str) -> RuntimeError {
    RuntimeError::containerd(op, id, tonic::Status::not_found(format!("{id} not found")))
}

impl FakeEngine {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(EngineState {
                next_pid: 100,
                ..EngineState::default()
            }),
            tasks_changed: watch::channel(0).0,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut EngineState) -> T) -> T {
        f(&mut self.state.lock().expect("fake engine"))
    }

    fn record(&self, call: Call) {
        self.with(|s| s.calls.push((Instant::now(), call)));
    }

    fn set_task(&self, id: &str, task: TaskState) {
        self.with(|s| s.tasks.insert(id.to_owned(), task));
        self.tasks_changed.send_modify(|v| *v += 1);
    }

    /// Every call so far, with when it was made.
    pub fn timed_calls(&self) -> Vec<(Instant, Call)> {
        self.with(|s| s.calls.clone())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.timed_calls().into_iter().map(|(_, c)| c).collect()
    }

    /// The processes ignore `signal` from now on.
    pub fn ignore_signal(&self, signal: u32) {
        self.with(|s| s.ignored.insert(signal));
    }

    /// Pulls fail with `reason` from now on.
    pub fn fail_pulls(&self, reason: &str) {
        self.with(|s| s.pull_error = Some(reason.to_owned()));
    }

    /// The container's process exits by itself with `code`.
    pub fn exit(&self, id: &str, code: u32) {
        self.set_task(id, TaskState::Stopped { exit_code: code });
    }

    /// A container that exists before the agent starts (for reconcile), with its task.
    pub fn add(&self, container: Container, task: TaskState) {
        let id = container.id.clone();
        self.with(|s| {
            s.snapshots.insert(id.clone());
            s.containers.insert(id.clone(), container);
            if task != TaskState::Missing {
                s.tasks.insert(id, task);
            }
        });
    }

    pub fn has_container(&self, id: &str) -> bool {
        self.with(|s| s.containers.contains_key(id))
    }

    pub fn has_snapshot(&self, id: &str) -> bool {
        self.with(|s| s.snapshots.contains(id))
    }

    pub fn label(&self, id: &str, key: &str) -> Option<String> {
        self.with(|s| s.containers.get(id)?.labels.get(key).cloned())
    }

    fn task(&self, id: &str) -> TaskState {
        self.with(|s| s.tasks.get(id).copied().unwrap_or(TaskState::Missing))
    }
}

impl ContainerEngine for FakeEngine {
    async fn pull(&self, reference: &str) -> Result<PulledImage> {
        self.record(Call::Pull(reference.to_owned()));
        if let Some(reason) = self.with(|s| s.pull_error.clone()) {
            return Err(RuntimeError::Image {
                reference: reference.to_owned(),
                reason,
            });
        }
        Ok(PulledImage {
            name: reference.to_owned(),
            digest: format!("sha256:{}", "d".repeat(64)),
            config_digest: format!("sha256:{}", "c".repeat(64)),
            layers: Vec::new(),
            config: ImageConfig {
                cmd: vec!["httpd".into()],
                ..ImageConfig::default()
            },
            chain_id: format!("sha256:{}", "e".repeat(64)),
            fetched: true,
        })
    }

    async fn remapped(&self, image: &PulledImage, id_map: IdMap) -> Result<String> {
        self.record(Call::Remap(image.name.clone()));
        Ok(crate::userns::snapshot::remapped_key(
            &image.chain_id,
            id_map,
        ))
    }

    async fn containers(&self) -> Result<Vec<Container>> {
        Ok(self.with(|s| s.containers.values().cloned().collect()))
    }

    async fn container(&self, id: &str) -> Result<Option<Container>> {
        Ok(self.with(|s| s.containers.get(id).cloned()))
    }

    async fn create_container(&self, container: Container) -> Result<()> {
        self.record(Call::CreateContainer(container.id.clone()));
        self.with(|s| s.containers.insert(container.id.clone(), container));
        Ok(())
    }

    async fn delete_container(&self, id: &str) -> Result<()> {
        self.record(Call::DeleteContainer(id.to_owned()));
        self.with(|s| s.containers.remove(id));
        Ok(())
    }

    async fn set_labels(&self, id: &str, labels: &[(&str, String)]) -> Result<()> {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        self.record(Call::SetLabels(id.to_owned(), labels.clone()));
        self.with(|s| {
            let c = s
                .containers
                .get_mut(id)
                .ok_or_else(|| not_found("Containers.Update", id))?;
            c.labels.extend(labels);
            Ok(())
        })
    }

    async fn prepare_rootfs(&self, id: &str, parent: &str) -> Result<Vec<Mount>> {
        self.record(Call::PrepareRootfs(id.to_owned()));
        self.with(|s| s.snapshots.insert(id.to_owned()));
        Ok(vec![Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options: vec![format!("lowerdir={parent}")],
            ..Mount::default()
        }])
    }

    async fn rootfs_mounts(&self, id: &str) -> Result<Vec<Mount>> {
        if self.has_snapshot(id) {
            Ok(Vec::new())
        } else {
            Err(not_found("Snapshots.Mounts", id))
        }
    }

    async fn remove_rootfs(&self, id: &str) -> Result<()> {
        self.record(Call::RemoveRootfs(id.to_owned()));
        self.with(|s| s.snapshots.remove(id));
        Ok(())
    }

    async fn task_state(&self, id: &str) -> Result<TaskState> {
        Ok(self.task(id))
    }

    async fn create_task(
        &self,
        id: &str,
        _rootfs: Vec<Mount>,
        _io: &TaskIo,
        _id_map: Option<IdMap>,
    ) -> Result<u32> {
        self.record(Call::CreateTask(id.to_owned()));
        if !self.has_container(id) {
            return Err(not_found("Tasks.Create", id));
        }
        let pid = self.with(|s| {
            s.next_pid += 1;
            s.next_pid
        });
        self.set_task(id, TaskState::Created);
        Ok(pid)
    }

    async fn start_task(&self, id: &str) -> Result<u32> {
        self.record(Call::StartTask(id.to_owned()));
        let pid = self.with(|s| s.next_pid);
        self.set_task(id, TaskState::Running { pid });
        Ok(pid)
    }

    async fn kill(&self, id: &str, signal: u32) -> Result<()> {
        self.record(Call::Kill(id.to_owned(), signal));
        let ignored = signal != SIGKILL && self.with(|s| s.ignored.contains(&signal));
        if matches!(self.task(id), TaskState::Running { .. }) && !ignored {
            self.set_task(
                id,
                TaskState::Stopped {
                    exit_code: 128 + signal,
                },
            );
        }
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<u32> {
        let mut changes = self.tasks_changed.subscribe();
        loop {
            match self.task(id) {
                TaskState::Missing => return Err(not_found("Tasks.Wait", id)),
                TaskState::Stopped { exit_code } => return Ok(exit_code),
                _ => {}
            }
            changes
                .changed()
                .await
                .expect("the engine outlives its waiters");
        }
    }

    async fn delete_task(&self, id: &str) -> Result<()> {
        self.record(Call::DeleteTask(id.to_owned()));
        if matches!(self.task(id), TaskState::Running { .. }) {
            return Err(RuntimeError::containerd(
                "Tasks.Delete",
                id,
                tonic::Status::failed_precondition("task is running"),
            ));
        }
        self.with(|s| s.tasks.remove(id));
        self.tasks_changed.send_modify(|v| *v += 1);
        Ok(())
    }

    async fn kill_and_delete(&self, id: &str) -> Result<()> {
        if matches!(
            self.task(id),
            TaskState::Running { .. } | TaskState::Created
        ) {
            self.kill(id, SIGKILL).await?;
        }
        self.delete_task(id).await
    }

    fn oom_killed(&self, _id: &str) -> bool {
        false
    }

    /// Exec probes pass (their dispatch is what the agent tests look at; the real exec is
    /// tested against containerd in runtime/tests/engines.rs).
    async fn exec_probe(
        &self,
        _id: &str,
        _command: &[String],
        _timeout: std::time::Duration,
    ) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// One call the agent made to the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetCall {
    Attach(String),
    Detach(String),
}

#[derive(Debug, Default)]
struct NetState {
    /// (bridge, container id) -> address.
    leases: BTreeMap<(String, String), Ipv4Addr>,
    calls: Vec<NetCall>,
    /// When each probe ran.
    probes: Vec<Instant>,
    healthy: bool,
}

/// The node's network in memory: addresses 10.9.0.x on the bridge the real one would name;
/// health probes pass once [`FakeNetwork::set_healthy`] says so.
#[derive(Debug)]
pub struct FakeNetwork {
    namespace: String,
    run_dir: PathBuf,
    state: Mutex<NetState>,
}

impl FakeNetwork {
    pub fn new(namespace: &str, run_dir: PathBuf) -> Self {
        Self {
            namespace: namespace.to_owned(),
            run_dir,
            state: Mutex::new(NetState::default()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut NetState) -> T) -> T {
        f(&mut self.state.lock().expect("fake network"))
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.with(|s| s.healthy = healthy);
    }

    pub fn calls(&self) -> Vec<NetCall> {
        self.with(|s| s.calls.clone())
    }

    pub fn probes(&self) -> Vec<Instant> {
        self.with(|s| s.probes.clone())
    }

    /// A lease left from before the agent started.
    pub fn add_lease(&self, bridge: &str, id: &str, ip: Ipv4Addr) {
        self.with(|s| s.leases.insert((bridge.to_owned(), id.to_owned()), ip));
    }

    pub fn has_lease(&self, id: &str) -> bool {
        self.with(|s| s.leases.keys().any(|(_, c)| c == id))
    }
}

impl ContainerNetwork for FakeNetwork {
    async fn attach(
        &self,
        container_id: &str,
        project: &str,
        environment: &str,
        _hostname: &str,
    ) -> Result<Endpoint> {
        let bridge = crate::network::bridge_name(&self.namespace, project, environment);
        let ip = self.with(|s| {
            s.calls.push(NetCall::Attach(container_id.to_owned()));
            let next = Ipv4Addr::new(10, 9, 0, 2 + s.leases.len() as u8);
            *s.leases
                .entry((bridge.clone(), container_id.to_owned()))
                .or_insert(next)
        });
        Ok(Endpoint {
            container_id: container_id.to_owned(),
            netns: container_id.to_owned(),
            netns_path: crate::network::host::netns_path(container_id),
            host_veth: crate::network::veth_name(container_id),
            bridge: bridge.clone(),
            ip,
            subnet: "10.9.0.0/24".parse::<Subnet>().expect("literal subnet"),
            hosts_path: self.hosts_path(&bridge),
        })
    }

    async fn detach(&self, container_id: &str, bridge: &str) -> Result<()> {
        self.with(|s| {
            s.calls.push(NetCall::Detach(container_id.to_owned()));
            s.leases
                .remove(&(bridge.to_owned(), container_id.to_owned()));
        });
        Ok(())
    }

    fn hosts_path(&self, bridge: &str) -> PathBuf {
        self.run_dir.join("networks").join(bridge).join("hosts")
    }

    fn address_of(&self, bridge: &str, container_id: &str) -> Result<Option<Ipv4Addr>> {
        Ok(self.with(|s| {
            s.leases
                .get(&(bridge.to_owned(), container_id.to_owned()))
                .copied()
        }))
    }

    fn leases(&self) -> Result<Vec<(String, String)>> {
        Ok(self.with(|s| s.leases.keys().cloned().collect()))
    }

    fn is_plugged_in(&self, container_id: &str) -> bool {
        self.has_lease(container_id)
    }

    async fn probe(&self, ip: Ipv4Addr, _spec: &HealthSpec) -> std::result::Result<(), String> {
        let healthy = self.with(|s| {
            s.probes.push(Instant::now());
            s.healthy
        });
        if healthy {
            Ok(())
        } else {
            Err(format!("tcp connect {ip}: connection refused"))
        }
    }
}
