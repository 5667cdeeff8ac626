//! GitHub webhooks: `X-Hub-Signature-256` checked over the raw body with the service's secret
//! (>= 32 characters, generated when a git service is created without one, rotated with
//! `PATCH /services/{id}/webhook`), duplicate deliveries ignored, the same body under a new
//! delivery id inside [`REPLAY_WINDOW`] refused (409), unauthenticated calls rate-limited per
//! service and source (429 + `Retry-After`) and never audited. A push to the environment's
//! branch queues a deployment of its commit; the ref and commit are parsed with `tenant::git`
//! first. The answer comes at once; the pipeline workers do the work. Every delivery to a
//! known service (signed or not, inside the rate limits) is logged with what became of it
//! (deployed, ignored and why, refused and why): `GET /projects/{id}/webhook-deliveries`.
//!
//! A project's repository webhook (`POST /webhooks/github/projects/{id}`, one secret per
//! project, `PATCH /projects/{id}/webhook`) goes through the same checks (limits, signature,
//! dedup, replay, log); what it does with `push` and `pull_request` is in `previews.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tenant::git::{CommitSha, GitRef};
use uuid::Uuid;

use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Body, Org, PathId, Query};
use super::{AppState, AuditAs};
use crate::crypto;
use crate::store::{
    DELIVERY_LOG_KEEP, Delivery, HookOwner, LoggedDelivery, NewDeployment, ProjectHook,
    WebhookTarget,
};
use ::api::WebhookOutcome;

/// The same signed body under another delivery id inside this window is a replay.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Bounds of a webhook secret given by the caller (a generated one is 64 hex characters).
pub const MIN_SECRET_LEN: usize = 32;
pub const MAX_SECRET_LEN: usize = 256;
/// A given secret needs this many different characters (refuses `aaaa...`, `1212...`).
const MIN_DISTINCT: usize = 8;

/// Checks a webhook secret given by the caller; the error names `field` and never quotes it.
pub fn check_secret(field: &str, secret: &str) -> ApiResult<()> {
    if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len()) {
        return Err(invalid(
            field,
            format!(
                "must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters (leave it out to have \
                 one generated)"
            ),
        ));
    }
    if !secret.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(invalid(field, "must be printable ASCII"));
    }
    let mut distinct: Vec<u8> = secret.bytes().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_DISTINCT {
        return Err(invalid(
            field,
            format!("is too easy to guess: use at least {MIN_DISTINCT} different characters"),
        ));
    }
    Ok(())
}

/// The secret a new service gets: the one given (checked), else a generated one for a service
/// built from git. The second value says whether it was generated (the create answer shows it,
/// once).
pub fn secret_for_new_service(
    given: Option<&str>,
    builds_from_git: bool,
) -> ApiResult<Option<(String, bool)>> {
    match given {
        Some(secret) => {
            check_secret("webhook_secret", secret)?;
            Ok(Some((secret.to_owned(), false)))
        }
        None if builds_from_git => Ok(Some((crypto::generate_webhook_secret(), true))),
        None => Ok(None),
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RotateWebhookSecret {
    /// Default: a generated one.
    #[serde(default)]
    pub secret: Option<String>,
}

/// `PATCH /services/{id}/webhook`: a new secret (generated, or the one given); the old one
/// stops working at once. The answer shows the secret; nothing shows it again.
pub async fn rotate(
    State(state): State<AppState>,
    org: Org,
    Path(service_id): Path<Uuid>,
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
        .set_webhook_secret(org.id, service_id, &secret)
        .await?;
    Ok(Json(json!({
        "service_id": service_id,
        "webhook_secret": secret,
        "generated": generated,
        "note": "the secret is shown only in this answer; set it in the repository's webhook settings",
    })))
}

/// The part of a push event we use.
#[derive(Debug, Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn too_many(retry_after: Duration) -> Response {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let secs = secs.max(1);
    let body = json!({ "error": {
        "status": 429,
        "message": format!("too many unauthenticated webhook calls; retry in {secs} s"),
    }});
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from_str(&secs.to_string()).expect("digits are a header value"),
    );
    resp
}

