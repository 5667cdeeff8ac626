//! A project's repository settings (#17): its webhook secret (one per project, sealed), its
//! pull-request preview settings, and the git credentials its private repositories are fetched
//! with (a token, sealed; only the pipeline reads it back, to hand it to buildd).

use serde::Serialize;
use uuid::Uuid;

use super::webhooks::{ProjectHook, project_webhook_aad};
use super::{Result, Store, StoreError};

fn git_token_aad(project_id: Uuid) -> String {
    format!("project/{project_id}/git-token")
}

/// A project's preview settings as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PreviewSettings {
    /// Pull requests open preview environments.
    pub enabled: bool,
    /// The environment previews are copies of.
    pub template_id: Option<Uuid>,
    /// At most this many previews at once; a pull request over it gets none.
    pub max_previews: i32,
    /// Pull requests from forks are built too.
    pub allow_forks: bool,
    /// A preview without a request for this long is stopped and woken by the next request;
    /// `None` = previews never sleep.
    pub idle_seconds: Option<i32>,
}

/// The credentials a project's repositories are fetched with (HTTPS basic auth).
#[derive(Clone, PartialEq, Eq)]
pub struct GitCredentials {
    pub username: String,
    pub token: String,
}

impl std::fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitCredentials")
            .field("username", &self.username)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// What the API shows of a project's repository settings (never a secret).
#[derive(Debug, Clone, Serialize)]
pub struct RepositorySettings {
    pub has_webhook_secret: bool,
    pub previews: PreviewSettings,
    /// The git username credentials are sent with; `None` = no credentials.
    pub git_username: Option<String>,
}

impl Store {
    /// The organization and webhook secret of a project; `None` when there is no such project.
    pub async fn project_hook(&self, project_id: Uuid) -> Result<Option<ProjectHook>> {
        let row: Option<(Uuid, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT organization_id, webhook_secret_enc FROM projects WHERE id = $1",
        )
        .bind(project_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((organization_id, enc)) = row else {
            return Ok(None);
        };
        let secret = enc
            .map(|enc| self.secrets().open(&project_webhook_aad(project_id), &enc))
            .transpose()?;
        Ok(Some(ProjectHook {
            organization_id,
            project_id,
            secret,
        }))
    }

    /// Replaces a project's webhook secret (the old one stops working at once).
    pub async fn set_project_webhook_secret(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        secret: &str,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE projects SET webhook_secret_enc = $3 WHERE id = $1 AND organization_id = $2",
        )
        .bind(project_id)
        .bind(organization_id)
        .bind(
            self.secrets()
                .seal(&project_webhook_aad(project_id), secret),
        )
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("project", project_id));
        }
        Ok(())
    }

    pub async fn preview_settings(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
    ) -> Result<PreviewSettings> {
        sqlx::query_as(
            "SELECT previews_enabled AS enabled, preview_template_id AS template_id, max_previews, \
             previews_from_forks AS allow_forks, preview_idle_seconds AS idle_seconds \
             FROM projects WHERE id = $1 AND organization_id = $2",
        )
        .bind(project_id)
        .bind(organization_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("project", project_id))
    }

    /// Stores a project's preview settings; the template must be an environment of the project
    /// (and not a preview).
    pub async fn set_preview_settings(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        settings: &PreviewSettings,
    ) -> Result<PreviewSettings> {
        self.project(organization_id, project_id).await?;
        if let Some(template) = settings.template_id {
            let ok: Option<bool> = sqlx::query_scalar(
                "SELECT preview_number IS NULL FROM environments \
                 WHERE id = $1 AND project_id = $2 AND organization_id = $3",
            )
            .bind(template)
            .bind(project_id)
            .bind(organization_id)
            .fetch_optional(&self.pool)
            .await?;
            match ok {
                None => {
                    return Err(StoreError::Conflict(format!(
                        "environment {template} is no environment of project {project_id}"
                    )));
                }
                Some(false) => {
                    return Err(StoreError::Conflict(format!(
                        "environment {template} is a preview; a template is a lasting environment"
                    )));
                }
                Some(true) => {}
            }
        }
        sqlx::query(
            "UPDATE projects SET previews_enabled = $3, preview_template_id = $4, max_previews = $5, \
             previews_from_forks = $6, preview_idle_seconds = $7 WHERE id = $1 AND organization_id = $2",
        )
        .bind(project_id)
        .bind(organization_id)
        .bind(settings.enabled)
        .bind(settings.template_id)
        .bind(settings.max_previews)
        .bind(settings.allow_forks)
        .bind(settings.idle_seconds)
        .execute(&self.pool)
        .await?;
        self.preview_settings(organization_id, project_id).await
    }

    /// Sets (`Some`) or removes (`None`) the credentials of a project's repositories.
    pub async fn set_git_credentials(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        credentials: Option<&GitCredentials>,
    ) -> Result<()> {
        let sealed = credentials.map(|c| {
            (
                c.username.clone(),
                self.secrets().seal(&git_token_aad(project_id), &c.token),
            )
        });
        let (username, token) = sealed.unzip();
        let done = sqlx::query(
            "UPDATE projects SET git_username = $3, git_token_enc = $4 \
             WHERE id = $1 AND organization_id = $2",
        )
        .bind(project_id)
        .bind(organization_id)
        .bind(username)
        .bind(token)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("project", project_id));
        }
        Ok(())
    }

    /// The credentials of a project's repositories in clear: for the build request only.
    pub async fn git_credentials(&self, project_id: Uuid) -> Result<Option<GitCredentials>> {
        let row: Option<(Option<String>, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT git_username, git_token_enc FROM projects WHERE id = $1")
                .bind(project_id)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some((Some(username), Some(enc))) => Ok(Some(GitCredentials {
                username,
                token: self.secrets().open(&git_token_aad(project_id), &enc)?,
            })),
            _ => Ok(None),
        }
    }

    /// What the API shows of a project's repository settings.
    pub async fn repository_settings(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
    ) -> Result<RepositorySettings> {
        let previews = self.preview_settings(organization_id, project_id).await?;
        let (has_webhook_secret, git_username): (bool, Option<String>) = sqlx::query_as(
            "SELECT webhook_secret_enc IS NOT NULL, git_username FROM projects WHERE id = $1",
        )
        .bind(project_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(RepositorySettings {
            has_webhook_secret,
            previews,
            git_username,
        })
    }
}
