//! Custom domains of services and the result of their last DNS check.

use ::api::DomainStatus;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Result, Store, StoreError};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CustomDomain {
    pub domain: String,
    #[serde(skip)]
    pub organization_id: Uuid,
    pub service_id: Uuid,
    pub status: DomainStatus,
    /// The CNAME target expected.
    pub target: String,
    pub last_seen: Option<String>,
    pub last_error: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// The result of one check, to record.
#[derive(Debug, Clone)]
pub struct DomainCheck<'a> {
    pub status: DomainStatus,
    pub last_seen: Option<&'a str>,
    pub last_error: Option<&'a str>,
}

const COLUMNS: &str = "domain, organization_id, service_id, status, target, last_seen, last_error, \
    checked_at, verified_at, created_at";

impl Store {
    /// Adds `domain` to a service of the organization. A domain belongs to one service: adding
    /// it again is a conflict that names the service when it is the caller's own, and nothing
    /// about the owner otherwise.
    pub async fn add_domain(
        &self,
        organization_id: Uuid,
        service_id: Uuid,
        domain: &str,
        target: &str,
    ) -> Result<CustomDomain> {
        self.service(organization_id, service_id).await?;
        let inserted: Option<CustomDomain> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO custom_domains (domain, organization_id, service_id, target) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (domain) DO NOTHING RETURNING {COLUMNS}"
        )))
        .bind(domain)
        .bind(organization_id)
        .bind(service_id)
        .bind(target)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(d) = inserted {
            return Ok(d);
        }
        let owner: Option<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT organization_id, service_id FROM custom_domains WHERE domain = $1",
        )
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?;
        Err(StoreError::Conflict(match owner {
            Some((_, s)) if s == service_id => format!("{domain} is already added to this service"),
            Some((o, s)) if o == organization_id => {
                format!("{domain} is already added to service {s}; remove it there first")
            }
            _ => format!("{domain} is already claimed by another organization"),
        }))
    }

    pub async fn domains(
        &self,
        organization_id: Uuid,
        service_id: Uuid,
    ) -> Result<Vec<CustomDomain>> {
        self.service(organization_id, service_id).await?;
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM custom_domains WHERE service_id = $1 AND organization_id = $2 ORDER BY domain"
        )))
        .bind(service_id)
        .bind(organization_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn domain(
        &self,
        organization_id: Uuid,
        service_id: Uuid,
        domain: &str,
    ) -> Result<CustomDomain> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM custom_domains WHERE domain = $1 AND service_id = $2 AND organization_id = $3"
        )))
        .bind(domain)
        .bind(service_id)
        .bind(organization_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("domain", domain))
    }

    /// Every domain of every organization, for the periodic re-check.
    pub async fn all_domains(&self) -> Result<Vec<CustomDomain>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM custom_domains ORDER BY checked_at NULLS FIRST, domain"
        )))
        .fetch_all(&self.pool)
        .await?)
    }

    /// The service's domains that passed verification: routed and allowed certificates.
    pub async fn verified_domains(&self, service_id: Uuid) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT domain FROM custom_domains WHERE service_id = $1 AND status = 'verified' ORDER BY domain",
        )
        .bind(service_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(d,)| d).collect())
    }

    /// Records a check; `verified_at` moves when the status becomes verified.
    pub async fn record_domain_check(
        &self,
        domain: &str,
        check: &DomainCheck<'_>,
    ) -> Result<CustomDomain> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE custom_domains SET status = $2, last_seen = COALESCE($3, last_seen), last_error = $4, \
             checked_at = now(), \
             verified_at = CASE WHEN $2 = 'verified' AND status <> 'verified' THEN now() ELSE verified_at END \
             WHERE domain = $1 RETURNING {COLUMNS}"
        )))
        .bind(domain)
        .bind(check.status)
        .bind(check.last_seen)
        .bind(check.last_error)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("domain", domain))
    }

    /// Removes a domain; returns the row as it was.
    pub async fn delete_domain(
        &self,
        organization_id: Uuid,
        service_id: Uuid,
        domain: &str,
    ) -> Result<CustomDomain> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "DELETE FROM custom_domains WHERE domain = $1 AND service_id = $2 AND organization_id = $3 \
             RETURNING {COLUMNS}"
        )))
        .bind(domain)
        .bind(service_id)
        .bind(organization_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("domain", domain))
    }
}