/// `POST /webhooks/github/{id}`: a service's own webhook.
pub async fn github(
    State(state): State<AppState>,
    Path(service_id): Path<Uuid>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    receive(
        state,
        HookOwner::Service(service_id),
        peer,
        headers,
        request,
    )
    .await
}

/// `POST /webhooks/github/projects/{id}`: a project's repository webhook.
pub async fn github_project(
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    receive(
        state,
        HookOwner::Project(project_id),
        peer,
        headers,
        request,
    )
    .await
}

/// Where a signed delivery leads.
enum Target {
    Service(WebhookTarget),
    Project(ProjectHook),
}

impl Target {
    fn organization_id(&self) -> Uuid {
        match self {
            Target::Service(t) => t.organization_id,
            Target::Project(p) => p.organization_id,
        }
    }

    fn secret(&self) -> &str {
        match self {
            Target::Service(t) => t.secret.as_deref(),
            Target::Project(p) => p.secret.as_deref(),
        }
        .unwrap_or_default()
    }
}

/// The limit is checked before the body is read, so a limited caller costs no upload and no
/// database query.
async fn receive(
    state: AppState,
    owner: HookOwner,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let hook_id = owner.id();
    let source: Option<IpAddr> = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let limiter = &state.webhook_limiter;
    // Only the source's budget here: the service's is charged (and checked) once a call failed
    // the signature check, so anonymous calls never hold up a signed delivery.
    if let Err(wait) = limiter.check_source(source, Instant::now()) {
        return too_many(wait);
    }
    let body = match axum::body::to_bytes(request.into_body(), super::MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            limiter.record(None, source, Instant::now());
            return ApiError::TooLarge(format!(
                "the body is larger than the API takes ({} bytes) or could not be read",
                super::MAX_BODY_BYTES
            ))
            .into_response();
        }
    };
    // Unknown service, no (or a too short) secret and a bad signature all look the same.
    let target = match owner {
        HookOwner::Service(id) => state
            .store
            .webhook_target(id)
            .await
            .map(|t| t.map(Target::Service)),
        HookOwner::Project(id) => state
            .store
            .project_hook(id)
            .await
            .map(|t| t.map(Target::Project)),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let signed = target.as_ref().filter(|t| {
        // A secret stored before the rules (a legacy one) must meet them too.
        let secret = t.secret();
        check_secret("webhook_secret", secret).is_ok()
            && header(&headers, "x-hub-signature-256").is_some_and(|signature| {
                crypto::verify_github_signature(secret.as_bytes(), &body, signature)
            })
    });
    let Some(target) = signed else {
        let known = target.is_some().then_some(hook_id);
        if known.is_some()
            && let Err(wait) = limiter.check_service(hook_id, Instant::now())
        {
            return too_many(wait);
        }
        limiter.record(known, source, Instant::now());
        if known.is_some() {
            // Inside the limits: the owner sees that deliveries arrive but do not verify.
            let refused = Err(ApiError::Unauthorized);
            let whose = match owner {
                HookOwner::Service(_) => "the service's",
                HookOwner::Project(_) => "the project's",
            };
            log(
                &state,
                owner,
                &headers,
                &refused,
                &format!("the signature is missing or does not match {whose} webhook secret"),
            )
            .await;
        }
        return ApiError::Unauthorized.into_response();
    };
    let processed = match first_delivery(&state, owner, &headers, &body).await {
        Err(e) => Err(e),
        Ok(Some(early)) => Ok(early),
        Ok(None) => {
            let event = header(&headers, "x-github-event");
            let done = match target {
                Target::Service(t) => process(&state, hook_id, t, event, &body).await,
                Target::Project(p) => {
                    // As the delivery log keeps it: its entry shows what GitHub was told.
                    let delivery = header(&headers, "x-github-delivery").map(|d| truncated(d, 100));
                    super::previews::process(&state, p, event, delivery.as_deref(), &body).await
                }
            };
            if done.is_err() {
                forget(&state, owner, &headers).await;
            }
            done
        }
    };
    log(&state, owner, &headers, &processed, "").await;
    let mut response = match processed {
        Ok(answer) => (answer.status, Json(answer.body)).into_response(),
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(AuditAs {
        organization_id: target.organization_id(),
    });
    response
}

/// Forgets a delivery that could not be processed, so GitHub's redelivery is not ignored as a
/// duplicate.
async fn forget(state: &AppState, owner: HookOwner, headers: &HeaderMap) {
    let Some(delivery) = header(headers, "x-github-delivery") else {
        return;
    };
    if let Err(f) = state.store.forget_delivery(owner, delivery).await {
        tracing::error!(error = %f, hook = %owner.id(), "forgetting a failed webhook delivery");
    }
}

/// What a processed delivery answers, and what became of it.
#[derive(Debug)]
pub(super) struct Processed {
    pub status: StatusCode,
    /// `status` says what was done or why nothing was (`reason` when given, is logged).
    pub body: Value,
    pub outcome: WebhookOutcome,
    pub deployment: Option<Uuid>,
}

pub(super) fn ignored(status: StatusCode, why: String) -> Processed {
    Processed {
        status,
        body: json!({ "status": why }),
        outcome: WebhookOutcome::Ignored,
        deployment: None,
    }
}

/// Writes what became of a delivery to the project's delivery log (a failure to write is
/// logged, never the caller's error). `why` replaces an error's message when given.
async fn log(
    state: &AppState,
    owner: HookOwner,
    headers: &HeaderMap,
    result: &ApiResult<Processed>,
    why: &str,
) {
    let delivery_id = header(headers, "x-github-delivery").map(|d| truncated(d, 100));
    let event = header(headers, "x-github-event").map(|e| truncated(e, 100));
    let (outcome, reason, http_status, deployment_id) = match result {
        Ok(p) => (
            p.outcome,
            p.body
                .get("reason")
                .or(p.body.get("status"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            p.status,
            p.deployment,
        ),
        Err(e) => {
            let reason = if why.is_empty() {
                e.to_string()
            } else {
                why.to_owned()
            };
            (WebhookOutcome::Refused, reason, e.status(), None)
        }
    };
    let entry = LoggedDelivery {
        owner,
        delivery_id: delivery_id.as_deref(),
        event: event.as_deref(),
        outcome,
        reason: &reason,
        http_status: http_status.as_u16(),
        deployment_id,
    };
    if let Err(e) = state.store.log_delivery(&entry).await {
        tracing::error!(error = %e, hook = %owner.id(), "logging a webhook delivery");
    }
}

/// At most `max` characters of a header the caller chose.
fn truncated(value: &str, max: usize) -> String {
    value.chars().take(max).collect()
}

/// Records a signed delivery: `None` = first seen, process it; else the answer to a duplicate
/// (an error for a replayed body).
async fn first_delivery(
    state: &AppState,
    owner: HookOwner,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Option<Processed>> {
    let delivery = header(headers, "x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 100)
        .ok_or_else(|| invalid("X-GitHub-Delivery", "missing or longer than 100 characters"))?;
    let body_hash = Sha256::digest(body).to_vec();
    match state
        .store
        .record_delivery(owner, delivery, &body_hash, REPLAY_WINDOW)
        .await?
    {
        Delivery::First => Ok(None),
        Delivery::DuplicateId => Ok(Some(ignored(
            StatusCode::OK,
            "duplicate delivery ignored".into(),
        ))),
        Delivery::ReplayedBody => Err(ApiError::Conflict(format!(
            "this body was already delivered to this {} under another delivery id within the \
             last {} h; a replay is not processed",
            match owner {
                HookOwner::Service(_) => "service",
                HookOwner::Project(_) => "project",
            },
            REPLAY_WINDOW.as_secs() / 3600
        ))),
    }
}

/// A delivery to a service's webhook whose signature checked out, seen for the first time.
async fn process(
    state: &AppState,
    service_id: Uuid,
    target: &WebhookTarget,
    event: Option<&str>,
    body: &[u8],
) -> ApiResult<Processed> {
    match event {
        Some("push") => {}
        Some("ping") => return Ok(ignored(StatusCode::OK, "pong".into())),
        other => {
            return Ok(ignored(
                StatusCode::ACCEPTED,
                format!("event {:?} ignored", other.unwrap_or("")),
            ));
        }
    }
    let push: Push = serde_json::from_slice(body)
        .map_err(|e| invalid("body", format!("not a push payload: {e}")))?;
    let pushed = GitRef::parse(&push.git_ref).map_err(|e| invalid("ref", e.to_string()))?;
    let commit = CommitSha::parse(&push.after).map_err(|e| invalid("after", e.to_string()))?;
    let branch = &target.branch;
    let to_branch = pushed.as_str().strip_prefix("refs/heads/") == Some(branch.as_str());
    if push.deleted || !to_branch || commit.as_str().chars().all(|c| c == '0') {
        return Ok(ignored(
            StatusCode::ACCEPTED,
            format!(
                "push to {} ignored: the environment deploys {branch}",
                pushed.as_str()
            ),
        ));
    }
    let queued = state
        .store
        .create_deployment(
            target.organization_id,
            service_id,
            &NewDeployment {
                git_ref: Some(GitRef::parse(branch).map_err(|e| invalid("ref", e.to_string()))?),
                git_commit: Some(commit.clone()),
                ..Default::default()
            },
        )
        .await;
    // A failure is forgotten by the caller, so GitHub's redelivery is not a duplicate.
    let d = queued?;
    state.wake.notify_waiters();
    Ok(Processed {
        status: StatusCode::ACCEPTED,
        body: json!({ "status": d.state, "deployment_id": d.id,
            "reason": format!("push of {} to {branch} queued deployment {}", commit.as_str(), d.id) }),
        outcome: WebhookOutcome::Deployed,
        deployment: Some(d.id),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Of this service only.
    #[serde(default)]
    pub service: Option<Uuid>,
    /// At most this many, newest first (default 50, at most the kept [`DELIVERY_LOG_KEEP`]).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// `GET /projects/{id}/webhook-deliveries`: the project's recent deliveries, newest first,
/// each with its outcome (deployed, ignored, refused) and why.
pub async fn deliveries(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
    Query(q): Query<DeliveriesQuery>,
) -> ApiResult<Json<Value>> {
    let limit = super::validate::within("limit", q.limit.unwrap_or(50), 1..=DELIVERY_LOG_KEEP)?;
    let items = state
        .store
        .delivery_log(org.id, project, q.service, limit)
        .await?;
    Ok(Json(json!({ "items": items })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_secrets_are_refused_naming_the_field_without_quoting_it() {
        for weak in [
            "",
            "short",
            "It's a Secret to Everybody",
            &"a".repeat(40),
            &"ab".repeat(20),
            &"x".repeat(300),
        ] {
            let e = check_secret("webhook_secret", weak).unwrap_err();
            match &e {
                ApiError::Invalid { field, message } => {
                    assert_eq!(field, "webhook_secret");
                    assert!(weak.len() < 8 || !message.contains(weak), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        let bad_char = format!("{}\n", "0123456789abcdefghij0123456789ab");
        assert!(check_secret("secret", &bad_char).is_err());
        assert!(check_secret("secret", "correct horse battery staple 2024!").is_ok());
        assert!(check_secret("secret", &crypto::generate_webhook_secret()).is_ok());
    }

    #[test]
    fn a_git_service_gets_a_generated_secret_an_image_service_none() {
        let (s, generated) = secret_for_new_service(None, true).unwrap().unwrap();
        assert!(generated && s.len() == 64);
        assert!(secret_for_new_service(None, false).unwrap().is_none());
        assert!(secret_for_new_service(Some(""), true).is_err());
        let given = "correct horse battery staple 2024!";
        assert_eq!(
            secret_for_new_service(Some(given), false).unwrap(),
            Some((given.to_owned(), false))
        );
    }
}
