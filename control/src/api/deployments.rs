//! Deployments: queue one (git ref or image), list, get with its step timeline, rollback, cancel.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Body, Org, PageQuery, PathId, Query, idempotent};
use super::service_spec::image_ref;
use super::validate::parsed;
use crate::store::NewDeployment;
use tenant::git::{CommitSha, GitRef};
use tenant::image::ImageRef;
use uuid::Uuid;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    /// Branch or tag to build (git services; default: the environment's branch).
    #[serde(default)]
    pub git_ref: Option<String>,
    /// Commit to build (40 or 64 hex digits); wins over `git_ref`.
    #[serde(default)]
    pub git_commit: Option<String>,
    /// Image to run instead of building (default for image services: the service's image).
    #[serde(default)]
    pub image: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    org: Org,
    PathId(service_id): PathId,
    headers: HeaderMap,
    Body(req): Body<CreateDeployment>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let git_ref = req
        .git_ref
        .as_deref()
        .map(|r| parsed("git_ref", GitRef::parse(r)))
        .transpose()?;
    let git_commit = req
        .git_commit
        .as_deref()
        .map(|c| parsed("git_commit", CommitSha::parse(c)))
        .transpose()?;
    let image = checked_image(&state, org.id, req.image.as_deref()).await?;
    let what = format!("POST /services/{service_id}/deployments");
    let response = idempotent(&state, org, &headers, &what, &req, || async {
        let service = state.store.service(org.id, service_id).await?;
        if state.store.managed_engine(service_id).await?.is_some() {
            if image.is_some() || git_ref.is_some() || git_commit.is_some() {
                return Err(invalid(
                    "image",
                    "a managed service runs the image Stackpad picks for its engine",
                ));
            }
            return Ok(json!(managed_deployment(&state, org.id, &service).await?));
        }
        let new = match (&service.git_url, &image) {
            (_, Some(image)) => {
                if git_ref.is_some() || git_commit.is_some() {
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
                let git_ref = match &git_ref {
                    Some(r) => r.clone(),
                    None => GitRef::parse(&branch).map_err(|e| {
                        invalid(
                            "git_ref",
                            format!(
                                "the environment's branch cannot be built ({e}); name a git_ref"
                            ),
                        )
                    })?,
                };
                NewDeployment {
                    git_ref: Some(git_ref),
                    git_commit: git_commit.clone(),
                    ..Default::default()
                }
            }
            (None, None) => {
                if git_ref.is_some() || git_commit.is_some() {
                    return Err(invalid(
                        "git_ref",
                        "this service runs an image; it has no git source",
                    ));
                }
                // Stored before the registry rules: checked again rather than pulled.
                let image = checked_image(&state, org.id, service.image.as_deref()).await?;
                NewDeployment {
                    image,
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

/// A deployment of a managed service: its engine image as stored (the platform's own, so not
/// held to the organization's registry rules).
async fn managed_deployment(
    state: &AppState,
    org: Uuid,
    service: &crate::store::Service,
) -> ApiResult<crate::store::Deployment> {
    let image = service
        .image
        .as_deref()
        .map(tenant::image::ImageRef::parse)
        .transpose()
        .map_err(|e| ApiError::Internal(format!("stored engine image: {e}")))?;
    let new = NewDeployment {
        image,
        ..Default::default()
    };
    Ok(state.store.create_deployment(org, service.id, &new).await?)
}

/// Queues a deployment of a managed service (after its password was rotated).
pub async fn redeploy(state: &AppState, org: Uuid, service_id: Uuid) -> ApiResult<Value> {
    let service = state.store.service(org, service_id).await?;
    let d = managed_deployment(state, org, &service).await?;
    state.wake.notify_waiters();
    Ok(json!(d))
}

pub async fn list(
    State(state): State<AppState>,
    org: Org,
    PathId(service_id): PathId,
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
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let d = state.store.deployment(org.id, id).await?;
    let timeline = state.store.deployment_events(org.id, id).await?;
    let instances = state.store.instances(id).await?;
    let mut v = json!(d);
    v["timeline"] = json!(timeline);
    // Its containers, one per replica, with the node each runs on (#15).
    v["instances"] = json!(instances);
    Ok(Json(v))
}

pub async fn rollback(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let what = format!("POST /deployments/{id}/rollback");
    let response = idempotent(&state, org, &headers, &what, &(), || async {
        // The image rolled back to keeps its registry and path (only the tag becomes the
        // digest), so the target's image is what the registry rules are checked on.
        let target = state.store.deployment(org.id, id).await?;
        checked_image(&state, org.id, target.image.as_deref()).await?;
        Ok(json!(state.store.rollback(org.id, id).await?))
    })
    .await?;
    state.wake.notify_waiters();
    Ok(response)
}

pub async fn cancel(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(
        state.store.cancel_deployment(org.id, id).await?
    )))
}

/// `value` parsed as an image reference and held to the registry rules for organization `org`
/// (a given image, or one stored before the rules, checked again rather than pulled).
async fn checked_image(
    state: &AppState,
    org: uuid::Uuid,
    value: Option<&str>,
) -> ApiResult<Option<ImageRef>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let image = image_ref("image", value)?;
    state.sources.check_image("image", org, &image).await?;
    Ok(Some(image))
}
