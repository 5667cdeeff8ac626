//! Projects (their environments are in `environments.rs`). Deleting a project tears down
//! every service of every environment first, as a service delete does.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use tenant::git::GitRef;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Body, Org, PageQuery, PathId, Query, idempotent};
use super::validate;

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
    // Every service of every environment leaves the proxy and the nodes before the rows go.
    let services = state.store.services_to_tear_down(org.id, id, None).await?;
    super::environments::tear_down(&state, org.id, &services, "project").await?;
    state.store.delete_project(org.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
