//! A preview's progress sent back to GitHub as deployment statuses (#17), for projects with a
//! GitHub token (`PUT /projects/{id}/github-token`, sealed, never shown).
//!
//! The webhook records what each pull request asks for in `github_deployments` ([`record_head`]
//! on `opened`/`reopened`/`synchronize`, [`record_close`] on `closed`); the reporter
//! ([`Reporter::pass`], a periodic job under the `github-statuses` lease) compares each row
//! with the preview's real state (the newest deployment of each of its services, as the API's
//! `preview.status`) and sends what GitHub does not know yet: a deployment of the head for
//! environment `pr-<n>`, then its status: `in_progress` while it builds and deploys, `success`
//! with the preview's URL once it serves, `failure` when a deployment failed, `inactive` once
//! the pull request is closed. [`next`] is the pure decision.
//!
//! A call that fails is logged, kept in the row (`last_error`) and shown on the webhook
//! delivery that asked for it (`github_status` in `GET /projects/{id}/webhook-deliveries`);
//! it is tried again at the next passes, [`MAX_ATTEMPTS`] times at most. It never touches the
//! deployment itself.

pub mod client;

use std::time::Duration;

use ::api::{GitHubDeploymentState, PreviewStatus, ServiceKind};
use tokio::sync::watch;
use uuid::Uuid;

use crate::previews::{environment_name, preview_status};
use crate::store::{Store, StoreError};
use client::{GitHubClient, NewDeployment, NewStatus};

/// Calls tried for one state before the reporter gives up on it (a new head or the close
/// starts again).
pub const MAX_ATTEMPTS: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Sql(#[from] sqlx::Error),
}

/// What the reporter does next for one pull request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// GitHub has no deployment of the head yet: create it (then send the state).
    CreateDeployment,
    /// Send this state.
    Send(GitHubDeploymentState),
    /// GitHub knows everything: the row can go (closed and told, or closed before GitHub ever
    /// had a deployment).
    Forget,
    /// GitHub already shows the state.
    Nothing,
}

/// The state GitHub should show for a preview with `status`, or closed.
pub fn wanted(closed: bool, status: PreviewStatus) -> GitHubDeploymentState {
    match (closed, status) {
        (true, _) => GitHubDeploymentState::Inactive,
        (false, PreviewStatus::Ready) => GitHubDeploymentState::Success,
        (false, PreviewStatus::Failed) => GitHubDeploymentState::Failure,
        (false, PreviewStatus::Pending | PreviewStatus::Deploying) => {
            GitHubDeploymentState::InProgress
        }
    }
}

/// Pure: the next step for a row whose GitHub deployment is `deployment` (none yet), last
/// told `reported`, when GitHub should show `wanted`.
pub fn next(
    deployment: Option<i64>,
    reported: Option<GitHubDeploymentState>,
    wanted: GitHubDeploymentState,
) -> Step {
    let closing = wanted == GitHubDeploymentState::Inactive;
    match (deployment, reported) {
        (None, _) if closing => Step::Forget,
        (None, _) => Step::CreateDeployment,
        (Some(_), Some(GitHubDeploymentState::Inactive)) => Step::Forget,
        (Some(_), Some(r)) if r == wanted => Step::Nothing,
        (Some(_), _) => Step::Send(wanted),
    }
}

fn token_aad(project_id: Uuid) -> String {
    format!("project/{project_id}/github-token")
}

/// Seals and stores the project's GitHub token (`None` removes it and forgets what was not
/// sent yet).
pub async fn set_token(
    store: &Store,
    organization_id: Uuid,
    project_id: Uuid,
    token: Option<&str>,
) -> Result<(), StoreError> {
    let sealed = token.map(|t| store.secrets().seal(&token_aad(project_id), t));
    let done = sqlx::query(
        "UPDATE projects SET github_token_enc = $3 WHERE id = $1 AND organization_id = $2",
    )
    .bind(project_id)
    .bind(organization_id)
    .bind(sealed)
    .execute(&store.pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::not_found("project", project_id));
    }
    if token.is_none() {
        sqlx::query("DELETE FROM github_deployments WHERE project_id = $1")
            .bind(project_id)
            .execute(&store.pool)
            .await?;
    }
    Ok(())
}

/// Whether the project has a GitHub token.
pub async fn has_token(store: &Store, project_id: Uuid) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT github_token_enc IS NOT NULL FROM projects WHERE id = $1")
            .bind(project_id)
            .fetch_optional(&store.pool)
            .await?
            .unwrap_or(false),
    )
}

