//! Backups of managed services (#14): `GET|POST /services/{id}/backups`,
//! `GET /services/{id}/backups/{backup}` (with its timeline),
//! `POST /services/{id}/backups/{backup}/restore`, `POST /services/{id}/backups/restore`
//! (PostgreSQL to a point in time, `to_time`), each into the service itself, another one
//! (`into_service`) or a new one made for it (`new_service: {name, environment_id?,
//! resources?}`, answered under `new_service` with its first deployment); the recovery
//! window is in the backup list's answer (`recovery_window`); `GET /restores/{id}`,
//! `GET|PUT /services/{id}/backup-policy`. The work runs in the background: a create or a
//! restore answers 202 with the row, whose state and timeline tell how it goes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Org, PathId};
use super::service_spec::{CreateService, ResourcesInput, VolumeInput};
use crate::backups::restore_new::NewTarget;
use crate::backups::{BackupError, Backups};

fn backups(state: &AppState) -> ApiResult<&Backups> {
    state.backups.as_ref().ok_or_else(|| {
        ApiError::Unavailable("backups are not configured on this control plane".into())
    })
}

fn error(e: BackupError) -> ApiError {
    match e {
        BackupError::Store(s) => ApiError::from(s),
        BackupError::OutsideWindow(m) => invalid("to_time", m),
        e if e.is_conflict() => ApiError::Conflict(e.to_string()),
        e => ApiError::Unavailable(e.to_string()),
    }
}

/// The `{backup}` of a route, a UUID.
#[derive(Debug, Clone, Copy)]
pub struct PathBackup(pub Uuid);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathBackup {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> ApiResult<Self> {
        let params = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let raw = params
            .iter()
            .find(|(k, _)| *k == "backup")
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default();
        Uuid::parse_str(&raw)
            .map(PathBackup)
            .map_err(|_| invalid("backup", format!("{} is not a UUID", tenant::echo(&raw))))
    }
}

async fn owned_service(state: &AppState, org: Uuid, service: Uuid) -> ApiResult<()> {
    state.store.service(org, service).await?;
    Ok(())
}

pub async fn list(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    owned_service(&state, org.id, id).await?;
    let items = state.store.backups(id, 200).await?;
    // The times a PostgreSQL service can be restored to (from its oldest base backup's end
    // to its newest archived WAL); null bounds otherwise.
    let window = state.store.recovery_window(id).await?;
    // The service's own backup events, newest first: failed, missed, WAL shipping.
    let events = crate::backups::health::service_events(&state.store, id, 50).await?;
    Ok(Json(
        json!({ "items": items, "recovery_window": window, "events": events }),
    ))
}

pub async fn create(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
) -> ApiResult<(StatusCode, Json<Value>)> {
    owned_service(&state, org.id, id).await?;
    let backups = backups(&state)?.clone();
    let (b, running) = backups
        .begin(id, ::api::BackupTrigger::Manual)
        .await
        .map_err(error)?;
    let view = json!(b);
    tokio::spawn(async move {
        if let Err(e) = backups.take_and_verify(b, running).await {
            tracing::warn!(service = %id, error = %e, "backup failed");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(view)))
}

pub async fn get(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
    PathBackup(backup): PathBackup,
) -> ApiResult<Json<Value>> {
    let b = state.store.backup(org.id, backup).await?;
    if b.service_id != id {
        return Err(ApiError::NotFound(format!("backup {backup} not found")));
    }
    let events = state.store.backup_events(backup).await?;
    let mut view = json!(b);
    view["events"] = json!(events);
    Ok(Json(view))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// Another managed service of the same engine (its id) to restore into; none = the
    /// backup's own service (its current data is backed up first).
    #[serde(default)]
    pub into_service: Option<Uuid>,
    /// A new service to make and restore into (the source is left untouched); not with
    /// `into_service`.
    #[serde(default)]
    pub new_service: Option<NewServiceInput>,
}

/// `new_service` of a restore: a managed service of the source's engine, with its own
/// generated credentials and its own volume (the source's size).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewServiceInput {
    pub name: String,
    /// Default: the source's environment (another one of its project may be named).
    #[serde(default)]
    pub environment_id: Option<Uuid>,
    /// Default: the source's.
    #[serde(default)]
    pub resources: Option<ResourcesInput>,
}

