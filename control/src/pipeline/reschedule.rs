//! Node loss and drain (#15). The replicas serving on a node marked down (or drained) are
//! placed again on the nodes that are up and not drained, by a deployment of the image the
//! service runs ([`Store::redeploy_current`]): the same start beside, one switch of the whole
//! set, removal of the old set as any deployment (the removal on the lost node fails and is
//! recorded on the deployment). Room is asked for the set as it runs after the switch: the
//! replicas still serving do not count against it ([`schedule::place_replicas`]), so the
//! survivors need room for the set, not for a second one beside it. Until the switch, the
//! proxy's passive health keeps requests off the lost upstreams.
//!
//! When no node has room for the set now, no deployment is queued to fail: the service is
//! recorded as waiting for room (`room_waits`, a `waiting_for_room` event on its timeline,
//! `waiting_for_room` in `GET /services`, a gauge on `/metrics`), and control's node monitor
//! tries it again each round ([`retry_waiting`]) until room frees (a node answers again or
//! joins, another service shrinks): then it is placed (`placed_again`), or its wait ends with
//! no move when none of its replicas is on a lost or drained node any more (`room_wait_ended`).
//! A move whose deployment still found no room at its start (another took the room meanwhile)
//! waits the same way.
//!
//! A service with volumes is not moved (its volumes live on that node): it is reported down
//! with its lost node, or left serving on the drained one (listed, for the operator to move
//! by hand). A node that answers again has the containers of deployments that stopped serving
//! meanwhile removed ([`clean_returned`]).

use ::api::DeploymentState;
use uuid::Uuid;

use super::driver::Clients;
use crate::schedule;
use crate::store::{Node, Store, StoreError};

/// What became of a service that served on a lost node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// A deployment placing its replicas on the nodes that are up was queued.
    Rescheduled { service: Uuid, deployment: Uuid },
    /// A deployment of the service is already on its way; it places on the nodes that are up.
    InProgress { service: Uuid },
    /// No node that is up has room for its set now: it waits for room (recorded), and the
    /// monitor places it once room frees.
    WaitingForRoom { service: Uuid, reason: String },
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

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::Lost => "lost",
            Cause::Drained => "drained",
        }
    }
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
/// service runs; the scheduler skips nodes that are down or drained), or records them waiting
/// for room; services with volumes stay. One outcome per service.
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
        outcomes.extend(move_service(store, &s, cause).await?);
    }
    Ok(outcomes)
}

