//! Organizations (created by the operator), tokens, members, the audit log.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiResult, invalid};
use super::extract::{Admin, Body, Org};
use super::validate;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganization {
    pub name: String,
}

/// Creates an organization and its first token (shown once).
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    Body(req): Body<CreateOrganization>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate::name("name", &req.name)?;
    let org = state.store.create_organization(&req.name).await?;
    let (token, secret) = state.store.create_token(org.id, "initial").await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "organization": org, "token": { "id": token.id, "secret": secret } })),
    ))
}

pub async fn current(State(state): State<AppState>, org: Org) -> ApiResult<Json<Value>> {
    Ok(Json(json!(state.store.organization(org.id).await?)))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
}

pub async fn create_token(
    State(state): State<AppState>,
    org: Org,
    Body(req): Body<CreateToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate::non_empty("name", &req.name)?;
    let (token, secret) = state.store.create_token(org.id, &req.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token, "secret": secret })),
    ))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    org: Org,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    state.store.revoke_token(org.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn members(State(state): State<AppState>, org: Org) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "items": state.store.members(org.id).await? })))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub email: String,
    pub role: String,
}

pub async fn add_member(
    State(state): State<AppState>,
    org: Org,
    Body(req): Body<AddMember>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !req.email.contains('@') || req.email.len() > 254 {
        return Err(invalid(
            "email",
            format!("{:?} is not an email address", req.email),
        ));
    }
    if !matches!(
        req.role.as_str(),
        "owner" | "admin" | "developer" | "viewer"
    ) {
        return Err(invalid("role", "must be owner, admin, developer or viewer"));
    }
    let member = state
        .store
        .add_member(org.id, &req.email, &req.role)
        .await?;
    Ok((StatusCode::CREATED, Json(json!(member))))
}

pub async fn audit(State(state): State<AppState>, org: Org) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "items": state.store.audit_entries(org.id, 200).await? }),
    ))
}
