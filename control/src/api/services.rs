//! Services: create (image or git source), list, get, update, delete. Bodies are parsed in
//! `service_spec.rs`; a git source is checked against the organization and the address policy
//! (`sources.rs`) before anything is stored, and so is an image's registry (create and update).

use ::api::{DeploymentState, ServiceKind};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Body, Org, PageQuery, PathId, Query, idempotent};
use super::service_spec::{CreateService, Source, UpdateService};
use crate::domains::route::service_route;
use crate::store::Service;

async fn view(state: &AppState, org: Uuid, service: Service) -> ApiResult<Value> {
    let mut hosts = vec![];
    if service.kind == ServiceKind::Web {
        hosts = service_route(&state.store, org, &service, &state.apps_domain)
            .await?
            .hosts;
    }
    let engine = state.store.managed_engine(service.id).await?;
    // The services whose variables this one takes (`${{ db.DATABASE_URL }}`): names only, so
    // a reference inside a secret shows without its value.
    let env = state.store.service_env(service.id).await?;
    let uses = crate::managed::refs::referenced_services(env.iter().map(|(k, (v, _))| (k, v)))
        .unwrap_or_default();
    // Its volumes live on a node marked down: it is down with it, not moved (#15).
    let down_with = crate::pipeline::reschedule::down_with_nodes(&state.store, &[service.id])
        .await?
        .into_iter()
        .next()
        .map(|d| json!({ "id": d.node_id, "name": d.node_name }));
    // Its replicas must move off a lost or drained node and no node has room now (#15).
    let waiting = crate::pipeline::reschedule::room_wait(&state.store, service.id).await?;
    let events = crate::pipeline::reschedule::service_events(&state.store, service.id, 10).await?;
    let mut v = json!(service);
    v["down_with_node"] = json!(down_with);
    v["waiting_for_room"] = json!(waiting);
    v["scheduling_events"] = json!(events);
    v["hosts"] = json!(hosts);
    v["engine"] = json!(engine);
    v["uses"] = json!(uses);
    if let Some(engine) = engine {
        // Where the other services of its environment reach it (no public host).
        let environment = state.store.environment(org, service.environment_id).await?;
        v["internal_host"] = json!(crate::managed::internal_host(
            &service.name,
            &environment.name
        ));
        v["engine_version"] = json!(engine.version());
    }
    Ok(v)
}

pub async fn create(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
    headers: HeaderMap,
    Body(req): Body<CreateService>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let spec = match crate::managed::spec::engine(&req.kind, req.engine.as_deref())? {
        Some(engine) => crate::managed::spec::parse(&req, engine, state.sources.registry())?,
        None => req.parse()?,
    };
    if spec.replicas > 1 && !spec.volumes.is_empty() {
        return Err(invalid("replicas", ONE_REPLICA_WITH_VOLUMES));
    }
    match &spec.source {
        // The platform's own engine image, picked by Stackpad.
        Source::Image(_) if spec.engine.is_some() => {}
        Source::Git { url, .. } => {
            // An SSH repository is fetched with the project's deploy key.
            if matches!(url, tenant::source::SourceUrl::Ssh(_))
                && state.store.deploy_key(org.id, project).await?.is_none()
            {
                return Err(invalid("git.url", crate::deploy_keys::missing(project)));
            }
            let organization = state.store.organization(org.id).await?;
            state
                .sources
                .check("git.url", &organization.name, url)
                .await?;
        }
        Source::Image(image) => state.sources.check_image("image", org.id, image).await?,
    }
    // A git service gets a webhook secret: the one given (checked) or a generated one, shown in
    // this answer only (not in the stored answer an Idempotency-Key replays).
    let builds_from_git = matches!(spec.source, Source::Git { .. });
    let webhook =
        super::webhooks::secret_for_new_service(spec.webhook_secret.as_deref(), builds_from_git)?;
    let shown = std::sync::Mutex::new(None::<String>);
    let what = format!("POST /projects/{project}/services");
    let (status, Json(mut answer)) = idempotent(&state, org, &headers, &what, &req, || async {
        let environment_id = match spec.environment_id {
            Some(id) => {
                let env = state.store.environment(org.id, id).await?;
                if env.project_id != project {
                    return Err(invalid("environment_id", "belongs to another project"));
                }
                id
            }
            None => {
                state
                    .store
                    .environments(org.id, project)
                    .await?
                    .into_iter()
                    .find(|e| e.name == "production")
                    .ok_or_else(|| {
                        invalid(
                            "environment_id",
                            "the project has no production environment; name one",
                        )
                    })?
                    .id
            }
        };
        let mut new = spec.clone().into_new_service(environment_id);
        new.webhook_secret = webhook.as_ref().map(|(secret, _)| secret.clone());
        let service = state.store.create_service(org.id, &new).await?;
        if let Some((secret, true)) = &webhook {
            *shown.lock().unwrap_or_else(|e| e.into_inner()) = Some(secret.clone());
        }
        view(&state, org.id, service).await
    })
    .await?;
    if let Some(secret) = shown.into_inner().unwrap_or_else(|e| e.into_inner()) {
        answer["webhook_secret"] = json!(secret);
    }
    Ok((status, Json(answer)))
}