/// Prefixes the field of a refusal with `new_service.`.
fn in_new_service(e: ApiError) -> ApiError {
    match e {
        ApiError::Invalid { field, message } => invalid(&format!("new_service.{field}"), message),
        e => e,
    }
}

/// Makes the new service a restore goes into (the checks of `POST /projects/{id}/services`
/// for a managed one) and queues its first deployment.
async fn create_restore_target(
    state: &AppState,
    org: Uuid,
    source: Uuid,
    input: NewServiceInput,
) -> ApiResult<(NewTarget, Value)> {
    let from = state.store.service(org, source).await?;
    let engine = state
        .store
        .managed_engine(source)
        .await?
        .ok_or_else(|| ApiError::Conflict(BackupError::NotManaged(source).to_string()))?;
    let environment_id = match input.environment_id {
        Some(id) => {
            let env = state.store.environment(org, id).await?;
            if env.project_id != from.project_id {
                return Err(invalid(
                    "new_service.environment_id",
                    "belongs to another project than the source service",
                ));
            }
            id
        }
        None => from.environment_id,
    };
    let req = CreateService {
        name: input.name,
        environment_id: Some(environment_id),
        kind: engine.kind().as_str().into(),
        engine: Some(engine.as_str().into()),
        image: None,
        git: None,
        build: Default::default(),
        resources: input.resources.unwrap_or(ResourcesInput {
            cpu_millis: Some(u64::from(from.resources.cpu_millis)),
            memory_bytes: Some(from.resources.memory_bytes),
        }),
        health_check: None,
        port: None,
        replicas: None,
        domains: vec![],
        command: vec![],
        args: vec![],
        env: Default::default(),
        secrets: Default::default(),
        webhook_secret: None,
        volumes: from
            .volumes
            .iter()
            .map(|v| VolumeInput {
                name: v.name.clone(),
                mount_path: v.mount_path.clone(),
                size_bytes: v.size_bytes,
            })
            .collect(),
    };
    let spec = crate::managed::spec::parse(&req, engine, state.sources.registry())
        .map_err(in_new_service)?;
    let service = state
        .store
        .create_service(org, &spec.into_new_service(environment_id))
        .await?;
    let deployment = super::deployments::redeploy(state, org, service.id).await?;
    let deployment_id = deployment["id"]
        .as_str()
        .and_then(|d| Uuid::parse_str(d).ok())
        .ok_or_else(|| ApiError::Internal(format!("a deployment without an id: {deployment}")))?;
    let view = json!({
        "id": service.id,
        "name": service.name,
        "environment_id": service.environment_id,
        "engine": engine,
        "deployment": deployment,
    });
    Ok((
        NewTarget {
            service_id: service.id,
            name: service.name,
            deployment_id,
        },
        view,
    ))
}

fn one_target(into: Option<Uuid>, new: &Option<NewServiceInput>) -> ApiResult<()> {
    if into.is_some() && new.is_some() {
        return Err(invalid(
            "new_service",
            "give either into_service (an existing service) or new_service, not both",
        ));
    }
    Ok(())
}

