//! The cluster's endpoint set (#15): every live container of every compute node with who it
//! belongs to, pushed whole to each compute node (`NodeAgent.SetClusterEndpoints`). A node's
//! isolation policy learns the project of the other nodes' containers from it (the same project
//! is reachable across nodes, another is dropped) and its resolver the names.
//!
//! Pushed after every switch and teardown ([`push`]), and checked on every node-monitor tick
//! ([`reconcile`]): a node whose reported digest differs (it restarted, or missed a push) gets
//! the set again. The set is derived from PostgreSQL each time, so any control instance pushes
//! the same set with the same digest.

use std::net::Ipv4Addr;

use ::api::{NodeRole, NodeStatus, ServiceKind};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::clients::{ClientError, Workload};
use crate::pipeline::driver::Clients;
use crate::store::{Store, StoreError};

/// One live container of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEndpoint {
    pub ip: Ipv4Addr,
    /// The port its service listens on (from its upstream address).
    pub port: u16,
    pub node_id: Uuid,
    pub workload: Workload,
}

/// The whole set, sorted by address, and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSet {
    pub digest: String,
    pub endpoints: Vec<ClusterEndpoint>,
}

impl EndpointSet {
    /// Sorts the endpoints and computes the digest over everything a node uses of them.
    pub fn new(mut endpoints: Vec<ClusterEndpoint>) -> Self {
        endpoints.sort_by(|a, b| {
            (a.ip, &a.workload.deployment_id).cmp(&(b.ip, &b.workload.deployment_id))
        });
        endpoints.dedup_by(|a, b| a.ip == b.ip);
        let mut h = Sha256::new();
        for e in &endpoints {
            let w = &e.workload;
            for part in [
                e.ip.to_string().as_str(),
                &e.port.to_string(),
                &e.node_id.to_string(),
                &w.organization_id,
                &w.project_id,
                &w.environment_id,
                &w.service_id,
                &w.service_name,
                &w.environment_name,
                &w.deployment_id,
                w.service_kind.as_str(),
                &w.replica.to_string(),
            ] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            h.update([1]);
        }
        let digest = hex::encode(&h.finalize()[..16]);
        Self { digest, endpoints }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    node_id: Uuid,
    upstream_address: String,
    replica: i32,
    deployment_id: Uuid,
    organization_id: Uuid,
    project_id: Uuid,
    environment_id: Uuid,
    service_id: Uuid,
    service_name: String,
    kind: String,
    environment_name: String,
}

/// The live containers: every healthy instance of a deployment that serves (its service's
/// current one), is on its way (starting, switching, stopping the old set) or is the old set
/// being stopped.
pub async fn current(store: &Store) -> Result<EndpointSet, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT i.node_id, i.upstream_address, i.replica, d.id AS deployment_id, \
           s.organization_id, s.project_id, s.environment_id, s.id AS service_id, \
           s.name AS service_name, s.kind, e.name AS environment_name \
         FROM deployment_instances i \
         JOIN deployments d ON d.id = i.deployment_id \
         JOIN services s ON s.id = d.service_id \
         JOIN environments e ON e.id = s.environment_id \
         WHERE i.upstream_address IS NOT NULL AND ( \
           d.id = s.current_deployment_id \
           OR d.phase IN ('starting', 'switching', 'stopping_old') \
           OR d.id IN (SELECT previous_deployment_id FROM deployments \
                       WHERE phase IN ('switching', 'stopping_old') \
                         AND previous_deployment_id IS NOT NULL))",
    )
    .fetch_all(&store.pool)
    .await?;
    let endpoints = rows
        .into_iter()
        .filter_map(|r| {
            // `ip:port` as the node reported it; anything else is not a container address.
            let (ip, port) = r.upstream_address.rsplit_once(':')?;
            let kind: ServiceKind = r.kind.parse().ok()?;
            Some(ClusterEndpoint {
                ip: ip.parse().ok()?,
                port: port.parse().ok()?,
                node_id: r.node_id,
                workload: Workload {
                    organization_id: r.organization_id.to_string(),
                    project_id: r.project_id.to_string(),
                    environment_id: r.environment_id.to_string(),
                    service_id: r.service_id.to_string(),
                    service_name: r.service_name,
                    deployment_id: r.deployment_id.to_string(),
                    service_kind: kind,
                    environment_name: r.environment_name,
                    replica: u32::try_from(r.replica).unwrap_or_default(),
                },
            })
        })
        .collect();
    Ok(EndpointSet::new(endpoints))
}

