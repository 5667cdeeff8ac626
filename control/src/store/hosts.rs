//! Platform host labels (`platform_hosts`): one service per label across every organization.
//! Which label a service asks for is decided in `domains::route`.

use uuid::Uuid;

use super::{Result, Store, StoreError};

/// The names a service's platform host is made of.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HostNameParts {
    pub organization: String,
    pub project: String,
    pub environment: String,
}

impl Store {
    /// The labels of a service: its primary one first, then a legacy alias.
    pub async fn host_labels(&self, service_id: Uuid) -> Result<Vec<(String, bool)>> {
        Ok(sqlx::query_as(
            "SELECT label, legacy FROM platform_hosts WHERE service_id = $1 \
             ORDER BY legacy, created_at, label",
        )
        .bind(service_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The organization, project and environment names of a service.
    pub async fn host_names(
        &self,
        organization_id: Uuid,
        service_id: Uuid,
    ) -> Result<HostNameParts> {
        sqlx::query_as(
            "SELECT o.name AS organization, p.name AS project, e.name AS environment \
             FROM services s JOIN organizations o ON o.id = s.organization_id \
             JOIN projects p ON p.id = s.project_id JOIN environments e ON e.id = s.environment_id \
             WHERE s.id = $1 AND s.organization_id = $2",
        )
        .bind(service_id)
        .bind(organization_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("service", service_id))
    }

    /// Makes `label` the primary label of a service unless the label is taken or the service
    /// has one already; says whether it did.
    pub async fn claim_host_label(
        &self,
        organization_id: Uuid,
        service_id: Uuid,
        label: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO platform_hosts (label, organization_id, service_id) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(label)
        .bind(organization_id)
        .bind(service_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