pub async fn list(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    // Each as `GET /services/{id}` shows it (its hosts, engine, references), so a list
    // needs no call per service.
    let page = state.store.services(org.id, project, q.page()?).await?;
    let items =
        futures::future::try_join_all(page.items.into_iter().map(|s| view(&state, org.id, s)))
            .await?;
    Ok(Json(json!({ "items": items, "next": page.next })))
}

pub async fn get(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let service = state.store.service(org.id, id).await?;
    Ok(Json(view(&state, org.id, service).await?))
}

pub async fn update(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
    Body(req): Body<UpdateService>,
) -> ApiResult<Json<Value>> {
    let patch = req.parse()?;
    let before = state.store.service(org.id, id).await?;
    let engine = state.store.managed_engine(id).await?;
    fixed_at_create(&req, &before, engine)?;
    if let Some(engine) = engine {
        crate::managed::spec::check_patch(&req, engine)?;
    }
    if let Some(image) = &patch.image {
        state.sources.check_image("image", org.id, image).await?;
    }
    let removed = match &patch.volumes {
        Some(after) => volume_change(&state, &before, after, req.purge_volumes).await?,
        None => vec![],
    };
    let volumes_after = patch.volumes.as_ref().unwrap_or(&before.volumes);
    let volumes_changed = *volumes_after != before.volumes;
    if !volumes_after.is_empty() && patch.replicas.unwrap_or(before.replicas) > 1 {
        return Err(match patch.replicas {
            Some(_) => invalid("replicas", ONE_REPLICA_WITH_VOLUMES),
            None => invalid(
                "volumes",
                format!(
                    "the service runs {} replicas and {ONE_REPLICA_WITH_VOLUMES}: send \
                     replicas: 1 with them",
                    before.replicas
                ),
            ),
        });
    }
    if let Some(change) = &patch.vars {
        let current = state.store.service(org.id, id).await?.env;
        let mut names: std::collections::BTreeSet<&String> = current.keys().collect();
        names.extend(change.set.keys());
        let kept = names.iter().filter(|n| !change.unset.contains(n)).count();
        if kept > super::service_spec::MAX_ENV_VARS {
            return Err(invalid(
                "env_set",
                format!(
                    "at most {} env vars and secrets together",
                    super::service_spec::MAX_ENV_VARS
                ),
            ));
        }
    }
    // A new replica count is deployed at once (the image serving now, no build) unless a
    // deployment on its way will start with it (#15).
    let scale = match patch.replicas {
        Some(replicas) if replicas != before.replicas => scale_needs_deployment(&state, id).await?,
        _ => false,
    };
    let service = state
        .store
        .update_service(org.id, id, &patch)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(m) => invalid("image", m),
            other => ApiError::from(other),
        })?;
    if !removed.is_empty() {
        purge_removed_volumes(&state, id, &removed).await?;
    }
    let mut v = view(&state, org.id, service).await?;
    if scale && let Some(d) = state.store.redeploy_current(org.id, id).await? {
        state.wake.notify_waiters();
        v["deployment"] = json!(d);
    }
    if volumes_changed {
        v["note"] = json!(
            "volumes change at the next deployment (a service with volumes runs one replica and \
             stops the old container before starting the new); a removed volume's data is \
             deleted once no container mounts it"
        );
    }
    Ok(Json(v))
}

/// `kind` and `engine` are what the service is: sent unchanged they are accepted (a client
/// sending the whole service back), changed they are refused saying what to do instead.
fn fixed_at_create(
    req: &UpdateService,
    before: &Service,
    engine: Option<::api::Engine>,
) -> ApiResult<()> {
    const INSTEAD: &str = "create a new service with it and, for a database, restore a backup \
                           into it (POST /services/{id}/backups/{backup}/restore with \
                           into_service; `stackpad backups restore --into <service>`)";
    if let Some(kind) = &req.kind
        && kind != before.kind.as_str()
    {
        return Err(invalid(
            "kind",
            format!(
                "a service's kind is fixed at create (this one is {}): {INSTEAD}",
                before.kind.as_str()
            ),
        ));
    }
    if let Some(given) = &req.engine {
        let now = engine.map(|e| e.to_string());
        if now.as_deref() != Some(given.as_str()) {
            return Err(invalid(
                "engine",
                format!(
                    "a service's engine is fixed at create (this one has {}): {INSTEAD}",
                    now.as_deref().unwrap_or("none")
                ),
            ));
        }
    }
    Ok(())
}

