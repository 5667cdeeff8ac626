//! Nodes, heartbeats, build slots and the views the scheduler decides on. The decisions are
//! `crate::schedule`'s; this module reads the views and carries the decisions out.

use ::api::{NodeRole, NodeStatus};
use uuid::Uuid;

use super::{Node, Result, Store, StoreError};
use crate::schedule::{BuildNodeView, ComputeNodeView};

type Time = chrono::DateTime<chrono::Utc>;

// Rows decoded by column name: an unknown status is an error naming the column and the value.

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
    cpu_outgoing: i64,
    memory_outgoing: i64,
}

const COLUMNS: &str = "id, name, role, address, cpu_millis, memory_bytes, build_slots, status, last_heartbeat_at, created_at, drained_at";

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

    /// Every build node with its slots, the builds it runs and its cache of `repository`. A
    /// drained node is seen as down: nothing new goes there.
    pub async fn build_nodes(&self, repository: &str) -> Result<Vec<BuildNodeView>> {
        let rows: Vec<BuildNodeRow> = sqlx::query_as(
            "SELECT n.id, (CASE WHEN n.drained_at IS NULL THEN n.status ELSE 'down' END) AS status, n.build_slots, \
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

    /// Every compute node with what occupies it (the instances of deployments in progress or
    /// serving, each taking its service's share), how many containers of `service_id` it runs,
    /// and the share of those held by the set serving `service_id` now (outgoing when a new
    /// deployment replaces it). A drained node is seen as down: nothing new is placed there.
    pub async fn compute_nodes(&self, service_id: Uuid) -> Result<Vec<ComputeNodeView>> {
        let rows: Vec<ComputeNodeRow> = sqlx::query_as(
            "SELECT n.id, (CASE WHEN n.drained_at IS NULL THEN n.status ELSE 'down' END) AS status, n.cpu_millis, n.memory_bytes, \
               COALESCE(SUM((s.resources->>'cpu_millis')::bigint), 0)::bigint AS cpu_used, \
               COALESCE(SUM((s.resources->>'memory_bytes')::bigint), 0)::bigint AS memory_used, \
               COUNT(d.id) FILTER (WHERE d.service_id = $1) AS replicas, \
               COALESCE(SUM((s.resources->>'cpu_millis')::bigint) FILTER (WHERE d.id = s.current_deployment_id AND s.id = $1), 0)::bigint AS cpu_outgoing, \
               COALESCE(SUM((s.resources->>'memory_bytes')::bigint) FILTER (WHERE d.id = s.current_deployment_id AND s.id = $1), 0)::bigint AS memory_outgoing \
             FROM nodes n \
             LEFT JOIN (deployment_instances i JOIN deployments d ON d.id = i.deployment_id \
                AND (d.phase IN ('starting', 'switching', 'stopping_old') \
                OR d.id IN (SELECT current_deployment_id FROM services WHERE current_deployment_id IS NOT NULL))) \
                ON i.node_id = n.id \
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
                outgoing_cpu_millis: r.cpu_outgoing.max(0) as u64,
                outgoing_memory_bytes: r.memory_outgoing.max(0) as u64,
            })
            .collect())
    }
}

/// A container a node runs for a live deployment (one serving or on its way).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct NodeInstance {
    pub service_id: Uuid,
    pub deployment_id: Uuid,
    pub replica: i32,
}

impl Store {
    /// Drains a node: nothing new is placed on it from now on (idempotent: the first drain's
    /// time stays).
    pub async fn drain_node(&self, id: Uuid) -> Result<Time> {
        sqlx::query_scalar(
            "UPDATE nodes SET drained_at = COALESCE(drained_at, now()) WHERE id = $1 RETURNING drained_at",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("node", id))
    }

