//! The seams to the other daemons: narrow traits the pipeline driver calls, with the gRPC
//! implementations over `proto` in [`grpc`]. Unit tests of the driver use recording fakes.

pub mod grpc;
pub mod tls;

use std::collections::BTreeMap;

use ::api::ServiceKind;
use async_trait::async_trait;

/// A failed call to another daemon. `retryable` is true when the daemon could not be reached or
/// was busy (the same call may succeed later), false when it answered with a refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{daemon} at {address}: {message}")]
pub struct ClientError {
    pub daemon: &'static str,
    pub address: String,
    pub message: String,
    pub retryable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    /// The deployment id: buildd is idempotent per build id.
    pub build_id: String,
    pub git_url: String,
    pub git_ref: String,
    pub git_commit: String,
    pub subdirectory: String,
    /// Repository to push to, without tag.
    pub image_repository: String,
    pub timeout_seconds: u32,
    /// Passed to the Dockerfile as build arguments (`ARG`).
    pub build_args: BTreeMap<String, String>,
    /// Offered to the build as BuildKit secrets (`RUN --mount=type=secret,id=NAME`): never a
    /// build argument, never in the image or its history.
    pub secrets: BTreeMap<String, String>,
    /// The project's git credentials (a private repository): sent inside this request only.
    pub git_credentials: Option<crate::store::GitCredentials>,
    /// The project's SSH deploy key, for a repository over SSH: sent inside this request only.
    pub deploy_key: Option<crate::deploy_keys::DeployKeySecret>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildOutcome {
    Succeeded {
        /// Pushed reference, and the manifest digest it resolved to.
        image: String,
        image_digest: String,
        commit: String,
        /// Port the built app listens on (0 = unknown).
        container_port: u32,
    },
    Failed {
        reason: String,
    },
    Cancelled,
}

/// A line of a build's log as the build client saw it go by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildLogLine {
    /// Place in the build's log, from 1 (a watch taken again starts at 1 again: the same
    /// numbers for the same lines).
    pub number: u32,
    pub timestamp_ns: i64,
    /// E.g. `clone`, `[build 3/5] RUN npm run build`, `result` (how the build ended).
    pub step: String,
    /// `logstore::build_logs::STREAM_STDOUT` or `STREAM_STDERR`.
    pub stream: u8,
    pub line: String,
}

/// Where a build client hands the lines of the build it waits for.
pub type BuildLogSender = tokio::sync::mpsc::UnboundedSender<BuildLogLine>;

