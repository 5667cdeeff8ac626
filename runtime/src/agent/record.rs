//! What the agent knows about each container, and how that is kept in containerd (labels and
//! an extension) so it survives the agent's restarts.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::spec::DeploySpec;
use crate::userns::IdMap;

pub const LABEL_MANAGED: &str = "stackpad.io/managed";
pub const LABEL_PROJECT: &str = "stackpad.io/project";
pub const LABEL_ENVIRONMENT: &str = "stackpad.io/environment";
pub const LABEL_DEPLOYMENT: &str = "stackpad.io/deployment";
pub const LABEL_SERVICE: &str = "stackpad.io/service";
pub const LABEL_BRIDGE: &str = "stackpad.io/bridge";
pub const LABEL_IMAGE_DIGEST: &str = "stackpad.io/image-digest";
pub const LABEL_DESIRED: &str = "stackpad.io/desired";
pub const LABEL_CREATED_MS: &str = "stackpad.io/created-ms";
/// Base of the host id range the container's user namespace maps to.
pub const LABEL_USERNS_BASE: &str = "stackpad.io/userns-base";
pub const EXT_DEPLOY: &str = "stackpad.io/deploy";
pub const DEPLOY_TYPE_URL: &str = "stackpad.io/runtime/DeploySpec/v1";

/// A container's lifecycle state (`stackpad.node.v1.ContainerState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Pulling,
    Created,
    Starting,
    Healthy,
    Unhealthy,
    Restarting,
    Stopped,
    Failed,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Pulling,
        State::Created,
        State::Starting,
        State::Healthy,
        State::Unhealthy,
        State::Restarting,
        State::Stopped,
        State::Failed,
    ];
    pub fn name(self) -> &'static str {
        match self {
            State::Pulling => "pulling",
            State::Created => "created",
            State::Starting => "starting",
            State::Healthy => "healthy",
            State::Unhealthy => "unhealthy",
            State::Restarting => "restarting",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
    /// Whether a process is (or is about to be) running.
    pub fn is_running(self) -> bool {
        matches!(self, State::Starting | State::Healthy | State::Unhealthy)
    }
}

/// The status of one container.
#[derive(Debug, Clone)]
pub struct Status {
    pub container_id: String,
    pub spec: DeploySpec,
    pub image_digest: String,
    pub state: State,
    pub ip: Option<Ipv4Addr>,
    pub bridge: String,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub restart_count: u32,
    pub message: String,
    pub created_ms: i64,
    pub started_ms: i64,
    pub pid: u32,
    /// Whether the container should be running (false after Stop).
    pub wanted_running: bool,
    /// Bumped each time a new task starts; the health loop restarts its count on a change.
    pub generation: u64,
    /// The host range the container's ids map to (`None`: made before user namespaces).
    pub id_map: Option<IdMap>,
}

/// A container the agent manages: its status and the tasks watching it.
#[derive(Debug)]
pub struct Entry {
    status: Mutex<Status>,
    changed: watch::Sender<u64>,
    pub(crate) watchers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Entry {
    pub fn new(status: Status) -> Self {
        let (changed, _) = watch::channel(0);
        Self {
            status: Mutex::new(status),
            changed,
            watchers: Mutex::new(Vec::new()),
        }
    }

    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    /// Changes the status and wakes whoever waits on it.
    pub fn update<T>(&self, f: impl FnOnce(&mut Status) -> T) -> T {
        let out = f(&mut self.status.lock().expect("status lock"));
        self.changed.send_modify(|v| *v += 1);
        out
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Stops the supervisor and health loop.
    pub fn stop_watchers(&self) {
        for h in self.watchers.lock().expect("watchers lock").drain(..) {
            h.abort();
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.stop_watchers();
    }
}

/// The labels a container carries in containerd.
pub fn labels(
    spec: &DeploySpec,
    bridge: &str,
    image_digest: &str,
    created_ms: i64,
    id_map: IdMap,
) -> HashMap<String, String> {
    let w = &spec.workload;
    HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_PROJECT.to_owned(), w.project_id.clone()),
        (LABEL_ENVIRONMENT.to_owned(), w.environment_id.clone()),
        (LABEL_DEPLOYMENT.to_owned(), w.deployment_id.clone()),
        (LABEL_SERVICE.to_owned(), w.service_name.clone()),
        (LABEL_BRIDGE.to_owned(), bridge.to_owned()),
        (LABEL_IMAGE_DIGEST.to_owned(), image_digest.to_owned()),
        (LABEL_DESIRED.to_owned(), "running".to_owned()),
        (LABEL_CREATED_MS.to_owned(), created_ms.to_string()),
        (LABEL_USERNS_BASE.to_owned(), id_map.base.to_string()),
    ])
}

/// The deploy spec as a containerd extension.
pub fn spec_extension(spec: &DeploySpec) -> prost_types::Any {
    prost_types::Any {
        type_url: DEPLOY_TYPE_URL.to_owned(),
        value: serde_json::to_vec(spec).expect("deploy spec serializes"),
    }
}

/// Reads the deploy spec back from a container's extensions.
pub fn spec_from_extensions(ext: &HashMap<String, prost_types::Any>) -> Option<DeploySpec> {
    ext.get(EXT_DEPLOY)
        .filter(|a| a.type_url == DEPLOY_TYPE_URL)
        .and_then(|a| serde_json::from_slice(&a.value).ok())
}

/// The id range a container's labels name.
pub fn id_map_from_labels(labels: &HashMap<String, String>) -> Option<IdMap> {
    labels
        .get(LABEL_USERNS_BASE)
        .and_then(|v| v.parse().ok())
        .map(|base| IdMap { base })
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
