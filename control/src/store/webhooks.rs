//! Webhook state: a service's signing secret (sealed like env vars, replaced by rotation), the
//! deliveries seen (dedup by delivery id), the bodies seen inside the replay window, and the
//! log of recent deliveries per project with what became of each (shown to the user).

use std::time::Duration;

use ::api::WebhookOutcome;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::services::webhook_aad;
use super::{Result, Store, StoreError};

/// Where a webhook for a service leads.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub organization_id: Uuid,
    /// The environment's branch: pushes to it deploy.
    pub branch: String,
    /// The signing secret in clear; `None` = the service takes no webhooks.
    pub secret: Option<String>,
}

/// Whose webhook a delivery came to: a service's own, or its project's repository webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookOwner {
    Service(Uuid),
    Project(Uuid),
}

impl HookOwner {
    /// The column of the delivery tables naming it.
    fn column(self) -> &'static str {
        match self {
            HookOwner::Service(_) => "service_id",
            HookOwner::Project(_) => "project_id",
        }
    }

    pub fn id(self) -> Uuid {
        match self {
            HookOwner::Service(id) | HookOwner::Project(id) => id,
        }
    }
}

/// Where a project's repository webhook leads.
#[derive(Debug, Clone)]
pub struct ProjectHook {
    pub organization_id: Uuid,
    pub project_id: Uuid,
    /// The signing secret in clear; `None` = none was made yet (the webhook takes nothing).
    pub secret: Option<String>,
}

pub(super) fn project_webhook_aad(project_id: Uuid) -> String {
    format!("project/{project_id}/webhook")
}

/// What recording a signed delivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Not seen before: process it.
    First,
    /// This delivery id was recorded already (GitHub's redelivery of a processed event).
    DuplicateId,
    /// The same body arrived under another delivery id inside the window: a replay.
    ReplayedBody,
}

impl Store {
    /// The organization, branch and secret of a service built from git; `None` when there is no
    /// such service.
    pub async fn webhook_target(&self, service_id: Uuid) -> Result<Option<WebhookTarget>> {
        let row: Option<(Uuid, String, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT s.organization_id, e.branch, s.webhook_secret_enc FROM services s \
             JOIN environments e ON e.id = s.environment_id WHERE s.id = $1 AND s.git_url IS NOT NULL",
        )
        .bind(service_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((organization_id, branch, enc)) = row else {
            return Ok(None);
        };
        let secret = match enc {
            Some(enc) => Some(self.secrets().open(&webhook_aad(service_id), &enc)?),
            None => None,
        };
        Ok(Some(WebhookTarget {
            organization_id,
            branch,
            secret,
        }))
    }

    /// Replaces a git service's webhook secret (the old one stops working at once).
    pub async fn set_webhook_secret(
        &self,
        organization_id: Uuid,
        service_id: Uuid,
        secret: &str,
    ) -> Result<()> {
        let git: Option<bool> = sqlx::query_scalar(
            "SELECT git_url IS NOT NULL FROM services WHERE id = $1 AND organization_id = $2",
        )
        .bind(service_id)
        .bind(organization_id)
        .fetch_optional(&self.pool)
        .await?;
        match git {
            None => return Err(StoreError::not_found("service", service_id)),
            Some(false) => {
                return Err(StoreError::Conflict(format!(
                    "service {service_id} runs an image; only services built from git take webhooks"
                )));
            }
            Some(true) => {}
        }
        sqlx::query(
            "UPDATE services SET webhook_secret_enc = $3 WHERE id = $1 AND organization_id = $2",
        )
        .bind(service_id)
        .bind(organization_id)
        .bind(self.secrets().seal(&webhook_aad(service_id), secret))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a signed delivery: its id (dedup) and its body's hash (replay window). Nothing is
    /// recorded unless it is [`Delivery::First`]. Rows older than `window` are pruned.
    pub async fn record_delivery(
        &self,
        owner: HookOwner,
        delivery_id: &str,
        body_sha256: &[u8],
        window: Duration,
    ) -> Result<Delivery> {
        let window_secs = window.as_secs_f64();
        let mut tx = self.pool.begin().await?;
        let column = owner.column();
        for table in ["webhook_deliveries", "webhook_bodies"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE {column} = $1 \
                 AND received_at < now() - make_interval(secs => $2)"
            )))
            .bind(owner.id())
            .bind(window_secs)
            .execute(&mut *tx)
            .await?;
        }
        let new_id = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_deliveries (delivery_id, {column}) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        )))
        .bind(delivery_id)
        .bind(owner.id())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !new_id {
            return Ok(Delivery::DuplicateId);
        }
        let new_body = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_bodies ({column}, body_sha256, delivery_id) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING"
        )))
        .bind(owner.id())
        .bind(body_sha256)
        .bind(delivery_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !new_body {
            return Ok(Delivery::ReplayedBody);
        }
        tx.commit().await?;
        Ok(Delivery::First)
    }

    /// Forgets a delivery that could not be processed, so GitHub's redelivery is not refused.
    pub async fn forget_delivery(&self, owner: HookOwner, delivery_id: &str) -> Result<()> {
        let column = owner.column();
        let mut tx = self.pool.begin().await?;
        for table in ["webhook_deliveries", "webhook_bodies"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE {column} = $1 AND delivery_id = $2"
            )))
            .bind(owner.id())
            .bind(delivery_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// How many deliveries a project keeps in its log (the newest).
pub const DELIVERY_LOG_KEEP: i64 = 200;

/// A delivery as logged for the user: what came and what became of it.
#[derive(Debug, Clone)]
pub struct LoggedDelivery<'a> {
    pub owner: HookOwner,
    pub delivery_id: Option<&'a str>,
    pub event: Option<&'a str>,
    pub outcome: WebhookOutcome,
    pub reason: &'a str,
    pub http_status: u16,
    pub deployment_id: Option<Uuid>,
}

