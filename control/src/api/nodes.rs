//! Nodes (operator token): registration, list, heartbeat.

use ::api::NodeRole;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiResult, invalid};
use super::extract::{Admin, Body, PathId};
use super::validate;

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
