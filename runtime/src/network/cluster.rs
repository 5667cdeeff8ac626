//! The cluster's container addresses as control pushes them (#15): every container of every
//! node with who it belongs to. The isolation policy registers the other nodes' containers from
//! it; the digest control gave the set is reported back in `NodeInfo`, so control pushes again
//! to a node that lost it (a restarted agent starts with none).

use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

/// One container address of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEndpoint {
    pub ip: Ipv4Addr,
    pub organization_id: String,
    pub project_id: String,
    pub environment_id: String,
    pub service_id: String,
    /// The service's DNS-safe name and its environment's name: the container answers to
    /// `<service_name>.<environment_name>.internal`.
    pub service_name: String,
    pub environment_name: String,
    /// `stackpad.node.v1.ServiceType` as a number.
    pub service_type: i32,
    pub service_port: Option<u16>,
    /// The node it runs on (control's id).
    pub node_id: String,
}

#[derive(Debug, Default)]
struct Held {
    digest: String,
    endpoints: Arc<Vec<ClusterEndpoint>>,
}

/// The last set applied, shared by the gRPC service and the node's readers.
#[derive(Debug, Default)]
pub struct ClusterView {
    held: RwLock<Held>,
}

impl ClusterView {
    /// The digest of the set held (empty: none since start).
    pub fn digest(&self) -> String {
        self.read().digest.clone()
    }

    /// The set held.
    pub fn endpoints(&self) -> Arc<Vec<ClusterEndpoint>> {
        self.read().endpoints.clone()
    }

    /// Replaces the set (after the isolation policy took it).
    pub fn replace(&self, digest: String, endpoints: Vec<ClusterEndpoint>) {
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        *held = Held {
            digest,
            endpoints: Arc::new(endpoints),
        };
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.held.read().unwrap_or_else(|p| p.into_inner())
    }
}
