//! Nodes (operator token): registration, list, heartbeat.

use ::api::NodeRole;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Admin, Body, PathId};
use super::validate;
use crate::pipeline::reschedule::{Cause, Lost};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterNode {
    pub name: String,
    /// build, compute or proxy.
    pub role: String,
    /// gRPC address of its daemon, `http://host:port`.
    pub address: String,
    #[serde(default)]
    pub cpu_millis: u32,
    #[serde(default)]
    pub memory_bytes: u64,
}

pub async fn register(
    State(state): State<AppState>,
    _: Admin,
    Body(req): Body<RegisterNode>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate::name("name", &req.name)?;
    let role: NodeRole = req
        .role
        .parse()
        .map_err(|_| invalid("role", "must be build, compute or proxy"))?;
    if !(req.address.starts_with("http://") || req.address.starts_with("https://")) {
        return Err(invalid("address", "must start with http:// or https://"));
    }
    let cpu = i32::try_from(req.cpu_millis).map_err(|_| invalid("cpu_millis", "too large"))?;
    let mem = i64::try_from(req.memory_bytes).map_err(|_| invalid("memory_bytes", "too large"))?;
    let node = state
        .store
        .register_node(&req.name, role, &req.address, cpu, mem)
        .await?;
    Ok((StatusCode::CREATED, Json(json!(node))))
}

pub async fn list(State(state): State<AppState>, _: Admin) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "items": state.store.nodes().await? })))
}

pub async fn heartbeat(
    State(state): State<AppState>,
    _: Admin,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    state.store.node(id).await?;
    state.store.heartbeat(id, None).await?;
    Ok(Json(json!(state.store.node(id).await?)))
}

/// How long a join token lives when the request does not say, and at most.
const JOIN_TOKEN_TTL: u64 = 3600;
const JOIN_TOKEN_TTL_MAX: u64 = 7 * 86_400;
/// How long a node certificate is valid; the node joins again (new token) to renew it, and its
/// daemon picks up the new files without a restart.
const NODE_CERT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(90 * 86_400);

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// build, compute or proxy: the role the joining node gets.
    pub role: String,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// `POST /nodes/join-tokens` (operator): a one-time token a new node joins with, shown once.
pub async fn create_join_token(
    State(state): State<AppState>,
    _: Admin,
    Body(req): Body<CreateJoinToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let role: NodeRole = req
        .role
        .parse()
        .map_err(|_| invalid("role", "must be build, compute or proxy"))?;
    let ttl = req.ttl_seconds.unwrap_or(JOIN_TOKEN_TTL);
    if !(1..=JOIN_TOKEN_TTL_MAX).contains(&ttl) {
        return Err(invalid(
            "ttl_seconds",
            format!("must be between 1 and {JOIN_TOKEN_TTL_MAX}"),
        ));
    }
    let (token, expires_at) = state
        .store
        .create_join_token(role, std::time::Duration::from_secs(ttl))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token, "role": role, "expires_at": expires_at })),
    ))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JoinNode {
    /// The one-time token from `POST /nodes/join-tokens`; it decides the role.
    pub token: String,
    pub name: String,
    /// gRPC address of its daemon: `https://host:port` (mTLS with the certificate issued here).
    pub address: String,
    /// PEM certificate signing request for the node's key (the key never leaves the node).
    pub csr: String,
    #[serde(default)]
    pub cpu_millis: u32,
    #[serde(default)]
    pub memory_bytes: u64,
    /// The subnet its containers get addresses from (compute nodes), e.g. `10.201.0.0/16`.
    #[serde(default)]
    pub container_subnet: Option<String>,
    /// Its WireGuard public key and `host:port` endpoint on the private network, if it has one.
    #[serde(default)]
    pub wireguard_public_key: Option<String>,
    #[serde(default)]
    pub wireguard_endpoint: Option<String>,
}