/// Pull request `number` of the project now deploys `head_sha` of `repository` in
/// `environment_id` (asked by delivery `delivery_id`): GitHub gets a deployment of it. Nothing
/// when the project has no GitHub token.
pub async fn record_head(
    store: &Store,
    project_id: Uuid,
    number: i32,
    environment_id: Uuid,
    repository: &str,
    head_sha: &str,
    delivery_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO github_deployments (project_id, number, environment_id, repository, \
         head_sha, delivery_id) SELECT id, $2, $3, $4, $5, $6 FROM projects \
         WHERE id = $1 AND github_token_enc IS NOT NULL \
         ON CONFLICT (project_id, number) DO UPDATE SET environment_id = $3, repository = $4, \
         head_sha = $5, delivery_id = $6, deployment_id = NULL, reported = NULL, closed = false, \
         attempts = 0, last_error = NULL, updated_at = now()",
    )
    .bind(project_id)
    .bind(number)
    .bind(environment_id)
    .bind(repository)
    .bind(head_sha)
    .bind(delivery_id)
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// Pull request `number` was closed (delivery `delivery_id`): GitHub is told its deployment is
/// inactive.
pub async fn record_close(
    store: &Store,
    project_id: Uuid,
    number: i32,
    delivery_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE github_deployments SET closed = true, delivery_id = $3, attempts = 0, \
         last_error = NULL, updated_at = now() WHERE project_id = $1 AND number = $2",
    )
    .bind(project_id)
    .bind(number)
    .bind(delivery_id)
    .execute(&store.pool)
    .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    project_id: Uuid,
    organization_id: Uuid,
    number: i32,
    environment_id: Option<Uuid>,
    repository: String,
    head_sha: String,
    delivery_id: Option<String>,
    deployment_id: Option<i64>,
    reported: Option<GitHubDeploymentState>,
    closed: bool,
    token: Vec<u8>,
}

/// Sends the previews' states to GitHub.
#[derive(Debug, Clone)]
pub struct Reporter {
    store: Store,
    client: GitHubClient,
    apps_domain: String,
}

impl Reporter {
    /// GitHub's API at `api_url`; preview URLs under `apps_domain`.
    pub fn new(store: Store, api_url: &str, apps_domain: &str) -> Self {
        Self {
            store,
            client: GitHubClient::new(api_url),
            apps_domain: apps_domain.to_owned(),
        }
    }

    /// Runs [`Reporter::pass`] every `interval` until shutdown.
    pub async fn run(self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "github deployment statuses pass failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One pass over every pull request GitHub is not up to date about.
    pub async fn pass(&self) -> Result<(), ReportError> {
        // A row younger than half a second may belong to a delivery whose log entry is being
        // written: the next pass sends it, so its outcome lands on that entry.
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT g.project_id, p.organization_id, g.number, g.environment_id, g.repository, \
             g.head_sha, g.delivery_id, g.deployment_id, g.reported, g.closed, \
             p.github_token_enc AS token FROM github_deployments g \
             JOIN projects p ON p.id = g.project_id \
             WHERE p.github_token_enc IS NOT NULL AND g.attempts < $1 \
             AND g.updated_at < now() - interval '500 milliseconds' \
             ORDER BY g.updated_at",
        )
        .bind(MAX_ATTEMPTS)
        .fetch_all(&self.store.pool)
        .await?;
        for row in rows {
            self.report(row).await?;
        }
        Ok(())
    }

    async fn report(&self, mut row: Row) -> Result<(), ReportError> {
        let closed = row.closed || row.environment_id.is_none();
        let status = match row.environment_id {
            Some(env) if !closed => {
                preview_status(&self.store.latest_deployment_states(env).await?)
            }
            _ => PreviewStatus::Pending,
        };
        let wanted = wanted(closed, status);
        let token = match self
            .store
            .secrets()
            .open(&token_aad(row.project_id), &row.token)
        {
            Ok(t) => t,
            Err(e) => {
                return self
                    .failed(&row, wanted, &format!("the sealed token: {e}"))
                    .await;
            }
        };
        let environment = environment_name(row.number);
        loop {
            match next(row.deployment_id, row.reported, wanted) {
                Step::Nothing => return Ok(()),
                Step::Forget => {
                    sqlx::query(
                        "DELETE FROM github_deployments WHERE project_id = $1 AND number = $2 \
                         AND closed",
                    )
                    .bind(row.project_id)
                    .bind(row.number)
                    .execute(&self.store.pool)
                    .await?;
                    return Ok(());
                }
                Step::CreateDeployment => {
                    let description = format!("Stackpad preview of pull request #{}", row.number);
                    let new = NewDeployment {
                        git_ref: &row.head_sha,
                        environment: &environment,
                        description: &description,
                        auto_merge: false,
                        required_contexts: [],
                        transient_environment: true,
                        production_environment: false,
                    };
                    match self
                        .client
                        .create_deployment(&token, &row.repository, &new)
                        .await
                    {
                        Ok(id) => {
                            // Only for the head it was made for (a newer head resets the row).
                            sqlx::query(
                                "UPDATE github_deployments SET deployment_id = $3 \
                                 WHERE project_id = $1 AND number = $2 AND head_sha = $4",
                            )
                            .bind(row.project_id)
                            .bind(row.number)
                            .bind(id)
                            .bind(&row.head_sha)
                            .execute(&self.store.pool)
                            .await?;
                            row.deployment_id = Some(id);
                        }
                        Err(e) => return self.failed(&row, wanted, &e.to_string()).await,
                    }
                }
                Step::Send(state) => {
                    let id = row.deployment_id.expect("send follows the deployment");
                    let url = match state {
                        GitHubDeploymentState::Success => self.preview_url(&row).await?,
                        _ => None,
                    };
                    let description = describe(state);
                    let status = NewStatus {
                        state,
                        environment: &environment,
                        environment_url: url.as_deref(),
                        description,
                        auto_inactive: true,
                    };
                    if let Err(e) = self
                        .client
                        .create_status(&token, &row.repository, id, &status)
                        .await
                    {
                        return self.failed(&row, wanted, &e.to_string()).await;
                    }
                    sqlx::query(
                        "UPDATE github_deployments SET reported = $3, attempts = 0, \
                         last_error = NULL WHERE project_id = $1 AND number = $2 \
                         AND deployment_id = $4",
                    )
                    .bind(row.project_id)
                    .bind(row.number)
                    .bind(state)
                    .bind(id)
                    .execute(&self.store.pool)
                    .await?;
                    let url_note = url.map(|u| format!(" at {u}")).unwrap_or_default();
                    self.note(
                        &row,
                        &format!("{state} sent to GitHub (deployment {id}{url_note})"),
                    )
                    .await?;
                    tracing::info!(project_id = %row.project_id, number = row.number, %state, deployment = id, "github deployment status sent");
                    row.reported = Some(state);
                }
            }
        }
    }

