//! The REST API (axum, JSON): one file per resource, each turning requests into store calls.
//! Token auth on everything but the OpenAPI document and webhooks (signed instead), with the
//! role each route needs checked in one place ([`roles`]); every mutating call made with a token
//! or a valid webhook signature is written to the audit log.

mod access_logs;
mod backups;
mod build_logs;
mod deploy_keys;
mod deployments;
mod domains;
mod edge;
mod environments;
pub mod error;
pub mod extract;
mod github;
mod logs;
mod nodes;
pub mod openapi;
mod organizations;
mod previews;
mod projects;
pub mod roles;
mod service_metrics;
pub mod service_spec;
mod services;
pub mod session;
pub mod sources;
mod validate;
mod volumes;
pub mod webhook_limit;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use tokio::sync::Notify;

use crate::crypto;
use crate::store::Store;
use error::ApiError;
use extract::Caller;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    /// Notified when a deployment is queued, to wake the pipeline workers.
    pub wake: Arc<Notify>,
    /// SHA-256 of the operator token; `None` = no operator access.
    pub admin_token_sha256: Option<Vec<u8>>,
    pub apps_domain: String,
    /// Container log search; `None` when no ClickHouse is configured.
    pub logs: Option<crate::logsearch::LogSearch>,
    /// Build logs; `None` when no ClickHouse is configured.
    pub build_logs: Option<crate::buildlogs::BuildLogStore>,
    /// Custom-domain checks; `None` = `verify` answers 503.
    pub domains: Option<Arc<crate::domains::verifier::Verifier>>,
    /// The daemons a deleted service is taken off, and the grace its containers get.
    pub teardown: Option<(crate::pipeline::driver::Clients, u32)>,
    /// How long a deleted service's volumes stay on their nodes (`volume_grace_secs`).
    pub volume_grace: std::time::Duration,
    /// Counts webhook calls that proved nothing (bad signature, unknown service).
    pub webhook_limiter: Arc<webhook_limit::Limiter>,
    /// What a git source may point at (checked when a service is created).
    pub sources: sources::SourcePolicy,
    /// Backups of managed services (#14); `None` = their routes answer 503.
    pub backups: Option<crate::backups::Backups>,
}

impl AppState {
    pub fn new(store: Store, wake: Arc<Notify>, admin_token: &str, apps_domain: &str) -> Self {
        Self {
            store,
            wake,
            admin_token_sha256: (!admin_token.is_empty()).then(|| crypto::hash_token(admin_token)),
            apps_domain: apps_domain.to_owned(),
            logs: None,
            build_logs: None,
            domains: None,
            teardown: None,
            volume_grace: crate::volumes::GRACE,
            webhook_limiter: Arc::new(webhook_limit::Limiter::new(Default::default())),
            sources: sources::SourcePolicy::default(),
            backups: None,
        }
    }

    /// Serves the backup routes with `backups`.
    pub fn with_backups(mut self, backups: crate::backups::Backups) -> Self {
        self.backups = Some(backups);
        self
    }

    /// Checks git sources with `sources` (the operator's address blocks, local organizations
    /// and resolver).
    pub fn with_sources(mut self, sources: sources::SourcePolicy) -> Self {
        self.sources = sources;
        self
    }

    /// Takes deleted services off the proxy and the nodes through `clients`; their volumes
    /// stay for `volume_grace`.
    pub fn with_teardown(
        mut self,
        clients: crate::pipeline::driver::Clients,
        grace_ms: u32,
        volume_grace: std::time::Duration,
    ) -> Self {
        self.teardown = Some((clients, grace_ms));
        self.volume_grace = volume_grace;
        self
    }

    /// Checks custom domains with `verifier`.
    pub fn with_domains(mut self, verifier: Arc<crate::domains::verifier::Verifier>) -> Self {
        self.domains = Some(verifier);
        self
    }

    /// Serves `GET /deployments/{id}/build-logs` from `build_logs`.
    pub fn with_build_logs(mut self, build_logs: crate::buildlogs::BuildLogStore) -> Self {
        self.build_logs = Some(build_logs);
        self
    }

