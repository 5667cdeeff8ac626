//! The agent: deploys, stops, removes and watches containers, and adopts them after a restart.
//! Decisions (restart policy, health thresholds, reconcile plan) are pure functions elsewhere;
//! this module carries them out through two seams: the container engine
//! ([`ContainerEngine`], containerd) and the container network ([`ContainerNetwork`]), plus
//! the log files and the isolation hook.

mod deploy;
pub mod dump;
pub mod engine;
pub mod exec;
#[cfg(test)]
mod fakes;
mod lifecycle;
pub mod reconcile;
pub mod record;
mod supervise;
pub mod task;
#[cfg(test)]
mod tests;
mod volumes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use engine::{ContainerEngine, ContainerdEngine};
pub use record::{State, Status};
pub use volumes::VolumeState;

use crate::config::NodeConfig;
use crate::containerd::Containerd;
use crate::error::{Result, RuntimeError};
use crate::image::RegistryClient;
use crate::isolation::{ContainerEndpoint, IsolationHook};
use crate::logs::{LogLabels, LogSink, Logs};
use crate::metrics::Metrics;
use crate::network::{ContainerNetwork, Networks};
use crate::spec::{DeploySpec, Limits};
use crate::userns::UsernsFile;
use crate::volume::Volumes;
use record::Entry;

/// What the node has and what its containers asked for.
#[derive(Debug, Clone, Default)]
pub struct Capacity {
    pub cpu_millis_total: u32,
    pub cpu_millis_allocated: u32,
    pub memory_bytes_total: u64,
    pub memory_bytes_allocated: u64,
    pub containers_running: u32,
    pub containers_max: u32,
}

/// The node agent, over a container engine `E` and a container network `N` (containerd and
/// the node's bridges in production, recording fakes in its unit tests).
#[derive(Debug)]
pub struct Agent<E = ContainerdEngine, N = Networks> {
    pub(crate) config: NodeConfig,
    pub(crate) engine: E,
    pub(crate) networks: N,
    pub(crate) logs: Logs,
    pub(crate) isolation: Arc<dyn IsolationHook>,
    pub(crate) metrics: Arc<Metrics>,
    /// Host id ranges per project (machine-wide table).
    pub(crate) userns: UsernsFile,
    /// The services' persistent volumes on this node.
    pub(crate) volumes: Volumes,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// One operation at a time per container id.
    op_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    limits: Limits,
    cpu_total: u32,
}

fn memory_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

impl Agent {
    /// Connects to containerd and prepares the agent's directories and firewall; does not
    /// reconcile (call [`Agent::reconcile`]).
    pub async fn new(
        config: NodeConfig,
        isolation: Arc<dyn IsolationHook>,
        sink: Arc<dyn LogSink>,
    ) -> Result<Arc<Self>> {
        config.validate()?;
        let containerd = Containerd::connect(&config.containerd_socket, &config.namespace).await?;
        let version = containerd.server_version().await?;
        let transfer = containerd.has_transfer().await;
        tracing::info!(
            containerd = %version,
            transfer_service = transfer,
            "connected to containerd; pulls go through Content/Diff (works with and without Transfer)"
        );
        let pool = config.pool()?;
        crate::network::host::install_firewall(
            crate::network::BRIDGE_PREFIX,
            pool,
            config.allow_egress,
            config.cluster.as_ref(),
        )
        .await?;
        let networks = Networks::new(
            &config.ipam_dir,
            &config.run_dir,
            &config.namespace,
            pool,
            config.subnet_prefix,
        )?;
        networks.serve_dns()?;
        let engine = ContainerdEngine::new(
            containerd,
            RegistryClient::new(config.registries.clone())?,
            &config.snapshotter,
        );
        Self::with_parts(config, engine, networks, isolation, sink)
    }

    /// The containerd connection (tests and the daemon's node info use it).
    pub fn containerd(&self) -> &Containerd {
        self.engine.containerd()
    }
}

