//! A deployment's instances (#15): one row per replica with the compute node it was placed on
//! and, once healthy, its container and upstream address. The pipeline records them (fenced by
//! the deployment's lease); the switch, the old set's stop, teardown and the scheduler's views
//! read them, so every container of a deployment is found wherever it runs.

use serde::Serialize;
use uuid::Uuid;

use super::{Result, Store, StoreError};

/// One container of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Instance {
    pub deployment_id: Uuid,
    /// From 0; the node agent derives the container id from (deployment, replica).
    pub replica: i32,
    pub node_id: Uuid,
    /// Set once the container is healthy.
    pub container_id: Option<String>,
    pub upstream_address: Option<String>,
}

impl Store {
    /// The deployment's instances by replica.
    pub async fn instances(&self, deployment: Uuid) -> Result<Vec<Instance>> {
        Ok(sqlx::query_as(
            "SELECT deployment_id, replica, node_id, container_id, upstream_address \
             FROM deployment_instances WHERE deployment_id = $1 ORDER BY replica",
        )
        .bind(deployment)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records an instance (its placement, then its container), fenced by the lease `owner`
    /// holds on its deployment; a container or address not given keeps the stored one.
    pub async fn record_instance(&self, owner: Uuid, i: &Instance) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO deployment_instances (deployment_id, replica, node_id, container_id, upstream_address) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS \
                (SELECT 1 FROM deployments WHERE id = $1 AND lease_owner = $6) \
             ON CONFLICT (deployment_id, replica) DO UPDATE SET node_id = EXCLUDED.node_id, \
                container_id = COALESCE(EXCLUDED.container_id, deployment_instances.container_id), \
                upstream_address = COALESCE(EXCLUDED.upstream_address, deployment_instances.upstream_address)",
        )
        .bind(i.deployment_id)
        .bind(i.replica)
        .bind(i.node_id)
        .bind(&i.container_id)
        .bind(&i.upstream_address)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LeaseLost {
                deployment: i.deployment_id,
            });
        }
        Ok(())
    }
}