/// `POST /nodes/join` (authenticated by the join token): registers the node and returns its
/// certificate (naming its id and role), the platform CA and its WireGuard peers. A wrong,
/// used or expired token is refused (401) and registers nothing.
pub async fn join(
    State(state): State<AppState>,
    Body(req): Body<JoinNode>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate::name("name", &req.name)?;
    if !req.address.starts_with("https://") {
        return Err(invalid(
            "address",
            "must start with https:// (a joined node's daemon serves mTLS)",
        ));
    }
    if let Some(subnet) = &req.container_subnet {
        tenant::address::Cidr::parse(subnet)
            .map_err(|e| invalid("container_subnet", e.to_string()))?;
    }
    let csr = pki::Csr::from_pem(&req.csr).map_err(|e| invalid("csr", e.to_string()))?;
    let cpu = i32::try_from(req.cpu_millis).map_err(|_| invalid("cpu_millis", "too large"))?;
    let mem = i64::try_from(req.memory_bytes).map_err(|_| invalid("memory_bytes", "too large"))?;
    // The CA exists before the token is spent: a failure here leaves the token usable.
    let ca = state.store.platform_ca().await?;
    let joined = state
        .store
        .join_node(
            &req.token,
            &crate::store::NewJoin {
                name: &req.name,
                address: &req.address,
                cpu_millis: cpu,
                memory_bytes: mem,
                container_subnet: req.container_subnet.as_deref(),
                wireguard_public_key: req.wireguard_public_key.as_deref(),
                wireguard_endpoint: req.wireguard_endpoint.as_deref(),
            },
        )
        .await?
        .map_err(|refused| ApiError::Forbidden(refused.to_string()))?;
    let identity = pki::PeerIdentity::Node {
        id: joined.id,
        role: joined.role,
    };
    let certificate = ca
        .sign_csr(&csr, &identity, NODE_CERT_VALIDITY)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let peers = state.store.wireguard_peers(joined.id).await?;
    tracing::info!(node = %joined.name, id = %joined.id, role = %joined.role, "node joined");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "node": joined,
            "identity": identity.uri(),
            "certificate": certificate,
            "ca_certificate": ca.cert_pem(),
            "wireguard_peers": peers,
        })),
    ))
}

/// `POST /nodes/{id}/drain` (operator): nothing new is placed on the node from now on (builds
/// neither), and the services serving there move (#15): each stateless one gets a deployment of
/// the image it runs, placed on the other nodes (`moving`: service and deployment; the old set,
/// this node's containers included, goes once the new one is switched in). A service with
/// volumes stays (`staying`: its volumes live there). One whose set has no room on the other
/// nodes now waits for room (`waiting`, with the reason; it keeps serving here and control's
/// monitor moves it once room frees). `remaining` lists the containers the node still runs for
/// live deployments at the time of the answer.
pub async fn drain(
    State(state): State<AppState>,
    _: Admin,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let drained_at = state.store.drain_node(id).await?;
    let outcomes =
        crate::pipeline::reschedule::move_off(&state.store, &[id], Cause::Drained).await?;
    let mut moving = vec![];
    let mut staying = vec![];
    let mut waiting = vec![];
    for outcome in outcomes {
        match outcome {
            Lost::Rescheduled {
                service,
                deployment,
            } => moving.push(json!({ "service_id": service, "deployment_id": deployment })),
            Lost::InProgress { service } => {
                moving.push(json!({ "service_id": service, "deployment_id": null }))
            }
            Lost::WaitingForRoom { service, reason } => {
                waiting.push(json!({ "service_id": service, "reason": reason }))
            }
            Lost::StaysOnDrained { service, .. } | Lost::DownWithNode { service, .. } => staying
                .push(json!({ "service_id": service, "reason": "its volumes live on this node" })),
        }
    }
    let remaining = state.store.node_instances(id).await?;
    Ok(Json(json!({
        "node": state.store.node(id).await?,
        "drained_at": drained_at,
        "moving": moving,
        "staying": staying,
        "waiting": waiting,
        "remaining": remaining,
    })))
}

/// `DELETE /nodes/{id}` (operator): 409 while the node runs containers of live deployments and
/// was not drained. Its row goes and with it the identity control accepts at its address, so
/// control's mTLS calls to a daemon presenting its certificate are refused from then on; it
/// joins again only with a new join token.
pub async fn remove(
    State(state): State<AppState>,
    _: Admin,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let node = state.store.node(id).await?;
    let abandoned = state.store.remove_node(id).await?;
    if !abandoned.is_empty() {
        tracing::warn!(node = %node.name, containers = abandoned.len(), "a drained node was removed with containers of live deployments");
    }
    Ok(Json(json!({ "removed": node, "abandoned": abandoned })))
}