    /// Serves `GET /services/{id}/logs` from `logs`.
    pub fn with_logs(mut self, logs: crate::logsearch::LogSearch) -> Self {
        self.logs = Some(logs);
        self
    }
}

/// The largest request body taken; a larger one is 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Every route: (method, path in OpenAPI form). The OpenAPI document is checked against it.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/openapi.json"),
    ("get", "/session"),
    ("post", "/session"),
    ("delete", "/session"),
    ("post", "/organizations"),
    ("get", "/organization"),
    ("get", "/tokens"),
    ("post", "/tokens"),
    ("delete", "/tokens/{id}"),
    ("get", "/members"),
    ("post", "/members"),
    ("patch", "/members/{id}"),
    ("delete", "/members/{id}"),
    ("get", "/audit"),
    ("get", "/projects"),
    ("post", "/projects"),
    ("get", "/projects/{id}"),
    ("delete", "/projects/{id}"),
    ("patch", "/projects/{id}/webhook"),
    ("get", "/projects/{id}/previews"),
    ("put", "/projects/{id}/previews"),
    ("put", "/projects/{id}/git-credentials"),
    ("delete", "/projects/{id}/git-credentials"),
    ("get", "/projects/{id}/deploy-key"),
    ("post", "/projects/{id}/deploy-key"),
    ("delete", "/projects/{id}/deploy-key"),
    ("put", "/projects/{id}/deploy-key/known-hosts"),
    ("put", "/projects/{id}/github-token"),
    ("delete", "/projects/{id}/github-token"),
    ("get", "/projects/{id}/environments"),
    ("post", "/projects/{id}/environments"),
    ("get", "/environments/{id}"),
    ("patch", "/environments/{id}"),
    ("delete", "/environments/{id}"),
    ("get", "/projects/{id}/services"),
    ("post", "/projects/{id}/services"),
    ("get", "/services/{id}"),
    ("post", "/services/{id}/credentials/rotate"),
    ("get", "/services/{id}/backups"),
    ("post", "/services/{id}/backups"),
    ("get", "/services/{id}/backups/{backup}"),
    ("post", "/services/{id}/backups/{backup}/restore"),
    ("post", "/services/{id}/backups/restore"),
    ("get", "/services/{id}/backup-policy"),
    ("put", "/services/{id}/backup-policy"),
    ("get", "/restores/{id}"),
    ("patch", "/services/{id}"),
    ("delete", "/services/{id}"),
    ("patch", "/services/{id}/webhook"),
    ("get", "/projects/{id}/webhook-deliveries"),
    ("get", "/services/{id}/deployments"),
    ("post", "/services/{id}/deployments"),
    ("get", "/services/{id}/domains"),
    ("post", "/services/{id}/domains"),
    ("delete", "/services/{id}/domains/{domain}"),
    ("post", "/services/{id}/domains/{domain}/verify"),
    ("get", "/services/{id}/logs"),
    ("get", "/services/{id}/logs/follow"),
    ("get", "/services/{id}/access-logs"),
    ("get", "/services/{id}/metrics"),
    ("get", "/services/{id}/volumes"),
    ("get", "/deployments/{id}"),
    ("get", "/deployments/{id}/build-logs"),
    ("post", "/deployments/{id}/rollback"),
    ("post", "/deployments/{id}/cancel"),
    ("get", "/nodes"),
    ("post", "/nodes"),
    ("delete", "/nodes/{id}"),
    ("post", "/nodes/{id}/drain"),
    ("post", "/nodes/{id}/heartbeat"),
    ("post", "/nodes/join-tokens"),
    ("post", "/nodes/join"),
    ("post", "/webhooks/github/{id}"),
    ("post", "/webhooks/github/projects/{id}"),
];

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi::serve))
        .route(
            "/session",
            get(session::current)
                .post(session::create)
                .delete(session::delete),
        )
        .route("/organizations", post(organizations::create))
        .route("/organization", get(organizations::current))
        .route(
            "/tokens",
            get(organizations::tokens).post(organizations::create_token),
        )
        .route(
            "/tokens/{id}",
            axum::routing::delete(organizations::revoke_token),
        )
        .route(
            "/members",
            get(organizations::members).post(organizations::add_member),
        )
        .route(
            "/members/{id}",
            patch(organizations::set_member_role).delete(organizations::remove_member),
        )
        .route("/audit", get(organizations::audit))
        .route("/projects", get(projects::list).post(projects::create))
        .route(
            "/projects/{id}",
            get(projects::get).delete(projects::delete),
        )
        .route("/projects/{id}/webhook", patch(previews::rotate))
        .route(
            "/projects/{id}/previews",
            get(previews::get).put(previews::put),
        )
        .route(
            "/projects/{id}/git-credentials",
            axum::routing::put(previews::put_credentials).delete(previews::delete_credentials),
        )
        .route(
            "/projects/{id}/deploy-key",
            get(deploy_keys::get)
                .post(deploy_keys::create)
                .delete(deploy_keys::delete),
        )
        .route(
            "/projects/{id}/deploy-key/known-hosts",
            axum::routing::put(deploy_keys::put_known_hosts),
        )
        .route(
            "/projects/{id}/github-token",
            axum::routing::put(github::put).delete(github::delete),
        )
        .route(
            "/projects/{id}/environments",
            get(environments::list).post(environments::create),
        )
        .route(
            "/environments/{id}",
            get(environments::get)
                .patch(environments::update)
                .delete(environments::delete),
        )
        .route(
            "/projects/{id}/services",
            get(services::list).post(services::create),
        )
        .route(
            "/services/{id}",
            get(services::get)
                .patch(services::update)
                .delete(services::delete),
        )
        .route(
            "/services/{id}/credentials/rotate",
            axum::routing::post(services::rotate_credentials),
        )
        .route(
            "/services/{id}/backups",
            get(backups::list).post(backups::create),
        )
        .route("/services/{id}/backups/{backup}", get(backups::get))
        .route(
            "/services/{id}/backups/{backup}/restore",
            post(backups::restore),
        )
        .route(
            "/services/{id}/backups/restore",
            post(backups::restore_to_time),
        )
        .route(
            "/services/{id}/backup-policy",
            get(backups::get_policy).put(backups::put_policy),
        )
        .route("/restores/{id}", get(backups::get_restore))
        .route(
            "/services/{id}/deployments",
            get(deployments::list).post(deployments::create),
        )
        .route(
            "/services/{id}/domains",
            get(domains::list).post(domains::add),
        )
        .route(
            "/services/{id}/domains/{domain}",
            axum::routing::delete(domains::remove),
        )
        .route(
            "/services/{id}/domains/{domain}/verify",
            post(domains::verify),
        )
        .route("/services/{id}/logs", get(logs::search))
        .route("/services/{id}/logs/follow", get(logs::follow))
        .route("/services/{id}/access-logs", get(access_logs::search))
        .route("/services/{id}/metrics", get(service_metrics::usage))
        .route("/services/{id}/volumes", get(volumes::list))
        .route("/deployments/{id}", get(deployments::get))
        .route("/deployments/{id}/build-logs", get(build_logs::get))
        .route("/deployments/{id}/rollback", post(deployments::rollback))
        .route("/deployments/{id}/cancel", post(deployments::cancel))
        .route("/nodes", get(nodes::list).post(nodes::register))
        .route("/nodes/{id}", axum::routing::delete(nodes::remove))
        .route("/nodes/{id}/drain", post(nodes::drain))
        .route("/nodes/{id}/heartbeat", post(nodes::heartbeat))
        .route("/nodes/join-tokens", post(nodes::create_join_token))
        .route("/nodes/join", post(nodes::join))
        .route("/services/{id}/webhook", patch(webhooks::rotate))
        .route(
            "/projects/{id}/webhook-deliveries",
            get(webhooks::deliveries),
        )
        .route("/webhooks/github/{id}", post(webhooks::github))
        .route(
            "/webhooks/github/projects/{id}",
            post(webhooks::github_project),
        )
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth_and_audit,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(edge::json_errors))
        // The dashboard's pages: public files; what they show comes through the routes above.
        .merge(crate::dashboard::router())
        .with_state(state)
}

