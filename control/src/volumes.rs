//! Volumes of deleted services (#14): a service's volumes outlive it for a grace period, so a
//! mistaken delete loses no data at once. Deleting the service (`pipeline::teardown`) records
//! each node that ran it in `volume_deletions` with the time its volumes may go; the node
//! monitor calls [`sweep`], which asks each node whose time came to remove them
//! (`NodeAgent.RemoveVolume`) and forgets the row once the node did.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::pipeline::driver::Clients;
use crate::store::{Store, StoreError};

/// How long the volumes of a deleted service are kept on their node.
pub const GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Records that the service's volumes on `nodes` go at `delete_after` (a later delete of the
/// same service keeps the earlier time).
pub async fn schedule_deletion(
    store: &Store,
    service_id: Uuid,
    nodes: &[Uuid],
    delete_after: DateTime<Utc>,
) -> Result<(), StoreError> {
    for node in nodes {
        sqlx::query(
            "INSERT INTO volume_deletions (service_id, node_id, delete_after) VALUES ($1, $2, $3) \
             ON CONFLICT (service_id, node_id) DO NOTHING",
        )
        .bind(service_id)
        .bind(node)
        .bind(delete_after)
        .execute(&store.pool)
        .await?;
    }
    Ok(())
}

/// The service's volumes are due now (a delete with purge).
pub async fn purge(store: &Store, service_id: Uuid) -> Result<(), StoreError> {
    sqlx::query("UPDATE volume_deletions SET delete_after = now() WHERE service_id = $1")
        .bind(service_id)
        .execute(&store.pool)
        .await?;
    Ok(())
}

/// The deletions whose time came, as (service, node, node address).
async fn due(store: &Store) -> Result<Vec<(Uuid, Uuid, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT v.service_id, v.node_id, n.address FROM volume_deletions v \
         JOIN nodes n ON n.id = v.node_id WHERE v.delete_after <= now() ORDER BY v.delete_after",
    )
    .fetch_all(&store.pool)
    .await?)
}

/// Removes the volumes whose grace period is over; returns how many nodes removed a service's
/// volumes. A node that does not answer keeps its row (tried again at the next sweep).
pub async fn sweep(store: &Store, clients: &Clients) -> Result<usize, StoreError> {
    let mut done = 0;
    for (service, node, address) in due(store).await? {
        match clients
            .node
            .remove_volumes(&address, &service.to_string())
            .await
        {
            Ok(()) => {
                sqlx::query("DELETE FROM volume_deletions WHERE service_id = $1 AND node_id = $2")
                    .bind(service)
                    .bind(node)
                    .execute(&store.pool)
                    .await?;
                tracing::info!(%service, %node, "volumes of a deleted service removed");
                done += 1;
            }
            Err(e) => {
                tracing::warn!(%service, %node, error = %e, "removing the volumes of a deleted service failed; tried again later");
            }
        }
    }
    Ok(done)
}