    /// When the node was drained, if it was.
    pub async fn node_drained_at(&self, id: Uuid) -> Result<Option<Time>> {
        sqlx::query_scalar("SELECT drained_at FROM nodes WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("node", id))
    }

    /// The containers of live deployments (serving, or on their way) placed on the node.
    pub async fn node_instances(&self, id: Uuid) -> Result<Vec<NodeInstance>> {
        Ok(sqlx::query_as(
            "SELECT d.service_id, i.deployment_id, i.replica FROM deployment_instances i \
             JOIN deployments d ON d.id = i.deployment_id \
             WHERE i.node_id = $1 AND (d.phase IN ('starting', 'switching', 'stopping_old') \
               OR d.id IN (SELECT current_deployment_id FROM services WHERE current_deployment_id IS NOT NULL)) \
             ORDER BY d.service_id, i.replica",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Removes a node: refused (conflict naming them) while it runs containers of live
    /// deployments and was not drained. Its row goes, and with it the identity control accepts
    /// at its address: its certificate names an id no row has any more. Returns what it ran.
    pub async fn remove_node(&self, id: Uuid) -> Result<Vec<NodeInstance>> {
        let mut tx = self.pool.begin().await?;
        let drained: Option<Option<Time>> =
            sqlx::query_scalar("SELECT drained_at FROM nodes WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let drained = drained.ok_or_else(|| StoreError::not_found("node", id))?;
        let running = self.node_instances(id).await?;
        if drained.is_none() && !running.is_empty() {
            return Err(StoreError::Conflict(format!(
                "node {id} runs {} container(s) of live deployments: drain it first (POST /nodes/{id}/drain)",
                running.len()
            )));
        }
        sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(running)
    }
}

/// Why a join token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    #[error("join token is not valid: this control plane never issued it")]
    Unknown,
    #[error("join token was already used (tokens are one-time: issue a new one)")]
    Used,
    #[error("join token expired at {0}")]
    Expired(Time),
}

/// What a joining node registers.
#[derive(Debug, Clone)]
pub struct NewJoin<'a> {
    pub name: &'a str,
    pub address: &'a str,
    pub cpu_millis: i32,
    pub memory_bytes: i64,
    pub container_subnet: Option<&'a str>,
    pub wireguard_public_key: Option<&'a str>,
    pub wireguard_endpoint: Option<&'a str>,
}

/// Another node of the private network, as a joining node configures its WireGuard peer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct WireguardPeer {
    pub node_id: Uuid,
    pub name: String,
    pub public_key: String,
    pub endpoint: Option<String>,
    pub container_subnet: Option<String>,
    /// The node agent's address (`https://<its WireGuard address>:port`), so a joining node
    /// knows which address to route to that peer.
    pub address: String,
}

#[derive(sqlx::FromRow)]
struct JoinTokenRow {
    id: Uuid,
    role: NodeRole,
    expires_at: Time,
    used_at: Option<Time>,
    now: Time,
}

/// The associated data the CA key is sealed with.
const CA_SEAL: &str = "platform_ca";

fn ca_unreadable() -> StoreError {
    StoreError::Crypto(crate::crypto::CryptoError::Decrypt {
        name: CA_SEAL.into(),
    })
}

impl Store {
    /// A store whose connections open on first use (the gRPC clients' view of the nodes and
    /// the CA); migrations are [`Store::connect`]'s.
    pub fn connect_lazy(database_url: &str, secrets: crate::crypto::SecretBox) -> Result<Self> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_lazy(database_url)?;
        Ok(Self { pool, secrets })
    }

    /// The platform CA, created on first call (bootstrap). Several control planes starting at
    /// once agree on one: the first insert wins, the others read it.
    pub async fn platform_ca(&self) -> Result<pki::CertificateAuthority> {
        if let Some(ca) = self.stored_ca().await? {
            return Ok(ca);
        }
        let ca = pki::CertificateAuthority::generate("Stackpad platform CA").map_err(|e| {
            tracing::error!(error = %e, "platform ca generation failed");
            ca_unreadable()
        })?;
        sqlx::query(
            "INSERT INTO platform_ca (id, cert_pem, key_sealed) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(ca.cert_pem())
        .bind(self.secrets.seal(CA_SEAL, ca.key_pem()))
        .execute(&self.pool)
        .await?;
        self.stored_ca().await?.ok_or_else(ca_unreadable)
    }

    async fn stored_ca(&self) -> Result<Option<pki::CertificateAuthority>> {
        let row: Option<(String, Vec<u8>)> =
            sqlx::query_as("SELECT cert_pem, key_sealed FROM platform_ca WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        let Some((cert_pem, sealed)) = row else {
            return Ok(None);
        };
        let key_pem = self.secrets.open(CA_SEAL, &sealed)?;
        pki::CertificateAuthority::from_pem(&cert_pem, &key_pem)
            .map(Some)
            .map_err(|e| {
                tracing::error!(error = %e, "stored platform ca does not load");
                ca_unreadable()
            })
    }

    /// A new one-time join token for a node of `role`, valid for `ttl`; only its hash is kept.
    pub async fn create_join_token(
        &self,
        role: NodeRole,
        ttl: std::time::Duration,
    ) -> Result<(String, Time)> {
        let token = format!("spjoin_{}", crate::crypto::generate_webhook_secret());
        let expires_at: Time = sqlx::query_scalar(
            "INSERT INTO join_tokens (id, token_hash, role, expires_at) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at",
        )
        .bind(Uuid::new_v4())
        .bind(crate::crypto::hash_token(&token))
        .bind(role)
        .bind(ttl.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        Ok((token, expires_at))
    }

    /// Spends `token` and registers the node it admits (or updates the node of that name),
    /// in one transaction: a token is used once even by concurrent joins. The role is the
    /// token's.
    pub async fn join_node(
        &self,
        token: &str,
        node: &NewJoin<'_>,
    ) -> Result<std::result::Result<Node, JoinRefused>> {
        let mut tx = self.pool.begin().await?;
        let row: Option<JoinTokenRow> = sqlx::query_as(
            "SELECT id, role, expires_at, used_at, now() AS now FROM join_tokens WHERE token_hash = $1 FOR UPDATE",
        )
        .bind(crate::crypto::hash_token(token))
        .fetch_optional(&mut *tx)
        .await?;
        let row = match row {
            None => return Ok(Err(JoinRefused::Unknown)),
            Some(r) if r.used_at.is_some() => return Ok(Err(JoinRefused::Used)),
            Some(r) if r.expires_at <= r.now => return Ok(Err(JoinRefused::Expired(r.expires_at))),
            Some(r) => r,
        };
        let sql = format!(
            "INSERT INTO nodes (id, name, role, address, cpu_millis, memory_bytes, container_subnet, \
               wireguard_public_key, wireguard_endpoint, status, last_heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'up', now()) \
             ON CONFLICT (name) DO UPDATE SET role = $3, address = $4, cpu_millis = $5, memory_bytes = $6, \
               container_subnet = $7, wireguard_public_key = $8, wireguard_endpoint = $9, status = 'up', last_heartbeat_at = now() \
             RETURNING {COLUMNS}"
        );
        let joined: Node = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(Uuid::new_v4())
            .bind(node.name)
            .bind(row.role)
            .bind(node.address)
            .bind(node.cpu_millis)
            .bind(node.memory_bytes)
            .bind(node.container_subnet)
            .bind(node.wireguard_public_key)
            .bind(node.wireguard_endpoint)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("UPDATE join_tokens SET used_at = now(), node_id = $2 WHERE id = $1")
            .bind(row.id)
            .bind(joined.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(joined))
    }

    /// The node registered at a daemon address, if any (whose certificate control expects).
    pub async fn node_by_address(&self, address: &str) -> Result<Option<Node>> {
        let sql = format!("SELECT {COLUMNS} FROM nodes WHERE address = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(address)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Every node but `except` with a WireGuard key: the peers a joining node configures.
    pub async fn wireguard_peers(&self, except: Uuid) -> Result<Vec<WireguardPeer>> {
        Ok(sqlx::query_as(
            "SELECT id AS node_id, name, wireguard_public_key AS public_key, wireguard_endpoint AS endpoint, \
             container_subnet, address FROM nodes WHERE id <> $1 AND wireguard_public_key IS NOT NULL ORDER BY name",
        )
        .bind(except)
        .fetch_all(&self.pool)
        .await?)
    }
}
