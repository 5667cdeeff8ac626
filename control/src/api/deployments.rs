//! Deployments: queue one (git ref or image), list, get with its step timeline, rollback, cancel.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiResult, invalid};
use super::extract::{Body, Org, PageQuery, idempotent};
use super::validate;
use crate::store::NewDeployment;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    /// Branch or tag to build (git services; default: the environment's branch).
    #[serde(default)]
    pub git_ref: Option<String>,
    /// Commit to build; wins over `git_ref`.
    #[serde(default)]
    pub git_commit: Option<String>,
    /// Image to run instead of building (default for image services: the service's image).
    #[serde(default)]
    pub image: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    org: Org,
    Path(service_id): Path<Uuid>,
    headers: HeaderMap,
    Body(req): Body<CreateDeployment>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if let Some(c) = &req.git_commit
        && !(7..=64).contains(&c.len())
    {
        return Err(invalid(
            "git_commit",
            "must be a 7 to 64 digit hex commit id",
        ));
    }
    if let Some(c) = &req.git_commit
        && !c.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(invalid(
            "git_commit",
            "must be a 7 to 64 digit hex commit id",
        ));
    }
    if let Some(r) = &req.git_ref {
        validate::non_empty("git_ref", r)?;
    }
    if let Some(i) = &req.image {
        validate::non_empty("image", i)?;
    }
    let what = format!("POST /services/{service_id}/deployments");
    let response = idempotent(&state, org, &headers, &what, &req, || async {
        let service = state.store.service(org.id, service_id).await?;
        let new = match (&service.git_url, &req.image) {
            (_, Some(image)) => {
                if req.git_ref.is_some() || req.git_commit.is_some() {
                    return Err(invalid("image", "give either an image or a git ref/commit"));
                }
                NewDeployment {
                    image: Some(image.clone()),
                    ..Default::default()
                }
            }
            (Some(_), None) => {
                let branch = state
                    .store
                    .environment(org.id, service.environment_id)
                    .await?
                    .branch;
                NewDeployment {
                    git_ref: Some(req.git_ref.clone().unwrap_or(branch)),
                    git_commit: req.git_commit.clone(),
                    ..Default::default()
                }
            }
            (None, None) => {
                if req.git_ref.is_some() || req.git_commit.is_some() {
                    return Err(invalid(
                        "git_ref",
                        "this service runs an image; it has no git source",
                    ));
                }
                NewDeployment {
                    image: service.image.clone(),
                    ..Default::default()
                }
            }
        };
        let d = state
            .store
            .create_deployment(org.id, service_id, &new)
            .await?;
        Ok(json!(d))
    })
    .await?;
    state.wake.notify_waiters();
    Ok(response)
}

pub async fn list(
    State(state): State<AppState>,
    org: Org,
    Path(service_id): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(
        state
            .store
            .deployments(org.id, service_id, q.page()?)
            .await?
    )))
}

pub async fn get(
    State(state): State<AppState>,
    org: Org,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Value>> {
    let d = state.store.deployment(org.id, id).await?;
    let timeline = state.store.deployment_events(org.id, id).await?;
    let mut v = json!(d);
    v["timeline"] = json!(timeline);
    Ok(Json(v))
}

pub async fn rollback(
    State(state): State<AppState>,
    org: Org,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let what = format!("POST /deployments/{id}/rollback");
    let response = idempotent(&state, org, &headers, &what, &(), || async {
        Ok(json!(state.store.rollback(org.id, id).await?))
    })
    .await?;
    state.wake.notify_waiters();
    Ok(response)
}

pub async fn cancel(
    State(state): State<AppState>,
    org: Org,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(
        state.store.cancel_deployment(org.id, id).await?
    )))
}
