//! The isolation seam: where the eBPF programs of the `ebpf` crate attach to each container.
//! Until that crate is wired in, [`IsolationDisabled`] stands in, and the agent says so at start.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Everything the isolation programs need to know about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEndpoint {
    pub container_id: String,
    pub project_id: String,
    pub environment_id: String,
    /// `stackpad.node.v1.ServiceType` as a number (web services are reachable by the proxy).
    pub service_type: i32,
    /// The container's cgroup directory on the cgroup2 hierarchy, and its inode number (what
    /// `bpf_skb_cgroup_id()` returns).
    pub cgroup_path: PathBuf,
    pub cgroup_id: u64,
    /// Host end of the container's veth, and the project bridge.
    pub host_veth: String,
    pub bridge: String,
    pub ip: Ipv4Addr,
    /// The port the service listens on (what the proxy and the health checks may reach).
    pub service_port: Option<u16>,
}

/// A container on another node of the cluster, as the isolation policy needs it: its address
/// and who it belongs to (from control's pushed endpoint set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub ip: Ipv4Addr,
    pub project_id: String,
    pub environment_id: String,
    /// `stackpad.node.v1.ServiceType` as a number.
    pub service_type: i32,
    pub service_port: Option<u16>,
}

/// Error from an isolation implementation.
#[derive(Debug, thiserror::Error)]
#[error("isolation for container {container_id}: {reason}")]
pub struct IsolationError {
    pub container_id: String,
    pub reason: String,
}

/// Attaches and detaches per-container isolation. Called after the task is created (cgroup
/// exists) and before it starts; detach after the task is gone. Both must be idempotent.
pub trait IsolationHook: Send + Sync + std::fmt::Debug {
    fn attach(&self, endpoint: &ContainerEndpoint) -> Result<(), IsolationError>;
    fn detach(&self, endpoint: &ContainerEndpoint) -> Result<(), IsolationError>;
    /// A name for the start-up log line.
    fn describe(&self) -> &'static str;
    /// Replaces the set of containers on other nodes the policy knows (the whole set each
    /// time; addresses of this node's own pool are ignored: attach/detach own those). Returns
    /// how many are registered. Without a policy there is nothing to register.
    fn set_remote_endpoints(&self, _endpoints: &[RemoteEndpoint]) -> Result<usize, IsolationError> {
        Ok(0)
    }
    /// Per-container traffic counters in Prometheus text, for each `(host veth, labels)`;
    /// empty when the implementation counts nothing.
    fn traffic_metrics(&self, _containers: &[(String, Vec<(&'static str, String)>)]) -> String {
        String::new()
    }
}

/// Isolation disabled: containers are kept apart only by bridges and the nftables forward
/// rules, not by eBPF policy. A legitimate mode until the `ebpf` crate is wired in.
#[derive(Debug, Default, Clone, Copy)]
pub struct IsolationDisabled;

impl IsolationHook for IsolationDisabled {
    fn attach(&self, _endpoint: &ContainerEndpoint) -> Result<(), IsolationError> {
        Ok(())
    }
    fn detach(&self, _endpoint: &ContainerEndpoint) -> Result<(), IsolationError> {
        Ok(())
    }
    fn describe(&self) -> &'static str {
        "isolation disabled (no eBPF policy; bridges and nftables forward rules only)"
    }
}

/// The cgroup2 directory of a container the agent created (`cgroupsPath` = `/<ns>/<id>`).
pub fn cgroup_path(namespace: &str, container_id: &str) -> PathBuf {
    PathBuf::from("/sys/fs/cgroup/unified")
        .join(namespace)
        .join(container_id)
}

/// The cgroup id (inode number of the cgroup2 directory), if it exists.
pub fn cgroup_id(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}