impl<E: ContainerEngine, N: ContainerNetwork> Agent<E, N> {
    /// An agent on the given engine and network; makes its directories (state, run, id
    /// ranges, logs) and nothing else. [`Agent::new`] builds the real parts.
    pub fn with_parts(
        config: NodeConfig,
        engine: E,
        networks: N,
        isolation: Arc<dyn IsolationHook>,
        sink: Arc<dyn LogSink>,
    ) -> Result<Arc<Self>> {
        config.validate()?;
        tracing::info!(isolation = isolation.describe(), "isolation hook");
        for dir in [&config.state_dir, &config.run_dir] {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io(dir, e))?;
        }
        let userns = UsernsFile::new(&config.userns_dir)?;
        let volumes = Volumes::under_state_dir(&config.state_dir);
        let logs = Logs::new(
            &config.run_dir,
            &config.state_dir,
            config.log_file_bytes,
            config.log_files,
            config.log_line_bytes,
            sink,
        );
        let cpu_total = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
            * 1000;
        let limits = Limits {
            min_memory_bytes: config.min_memory_bytes,
            max_memory_bytes: memory_total().max(config.min_memory_bytes),
            max_cpu_millis: cpu_total,
        };
        Ok(Arc::new(Self {
            config,
            engine,
            networks,
            logs,
            isolation,
            metrics: Arc::new(Metrics::default()),
            userns,
            volumes,
            entries: Mutex::new(HashMap::new()),
            op_locks: Mutex::new(HashMap::new()),
            limits,
            cpu_total,
        }))
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.entries.lock().expect("entries lock").get(id).cloned()
    }

    pub(crate) fn insert_entry(&self, id: &str, entry: Arc<Entry>) {
        self.entries
            .lock()
            .expect("entries lock")
            .insert(id.to_owned(), entry);
    }

    pub(crate) fn remove_entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.entries.lock().expect("entries lock").remove(id)
    }

    fn all_entries(&self) -> Vec<Arc<Entry>> {
        self.entries
            .lock()
            .expect("entries lock")
            .values()
            .cloned()
            .collect()
    }

    pub(crate) async fn op_lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .op_locks
            .lock()
            .expect("op locks")
            .entry(id.to_owned())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// The status of one container.
    pub fn status(&self, container_id: &str) -> Result<Status> {
        self.entry(container_id)
            .map(|e| e.status())
            .ok_or_else(|| RuntimeError::NotFound {
                container_id: container_id.to_owned(),
            })
    }

    /// Every container, optionally only one project's or one deployment's.
    pub fn list(&self, project_id: Option<&str>, deployment_id: Option<&str>) -> Vec<Status> {
        let mut out: Vec<Status> = self
            .all_entries()
            .iter()
            .map(|e| e.status())
            .filter(|s| project_id.is_none_or(|p| s.spec.workload.project_id == p))
            .filter(|s| deployment_id.is_none_or(|d| s.spec.workload.deployment_id == d))
            .collect();
        out.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        out
    }

    /// Capacity and allocation.
    pub fn capacity(&self) -> Capacity {
        let mut c = Capacity {
            cpu_millis_total: self.cpu_total,
            memory_bytes_total: self.limits.max_memory_bytes,
            containers_max: self.config.max_containers,
            ..Capacity::default()
        };
        for s in self.all_entries().iter().map(|e| e.status()) {
            if s.wanted_running {
                c.cpu_millis_allocated += s.spec.resources.cpu_millis;
                c.memory_bytes_allocated += self.memory_of(&s.spec);
            }
            if s.state.is_running() {
                c.containers_running += 1;
            }
        }
        c
    }

    /// Counts of containers per state (for metrics).
    pub fn state_counts(&self) -> HashMap<State, u64> {
        let mut m = HashMap::new();
        for s in self.all_entries().iter().map(|e| e.status()) {
            *m.entry(s.state).or_insert(0) += 1;
        }
        m
    }

    pub(crate) fn memory_of(&self, spec: &DeploySpec) -> u64 {
        if spec.resources.memory_bytes == 0 {
            self.config.default_memory_bytes
        } else {
            spec.resources.memory_bytes
        }
    }

    pub(crate) fn pids_of(&self, spec: &DeploySpec) -> u32 {
        if spec.resources.pids_limit == 0 {
            self.config.default_pids_limit
        } else {
            spec.resources.pids_limit
        }
    }

    pub(crate) fn log_labels(&self, id: &str, spec: &DeploySpec) -> LogLabels {
        let w = &spec.workload;
        LogLabels {
            container_id: id.to_owned(),
            organization_id: w.organization_id.clone(),
            project_id: w.project_id.clone(),
            environment_id: w.environment_id.clone(),
            service_id: w.service_id.clone(),
            deployment_id: w.deployment_id.clone(),
        }
    }

    pub(crate) fn isolation_endpoint(&self, status: &Status) -> ContainerEndpoint {
        let cgroup_path =
            crate::isolation::cgroup_path(&self.config.namespace, &status.container_id);
        ContainerEndpoint {
            container_id: status.container_id.clone(),
            project_id: status.spec.workload.project_id.clone(),
            environment_id: status.spec.workload.environment_id.clone(),
            service_type: status.spec.workload.service_type,
            cgroup_id: crate::isolation::cgroup_id(&cgroup_path).unwrap_or(0),
            cgroup_path,
            host_veth: crate::network::veth_name(&status.container_id),
            bridge: status.bridge.clone(),
            ip: status.ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            service_port: status
                .spec
                .ports
                .first()
                .and_then(|p| u16::try_from(p.container_port).ok()),
        }
    }

    /// The log sink's series (lines shipped, dropped, spooled) for `/metrics`.
    pub fn log_metrics(&self) -> String {
        self.logs.sink_metrics()
    }

    /// Traffic counters of every container from the isolation programs (bytes, packets and
    /// drops by reason, per direction), labelled with its project, environment and service.
    pub fn traffic_metrics(&self) -> String {
        let containers: Vec<(String, Vec<(&'static str, String)>)> = self
            .list(None, None)
            .into_iter()
            .map(|s| {
                let w = &s.spec.workload;
                let labels = vec![
                    ("project", w.project_id.clone()),
                    ("environment", w.environment_id.clone()),
                    ("service", w.service_name.clone()),
                    ("container", s.container_id.clone()),
                ];
                (crate::network::veth_name(&s.container_id), labels)
            })
            .collect();
        self.isolation.traffic_metrics(&containers)
    }

    /// Lines from the container's log: the last `tail` on disk, then a live receiver.
    pub fn logs(
        &self,
        container_id: &str,
        tail: usize,
        follow: bool,
    ) -> Result<(
        Vec<crate::logs::LogLine>,
        Option<tokio::sync::broadcast::Receiver<crate::logs::LogLine>>,
    )> {
        if self.entry(container_id).is_none() && !self.logs.has_files(container_id) {
            return Err(RuntimeError::NotFound {
                container_id: container_id.to_owned(),
            });
        }
        // Subscribe first so no line falls between the tail and the live feed.
        let live = if follow {
            self.logs.follow(container_id)
        } else {
            None
        };
        Ok((self.logs.tail(container_id, tail), live))
    }

    /// Stops watching every container (the containers keep running), e.g. before the agent
    /// exits or when a test simulates an agent restart.
    pub fn detach_all(&self) {
        for e in self.all_entries() {
            e.stop_watchers();
            self.logs.close_readers(&e.status().container_id);
        }
        self.entries.lock().expect("entries lock").clear();
    }
}
