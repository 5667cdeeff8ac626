//! Deleting a service takes it off the platform before its rows go: the proxy stops routing
//! it and may no longer order certificates for its names, then every container any of its
//! deployments left on a node is removed. A call that fails leaves the service in place
//! (nothing half-deleted that a retry could not finish): the caller answers 503 and the
//! delete can be repeated; every step is idempotent. Deleting an environment or a project
//! tears down each of its services the same way ([`tear_down_all`]), after checking that none
//! has a deployment on its way, so a refused delete touched nothing.

use ::api::{DeploymentState, ServiceKind};
use uuid::Uuid;

use super::driver::Clients;
use crate::clients::ClientError;
use crate::store::{Service, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A deployment of the service is still on its way; deleting under it would race it.
    #[error("deployment {0} is {1}: cancel it or wait for it to finish, then delete again")]
    InProgress(Uuid, DeploymentState),
    #[error("{what}: {source}")]
    Call {
        what: String,
        #[source]
        source: ClientError,
    },
}

/// How long what a teardown removes is given.
#[derive(Debug, Clone, Copy)]
pub struct Grace {
    /// SIGTERM to SIGKILL of the containers (0 = their own).
    pub stop_ms: u32,
    /// How long the volumes stay on their nodes (`crate::volumes`).
    pub volumes: std::time::Duration,
}

/// Takes every one of `services` (of `org`) off the proxy and the nodes, once none of them has
/// a deployment on its way; the store rows are left to the caller.
pub async fn tear_down_all(
    store: &Store,
    clients: &Clients,
    apps_domain: &str,
    org: Uuid,
    services: &[Service],
    grace: Grace,
) -> Result<(), TeardownError> {
    for service in services {
        let deployments = store.service_deployment_nodes(service.id).await?;
        if let Some(d) = deployments.iter().find(|d| {
            matches!(
                d.state,
                DeploymentState::Queued | DeploymentState::Building | DeploymentState::Deploying
            )
        }) {
            return Err(TeardownError::InProgress(d.id, d.state));
        }
    }
    for service in services {
        take_off(store, clients, apps_domain, org, service, grace).await?;
    }
    Ok(())
}

async fn take_off(
    store: &Store,
    clients: &Clients,
    apps_domain: &str,
    org: Uuid,
    service: &Service,
    grace: Grace,
) -> Result<(), TeardownError> {
    let deployments = store.service_deployment_nodes(service.id).await?;
    if service.kind == ServiceKind::Web
        && let Some(proxy) = &clients.proxy
    {
        let route = crate::domains::route::route_push(store, org, service, apps_domain).await?;
        proxy
            .remove_route(&route.route_id, route.generation)
            .await
            .map_err(|source| TeardownError::Call {
                what: format!("removing route {} from the proxy", route.route_id),
                source,
            })?;
        for host in &route.certificate_hosts {
            proxy
                .remove_allowed_domain(host)
                .await
                .map_err(|source| TeardownError::Call {
                    what: format!("withdrawing certificates for {host} at the proxy"),
                    source,
                })?;
        }
    }
    // The volumes stay on the nodes that ran the service for a grace period
    // (`crate::volumes`): the rows of the service go, the data not yet.
    if !service.volumes.is_empty() {
        let mut nodes: Vec<Uuid> = deployments.iter().filter_map(|d| d.node_id).collect();
        nodes.sort();
        nodes.dedup();
        let delete_after = chrono::Utc::now()
            + chrono::Duration::from_std(grace.volumes).unwrap_or(chrono::Duration::MAX);
        crate::volumes::schedule_deletion(store, service.id, None, &nodes, delete_after).await?;
    }
    for d in deployments {
        let deployment = d.id;
        let Some(node) = d.node_id else { continue };
        let node = store.node(node).await?;
        clients
            .node
            .remove_deployment(&node.address, &deployment.to_string(), grace.stop_ms)
            .await
            .map_err(|source| TeardownError::Call {
                what: format!(
                    "removing deployment {deployment} from node {} ({})",
                    node.name, node.address
                ),
                source,
            })?;
    }
    Ok(())
}