pub async fn restore(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
    PathBackup(backup): PathBackup,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: RestoreRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RestoreRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid restore request: {e}")))?
    };
    one_target(req.into_service, &req.new_service)?;
    owned_service(&state, org.id, id).await?;
    let b = state.store.backup(org.id, backup).await?;
    if b.service_id != id {
        return Err(ApiError::NotFound(format!("backup {backup} not found")));
    }
    if let Some(input) = req.new_service {
        let backups = backups(&state)?.clone();
        let b = backups.restorable(org.id, backup).await.map_err(error)?;
        let (target, service) = create_restore_target(&state, org.id, id, input).await?;
        let r = backups
            .begin_restore_into_new(org.id, &b, None, &target)
            .await
            .map_err(error)?;
        let mut view = json!(r);
        view["new_service"] = service;
        tokio::spawn(async move {
            if let Err(e) = backups.restore_into_new(&r, &b, None, &target).await {
                tracing::warn!(restore = %r.id, error = %e, "restore into a new service failed");
            }
        });
        return Ok((StatusCode::ACCEPTED, Json(view)));
    }
    let into = req.into_service.unwrap_or(id);
    owned_service(&state, org.id, into).await?;
    let backups = backups(&state)?.clone();
    let (r, b, running) = backups
        .begin_restore(org.id, backup, into)
        .await
        .map_err(error)?;
    let view = json!(r);
    tokio::spawn(async move {
        if let Err(e) = backups.restore(&r, &b, &running).await {
            tracing::warn!(restore = %r.id, error = %e, "restore failed");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(view)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreToTimeRequest {
    /// The time to restore the service's PostgreSQL to (RFC 3339), inside its recovery window.
    pub to_time: chrono::DateTime<chrono::Utc>,
    /// Another managed PostgreSQL (its id) to restore into; none = the service itself (its
    /// current data is backed up first).
    #[serde(default)]
    pub into_service: Option<Uuid>,
    /// A new PostgreSQL service to make and restore into (the source is left untouched); not
    /// with `into_service`.
    #[serde(default)]
    pub new_service: Option<NewServiceInput>,
}

/// `POST /services/{id}/backups/restore`: the service's PostgreSQL as it was at `to_time`
/// (point-in-time recovery from its base backups and archived WAL), into itself or
/// `into_service`; 422 naming `to_time` when the time is outside the recovery window.
pub async fn restore_to_time(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: RestoreToTimeRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid restore request: {e}")))?;
    one_target(req.into_service, &req.new_service)?;
    owned_service(&state, org.id, id).await?;
    if let Some(input) = req.new_service {
        let backups = backups(&state)?.clone();
        let to = req.to_time;
        let base = backups.base_for_time(id, to).await.map_err(error)?;
        let (target, service) = create_restore_target(&state, org.id, id, input).await?;
        let r = backups
            .begin_restore_into_new(org.id, &base, Some(to), &target)
            .await
            .map_err(error)?;
        let mut view = json!(r);
        view["new_service"] = service;
        tokio::spawn(async move {
            if let Err(e) = backups.restore_into_new(&r, &base, Some(to), &target).await {
                tracing::warn!(restore = %r.id, error = %e, "point-in-time restore into a new service failed");
            }
        });
        return Ok((StatusCode::ACCEPTED, Json(view)));
    }
    let into = req.into_service.unwrap_or(id);
    owned_service(&state, org.id, into).await?;
    let backups = backups(&state)?.clone();
    let (r, base, running) = backups
        .begin_restore_to_time(org.id, id, into, req.to_time)
        .await
        .map_err(error)?;
    let view = json!(r);
    let to = req.to_time;
    tokio::spawn(async move {
        if let Err(e) = backups.restore_to_time(&r, &base, &running, to).await {
            tracing::warn!(restore = %r.id, error = %e, "point-in-time restore failed");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(view)))
}

pub async fn get_restore(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let r = state.store.restore(org.id, id).await?;
    let events = state.store.backup_events(id).await?;
    let mut view = json!(r);
    view["events"] = json!(events);
    Ok(Json(view))
}

pub async fn get_policy(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    owned_service(&state, org.id, id).await?;
    if state.store.managed_engine(id).await?.is_none() {
        return Err(ApiError::Conflict(format!(
            "service {id} is not a managed database or cache: it has no backups"
        )));
    }
    Ok(Json(json!(state.store.backup_policy(id).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    /// Seconds between scheduled backups, >= 60 (default 86400, daily).
    #[serde(default = "daily")]
    pub interval_seconds: i64,
    /// Completed backups kept, 1..=1000 (default 7).
    #[serde(default = "seven")]
    pub keep: i64,
}

fn daily() -> i64 {
    86_400
}

fn seven() -> i64 {
    7
}

pub async fn put_policy(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
    super::extract::Body(req): super::extract::Body<PolicyRequest>,
) -> ApiResult<Json<Value>> {
    owned_service(&state, org.id, id).await?;
    if state.store.managed_engine(id).await?.is_none() {
        return Err(ApiError::Conflict(format!(
            "service {id} is not a managed database or cache: it has no backups"
        )));
    }
    if !(60..=366 * 86_400).contains(&req.interval_seconds) {
        return Err(invalid(
            "interval_seconds",
            format!("{} is not between 60 and 31622400", req.interval_seconds),
        ));
    }
    if !(1..=1000).contains(&req.keep) {
        return Err(invalid(
            "keep",
            format!("{} is not between 1 and 1000", req.keep),
        ));
    }
    let p = state
        .store
        .set_backup_policy(id, req.interval_seconds as i32, req.keep as i32)
        .await?;
    Ok(Json(json!(p)))
}
