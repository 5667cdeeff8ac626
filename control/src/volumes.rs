//! Volumes of deleted services (#14): a service's volumes outlive it for a grace period, so a
//! mistaken delete loses no data at once. Deleting the service (`pipeline::teardown`) records
//! each node that ran it in `volume_deletions` with the time its volumes may go; the node
//! monitor calls [`sweep`], which asks each node whose time came to remove them
//! (`NodeAgent.RemoveVolume`) and forgets the row once the node did. One volume taken out of a
//! live service with a purge (`PATCH /services/{id}`) goes the same way, due at once; its node
//! refuses while the running container still mounts it, so it goes after the next deploy.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::pipeline::driver::Clients;
use crate::store::{Store, StoreError};

/// How long the volumes of a deleted service are kept on their node.
pub const GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Records that the service's volumes on `nodes` (every one, or the one named) go at
/// `delete_after` (a later delete of the same service keeps the earlier time).
pub async fn schedule_deletion(
    store: &Store,
    service_id: Uuid,
    volume: Option<&str>,
    nodes: &[Uuid],
    delete_after: DateTime<Utc>,
) -> Result<(), StoreError> {
    for node in nodes {
        sqlx::query(
            "INSERT INTO volume_deletions (service_id, node_id, volume_name, delete_after) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (service_id, node_id, volume_name) DO NOTHING",
        )
        .bind(service_id)
        .bind(node)
        .bind(volume.unwrap_or_default())
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

/// Whether one of the service's volumes by this name still waits for its data to go.
pub async fn deletion_pending(
    store: &Store,
    service_id: Uuid,
    volume: &str,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM volume_deletions WHERE service_id = $1 AND volume_name = $2)",
    )
    .bind(service_id)
    .bind(volume)
    .fetch_one(&store.pool)
    .await?)
}

/// The deletions whose time came, as (service, node, volume name or '' for all, node address).
async fn due(store: &Store) -> Result<Vec<(Uuid, Uuid, String, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT v.service_id, v.node_id, v.volume_name, n.address FROM volume_deletions v \
         JOIN nodes n ON n.id = v.node_id WHERE v.delete_after <= now() ORDER BY v.delete_after",
    )
    .fetch_all(&store.pool)
    .await?)
}

/// Removes the volumes whose grace period is over; returns how many nodes removed a service's
/// volumes. A node that does not answer keeps its row (tried again at the next sweep).
pub async fn sweep(store: &Store, clients: &Clients) -> Result<usize, StoreError> {
    let mut done = 0;
    for (service, node, volume, address) in due(store).await? {
        let name = Some(volume.as_str()).filter(|v| !v.is_empty());
        match clients
            .node
            .remove_volumes(&address, &service.to_string(), name)
            .await
        {
            Ok(()) => {
                sqlx::query(
                    "DELETE FROM volume_deletions WHERE service_id = $1 AND node_id = $2 \
                     AND volume_name = $3",
                )
                .bind(service)
                .bind(node)
                .bind(&volume)
                .execute(&store.pool)
                .await?;
                tracing::info!(%service, %node, volume, "volumes removed");
                done += 1;
            }
            Err(e) => {
                tracing::warn!(%service, %node, volume, error = %e, "removing volumes failed; tried again later");
            }
        }
    }
    Ok(done)
}

/// A service's volume with what the node holding it reports (`GET /services/{id}/volumes`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeView {
    pub name: String,
    pub mount_path: String,
    /// The size the service asked for.
    pub size_bytes: u64,
    /// Bytes in use inside the volume; `None` while no node holds it (never deployed) or when
    /// its node did not answer (`error` says why).
    pub used_bytes: Option<u64>,
    /// The node holding it (its name).
    pub node: Option<String>,
    /// Whether a running container has it mounted.
    pub mounted: bool,
    pub error: Option<String>,
}

/// The service's volumes with their use, asked of every node that ran a deployment of it (a
/// service with volumes runs on the one node holding them), all at once.
pub async fn usage(
    store: &Store,
    clients: &Clients,
    service: &crate::store::Service,
) -> Result<Vec<VolumeView>, StoreError> {
    let mut views: Vec<VolumeView> = service
        .volumes
        .iter()
        .map(|v| VolumeView {
            name: v.name.clone(),
            mount_path: v.mount_path.clone(),
            size_bytes: v.size_bytes,
            used_bytes: None,
            node: None,
            mounted: false,
            error: None,
        })
        .collect();
    if views.is_empty() {
        return Ok(views);
    }
    let mut node_ids: Vec<Uuid> = vec![];
    // Newest first: the node of the latest deployment is the one that holds the volumes now.
    for p in store
        .service_deployment_nodes(service.id)
        .await?
        .iter()
        .rev()
    {
        if let Some(n) = p.node_id
            && !node_ids.contains(&n)
        {
            node_ids.push(n);
        }
    }
    let mut nodes = vec![];
    for id in node_ids {
        match store.node(id).await {
            Ok(n) => nodes.push(n),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let service_id = service.id.to_string();
    let answers = futures::future::join_all(nodes.iter().map(|n| {
        let address = n.address.clone();
        let service_id = service_id.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(5),
                clients.node.list_volumes(&address, &service_id),
            )
            .await
            .unwrap_or_else(|_| {
                Err(crate::clients::ClientError {
                    daemon: "node agent",
                    address: address.clone(),
                    message: "no answer within 5 s".into(),
                    retryable: true,
                })
            })
        }
    }))
    .await;
    let mut errors = vec![];
    for view in &mut views {
        for (node, answer) in nodes.iter().zip(&answers) {
            match answer {
                Ok(volumes) => {
                    if let Some(v) = volumes.iter().find(|v| v.name == view.name)
                        && (view.used_bytes.is_none() || !v.held_by.is_empty() && !view.mounted)
                    {
                        view.used_bytes = Some(v.used_bytes);
                        view.node = Some(node.name.clone());
                        view.mounted = !v.held_by.is_empty();
                    }
                }
                Err(e) => errors.push(format!("node {}: {e}", node.name)),
            }
        }
        if view.used_bytes.is_none() && !errors.is_empty() {
            view.error = Some(errors.join("; "));
        }
        errors.clear();
    }
    Ok(views)
}
