//! `/projects/{id}/deploy-key`: a project's SSH deploy key (`crate::deploy_keys`). `GET` shows
//! the public half (to add to the git host as a read-only deploy key), its fingerprint and when
//! it was made; `POST` makes a new pair (the first, or a rotation: the key before stops working
//! at once); `DELETE` removes it; `PUT /projects/{id}/deploy-key/known-hosts` sets the
//! `known_hosts` lines the project trusts for its SSH git hosts. The private half is in no
//! answer: it goes only to the build node, inside the build request.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Body, Org, PathId};
use crate::deploy_keys::{DeployKey, check_known_hosts, comment, generate};

/// What a user does with the public half.
const PASTE: &str = "add public_key to the repository as a read-only deploy key (GitHub: \
                     Settings > Deploy keys); services of this project can then use \
                     ssh://git@host/owner/repo.git or git@host:owner/repo.git";

fn shown(key: &DeployKey) -> Value {
    json!({
        "project_id": key.project_id,
        "public_key": key.public_key,
        "fingerprint": key.fingerprint,
        "created_at": key.created_at,
        "known_hosts": key.known_hosts,
        "note": PASTE,
    })
}

/// `GET /projects/{id}/deploy-key`.
pub async fn get(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
) -> ApiResult<Json<Value>> {
    match state.store.deploy_key(org.id, project).await? {
        Some(key) => Ok(Json(shown(&key))),
        None => Err(ApiError::NotFound(format!(
            "project {project} has no deploy key: POST /projects/{project}/deploy-key makes one"
        ))),
    }
}

/// `POST /projects/{id}/deploy-key`: a new ed25519 pair (201 for the first, 200 for a rotation).
pub async fn create(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let p = state.store.project(org.id, project).await?;
    let had = state.store.deploy_key(org.id, project).await?.is_some();
    let key =
        generate(&comment(&p.name, project)).map_err(|e| ApiError::Internal(e.to_string()))?;
    state.store.set_deploy_key(org.id, project, &key).await?;
    let stored = state
        .store
        .deploy_key(org.id, project)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("project {project}'s new deploy key is gone")))?;
    let status = if had {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut answer = shown(&stored);
    if had {
        answer["note"] = json!(format!(
            "a new key replaced the one before, which no longer works: {PASTE}"
        ));
    }
    Ok((status, Json(answer)))
}

/// `DELETE /projects/{id}/deploy-key`.
pub async fn delete(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
) -> ApiResult<StatusCode> {
    if state.store.delete_deploy_key(org.id, project).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "project {project} has no deploy key"
        )))
    }
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PutKnownHosts {
    /// OpenSSH `known_hosts` lines (`host key-type key`); empty = none.
    pub known_hosts: String,
}

/// `PUT /projects/{id}/deploy-key/known-hosts`: the SSH host keys the project trusts (besides
/// the build nodes' own `ssh_known_hosts`); a host key found in neither fails the fetch.
pub async fn put_known_hosts(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
    Body(req): Body<PutKnownHosts>,
) -> ApiResult<Json<Value>> {
    let known_hosts =
        check_known_hosts(&req.known_hosts).map_err(|e| invalid("known_hosts", e.to_string()))?;
    state
        .store
        .set_git_known_hosts(org.id, project, &known_hosts)
        .await?;
    Ok(Json(json!({
        "project_id": project,
        "known_hosts": known_hosts,
    })))
}
