//! Node loss and drain (#15). The replicas serving on a node marked down (or drained) are
//! placed again on the nodes that are up and not drained, by a deployment of the image the service runs ([`Store::redeploy_current`]):
//! the same start beside, one switch of the whole set, removal of the old set as any
//! deployment (the removal on the lost node fails and is recorded on the deployment). Until the
//! switch, the proxy's passive health keeps requests off the lost upstreams. A service with
//! volumes is not moved (its volumes live on that node): it is reported down with its lost
//! node, or left serving on the drained one (listed, for the operator to move by hand). A
//! node that answers again has the containers of deployments that stopped serving meanwhile
//! removed ([`clean_returned`]).

use ::api::DeploymentState;
use uuid::Uuid;

use super::driver::Clients;
use crate::store::{Node, Store, StoreError};

/// What became of a service that served on a lost node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// A deployment placing its replicas on the nodes that are up was queued.
    Rescheduled { service: Uuid, deployment: Uuid },
    /// A deployment of the service is already on its way; it places on the nodes that are up.
    InProgress { service: Uuid },
    /// Its volumes live on the lost node: it stays down with it.
    DownWithNode { service: Uuid, node: Uuid },
    /// Its volumes live on the drained node: it keeps serving there, not moved.
    StaysOnDrained { service: Uuid, node: Uuid },
}

/// Why a node's replicas move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Marked down: it stopped answering.
    Lost,
    /// Drained by the operator: it still serves until the new set is switched in.
    Drained,
}

#[derive(sqlx::FromRow)]
struct Serving {
    service_id: Uuid,
    organization_id: Uuid,
    has_volumes: bool,
    node_id: Uuid,
}

/// Reschedules the services that served on the nodes `down` (just marked down).
pub async fn reschedule(store: &Store, down: &[Uuid]) -> Result<Vec<Lost>, StoreError> {
    move_off(store, down, Cause::Lost).await
}

/// Places the replicas serving on `nodes` again elsewhere (a deployment of the image each
/// service runs; the scheduler skips nodes that are down or drained); services with volumes
/// stay. One outcome per service.
pub async fn move_off(store: &Store, down: &[Uuid], cause: Cause) -> Result<Vec<Lost>, StoreError> {
    if down.is_empty() {
        return Ok(vec![]);
    }
    let serving: Vec<Serving> = sqlx::query_as(
        "SELECT DISTINCT ON (s.id) s.id AS service_id, s.organization_id, \
            s.volumes <> '[]'::jsonb AS has_volumes, i.node_id \
         FROM services s JOIN deployment_instances i ON i.deployment_id = s.current_deployment_id \
         WHERE i.node_id = ANY($1) ORDER BY s.id",
    )
    .bind(down)
    .fetch_all(&store.pool)
    .await?;
    let mut outcomes = vec![];
    for s in serving {
        let outcome = if s.has_volumes && cause == Cause::Drained {
            tracing::warn!(service = %s.service_id, node = %s.node_id,
                "service stays on its drained node: its volumes live there, it is not moved");
            Lost::StaysOnDrained {
                service: s.service_id,
                node: s.node_id,
            }
        } else if s.has_volumes {
            tracing::error!(service = %s.service_id, node = %s.node_id,
                "service is down with its node: its volumes live there, it is not moved");
            Lost::DownWithNode {
                service: s.service_id,
                node: s.node_id,
            }
        } else if store
            .service_deployment_nodes(s.service_id)
            .await?
            .iter()
            .any(|d| {
                matches!(
                    d.state,
                    DeploymentState::Queued
                        | DeploymentState::Building
                        | DeploymentState::Deploying
                )
            })
        {
            Lost::InProgress {
                service: s.service_id,
            }
        } else {
            match store
                .redeploy_current(s.organization_id, s.service_id)
                .await?
            {
                Some(d) => {
                    tracing::warn!(service = %s.service_id, node = %s.node_id, deployment = %d.id, ?cause,
                        "the service's replicas are placed again on the nodes that are up");
                    Lost::Rescheduled {
                        service: s.service_id,
                        deployment: d.id,
                    }
                }
                None => continue,
            }
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// A service down with its node: its volumes live on a node marked down, so it was not moved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct DownWithNode {
    pub service_id: Uuid,
    pub node_id: Uuid,
    pub node_name: String,
}

/// Of `services`, those down with a node that is down (their volumes live there), with it.
pub async fn down_with_nodes(
    store: &Store,
    services: &[Uuid],
) -> Result<Vec<DownWithNode>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT s.id AS service_id, n.id AS node_id, n.name AS node_name FROM services s \
         JOIN deployment_instances i ON i.deployment_id = s.current_deployment_id \
         JOIN nodes n ON n.id = i.node_id \
         WHERE s.id = ANY($1) AND n.status = 'down' AND s.volumes <> '[]'::jsonb \
         ORDER BY s.id",
    )
    .bind(services)
    .fetch_all(&store.pool)
    .await?)
}

/// A node that answers again after it was down: the containers it still runs of deployments
/// that stopped serving since its last heartbeat (replaced elsewhere meanwhile) are removed.
/// Returns the deployments removed there.
pub async fn clean_returned(
    store: &Store,
    clients: &Clients,
    node: &Node,
) -> Result<Vec<Uuid>, StoreError> {
    let since = node.last_heartbeat_at.unwrap_or(node.created_at);
    let orphans: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT d.id FROM deployment_instances i JOIN deployments d ON d.id = i.deployment_id \
         WHERE i.node_id = $1 AND d.phase IN ('failed', 'superseded', 'cancelled') \
         AND d.updated_at >= $2 \
         AND NOT EXISTS (SELECT 1 FROM services s WHERE s.current_deployment_id = d.id)",
    )
    .bind(node.id)
    .bind(since)
    .fetch_all(&store.pool)
    .await?;
    let mut removed = vec![];
    for id in orphans {
        match clients
            .node
            .remove_deployment(&node.address, &id.to_string(), 0)
            .await
        {
            Ok(()) => removed.push(id),
            Err(e) => {
                tracing::warn!(node = %node.name, deployment = %id, error = %e,
                    "removing an orphaned container from a returned node failed")
            }
        }
    }
    if !removed.is_empty() {
        tracing::info!(node = %node.name, deployments = ?removed,
            "a returned node's orphaned containers were removed");
    }
    Ok(removed)
}