/// The compute nodes that are up: `(name, address)`.
async fn compute_nodes(store: &Store) -> Result<Vec<(String, String)>, StoreError> {
    Ok(store
        .nodes()
        .await?
        .into_iter()
        .filter(|n| n.role == NodeRole::Compute && n.status == NodeStatus::Up)
        .map(|n| (n.name, n.address))
        .collect())
}

/// Pushes the current set to every compute node that is up, at once. A node that does not
/// answer is logged and gets the set at a later [`reconcile`]; never fails the caller (the
/// switch or teardown it follows already happened).
pub async fn push(store: &Store, clients: &Clients) {
    if let Err(e) = push_where(store, clients, false).await {
        tracing::warn!(error = %e, "pushing the cluster endpoints failed");
    }
}

/// Pushes the current set to every compute node that is up and reports another digest.
pub async fn reconcile(store: &Store, clients: &Clients) {
    if let Err(e) = push_where(store, clients, true).await {
        tracing::warn!(error = %e, "reconciling the cluster endpoints failed");
    }
}

async fn push_where(store: &Store, clients: &Clients, only_stale: bool) -> Result<(), StoreError> {
    let set = current(store).await?;
    let nodes = compute_nodes(store).await?;
    let calls = nodes.iter().map(|(name, address)| {
        let set = &set;
        async move {
            if only_stale {
                match clients.node.cluster_endpoints_digest(address).await {
                    Ok(digest) if digest == set.digest => return,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(node = %name, error = %e, "no endpoint digest");
                        return;
                    }
                }
            }
            match clients.node.set_cluster_endpoints(address, set).await {
                Ok(()) => {
                    tracing::debug!(node = %name, digest = %set.digest, "cluster endpoints pushed")
                }
                Err(e) => log_failure(name, &e),
            }
        }
    });
    futures::future::join_all(calls).await;
    Ok(())
}

fn log_failure(node: &str, e: &ClientError) {
    tracing::warn!(node, error = %e, "the node did not take the cluster endpoints (pushed again at the next monitor tick)");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(ip: [u8; 4], project: &str, deployment: &str) -> ClusterEndpoint {
        ClusterEndpoint {
            ip: Ipv4Addr::from(ip),
            port: 8080,
            node_id: Uuid::nil(),
            workload: Workload {
                organization_id: "o".into(),
                project_id: project.into(),
                environment_id: "e".into(),
                service_id: "s".into(),
                service_name: "web".into(),
                deployment_id: deployment.into(),
                service_kind: ServiceKind::Web,
                environment_name: "production".into(),
                replica: 0,
            },
        }
    }

    #[test]
    fn the_digest_is_the_sets_whatever_the_order() {
        let a = endpoint([10, 97, 16, 2], "p", "d1");
        let b = endpoint([10, 97, 32, 2], "q", "d2");
        let one = EndpointSet::new(vec![a.clone(), b.clone()]);
        let two = EndpointSet::new(vec![b.clone(), a.clone()]);
        assert_eq!(one, two);
        assert_eq!(one.endpoints[0].ip, Ipv4Addr::new(10, 97, 16, 2));
        let moved = EndpointSet::new(vec![a.clone(), endpoint([10, 97, 32, 2], "p", "d2")]);
        assert_ne!(
            one.digest, moved.digest,
            "another project at an address is another set"
        );
        assert_ne!(one.digest, EndpointSet::new(vec![a]).digest);
        assert_eq!(EndpointSet::new(Vec::new()).digest.len(), 32);
    }

    #[test]
    fn an_address_appears_once() {
        let set = EndpointSet::new(vec![
            endpoint([10, 97, 16, 2], "p", "d1"),
            endpoint([10, 97, 16, 2], "p", "d0"),
        ]);
        assert_eq!(set.endpoints.len(), 1);
    }
}