/// The volumes `after` takes out of the service (named), checked: a kept volume keeps its
/// path and size, a removed one needs `purge` (its data goes), an added one may not reuse the
/// name of one whose data is still being deleted.
async fn volume_change(
    state: &AppState,
    before: &Service,
    after: &[crate::store::Volume],
    purge: bool,
) -> ApiResult<Vec<String>> {
    for (i, v) in after.iter().enumerate() {
        match before.volumes.iter().find(|b| b.name == v.name) {
            Some(b) if b.mount_path != v.mount_path || b.size_bytes != v.size_bytes => {
                return Err(invalid(
                    &format!("volumes[{i}]"),
                    format!(
                        "volume {} is at {} with {} bytes: a volume's path and size are fixed; \
                         add another volume instead",
                        b.name, b.mount_path, b.size_bytes
                    ),
                ));
            }
            Some(_) => {}
            None => {
                if crate::volumes::deletion_pending(&state.store, before.id, &v.name).await? {
                    return Err(ApiError::Conflict(format!(
                        "volume {} of this service is still being deleted; give the new one \
                         another name",
                        v.name
                    )));
                }
            }
        }
    }
    let removed: Vec<&crate::store::Volume> = before
        .volumes
        .iter()
        .filter(|b| !after.iter().any(|v| v.name == b.name))
        .collect();
    if !removed.is_empty() && !purge {
        let list = removed
            .iter()
            .map(|v| format!("{} at {}", v.name, v.mount_path))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(invalid(
            "volumes",
            format!(
                "leaving out {list} deletes its data: send purge_volumes: true to remove it \
                 (`stackpad services set --remove-volume <path> --purge`)"
            ),
        ));
    }
    Ok(removed.into_iter().map(|v| v.name.clone()).collect())
}

/// The removed volumes' data goes on every node that ran the service, due now: the node
/// monitor's sweep (`crate::volumes::sweep`) asks the nodes; a node refuses while the running
/// container still mounts the volume, so it goes once the next deployment replaced that one.
async fn purge_removed_volumes(state: &AppState, id: Uuid, removed: &[String]) -> ApiResult<()> {
    let mut nodes: Vec<Uuid> = state
        .store
        .service_deployment_nodes(id)
        .await?
        .iter()
        .filter_map(|d| d.node_id)
        .collect();
    nodes.sort();
    nodes.dedup();
    for name in removed {
        crate::volumes::schedule_deletion(&state.store, id, Some(name), &nodes, chrono::Utc::now())
            .await?;
    }
    Ok(())
}

const ONE_REPLICA_WITH_VOLUMES: &str =
    "a service with volumes runs one replica (its volumes live on one node)";

/// Whether a new replica count needs a deployment of its own: not when one is queued or
/// building (it starts with the new count); refused while one is starting or switching (it
/// started with the old count: change it again once that one is done).
async fn scale_needs_deployment(state: &AppState, service: Uuid) -> ApiResult<bool> {
    let deployments = state.store.service_deployment_nodes(service).await?;
    let mut needs = true;
    for d in deployments {
        match d.state {
            DeploymentState::Queued | DeploymentState::Building => needs = false,
            DeploymentState::Deploying => {
                return Err(ApiError::Conflict(format!(
                    "deployment {} is deploying with the current replica count; change replicas once it is done",
                    d.id
                )));
            }
            _ => {}
        }
    }
    Ok(needs)
}

/// `POST /services/{id}/credentials/rotate`: a new generated password for a managed database or
/// cache. The engine applies it when it next starts (a deployment of it is queued here);
/// services referencing its variables get it on their next deploy.
pub async fn rotate_credentials(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let engine = state
        .store
        .rotate_password(org.id, id)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(m) => ApiError::Conflict(m),
            other => ApiError::from(other),
        })?;
    let deployment = super::deployments::redeploy(&state, org.id, id).await?;
    Ok(Json(json!({
        "engine": engine,
        "rotated": true,
        "deployment": deployment,
        "note": "services referencing this service's variables get the new password on their next deploy",
    })))
}

/// `DELETE /services/{id}?purge=true`: the service's volumes go now instead of after the
/// grace period (`crate::volumes`), and its backup and WAL objects instead of after
/// `backups.deleted_keep_ms` (`crate::backups::deleted`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    #[serde(default)]
    pub purge: bool,
}

pub async fn delete(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
    Query(p): Query<DeleteParams>,
) -> ApiResult<StatusCode> {
    let service = state.store.service(org.id, id).await?;
    super::environments::tear_down(&state, org.id, std::slice::from_ref(&service), "service")
        .await?;
    state.store.delete_service(org.id, id).await?;
    if p.purge {
        // Its backup and WAL objects too (without backups configured there are none).
        if let Some(backups) = &state.backups {
            backups.purge_deleted(id).await?;
        }
        crate::volumes::purge(&state.store, id).await?;
        // Now rather than at the node monitor's next round; a node that does not answer keeps
        // its row and is asked again then.
        if let Some((clients, _)) = &state.teardown {
            crate::volumes::sweep(&state.store, clients).await?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