/// The decision for one service with a replica on a lost or drained node.
async fn move_service(
    store: &Store,
    s: &Serving,
    cause: Cause,
) -> Result<Option<Lost>, StoreError> {
    if s.has_volumes && cause == Cause::Drained {
        tracing::warn!(service = %s.service_id, node = %s.node_id,
            "service stays on its drained node: its volumes live there, it is not moved");
        return Ok(Some(Lost::StaysOnDrained {
            service: s.service_id,
            node: s.node_id,
        }));
    }
    if s.has_volumes {
        tracing::error!(service = %s.service_id, node = %s.node_id,
            "service is down with its node: its volumes live there, it is not moved");
        return Ok(Some(Lost::DownWithNode {
            service: s.service_id,
            node: s.node_id,
        }));
    }
    let in_progress = store
        .service_deployment_nodes(s.service_id)
        .await?
        .iter()
        .any(|d| {
            matches!(
                d.state,
                DeploymentState::Queued | DeploymentState::Building | DeploymentState::Deploying
            )
        });
    if in_progress {
        return Ok(Some(Lost::InProgress {
            service: s.service_id,
        }));
    }
    // Room for the set on the nodes up, as the deployment's start will ask it.
    let service = store.service(s.organization_id, s.service_id).await?;
    let count = u32::try_from(service.replicas).unwrap_or(1).max(1);
    let (cpu, mem) = (service.resources.cpu_millis, service.resources.memory_bytes);
    let views = store.compute_nodes(s.service_id).await?;
    if let Err(replica) = schedule::place_replicas(&views, &[], count, cpu.into(), mem) {
        let reason = schedule::no_room(cpu.into(), mem, replica, count);
        wait_for_room(store, s, cause, &reason).await?;
        return Ok(Some(Lost::WaitingForRoom {
            service: s.service_id,
            reason,
        }));
    }
    let Some(d) = store
        .redeploy_current(s.organization_id, s.service_id)
        .await?
    else {
        return Ok(None);
    };
    tracing::warn!(service = %s.service_id, node = %s.node_id, deployment = %d.id, ?cause,
        "the service's replicas are placed again on the nodes that are up");
    let waited: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("DELETE FROM room_waits WHERE service_id = $1 RETURNING since")
            .bind(s.service_id)
            .fetch_optional(&store.pool)
            .await?;
    if let Some(since) = waited {
        service_event(
            store,
            s.service_id,
            "placed_again",
            &format!(
                "room freed: deployment {} places its replicas on the nodes that are up (waited since {})",
                d.id,
                since.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        )
        .await?;
    }
    Ok(Some(Lost::Rescheduled {
        service: s.service_id,
        deployment: d.id,
    }))
}

/// Records the service waiting for room (an event the first time).
async fn wait_for_room(
    store: &Store,
    s: &Serving,
    cause: Cause,
    reason: &str,
) -> Result<(), StoreError> {
    let first: bool = sqlx::query_scalar(
        "INSERT INTO room_waits (service_id, node_id, cause, reason) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (service_id) DO UPDATE SET node_id = $2, cause = $3, reason = $4 \
         RETURNING (xmax = 0)",
    )
    .bind(s.service_id)
    .bind(s.node_id)
    .bind(cause.as_str())
    .bind(reason)
    .fetch_one(&store.pool)
    .await?;
    if first {
        tracing::error!(service = %s.service_id, node = %s.node_id, ?cause, reason,
            "the service's replicas cannot move now: it waits for room");
        service_event(
            store,
            s.service_id,
            "waiting_for_room",
            &format!(
                "its replicas on node {} ({}) must move and {reason}; they are placed once room frees",
                s.node_id,
                cause.as_str()
            ),
        )
        .await?;
    }
    Ok(())
}

/// Appends an event to the service's own timeline.
async fn service_event(
    store: &Store,
    service_id: Uuid,
    step: &str,
    detail: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO service_events (service_id, step, detail) VALUES ($1, $2, $3)")
        .bind(service_id)
        .bind(step)
        .bind(detail)
        .execute(&store.pool)
        .await?;
    Ok(())
}

/// One round of the monitor for the services waiting for room: those recorded waiting, and
/// those whose newest deployment found no room at its start, that still have a replica on a
/// lost or drained node, are decided again (placed when there is room now); the waits of
/// services with no replica there any more end.
pub async fn retry_waiting(store: &Store) -> Result<Vec<Lost>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Waiting {
        #[sqlx(flatten)]
        serving: Serving,
        lost: bool,
    }
    let ended: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM room_waits w WHERE NOT EXISTS (SELECT 1 FROM services s \
            JOIN deployment_instances i ON i.deployment_id = s.current_deployment_id \
            JOIN nodes n ON n.id = i.node_id \
            WHERE s.id = w.service_id AND (n.status = 'down' OR n.drained_at IS NOT NULL)) \
         RETURNING w.service_id",
    )
    .fetch_all(&store.pool)
    .await?;
    for service in ended {
        tracing::info!(%service, "no replica of the service is on a lost or drained node any more: its wait for room ends");
        service_event(
            store,
            service,
            "room_wait_ended",
            "none of its replicas is on a lost or drained node any more (the node answers again, or the service changed): nothing to move",
        )
        .await?;
    }
    let waiting: Vec<Waiting> = sqlx::query_as(
        "SELECT DISTINCT ON (s.id) s.id AS service_id, s.organization_id, \
            s.volumes <> '[]'::jsonb AS has_volumes, i.node_id, n.status = 'down' AS lost \
         FROM nodes n JOIN deployment_instances i ON i.node_id = n.id \
         JOIN services s ON s.current_deployment_id = i.deployment_id \
         WHERE (n.status = 'down' OR n.drained_at IS NOT NULL) AND s.volumes = '[]'::jsonb \
           AND (EXISTS (SELECT 1 FROM room_waits w WHERE w.service_id = s.id) \
             OR COALESCE((SELECT d.phase = 'failed' AND starts_with(d.failure_reason, $1) \
                FROM deployments d WHERE d.service_id = s.id ORDER BY d.created_at DESC LIMIT 1), false)) \
         ORDER BY s.id, n.status = 'down' DESC",
    )
    .bind(schedule::NO_ROOM)
    .fetch_all(&store.pool)
    .await?;
    let mut outcomes = vec![];
    for w in waiting {
        let cause = if w.lost { Cause::Lost } else { Cause::Drained };
        outcomes.extend(move_service(store, &w.serving, cause).await?);
    }
    Ok(outcomes)
}

/// The service's wait for room, if it waits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct RoomWait {
    pub node_id: Option<Uuid>,
    /// `lost` or `drained`.
    pub cause: String,
    pub reason: String,
    pub since: chrono::DateTime<chrono::Utc>,
}

/// The service's wait for room, if it waits.
pub async fn room_wait(store: &Store, service: Uuid) -> Result<Option<RoomWait>, StoreError> {
    Ok(
        sqlx::query_as(
            "SELECT node_id, cause, reason, since FROM room_waits WHERE service_id = $1",
        )
        .bind(service)
        .fetch_optional(&store.pool)
        .await?,
    )
}

/// One event of a service's own timeline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct ServiceEvent {
    pub step: String,
    pub detail: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The service's own events (scheduling: waiting for room, placed again), newest first.
pub async fn service_events(
    store: &Store,
    service: Uuid,
    limit: i64,
) -> Result<Vec<ServiceEvent>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT step, detail, at FROM service_events WHERE service_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(service)
    .bind(limit)
    .fetch_all(&store.pool)
    .await?)
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