/// Set on a response by a public route whose caller proved who it is another way (a webhook
/// with a valid signature): the call is audited under that organization. Anonymous calls that
/// proved nothing write no audit row.
#[derive(Debug, Clone, Copy)]
pub struct AuditAs {
    pub organization_id: uuid::Uuid,
}

/// Resolves the bearer token into a [`Caller`] (401 when missing, unknown, revoked or expired),
/// checks the role the route needs ([`roles::need`], 403 naming it), runs the handler, and
/// records mutating calls in the audit log.
async fn auth_and_audit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let need = if roles::is_public(&path) {
        roles::Need::Public
    } else {
        roles::need(method.as_str(), route.as_deref())
    };
    let caller = if need == roles::Need::Public {
        None
    } else {
        let token = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned());
        let caller = match token {
            Some(_) => authenticate(&state, token).await,
            // No bearer token: a dashboard session cookie, whose changes need its CSRF token.
            None => session_caller(&state, req.headers(), &method).await,
        };
        let caller = match caller {
            Ok(caller) => caller,
            Err(e) => return e.into_response(),
        };
        if let Err(e) = authorize(need, caller) {
            return e.into_response();
        }
        Some(caller)
    };
    if let Some(caller) = caller {
        req.extensions_mut().insert(caller);
    }
    let response = next.run(req).await;
    if !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let (org, token) = match (caller, response.extensions().get::<AuditAs>()) {
            (
                Some(Caller::Org {
                    organization_id,
                    token_id,
                    ..
                }),
                _,
            ) => (Some(organization_id), Some(token_id)),
            (Some(Caller::Admin), _) => (None, None),
            (None, Some(by)) => (Some(by.organization_id), None),
            (None, None) => return response,
        };
        let status = response.status().as_u16();
        if let Err(e) = state
            .store
            .audit(org, token, method.as_str(), &path, status)
            .await
        {
            tracing::error!(error = %e, "writing the audit log failed");
        }
    }
    response
}

