//! Managed services (#14): which engine a service runs, the variables each service of an
//! environment offers to references, and password rotation.

use std::collections::BTreeMap;

use ::api::Engine;
use uuid::Uuid;

use super::services::env_aad;
use super::{Result, Store, StoreError};
use crate::managed;

impl Store {
    /// The engine of a managed service; `None` for every other service.
    pub async fn managed_engine(&self, service_id: Uuid) -> Result<Option<Engine>> {
        Ok(
            sqlx::query_scalar("SELECT engine FROM managed_services WHERE service_id = $1")
                .bind(service_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// An environment's name, unscoped (for the pipeline).
    pub async fn environment_name(&self, environment_id: Uuid) -> Result<String> {
        sqlx::query_scalar("SELECT name FROM environments WHERE id = $1")
            .bind(environment_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("environment", environment_id))
    }

    /// What each service of an environment offers to `${{ service.VAR }}` references: a
    /// managed service its connection variables (host `<service>.<environment>.internal`),
    /// any other service its env vars and secrets.
    pub async fn environment_exports(
        &self,
        environment_id: Uuid,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        let rows: Vec<(Uuid, String, String, Option<Engine>)> = sqlx::query_as(
            "SELECT s.id, s.name, e.name, m.engine FROM services s \
             JOIN environments e ON e.id = s.environment_id \
             LEFT JOIN managed_services m ON m.service_id = s.id \
             WHERE s.environment_id = $1",
        )
        .bind(environment_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = BTreeMap::new();
        for (id, service, environment, engine) in rows {
            let env: BTreeMap<String, String> = self
                .service_env(id)
                .await?
                .into_iter()
                .map(|(name, (value, _))| (name, value))
                .collect();
            let vars = match engine {
                Some(engine) => {
                    let host = managed::internal_host(&service, &environment);
                    managed::exports(engine, &host, &env).unwrap_or_default()
                }
                None => env,
            };
            out.insert(service, vars);
        }
        Ok(out)
    }

    /// A new password for a managed service, sealed in place of the old one. The engine takes
    /// it at its next start (its entrypoint applies the password it is given), referencing
    /// services at their next deploy.
    pub async fn rotate_password(&self, organization_id: Uuid, service_id: Uuid) -> Result<Engine> {
        self.service(organization_id, service_id).await?;
        let engine = self.managed_engine(service_id).await?.ok_or_else(|| {
            StoreError::Conflict(format!(
                "service {service_id} is not a managed database or cache: it has no generated password"
            ))
        })?;
        let name = managed::password_var(engine);
        let sealed = self
            .secrets()
            .seal(&env_aad(service_id, name), &managed::generate_password());
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO service_env (service_id, name, value_enc, secret) VALUES ($1, $2, $3, true) \
             ON CONFLICT (service_id, name) DO UPDATE SET value_enc = EXCLUDED.value_enc, secret = true",
        )
        .bind(service_id)
        .bind(name)
        .bind(sealed)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE managed_services SET password_rotated_at = now() WHERE service_id = $1",
        )
        .bind(service_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(engine)
    }
}