/// buildd (`stackpad.build.v1.Builder`) on one build node.
#[async_trait]
pub trait BuilderClient: Send + Sync {
    /// Starts the build (or finds the one already started under that id) and waits for its end;
    /// every log line of the build goes to `log` meanwhile (replayed from its first line).
    async fn build(
        &self,
        node: &str,
        request: &BuildRequest,
        log: &BuildLogSender,
    ) -> Result<BuildOutcome, ClientError>;
    async fn cancel(&self, node: &str, build_id: &str) -> Result<(), ClientError>;
    /// Answers when the daemon is alive.
    async fn ping(&self, node: &str) -> Result<(), ClientError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub organization_id: String,
    pub project_id: String,
    pub environment_id: String,
    pub service_id: String,
    pub service_name: String,
    pub deployment_id: String,
    pub service_kind: ServiceKind,
    /// The environment's name: the container is also `<service>.<environment>.internal`.
    pub environment_name: String,
    /// Which of the deployment's replicas this container is, from 0 (its container id is
    /// derived from the deployment and the replica).
    pub replica: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthProbe {
    /// HTTP GET path; `None` = TCP connect.
    pub http_path: Option<String>,
    pub port: u32,
    pub interval_ms: u32,
    pub deadline_ms: u32,
    /// A command run inside the container instead (non-empty: an exec probe; exit 0 passes).
    pub exec: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub workload: Workload,
    pub image: String,
    /// Replace the image's entrypoint / cmd when non-empty.
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub port: u32,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub health: Option<HealthProbe>,
    /// The service's persistent volumes (mounted where the node holds them).
    pub volumes: Vec<crate::store::Volume>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerOutcome {
    /// Running and healthy; `address` is `ip:port` for the proxy.
    Healthy {
        container_id: String,
        address: String,
    },
    /// Did not become healthy; `reason` carries the health check's last response.
    Unhealthy { reason: String },
}

/// A volume as its node holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeUsage {
    pub name: String,
    pub size_bytes: u64,
    /// Bytes in use inside its filesystem (0 when it is not mounted).
    pub used_bytes: u64,
    /// The running container that holds it, empty when none does.
    pub held_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCapacity {
    pub cpu_millis_total: u64,
    pub memory_bytes_total: u64,
}

/// The node agent (`stackpad.node.v1.NodeAgent`) on one compute node.
#[async_trait]
pub trait NodeClient: Send + Sync {
    /// Starts the container of one replica of a deployment and waits for its health verdict.
    /// Idempotent per (deployment, replica).
    async fn deploy(
        &self,
        node: &str,
        spec: &ContainerSpec,
    ) -> Result<ContainerOutcome, ClientError>;
    /// Stops (SIGTERM, SIGKILL after `grace_ms`; 0 = the container's own grace period) and
    /// removes every container of the deployment. Idempotent.
    async fn remove_deployment(
        &self,
        node: &str,
        deployment_id: &str,
        grace_ms: u32,
    ) -> Result<(), ClientError>;
    async fn info(&self, node: &str) -> Result<NodeCapacity, ClientError>;
    /// Deletes every volume of the service on the node (or the one named), with its data.
    /// Idempotent; refused while a running container holds the volume.
    async fn remove_volumes(
        &self,
        node: &str,
        service_id: &str,
        name: Option<&str>,
    ) -> Result<(), ClientError>;
    /// The service's volumes on the node with the bytes each uses (`ListVolumes`). A client
    /// that cannot ask says so.
    async fn list_volumes(
        &self,
        node: &str,
        _service_id: &str,
    ) -> Result<Vec<VolumeUsage>, ClientError> {
        Err(ClientError {
            daemon: "node agent",
            address: node.to_owned(),
            message: "this client does not list volumes".into(),
            retryable: false,
        })
    }
    /// Replaces the node's view of the cluster's containers (#15, `SetClusterEndpoints`).
    /// A client that cannot push says so (the caller logs it and tries at the next tick).
    async fn set_cluster_endpoints(
        &self,
        node: &str,
        _set: &crate::endpoints::EndpointSet,
    ) -> Result<(), ClientError> {
        Err(no_cluster_endpoints(node))
    }
    /// The digest of the endpoint set the node holds (empty: none since it started).
    async fn cluster_endpoints_digest(&self, node: &str) -> Result<String, ClientError> {
        Err(no_cluster_endpoints(node))
    }
}

fn no_cluster_endpoints(node: &str) -> ClientError {
    ClientError {
        daemon: "node agent",
        address: node.to_owned(),
        message: "this client does not carry cluster endpoints".into(),
        retryable: false,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub route_id: String,
    pub hosts: Vec<String>,
    pub service_id: String,
    /// Hosts the proxy may order ACME certificates for: the platform subdomain (ours by
    /// construction). Custom domains join once verified; the proxy never orders anything else.
    pub certificate_hosts: Vec<String>,
    /// Owner of the service, stored on the proxy's access log rows so queries are scoped.
    pub organization_id: String,
    pub project_id: String,
    pub environment_id: String,
    /// Orders this push against the route's other pushes (`route_generations`, taken before
    /// the route was read from the store): the proxy refuses one older than what it holds, so
    /// a slow push never overwrites a newer one. 0 = unordered.
    pub generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchSpec {
    pub service_id: String,
    pub deployment_id: String,
    /// `ip:port` of every replica of the deployment: the whole new set, switched at once.
    pub addresses: Vec<String>,
    pub health_path: Option<String>,
    /// Probe interval of the proxy's own health check (it passes once before the swap).
    pub health_interval_ms: u32,
    pub drain_deadline_ms: u32,
    pub health_timeout_ms: u32,
    /// As [`RouteSpec::generation`], per service: the proxy refuses a switch older than the
    /// newest one it applied (a deploy that lost the race to a newer one). 0 = unordered.
    pub route_generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchOutcome {
    /// Traffic moved and the old set drained.
    Switched,
    /// The proxy refused (the new set never became healthy); routing is unchanged.
    Refused { reason: String },
}

/// The proxy's admin API (`stackpad.proxy.v1.ProxyAdmin`).
#[async_trait]
pub trait ProxyClient: Send + Sync {
    async fn upsert_route(&self, route: &RouteSpec) -> Result<(), ClientError>;
    async fn switch(&self, spec: &SwitchSpec) -> Result<SwitchOutcome, ClientError>;
    /// Takes a domain off the list the proxy may order certificates for (a custom domain that
    /// stopped verifying or was removed). Removing an unknown domain succeeds.
    async fn remove_allowed_domain(&self, domain: &str) -> Result<(), ClientError>;
    /// Stops routing `route_id` (a deleted service), unless the proxy holds a newer
    /// `generation` of it (0 = unordered). Removing an unknown route succeeds.
    async fn remove_route(&self, route_id: &str, generation: u64) -> Result<(), ClientError>;
    /// Takes a service out of rotation and marks it sleeping: the proxy holds its requests
    /// and asks for a wake ([`ProxyClient::wakes`]); the next switch ends the sleep (#17).
    async fn sleep(&self, _service_id: &str) -> Result<(), ClientError> {
        Err(cannot("put services to sleep"))
    }
    /// The services the proxy holds requests for, as it asks (a stream that ends when the
    /// connection does).
    async fn wakes(&self) -> Result<WakeStream, ClientError> {
        Err(cannot("watch wakes"))
    }
}

/// Service ids the proxy asks to wake.
pub type WakeStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<String, ClientError>> + Send>>;

fn cannot(what: &str) -> ClientError {
    ClientError {
        daemon: "proxy",
        address: String::new(),
        message: format!("this client cannot {what}"),
        retryable: false,
    }
}
