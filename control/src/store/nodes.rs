//! Nodes, heartbeats, build slots and the views the scheduler decides on.

use std::time::Duration;

use ::api::{NodeRole, NodeStatus};
use uuid::Uuid;

use super::{Node, Result, Store, StoreError};
use crate::schedule::{self, BuildNodeView, ComputeNodeView, HeartbeatView};

type Time = chrono::DateTime<chrono::Utc>;
/// id, status, last heartbeat, registered at, now.
type HeartbeatRow = (Uuid, NodeStatus, Option<Time>, Time, Time);
/// id, status, slots, builds running, builds of the repo, last build of the repo.
type BuildNodeRow = (Uuid, NodeStatus, i32, i64, Option<i32>, Option<Time>);

const COLUMNS: &str = "id, name, role, address, cpu_millis, memory_bytes, build_slots, status, last_heartbeat_at, created_at";

impl Store {
    /// Registers a node, or updates the one with that name.
    pub async fn register_node(
        &self,
        name: &str,
        role: NodeRole,
        address: &str,
        cpu_millis: i32,
        memory_bytes: i64,
    ) -> Result<Node> {
        let sql = format!(
            "INSERT INTO nodes (id, name, role, address, cpu_millis, memory_bytes) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET role = $3, address = $4, cpu_millis = $5, memory_bytes = $6 \
             RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(Uuid::new_v4())
            .bind(name)
            .bind(role)
            .bind(address)
            .bind(cpu_millis)
            .bind(memory_bytes)
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn nodes(&self) -> Result<Vec<Node>> {
        let sql = format!("SELECT {COLUMNS} FROM nodes ORDER BY name");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn node(&self, id: Uuid) -> Result<Node> {
        let sql = format!("SELECT {COLUMNS} FROM nodes WHERE id = $1");
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("node", id))
    }

    /// The node answered: it is up. Capacity is updated when the node reported it.
    pub async fn heartbeat(&self, id: Uuid, capacity: Option<(i64, i64)>) -> Result<()> {
        sqlx::query(
            "UPDATE nodes SET status = 'up', last_heartbeat_at = now(), \
             cpu_millis = COALESCE($2::bigint::int, cpu_millis), memory_bytes = COALESCE($3, memory_bytes) WHERE id = $1",
        )
        .bind(id)
        .bind(capacity.map(|c| c.0))
        .bind(capacity.map(|c| c.1))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks down the nodes silent for longer than `down_after`; returns their ids.
    pub async fn mark_silent_nodes_down(&self, down_after: Duration) -> Result<Vec<Uuid>> {
        let rows: Vec<HeartbeatRow> =
            sqlx::query_as("SELECT id, status, last_heartbeat_at, created_at, now() FROM nodes")
                .fetch_all(&self.pool)
                .await?;
        let Some(now) = rows.first().map(|r| r.4) else {
            return Ok(vec![]);
        };
        let views: Vec<HeartbeatView> = rows
            .into_iter()
            .map(|(id, status, last, created, _)| HeartbeatView {
                id,
                up: status == NodeStatus::Up,
                last_heartbeat: last,
                registered_at: created,
            })
            .collect();
        let down = schedule::nodes_to_mark_down(&views, now, down_after);
        if !down.is_empty() {
            sqlx::query("UPDATE nodes SET status = 'down' WHERE id = ANY($1)")
                .bind(&down)
                .execute(&self.pool)
                .await?;
        }
        Ok(down)
    }

    /// Picks a build node for the deployment and takes one of its slots, atomically (node rows
    /// are locked so concurrent claims never overfill a node). Idempotent per deployment.
    pub async fn take_build_slot(
        &self,
        deployment_id: Uuid,
        repository: &str,
    ) -> Result<Option<Node>> {
        let mut tx = self.pool.begin().await?;
        let held: Option<Uuid> =
            sqlx::query_scalar("SELECT node_id FROM build_slots WHERE deployment_id = $1")
                .bind(deployment_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(node) = held {
            tx.commit().await?;
            return self.node(node).await.map(Some);
        }
        sqlx::query("SELECT id FROM nodes WHERE role = 'build' FOR UPDATE")
            .fetch_all(&mut *tx)
            .await?;
        let rows: Vec<BuildNodeRow> = sqlx::query_as(
            "SELECT n.id, n.status, n.build_slots, \
             (SELECT count(*) FROM build_slots s WHERE s.node_id = n.id), c.builds, c.last_built_at \
             FROM nodes n LEFT JOIN build_cache c ON c.node_id = n.id AND c.repository = $1 WHERE n.role = 'build'",
        )
        .bind(repository)
        .fetch_all(&mut *tx)
        .await?;
        let views: Vec<BuildNodeView> = rows
            .into_iter()
            .map(|(id, status, slots, running, builds, last)| BuildNodeView {
                id,
                up: status == NodeStatus::Up,
                slots: slots.max(0) as u32,
                builds_running: running as u32,
                repo_builds: builds.unwrap_or(0).max(0) as u32,
                repo_last_built: last,
            })
            .collect();
        let Some(node) = schedule::pick_build_node(&views) else {
            return Ok(None);
        };
        sqlx::query("INSERT INTO build_slots (deployment_id, node_id) VALUES ($1, $2)")
            .bind(deployment_id)
            .bind(node)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.node(node).await.map(Some)
    }

    /// Frees the build slot; after a successful build the node's cache counts as warm.
    pub async fn release_build_slot(
        &self,
        deployment_id: Uuid,
        warm_repository: Option<&str>,
    ) -> Result<()> {
        let node: Option<Uuid> = sqlx::query_scalar(
            "DELETE FROM build_slots WHERE deployment_id = $1 RETURNING node_id",
        )
        .bind(deployment_id)
        .fetch_optional(&self.pool)
        .await?;
        if let (Some(node), Some(repo)) = (node, warm_repository) {
            sqlx::query(
                "INSERT INTO build_cache (node_id, repository, last_built_at) VALUES ($1, $2, now()) \
                 ON CONFLICT (node_id, repository) DO UPDATE SET last_built_at = now(), builds = build_cache.builds + 1",
            )
            .bind(node)
            .bind(repo)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Picks the compute node for a deployment's container (its own earlier pick if it has one).
    pub async fn pick_compute_node(
        &self,
        deployment_id: Uuid,
        service_id: Uuid,
        cpu: u64,
        mem: u64,
    ) -> Result<Option<Node>> {
        let existing: Option<Option<Uuid>> =
            sqlx::query_scalar("SELECT node_id FROM deployments WHERE id = $1")
                .bind(deployment_id)
                .fetch_optional(&self.pool)
                .await?;
        if let Some(Some(node)) = existing {
            return self.node(node).await.map(Some);
        }
        // What occupies a node: deployments in progress or serving.
        let rows: Vec<(Uuid, NodeStatus, i32, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT n.id, n.status, n.cpu_millis, n.memory_bytes, \
               COALESCE(SUM((s.resources->>'cpu_millis')::bigint), 0)::bigint, \
               COALESCE(SUM((s.resources->>'memory_bytes')::bigint), 0)::bigint, \
               COUNT(d.id) FILTER (WHERE d.service_id = $1) \
             FROM nodes n \
             LEFT JOIN deployments d ON d.node_id = n.id AND (d.phase IN ('starting', 'switching', 'stopping_old') \
                OR d.id IN (SELECT current_deployment_id FROM services WHERE current_deployment_id IS NOT NULL)) \
             LEFT JOIN services s ON s.id = d.service_id \
             WHERE n.role = 'compute' GROUP BY n.id",
        )
        .bind(service_id)
        .fetch_all(&self.pool)
        .await?;
        let views: Vec<ComputeNodeView> = rows
            .into_iter()
            .map(
                |(id, status, cpu_total, mem_total, cpu_used, mem_used, replicas)| {
                    ComputeNodeView {
                        id,
                        up: status == NodeStatus::Up,
                        cpu_millis_total: cpu_total.max(0) as u64,
                        cpu_millis_allocated: cpu_used.max(0) as u64,
                        memory_bytes_total: mem_total.max(0) as u64,
                        memory_bytes_allocated: mem_used.max(0) as u64,
                        replicas_of_service: replicas as u32,
                    }
                },
            )
            .collect();
        match schedule::pick_compute_node(&views, cpu, mem) {
            Some(id) => self.node(id).await.map(Some),
            None => Ok(None),
        }
    }
}
