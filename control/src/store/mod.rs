//! State in PostgreSQL: every read and write of the control plane goes through [`Store`].
//! Queries are plain `sqlx::query` with binds; the schema is in `control/migrations/`, applied
//! at start. Every query on organization objects is scoped by organization id.

pub mod backups;
mod deployments;
mod domains;
mod environments;
mod hosts;
mod idempotency;
mod instances;
mod job_leases;
mod managed;
mod models;
mod nodes;
mod orgs;
mod projects;
mod repository;
mod services;
mod sessions;
mod webhooks;

pub use deployments::{Claimed, NewDeployment, Placement, StepData};
pub use domains::{CustomDomain, DomainCheck};
pub use environments::{NewPreview, PreviewRow, VarChange};
pub use hosts::HostNameParts;
pub use instances::Instance;
pub use job_leases::JobLease;
pub use models::*;
pub use nodes::{JoinRefused, NewJoin, WireguardPeer};
pub use orgs::{NewToken, Role};
pub use repository::{GitCredentials, PreviewSettings, RepositorySettings};
pub use services::{NewService, ServicePatch, source_text};
pub use sessions::{NewSession, SESSION_LIFETIME_HOURS, Session, SessionOwner};
pub use webhooks::{
    DELIVERY_LOG_KEEP, Delivery, DeliveryEntry, HookOwner, LoggedDelivery, ProjectHook,
    WebhookTarget,
};

use sqlx::postgres::{PgPool, PgPoolOptions};
use uuid::Uuid;

use crate::crypto::{CryptoError, SecretBox};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("deployment {deployment}: this worker no longer holds its lease")]
    LeaseLost { deployment: Uuid },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    pub(crate) fn not_found(kind: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    /// Turns a unique-constraint violation into a conflict naming `what`.
    pub(crate) fn unique(e: sqlx::Error, what: impl FnOnce() -> String) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what()),
            _ => StoreError::Db(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A page of a list, in creation order; `next` is the cursor for the following page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Uuid>,
}

/// Where a list starts and how long it is.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: i64,
    pub after: Option<Uuid>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: 50,
            after: None,
        }
    }
}

pub(crate) fn page<T>(mut items: Vec<T>, req: PageRequest, id: impl Fn(&T) -> Uuid) -> Page<T> {
    // Queries fetch limit + 1 rows: the extra one says whether there is a next page.
    let next = if items.len() as i64 > req.limit {
        items.truncate(req.limit as usize);
        items.last().map(id)
    } else {
        None
    };
    Page { items, next }
}

#[derive(Debug, Clone)]
pub struct Store {
    pub pool: PgPool,
    secrets: SecretBox,
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Connects and applies the embedded migrations.
    pub async fn connect(database_url: &str, secrets: SecretBox) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(database_url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, secrets })
    }

    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// Records a mutating API call.
    pub async fn audit(
        &self,
        organization_id: Option<Uuid>,
        token_id: Option<Uuid>,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (organization_id, token_id, method, path, status) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(organization_id)
        .bind(token_id)
        .bind(method)
        .bind(path)
        .bind(i32::from(status))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn audit_entries(
        &self,
        organization_id: Uuid,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        Ok(sqlx::query_as(
            "SELECT id, method, path, status, at FROM audit_log WHERE organization_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(organization_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod decode_tests;