    /// The preview's URL: its first web service's platform host.
    async fn preview_url(&self, row: &Row) -> Result<Option<String>, ReportError> {
        let Some(env) = row.environment_id else {
            return Ok(None);
        };
        for service in self
            .store
            .services_to_tear_down(row.organization_id, row.project_id, Some(env))
            .await?
        {
            if service.kind != ServiceKind::Web {
                continue;
            }
            let hosts = crate::domains::route::platform_hosts(
                &self.store,
                row.organization_id,
                &service,
                &self.apps_domain,
            )
            .await?;
            if let Some(host) = hosts.first() {
                return Ok(Some(format!("https://{host}")));
            }
        }
        Ok(None)
    }

    /// A call failed: counted, kept, logged and shown on the delivery.
    async fn failed(
        &self,
        row: &Row,
        wanted: GitHubDeploymentState,
        error: &str,
    ) -> Result<(), ReportError> {
        sqlx::query(
            "UPDATE github_deployments SET attempts = attempts + 1, last_error = $3 \
             WHERE project_id = $1 AND number = $2",
        )
        .bind(row.project_id)
        .bind(row.number)
        .bind(error)
        .execute(&self.store.pool)
        .await?;
        tracing::warn!(project_id = %row.project_id, number = row.number, state = %wanted, error, "github deployment status not sent");
        self.note(row, &format!("{wanted} not sent to GitHub: {error}"))
            .await
    }

    /// Shows `text` on the webhook delivery that asked for the row's head or close.
    async fn note(&self, row: &Row, text: &str) -> Result<(), ReportError> {
        let Some(delivery) = &row.delivery_id else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE webhook_delivery_log SET github_status = $3 \
             WHERE project_id = $1 AND delivery_id = $2",
        )
        .bind(row.project_id)
        .bind(delivery)
        .bind(text)
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }
}

fn describe(state: GitHubDeploymentState) -> &'static str {
    match state {
        GitHubDeploymentState::InProgress => "Stackpad is building and deploying the preview",
        GitHubDeploymentState::Success => "The preview serves this commit",
        GitHubDeploymentState::Failure => "A deployment of the preview failed",
        GitHubDeploymentState::Inactive => "The pull request was closed: the preview is gone",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GitHubDeploymentState as G;

    #[test]
    fn the_preview_status_says_what_github_shows() {
        assert_eq!(wanted(false, PreviewStatus::Pending), G::InProgress);
        assert_eq!(wanted(false, PreviewStatus::Deploying), G::InProgress);
        assert_eq!(wanted(false, PreviewStatus::Ready), G::Success);
        assert_eq!(wanted(false, PreviewStatus::Failed), G::Failure);
        assert_eq!(wanted(true, PreviewStatus::Ready), G::Inactive);
    }

    #[test]
    fn a_deployment_first_then_each_new_state_once_then_forgotten_when_closed() {
        assert_eq!(next(None, None, G::InProgress), Step::CreateDeployment);
        assert_eq!(next(None, None, G::Success), Step::CreateDeployment);
        assert_eq!(
            next(Some(1), None, G::InProgress),
            Step::Send(G::InProgress)
        );
        assert_eq!(
            next(Some(1), Some(G::InProgress), G::InProgress),
            Step::Nothing
        );
        assert_eq!(
            next(Some(1), Some(G::InProgress), G::Success),
            Step::Send(G::Success)
        );
        assert_eq!(
            next(Some(1), Some(G::Success), G::Failure),
            Step::Send(G::Failure)
        );
        assert_eq!(
            next(Some(1), Some(G::Success), G::Inactive),
            Step::Send(G::Inactive)
        );
        assert_eq!(next(Some(1), Some(G::Inactive), G::Inactive), Step::Forget);
        // Closed before GitHub ever had a deployment: nothing to tell it.
        assert_eq!(next(None, None, G::Inactive), Step::Forget);
    }
}
