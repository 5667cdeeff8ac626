//! Services: create (image or git source), list, get, update, delete.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Body, Org, PageQuery, idempotent};
use super::validate;
use crate::pipeline::driver::default_host;
use crate::store::{BuildSettings, HealthCheck, NewService, Resources, Service, ServicePatch};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GitSource {
    pub url: String,
    #[serde(default)]
    pub subdirectory: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateService {
    pub name: String,
    /// Default: the project's `production` environment.
    #[serde(default)]
    pub environment_id: Option<Uuid>,
    #[serde(default = "web")]
    pub kind: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub git: Option<GitSource>,
    #[serde(default)]
    pub build: BuildSettings,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

fn web() -> String {
    "web".into()
}

type EnvAndSecrets<'a> = (&'a BTreeMap<String, String>, &'a BTreeMap<String, String>);

fn check_common(
    port: Option<u32>,
    replicas: Option<u32>,
    domains: Option<&[String]>,
    env: Option<EnvAndSecrets<'_>>,
    health: Option<&HealthCheck>,
) -> ApiResult<()> {
    if let Some(port) = port
        && !(1..=65535).contains(&port)
    {
        return Err(invalid("port", "must be between 1 and 65535"));
    }
    if let Some(r) = replicas
        && !(1..=20).contains(&r)
    {
        return Err(invalid("replicas", "must be between 1 and 20"));
    }
    // Custom domains have one way in, the one that verifies them (a host routed on a mere
    // claim could take traffic for a name its owner verified on another service).
    if let Some(d) = domains.unwrap_or_default().first() {
        return Err(invalid(
            "domains",
            format!(
                "{d:?}: custom domains are added with POST /services/{{id}}/domains \
                 (`stackpad domains add`) and routed once their DNS record is verified"
            ),
        ));
    }
    if let Some((env, secrets)) = env {
        for name in env.keys() {
            validate::env_name("env", name)?;
        }
        for name in secrets.keys() {
            validate::env_name("secrets", name)?;
            if env.contains_key(name) {
                return Err(invalid("secrets", format!("{name} is also in env")));
            }
        }
    }
    if let Some(path) = health.and_then(|h| h.path.as_deref())
        && !path.starts_with('/')
    {
        return Err(invalid("health_check.path", "must start with /"));
    }
    Ok(())
}

async fn view(state: &AppState, org: Uuid, service: Service) -> ApiResult<Value> {
    let project = state.store.project(org, service.project_id).await?;
    let mut hosts = vec![];
    if service.kind == "web" {
        hosts.push(default_host(
            &service.name,
            &project.name,
            &state.apps_domain,
        ));
        hosts.extend(state.store.verified_domains(service.id).await?);
    }
    let mut v = json!(service);
    v["hosts"] = json!(hosts);
    Ok(v)
}

pub async fn create(
    State(state): State<AppState>,
    org: Org,
    Path(project): Path<Uuid>,
    headers: HeaderMap,
    Body(req): Body<CreateService>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate::name("name", &req.name)?;
    if !matches!(req.kind.as_str(), "web" | "database" | "cache" | "worker") {
        return Err(invalid("kind", "must be web, database, cache or worker"));
    }
    match (&req.image, &req.git) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(invalid("image", "give exactly one of image and git"));
        }
        (Some(image), None) => validate::non_empty("image", image)?,
        (None, Some(git)) => validate::non_empty("git.url", &git.url)?,
    }
    check_common(
        req.port,
        req.replicas,
        Some(&req.domains),
        Some((&req.env, &req.secrets)),
        req.health_check.as_ref(),
    )?;
    let what = format!("POST /projects/{project}/services");
    idempotent(&state, org, &headers, &what, &req, || async {
        let environment_id = match req.environment_id {
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
        let new = NewService {
            environment_id,
            name: req.name.clone(),
            kind: req.kind.clone(),
            image: req.image.clone(),
            git_url: req.git.as_ref().map(|g| g.url.clone()),
            git_subdirectory: req
                .git
                .as_ref()
                .map(|g| g.subdirectory.clone())
                .unwrap_or_default(),
            build: req.build.clone(),
            resources: req.resources.clone(),
            health_check: req.health_check.clone(),
            port: req.port.unwrap_or(8080) as i32,
            replicas: req.replicas.unwrap_or(1) as i32,
            domains: req.domains.clone(),
            command: req.command.clone(),
            args: req.args.clone(),
            env: req.env.clone(),
            secrets: req.secrets.clone(),
            webhook_secret: req.webhook_secret.clone(),
        };
        let service = state.store.create_service(org.id, &new).await?;
        view(&state, org.id, service).await
    })
    .await
}

pub async fn list(
    State(state): State<AppState>,
    org: Org,
    Path(project): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(
        state.store.services(org.id, project, q.page()?).await?
    )))
}

pub async fn get(
    State(state): State<AppState>,
    org: Org,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Value>> {
    let service = state.store.service(org.id, id).await?;
    Ok(Json(view(&state, org.id, service).await?))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateService {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub domains: Option<Vec<String>>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Replaces env vars and secrets when either is given.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub secrets: Option<BTreeMap<String, String>>,
}

pub async fn update(
    State(state): State<AppState>,
    org: Org,
    Path(id): Path<Uuid>,
    Body(req): Body<UpdateService>,
) -> ApiResult<Json<Value>> {
    let env = match (&req.env, &req.secrets) {
        (None, None) => None,
        (e, s) => Some((e.clone().unwrap_or_default(), s.clone().unwrap_or_default())),
    };
    check_common(
        req.port,
        req.replicas,
        req.domains.as_deref(),
        env.as_ref().map(|(e, s)| (e, s)),
        req.health_check.as_ref(),
    )?;
    if let Some(image) = &req.image {
        validate::non_empty("image", image)?;
    }
    let patch = ServicePatch {
        image: req.image,
        resources: req.resources,
        health_check: req.health_check,
        port: req.port.map(|p| p as i32),
        replicas: req.replicas.map(|r| r as i32),
        domains: req.domains,
        command: req.command,
        args: req.args,
        env,
    };
    let service = state
        .store
        .update_service(org.id, id, &patch)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(m) => invalid("image", m),
            other => ApiError::from(other),
        })?;
    Ok(Json(view(&state, org.id, service).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    org: Org,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let service = state.store.service(org.id, id).await?;
    if let Some((clients, grace_ms)) = &state.teardown {
        use crate::pipeline::teardown::{TeardownError, tear_down};
        tear_down(
            &state.store,
            clients,
            &state.apps_domain,
            org.id,
            &service,
            *grace_ms,
        )
        .await
        .map_err(|e| match e {
            TeardownError::Store(e) => ApiError::from(e),
            TeardownError::InProgress(..) => ApiError::Conflict(e.to_string()),
            TeardownError::Call { .. } => ApiError::Unavailable(format!(
                "{e}; the service is kept, delete it again once that answers"
            )),
        })?;
    }
    state.store.delete_service(org.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
