//! A project's repository (#17): its webhook secret (`PATCH /projects/{id}/webhook`), its
//! pull-request preview settings (`GET`/`PUT /projects/{id}/previews`), the credentials its
//! private repositories are fetched with (`PUT`/`DELETE /projects/{id}/git-credentials`:
//! sealed, sent to buildd inside the build request only, never shown), and what a signed
//! delivery to its webhook does (`process`, called by `webhooks.rs` after the signature, dedup
//! and replay checks):
//!
//! - `push` to a branch deploys, at the pushed commit, every service built from the pushed
//!   repository in each lasting environment deploying that branch;
//! - `pull_request` `opened`/`reopened` creates the preview environment `pr-<n>` as a copy of
//!   the template environment (fresh databases) and queues a deployment of each of its services,
//!   those built from the repository at the head commit; `synchronize` deploys the new head;
//!   `closed` (merged or not) tears the preview down (`tear_down_all`) and deletes it.
//!
//! A delivery about a repository no service of the project is built from is refused (403); a
//! pull request from a fork is ignored unless the project allows forks; a preview over the
//! project's `max_previews` is refused (409). The pure decisions are in `crate::previews`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenant::git::{CommitSha, GitRef};
use uuid::Uuid;

use super::AppState;
use super::environments::{Head, queue_deployments, remove, view};
use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Body, Org, PathId};
use super::validate::parsed;
use super::webhooks::{Processed, RotateWebhookSecret, check_secret, ignored};
use crate::crypto;
use crate::previews::{
    Decision, PullRequestEvent, PushEvent, Repository, decide, environment_name, same_repository,
};
use crate::store::{
    Environment, GitCredentials, NewDeployment, NewPreview, PreviewSettings, ProjectHook, VarChange,
};
use ::api::WebhookOutcome;

/// The most previews a project may allow at once.
pub const MAX_PREVIEWS_LIMIT: i32 = 100;
/// The longest idle time a preview may be given before it sleeps (30 days).
pub const MAX_IDLE_SECONDS: i64 = 30 * 24 * 3600;