/// A logged delivery as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeliveryEntry {
    pub id: i64,
    pub service_id: Option<Uuid>,
    pub service_name: String,
    pub delivery_id: Option<String>,
    pub event: Option<String>,
    pub outcome: WebhookOutcome,
    pub reason: String,
    pub http_status: i32,
    pub deployment_id: Option<Uuid>,
    pub received_at: DateTime<Utc>,
    /// What GitHub was told of the preview this delivery opened, updated or closed (sent, or
    /// why not), for projects with a GitHub token (`crate::github`).
    pub github_status: Option<String>,
}

impl Store {
    /// Logs a delivery to a service or a project (nothing when it is gone) and keeps the newest
    /// [`DELIVERY_LOG_KEEP`] of its project. A delivery to the project's webhook names no
    /// service (`service_name` is empty).
    pub async fn log_delivery(&self, d: &LoggedDelivery<'_>) -> Result<()> {
        let from = match d.owner {
            HookOwner::Service(_) => {
                "SELECT organization_id, project_id, id, name, $2, $3, $4, $5, $6, $7 FROM services WHERE id = $1"
            }
            HookOwner::Project(_) => {
                "SELECT organization_id, id, NULL::uuid, '', $2, $3, $4, $5, $6, $7 FROM projects WHERE id = $1"
            }
        };
        let mut tx = self.pool.begin().await?;
        let project: Option<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_delivery_log (organization_id, project_id, service_id, service_name, \
             delivery_id, event, outcome, reason, http_status, deployment_id) {from} \
             RETURNING project_id"
        )))
        .bind(d.owner.id())
        .bind(d.delivery_id)
        .bind(d.event)
        .bind(d.outcome)
        .bind(d.reason)
        .bind(i32::from(d.http_status))
        .bind(d.deployment_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(project) = project {
            sqlx::query(
                "DELETE FROM webhook_delivery_log WHERE project_id = $1 AND id <= \
                 (SELECT id FROM webhook_delivery_log WHERE project_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)",
            )
            .bind(project)
            .bind(DELIVERY_LOG_KEEP)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A project's logged deliveries, newest first; of one service when `service` is given.
    pub async fn delivery_log(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        service: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<DeliveryEntry>> {
        self.project(organization_id, project_id).await?;
        Ok(sqlx::query_as(
            "SELECT id, service_id, service_name, delivery_id, event, outcome, reason, http_status, \
             deployment_id, received_at, github_status FROM webhook_delivery_log \
             WHERE organization_id = $1 AND project_id = $2 AND ($3::uuid IS NULL OR service_id = $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(organization_id)
        .bind(project_id)
        .bind(service)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
