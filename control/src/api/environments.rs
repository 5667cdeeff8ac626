//! Environments of a project: list, create (empty, or a copy of another environment of the
//! project: its services with their settings, variables and secrets, and its own variables,
//! with the variables given applied over them), get, update (branch, variables) and delete
//! (every service torn down first, as a service delete does; 409 while a deployment of one is
//! on its way). An environment's variables go to every service in it, over the service's own
//! variable of the same name; secrets are never shown.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use tenant::git::GitRef;

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Body, Org, PathId, idempotent};
use super::service_spec::env_vars;
use super::validate::{self, parsed};
use crate::domains::route::PRODUCTION;
use crate::pipeline::teardown::{TeardownError, tear_down_all};
use crate::store::{Environment, Service, VarChange};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironment {
    pub name: String,
    pub branch: String,
    /// The environment to copy, by id or name, in the same project.
    #[serde(default)]
    pub from: Option<String>,
    /// Variables of the new environment (over the copied ones).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateEnvironment {
    #[serde(default)]
    pub branch: Option<String>,
    /// Variables to set (others are kept).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secrets to set (others are kept).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Variables or secrets to remove.
    #[serde(default)]
    pub unset: Vec<String>,
}

/// The variable change `env`, `secrets` and `unset` ask for, checked.
fn var_change(
    env: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
    unset: &[String],
) -> ApiResult<VarChange> {
    let (env, secrets) = env_vars(env, secrets)?;
    for name in unset {
        validate::env_name("unset", name)?;
        if env.contains_key(name) || secrets.contains_key(name) {
            return Err(invalid("unset", format!("{name} is also set")));
        }
    }
    let set = env
        .into_iter()
        .map(|(k, v)| (k, (v, false)))
        .chain(secrets.into_iter().map(|(k, v)| (k, (v, true))))
        .collect();
    Ok(VarChange {
        set,
        unset: unset.to_vec(),
    })
}

/// The environment as shown: its variables with secrets masked.
async fn view(state: &AppState, env: Environment) -> ApiResult<Value> {
    let vars = state.store.environment_vars_view(env.id).await?;
    let mut v = json!(env);
    v["env"] = json!(vars);
    Ok(v)
}

/// The environment `from` names in `project`: an id, or a name.
async fn template(state: &AppState, org: Uuid, project: Uuid, from: &str) -> ApiResult<Uuid> {
    let envs = state.store.environments(org, project).await?;
    let by_id = Uuid::parse_str(from).ok();
    envs.iter()
        .find(|e| Some(e.id) == by_id || e.name == from)
        .map(|e| e.id)
        .ok_or_else(|| {
            invalid(
                "from",
                format!("{} is no environment of this project", tenant::echo(from)),
            )
        })
}

pub async fn create(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
    headers: HeaderMap,
    Body(req): Body<CreateEnvironment>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate::name("name", &req.name)?;
    let branch = parsed("branch", GitRef::parse(&req.branch))?;
    let vars = var_change(&req.env, &req.secrets, &[])?;
    let what = format!("POST /projects/{project}/environments");
    idempotent(&state, org, &headers, &what, &req, || async {
        let from = match &req.from {
            Some(from) => Some(template(&state, org.id, project, from).await?),
            None => None,
        };
        let env = state
            .store
            .new_environment(org.id, project, &req.name, &branch, from, &vars)
            .await?;
        view(&state, env).await
    })
    .await
}

pub async fn list(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
) -> ApiResult<Json<Value>> {
    let mut items = vec![];
    for env in state.store.environments(org.id, project).await? {
        items.push(view(&state, env).await?);
    }
    Ok(Json(json!({ "items": items })))
}

pub async fn get(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let env = state.store.environment(org.id, id).await?;
    Ok(Json(view(&state, env).await?))
}

pub async fn update(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
    Body(req): Body<UpdateEnvironment>,
) -> ApiResult<Json<Value>> {
    let branch = req
        .branch
        .as_deref()
        .map(|b| parsed("branch", GitRef::parse(b)))
        .transpose()?;
    let vars = var_change(&req.env, &req.secrets, &req.unset)?;
    let env = state
        .store
        .update_environment(org.id, id, branch.as_ref(), &vars)
        .await?;
    Ok(Json(view(&state, env).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    let env = state.store.environment(org.id, id).await?;
    if env.name == PRODUCTION {
        return Err(ApiError::Conflict(format!(
            "environment {id} is the project's production environment: it goes with the project \
             (DELETE /projects/{})",
            env.project_id
        )));
    }
    let services = state
        .store
        .services_to_tear_down(org.id, env.project_id, Some(id))
        .await?;
    tear_down(&state, org.id, &services, "environment").await?;
    state.store.delete_environment(org.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes `services` off the proxy and the nodes (when the API has the daemons' clients), as a
/// delete of `what` (a service, an environment, a project) needs; the error keeps `what`.
pub(super) async fn tear_down(
    state: &AppState,
    org: Uuid,
    services: &[Service],
    what: &str,
) -> ApiResult<()> {
    let Some((clients, grace_ms)) = &state.teardown else {
        return Ok(());
    };
    tear_down_all(
        &state.store,
        clients,
        &state.apps_domain,
        org,
        services,
        *grace_ms,
    )
    .await
    .map_err(|e| match e {
        TeardownError::Store(e) => ApiError::from(e),
        TeardownError::InProgress(..) => ApiError::Conflict(e.to_string()),
        TeardownError::Call { .. } => ApiError::Unavailable(format!(
            "{e}; the {what} is kept, delete it again once that answers"
        )),
    })
}
