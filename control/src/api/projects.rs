//! Projects and environments.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use tenant::git::GitRef;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Body, Org, PageQuery, PathId, Query, idempotent};
use super::validate::{self, parsed};

/// The branch a new project's production environment deploys.
fn main_branch() -> ApiResult<GitRef> {
    GitRef::parse("main").map_err(|e| ApiError::Internal(format!("the default branch: {e}")))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub name: String,
}

pub async fn create(
    State(state): State<AppState>,
    org: Org,
    headers: HeaderMap,
    Body(req): Body<CreateProject>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate::name("name", &req.name)?;
    idempotent(&state, org, &headers, "POST /projects", &req, || async {
        let project = state.store.create_project(org.id, &req.name).await?;
        // Every project starts with a production environment deploying the main branch.
        state
            .store
            .create_environment(org.id, project.id, "production", &main_branch()?)
            .await?;
        Ok(json!(project))
    })
    .await
}

pub async fn list(
    State(state): State<AppState>,
    org: Org,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(state.store.projects(org.id, q.page()?).await?)))
}

pub async fn get(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(state.store.project(org.id, id).await?)))
}

pub async fn delete(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    state.store.delete_project(org.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironment {
    pub name: String,
    pub branch: String,
}

pub async fn create_environment(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
    headers: HeaderMap,
    Body(req): Body<CreateEnvironment>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate::name("name", &req.name)?;
    let branch = parsed("branch", GitRef::parse(&req.branch))?;
    let what = format!("POST /projects/{project}/environments");
    idempotent(&state, org, &headers, &what, &req, || async {
        Ok(json!(
            state
                .store
                .create_environment(org.id, project, &req.name, &branch)
                .await?
        ))
    })
    .await
}

pub async fn environments(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "items": state.store.environments(org.id, project).await? }),
    ))
}

pub async fn environment(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(state.store.environment(org.id, id).await?)))
}