/// `PATCH /projects/{id}/webhook`: a new secret for the project's repository webhook
/// (generated, or the one given); the old one stops working at once. Shown only here.
pub async fn rotate(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
    Body(req): Body<RotateWebhookSecret>,
) -> ApiResult<Json<Value>> {
    let (secret, generated) = match req.secret {
        Some(secret) => {
            check_secret("secret", &secret)?;
            (secret, false)
        }
        None => (crypto::generate_webhook_secret(), true),
    };
    state
        .store
        .set_project_webhook_secret(org.id, project, &secret)
        .await?;
    Ok(Json(json!({
        "project_id": project,
        "webhook_url": format!("/webhooks/github/projects/{project}"),
        "webhook_secret": secret,
        "generated": generated,
        "note": "the secret is shown only in this answer; set it in the repository's webhook \
                 settings (content type application/json, events: pushes and pull requests)",
    })))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PutPreviews {
    pub enabled: bool,
    /// The environment previews copy, by id or name (required when enabled).
    #[serde(default)]
    pub template: Option<String>,
    /// Default 5, at most [`MAX_PREVIEWS_LIMIT`].
    #[serde(default)]
    pub max_previews: Option<i32>,
    /// Build pull requests from forks too (default false: their code is not the project's).
    #[serde(default)]
    pub allow_forks: bool,
    /// Stop a preview after this many seconds without a request and wake it on the next one
    /// (the proxy holds that request while it starts); absent = previews never sleep.
    #[serde(default)]
    pub idle_seconds: Option<i32>,
}

/// The settings and the open previews of a project.
async fn previews_view(state: &AppState, org: Uuid, project: Uuid) -> ApiResult<Value> {
    let settings = state.store.repository_settings(org, project).await?;
    let mut items = vec![];
    for env in state.store.environments(org, project).await? {
        if state.store.preview_of(env.id).await?.is_some() {
            items.push(view(state, org, env).await?);
        }
    }
    Ok(json!({
        "enabled": settings.previews.enabled,
        "template_id": settings.previews.template_id,
        "max_previews": settings.previews.max_previews,
        "allow_forks": settings.previews.allow_forks,
        "idle_seconds": settings.previews.idle_seconds,
        "has_webhook_secret": settings.has_webhook_secret,
        "webhook_url": format!("/webhooks/github/projects/{project}"),
        "git_username": settings.git_username,
        "has_github_token": crate::github::has_token(&state.store, project).await?,
        "items": items,
    }))
}

/// `GET /projects/{id}/previews`.
pub async fn get(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
) -> ApiResult<Json<Value>> {
    Ok(Json(previews_view(&state, org.id, project).await?))
}

/// `PUT /projects/{id}/previews`.
pub async fn put(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
    Body(req): Body<PutPreviews>,
) -> ApiResult<Json<Value>> {
    let max_previews = super::validate::within(
        "max_previews",
        i64::from(req.max_previews.unwrap_or(5)),
        0..=i64::from(MAX_PREVIEWS_LIMIT),
    )? as i32;
    let idle_seconds = req
        .idle_seconds
        .map(|v| super::validate::within("idle_seconds", i64::from(v), 1..=MAX_IDLE_SECONDS))
        .transpose()?
        .map(|v| v as i32);
    let template_id = match &req.template {
        Some(t) => Some(template(&state, org.id, project, t).await?),
        None if req.enabled => {
            return Err(invalid(
                "template",
                "previews need a template environment to copy (an id or a name)",
            ));
        }
        None => None,
    };
    state
        .store
        .set_preview_settings(
            org.id,
            project,
            &PreviewSettings {
                enabled: req.enabled,
                template_id,
                max_previews,
                allow_forks: req.allow_forks,
                idle_seconds,
            },
        )
        .await?;
    Ok(Json(previews_view(&state, org.id, project).await?))
}

/// The environment `name` names in `project` (an id or a name).
async fn template(state: &AppState, org: Uuid, project: Uuid, name: &str) -> ApiResult<Uuid> {
    let by_id = Uuid::parse_str(name).ok();
    state
        .store
        .environments(org, project)
        .await?
        .into_iter()
        .find(|e| Some(e.id) == by_id || e.name == name)
        .map(|e| e.id)
        .ok_or_else(|| {
            invalid(
                "template",
                format!("{} is no environment of this project", tenant::echo(name)),
            )
        })
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PutGitCredentials {
    /// Default `x-access-token` (what GitHub expects with a token).
    #[serde(default)]
    pub username: Option<String>,
    pub token: String,
}

/// `PUT /projects/{id}/git-credentials`: the token (HTTPS basic auth) the project's
/// repositories are fetched with. Sealed at rest; never shown again.
pub async fn put_credentials(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
    Body(req): Body<PutGitCredentials>,
) -> ApiResult<Json<Value>> {
    let username = req.username.unwrap_or_else(|| "x-access-token".into());
    let printable = |s: &str| s.bytes().all(|b| (0x21..0x7f).contains(&b));
    if username.is_empty()
        || username.len() > 100
        || !printable(&username)
        || username.contains(':')
    {
        return Err(invalid(
            "username",
            "must be 1 to 100 printable characters without spaces or ':'",
        ));
    }
    if !(8..=1024).contains(&req.token.len()) || !printable(&req.token) {
        return Err(invalid(
            "token",
            "must be 8 to 1024 printable characters without spaces",
        ));
    }
    let credentials = GitCredentials {
        username,
        token: req.token,
    };
    state
        .store
        .set_git_credentials(org.id, project, Some(&credentials))
        .await?;
    Ok(Json(json!({
        "project_id": project,
        "git_username": credentials.username,
        "note": "the token is sealed and sent only to the build node fetching the repository; it is never shown again",
    })))
}

/// `DELETE /projects/{id}/git-credentials`.
pub async fn delete_credentials(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
) -> ApiResult<StatusCode> {
    state
        .store
        .set_git_credentials(org.id, project, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn deployed(reason: String, queued: &[(String, Uuid)]) -> Processed {
    Processed {
        status: StatusCode::ACCEPTED,
        body: json!({
            "status": "queued",
            "reason": reason,
            "deployments": queued
                .iter()
                .map(|(service, id)| json!({ "service": service, "deployment_id": id }))
                .collect::<Vec<_>>(),
        }),
        outcome: WebhookOutcome::Deployed,
        deployment: queued.first().map(|(_, id)| *id),
    }
}

fn names(queued: &[(String, Uuid)]) -> String {
    queued
        .iter()
        .map(|(s, _)| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses a delivery about a repository no lasting service of the project is built from.
async fn check_repository(
    state: &AppState,
    hook: &ProjectHook,
    repo: &Repository,
) -> ApiResult<()> {
    let services = state.store.git_services_of_project(hook.project_id).await?;
    if services
        .iter()
        .any(|(_, _, url, preview)| !preview && same_repository(url, repo))
    {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "repository {} is not the source of any service of this project",
        tenant::echo(&repo.full_name)
    )))
}

/// A signed delivery to a project's webhook, seen for the first time.
/// `delivery` is its `X-GitHub-Delivery` id as the delivery log keeps it.
pub(super) async fn process(
    state: &AppState,
    hook: &ProjectHook,
    event: Option<&str>,
    delivery: Option<&str>,
    body: &[u8],
) -> ApiResult<Processed> {
    match event {
        Some("push") => push(state, hook, body).await,
        Some("pull_request") => pull_request(state, hook, delivery, body).await,
        Some("ping") => Ok(ignored(StatusCode::OK, "pong".into())),
        other => Ok(ignored(
            StatusCode::ACCEPTED,
            format!("event {:?} ignored", other.unwrap_or("")),
        )),
    }
}

async fn push(state: &AppState, hook: &ProjectHook, body: &[u8]) -> ApiResult<Processed> {
    let push: PushEvent = serde_json::from_slice(body)
        .map_err(|e| invalid("body", format!("not a push payload: {e}")))?;
    check_repository(state, hook, &push.repository).await?;
    let pushed = parsed("ref", GitRef::parse(&push.git_ref))?;
    let commit = parsed("after", CommitSha::parse(&push.after))?;
    let Some(branch) = pushed.as_str().strip_prefix("refs/heads/") else {
        return Ok(ignored(
            StatusCode::ACCEPTED,
            format!("push to {} ignored: only branches deploy", pushed.as_str()),
        ));
    };
    if push.deleted || commit.as_str().chars().all(|c| c == '0') {
        return Ok(ignored(
            StatusCode::ACCEPTED,
            format!("branch {branch} was deleted: nothing to deploy"),
        ));
    }
    let git_ref = parsed("ref", GitRef::parse(branch))?;
    let org = hook.organization_id;
    let mut queued = vec![];
    for (service, env, url, preview) in state.store.git_services_of_project(hook.project_id).await?
    {
        // Previews follow their pull request's `synchronize`, not pushes.
        if preview || !same_repository(&url, &push.repository) {
            continue;
        }
        if state.store.environment(org, env).await?.branch != branch {
            continue;
        }
        let new = NewDeployment {
            git_ref: Some(git_ref.clone()),
            git_commit: Some(commit.clone()),
            ..Default::default()
        };
        let d = state.store.create_deployment(org, service, &new).await?;
        queued.push((state.store.service(org, service).await?.name, d.id));
    }
    if queued.is_empty() {
        return Ok(ignored(
            StatusCode::ACCEPTED,
            format!("push to {branch} ignored: no environment of this project deploys {branch}"),
        ));
    }
    state.wake.notify_waiters();
    let reason = format!(
        "push of {} to {branch} queued deployments of {}",
        commit.as_str(),
        names(&queued)
    );
    Ok(deployed(reason, &queued))
}

async fn pull_request(
    state: &AppState,
    hook: &ProjectHook,
    delivery: Option<&str>,
    body: &[u8],
) -> ApiResult<Processed> {
    let event: PullRequestEvent = serde_json::from_slice(body)
        .map_err(|e| invalid("body", format!("not a pull_request payload: {e}")))?;
    check_repository(state, hook, &event.repository).await?;
    let n = event.number;
    if n <= 0 {
        return Err(invalid("number", "a pull request number is positive"));
    }
    let org = hook.organization_id;
    let settings = state.store.preview_settings(org, hook.project_id).await?;
    let existing = state.store.preview_environment(hook.project_id, n).await?;
    let head = &event.pull_request.head;
    match decide(&event, &settings, existing.is_some()) {
        Decision::Ignore(why) => Ok(ignored(StatusCode::ACCEPTED, why)),
        Decision::Close => {
            let env = existing.expect("decide closes an existing preview");
            stop_deployments(state, org, &env).await?;
            crate::github::record_close(&state.store, hook.project_id, n, delivery).await?;
            remove(state, org, &env).await?;
            let how = if event.pull_request.merged {
                "merged"
            } else {
                "closed"
            };
            Ok(ignored_as_done(format!(
                "pull request {n} {how}: preview {} torn down and deleted",
                env.name
            )))
        }
        Decision::Update => {
            let env = existing.expect("decide updates an existing preview");
            let git_ref = parsed("pull_request.head.ref", GitRef::parse(&head.git_ref))?;
            let commit = parsed("pull_request.head.sha", CommitSha::parse(&head.sha))?;
            let head = Head {
                repository: &event.repository,
                git_ref: &git_ref,
                commit: &commit,
            };
            let queued = queue_deployments(state, org, &env, &git_ref, Some(head), false).await?;
            state
                .store
                .set_preview_head(env.id, commit.as_str())
                .await?;
            let repository = &event.repository.full_name;
            crate::github::record_head(
                &state.store,
                hook.project_id,
                n,
                env.id,
                repository,
                commit.as_str(),
                delivery,
            )
            .await?;
            let reason = format!(
                "pull request {n} at {}: preview {} queued deployments of {}",
                commit.as_str(),
                env.name,
                names(&queued)
            );
            Ok(deployed(reason, &queued))
        }
        Decision::Open => {
            let template_id = settings
                .template_id
                .expect("decide opens only with a template");
            let template = state.store.environment(org, template_id).await?;
            let git_ref = parsed("pull_request.head.ref", GitRef::parse(&head.git_ref))?;
            let commit = parsed("pull_request.head.sha", CommitSha::parse(&head.sha))?;
            let env: Environment = state
                .store
                .new_environment(
                    org,
                    hook.project_id,
                    &environment_name(n),
                    &git_ref,
                    Some(template.id),
                    &VarChange::default(),
                    Some(NewPreview {
                        number: n,
                        head_sha: commit.as_str(),
                    }),
                )
                .await?;
            // Services of other repositories keep deploying the template's branch.
            let template_branch = parsed("branch", GitRef::parse(&template.branch))?;
            let head = Head {
                repository: &event.repository,
                git_ref: &git_ref,
                commit: &commit,
            };
            let queued =
                queue_deployments(state, org, &env, &template_branch, Some(head), true).await?;
            crate::github::record_head(
                &state.store,
                hook.project_id,
                n,
                env.id,
                &event.repository.full_name,
                commit.as_str(),
                delivery,
            )
            .await?;
            let reason = format!(
                "pull request {n} opened preview {} (a copy of {}) at {}: queued deployments of {}",
                env.name,
                template.name,
                commit.as_str(),
                names(&queued)
            );
            let mut done = deployed(reason, &queued);
            done.body["environment_id"] = json!(env.id);
            Ok(done)
        }
    }
}

/// How long a closed pull request's preview waits for its cancelled deployments to stop.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Cancels the deployments of `env` still on their way and waits (at most [`CANCEL_WAIT`])
/// until none is, so the teardown finds nothing in progress.
async fn stop_deployments(state: &AppState, org: Uuid, env: &Environment) -> ApiResult<()> {
    let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
    let mut asked = false;
    loop {
        let active = state.store.active_deployments(env.id).await?;
        if active.is_empty() || tokio::time::Instant::now() > deadline {
            return Ok(());
        }
        if !asked {
            for id in &active {
                // One that can no longer be cancelled ends by itself.
                if let Err(e) = state.store.cancel_deployment(org, *id).await {
                    tracing::debug!(error = %e, deployment = %id, "cancelling a preview's deployment");
                }
            }
            state.wake.notify_waiters();
            asked = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A preview torn down.
fn ignored_as_done(reason: String) -> Processed {
    Processed {
        status: StatusCode::OK,
        body: json!({ "status": "removed", "reason": reason }),
        outcome: WebhookOutcome::Removed,
        deployment: None,
    }
}