/// Whether `caller` may make a call that needs `need`. The operator token passes here for
/// organization routes: their handlers refuse it (they need an organization).
fn authorize(need: roles::Need, caller: Caller) -> Result<(), ApiError> {
    match (need, caller) {
        (roles::Need::Operator, Caller::Org { .. }) => Err(ApiError::Forbidden(
            "this call needs the operator token".into(),
        )),
        (roles::Need::Role(need), Caller::Org { role, .. }) if role < need => {
            Err(ApiError::Forbidden(roles::refusal(need, role)))
        }
        _ => Ok(()),
    }
}

/// The caller a dashboard session stands for (the token it was opened with); 401 without a
/// live session, 403 for a change without the session's CSRF token.
async fn session_caller(
    state: &AppState,
    headers: &http::HeaderMap,
    method: &Method,
) -> Result<Caller, ApiError> {
    let session = session::lookup(state, headers)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        && !session::csrf_ok(headers, &session)
    {
        return Err(session::csrf_refused());
    }
    Ok(match session.owner {
        crate::store::SessionOwner::Token(t) => Caller::Org {
            organization_id: t.organization_id,
            token_id: t.id,
            role: t.role,
            expires_at: t.expires_at,
        },
        crate::store::SessionOwner::Operator { .. } => Caller::Admin,
    })
}

async fn authenticate(state: &AppState, token: Option<String>) -> Result<Caller, ApiError> {
    let token = token.ok_or(ApiError::Unauthorized)?;
    let token = token.as_str();
    if let Some(admin) = &state.admin_token_sha256
        && crypto::constant_time_eq(admin, &crypto::hash_token(token))
    {
        return Ok(Caller::Admin);
    }
    match state.store.authenticate(token).await? {
        Some(t) => Ok(Caller::Org {
            organization_id: t.organization_id,
            token_id: t.id,
            role: t.role,
            expires_at: t.expires_at,
        }),
        None => Err(ApiError::Unauthorized),
    }
}
