//! Nodes, heartbeats, build slots and the views the scheduler decides on. The decisions are
//! `crate::schedule`'s; this module reads the views and carries the decisions out.

use ::api::{NodeRole, NodeStatus};
use uuid::Uuid;

use super::{Node, Result, Store, StoreError};
use crate::schedule::{BuildNodeView, ComputeNodeView, HeartbeatView};

type Time = chrono::DateTime<chrono::Utc>;

// Rows decoded by column name: an unknown status is an error naming the column and the value.

#[derive(sqlx::FromRow)]
struct HeartbeatRow {
    id: Uuid,
    status: NodeStatus,
    last_heartbeat_at: Option<Time>,
    created_at: Time,
}

#[derive(sqlx::FromRow)]
struct BuildNodeRow {
    id: Uuid,
    status: NodeStatus,
    build_slots: i32,
    running: i64,
    builds: Option<i32>,
    last_built_at: Option<Time>,
}

#[derive(sqlx::FromRow)]
struct ComputeNodeRow {
    id: Uuid,
    status: NodeStatus,
    cpu_millis: i32,
    memory_bytes: i64,
    cpu_used: i64,
    memory_used: i64,
    replicas: i64,
}

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

    /// Every node as [`crate::schedule::nodes_to_mark_down`] sees it, and the database's now.
    pub async fn heartbeats(&self) -> Result<(Vec<HeartbeatView>, Time)> {
        let now: Time = sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await?;
        let rows: Vec<HeartbeatRow> =
            sqlx::query_as("SELECT id, status, last_heartbeat_at, created_at FROM nodes")
                .fetch_all(&self.pool)
                .await?;
        let views = rows
            .into_iter()
            .map(|r| HeartbeatView {
                id: r.id,
                up: r.status == NodeStatus::Up,
                last_heartbeat: r.last_heartbeat_at,
                registered_at: r.created_at,
            })
            .collect();
        Ok((views, now))
    }

    /// Marks the nodes down.
    pub async fn mark_nodes_down(&self, ids: &[Uuid]) -> Result<()> {
        if !ids.is_empty() {
            sqlx::query("UPDATE nodes SET status = $2 WHERE id = ANY($1)")
                .bind(ids)
                .bind(NodeStatus::Down)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The build node whose slot the deployment holds, if any.
    pub async fn held_build_slot(&self, deployment_id: Uuid) -> Result<Option<Node>> {
        let held: Option<Uuid> =
            sqlx::query_scalar("SELECT node_id FROM build_slots WHERE deployment_id = $1")
                .bind(deployment_id)
                .fetch_optional(&self.pool)
                .await?;
        match held {
            Some(node) => self.node(node).await.map(Some),
            None => Ok(None),
        }
    }

    /// Every build node with its slots, the builds it runs and its cache of `repository`.
    pub async fn build_nodes(&self, repository: &str) -> Result<Vec<BuildNodeView>> {
        let rows: Vec<BuildNodeRow> = sqlx::query_as(
            "SELECT n.id, n.status, n.build_slots, \
             (SELECT count(*) FROM build_slots s WHERE s.node_id = n.id) AS running, \
             c.builds, c.last_built_at \
             FROM nodes n LEFT JOIN build_cache c ON c.node_id = n.id AND c.repository = $1 WHERE n.role = $2",
        )
        .bind(repository)
        .bind(NodeRole::Build)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| BuildNodeView {
                id: r.id,
                up: r.status == NodeStatus::Up,
                slots: r.build_slots.max(0) as u32,
                builds_running: r.running as u32,
                repo_builds: r.builds.unwrap_or(0).max(0) as u32,
                repo_last_built: r.last_built_at,
            })
            .collect())
    }

    /// Takes a slot of build node `node` for the deployment, under the node's row lock, if the
    /// node still runs `seen_running` builds (what the pick saw); false otherwise. Concurrent
    /// takers never overfill a node.
    pub async fn reserve_build_slot(
        &self,
        deployment_id: Uuid,
        node: Uuid,
        seen_running: u32,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let locked: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM nodes WHERE id = $1 AND role = $2 FOR UPDATE")
                .bind(node)
                .bind(NodeRole::Build)
                .fetch_optional(&mut *tx)
                .await?;
        if locked.is_none() {
            return Ok(false);
        }
        let running: i64 =
            sqlx::query_scalar("SELECT count(*) FROM build_slots WHERE node_id = $1")
                .bind(node)
                .fetch_one(&mut *tx)
                .await?;
        if running != i64::from(seen_running) {
            return Ok(false);
        }
        sqlx::query("INSERT INTO build_slots (deployment_id, node_id) VALUES ($1, $2)")
            .bind(deployment_id)
            .bind(node)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
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

    /// Every compute node with what occupies it (deployments in progress or serving) and how
    /// many containers of `service_id` it runs.
    pub async fn compute_nodes(&self, service_id: Uuid) -> Result<Vec<ComputeNodeView>> {
        let rows: Vec<ComputeNodeRow> = sqlx::query_as(
            "SELECT n.id, n.status, n.cpu_millis, n.memory_bytes, \
               COALESCE(SUM((s.resources->>'cpu_millis')::bigint), 0)::bigint AS cpu_used, \
               COALESCE(SUM((s.resources->>'memory_bytes')::bigint), 0)::bigint AS memory_used, \
               COUNT(d.id) FILTER (WHERE d.service_id = $1) AS replicas \
             FROM nodes n \
             LEFT JOIN deployments d ON d.node_id = n.id AND (d.phase IN ('starting', 'switching', 'stopping_old') \
                OR d.id IN (SELECT current_deployment_id FROM services WHERE current_deployment_id IS NOT NULL)) \
             LEFT JOIN services s ON s.id = d.service_id \
             WHERE n.role = $2 GROUP BY n.id",
        )
        .bind(service_id)
        .bind(NodeRole::Compute)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ComputeNodeView {
                id: r.id,
                up: r.status == NodeStatus::Up,
                cpu_millis_total: r.cpu_millis.max(0) as u64,
                cpu_millis_allocated: r.cpu_used.max(0) as u64,
                memory_bytes_total: r.memory_bytes.max(0) as u64,
                memory_bytes_allocated: r.memory_used.max(0) as u64,
                replicas_of_service: r.replicas as u32,
            })
            .collect())
    }
}
