//! Environments of a project: their branch, their variables (sealed like a service's, given to
//! every service in the environment over the service's own of the same name), copies of
//! another environment (its services, their settings, variables and secrets, re-sealed for
//! the copy; a managed database or cache with a fresh volume and password; never custom
//! domains, deployments or hosts), and their removal.

use std::collections::BTreeMap;

use ::api::Engine;
use sqlx::PgConnection;
use tenant::git::GitRef;
use uuid::Uuid;

use super::services::{env_aad, webhook_aad};
use super::{EnvVar, Environment, Result, Service, Store, StoreError};
use crate::managed;

const COLUMNS: &str = "id, project_id, name, branch, created_from, created_at";

/// Variables to change: `set` (name -> value, secret) replaces those names, `unset` removes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VarChange {
    pub set: BTreeMap<String, (String, bool)>,
    pub unset: Vec<String>,
}

/// A preview environment to create: the pull request it shows and the head it is built at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewPreview<'a> {
    pub number: i32,
    pub head_sha: &'a str,
}

/// What a preview environment shows beyond an environment.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PreviewRow {
    pub number: i32,
    pub head_sha: Option<String>,
    /// Stopped for lack of requests since then; woken by the next one (#17).
    pub sleeping_since: Option<chrono::DateTime<chrono::Utc>>,
}

/// An awake preview of a project whose previews sleep when idle.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AwakePreview {
    pub organization_id: Uuid,
    pub environment_id: Uuid,
    pub idle_seconds: i32,
    /// The newest of its creation, its last wake and its services' newest deployment (queued
    /// or ready): the idle clock starts there when no request came since.
    pub active_at: chrono::DateTime<chrono::Utc>,
}

fn environment_aad(environment_id: Uuid, name: &str) -> String {
    format!("environment/{environment_id}/env/{name}")
}

impl Store {
    pub async fn create_environment(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        name: &str,
        branch: &GitRef,
    ) -> Result<Environment> {
        self.new_environment(
            organization_id,
            project_id,
            name,
            branch,
            None,
            &VarChange::default(),
            None,
        )
        .await
    }

    /// A new environment, a copy of `from` (an environment of the same project) when given,
    /// with `vars` applied over the copied variables; all in one transaction. A preview
    /// (`preview`) is refused once the project has its `max_previews` (checked under the
    /// project's row lock, so concurrent pull requests cannot pass it together).
    #[allow(clippy::too_many_arguments)]
    pub async fn new_environment(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        name: &str,
        branch: &GitRef,
        from: Option<Uuid>,
        vars: &VarChange,
        preview: Option<NewPreview<'_>>,
    ) -> Result<Environment> {
        self.project(organization_id, project_id).await?;
        if let Some(from) = from {
            let template = self.environment(organization_id, from).await?;
            if template.project_id != project_id {
                return Err(StoreError::Conflict(format!(
                    "environment {from} belongs to another project"
                )));
            }
        }
        let mut tx = self.pool.begin().await?;
        if preview.is_some() {
            let max: i32 =
                sqlx::query_scalar("SELECT max_previews FROM projects WHERE id = $1 FOR UPDATE")
                    .bind(project_id)
                    .fetch_one(&mut *tx)
                    .await?;
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM environments WHERE project_id = $1 AND preview_number IS NOT NULL",
            )
            .bind(project_id)
            .fetch_one(&mut *tx)
            .await?;
            if open >= i64::from(max) {
                return Err(StoreError::Conflict(format!(
                    "the project has {open} previews open, its limit (max_previews {max}): close \
                     one or raise the limit"
                )));
            }
        }
        let sql = format!(
            "INSERT INTO environments (id, organization_id, project_id, name, branch, created_from, \
             preview_number, preview_head_sha) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
        );
        let env: Environment = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(Uuid::new_v4())
            .bind(organization_id)
            .bind(project_id)
            .bind(name)
            .bind(branch.as_str())
            .bind(from)
            .bind(preview.map(|p| p.number))
            .bind(preview.map(|p| p.head_sha))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::unique(e, || format!("environment {name:?} already exists"))
            })?;
        if let Some(from) = from {
            let vars = self.environment_vars_in(&mut tx, from).await?;
            self.change_vars(
                &mut tx,
                env.id,
                &VarChange {
                    set: vars,
                    unset: vec![],
                },
            )
            .await?;
            self.copy_services(&mut tx, from, env.id).await?;
        }
        self.change_vars(&mut tx, env.id, vars).await?;
        tx.commit().await?;
        Ok(env)
    }

    /// Copies every service of `from` into `to`: every column (so settings added later are
    /// copied too) but the id, the environment, custom domains and the serving deployment;
    /// variables, secrets and the webhook secret re-sealed for the copy.
    async fn copy_services(&self, tx: &mut PgConnection, from: Uuid, to: Uuid) -> Result<()> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM services WHERE environment_id = $1 ORDER BY created_at, id",
        )
        .bind(from)
        .fetch_all(&mut *tx)
        .await?;
        for old in ids {
            let new = Uuid::new_v4();
            sqlx::query(
                "INSERT INTO services SELECT (jsonb_populate_record(NULL::services, to_jsonb(s) \
                 || jsonb_build_object('id', $2::uuid, 'environment_id', $3::uuid, 'domains', '{}'::text[], \
                 'current_deployment_id', NULL, 'webhook_secret_enc', NULL, 'created_at', clock_timestamp()))).* \
                 FROM services s WHERE s.id = $1",
            )
            .bind(old)
            .bind(new)
            .bind(to)
            .execute(&mut *tx)
            .await?;
            let webhook: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT webhook_secret_enc FROM services WHERE id = $1")
                    .bind(old)
                    .fetch_one(&mut *tx)
                    .await?;
            if let Some(enc) = webhook {
                let secret = self.secrets().open(&webhook_aad(old), &enc)?;
                sqlx::query("UPDATE services SET webhook_secret_enc = $2 WHERE id = $1")
                    .bind(new)
                    .bind(self.secrets().seal(&webhook_aad(new), &secret))
                    .execute(&mut *tx)
                    .await?;
            }
            let rows: Vec<(String, Vec<u8>, bool)> = sqlx::query_as(
                "SELECT name, value_enc, secret FROM service_env WHERE service_id = $1",
            )
            .bind(old)
            .fetch_all(&mut *tx)
            .await?;
            // A managed database or cache stays one in the copy, with a fresh volume (a new
            // service) and a password of its own.
            let engine: Option<Engine> = sqlx::query_scalar(
                "INSERT INTO managed_services (service_id, engine) \
                 SELECT $2, engine FROM managed_services WHERE service_id = $1 RETURNING engine",
            )
            .bind(old)
            .bind(new)
            .fetch_optional(&mut *tx)
            .await?;
            let fresh = engine.map(managed::password_var);
            for (name, enc, secret) in rows {
                let value = if Some(name.as_str()) == fresh {
                    managed::generate_password()
                } else {
                    self.secrets().open(&env_aad(old, &name), &enc)?
                };
                sqlx::query(
                    "INSERT INTO service_env (service_id, name, value_enc, secret) VALUES ($1, $2, $3, $4)",
                )
                .bind(new)
                .bind(&name)
                .bind(self.secrets().seal(&env_aad(new, &name), &value))
                .bind(secret)
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(())
    }

    async fn change_vars(
        &self,
        tx: &mut PgConnection,
        env: Uuid,
        change: &VarChange,
    ) -> Result<()> {
        for name in &change.unset {
            sqlx::query("DELETE FROM environment_env WHERE environment_id = $1 AND name = $2")
                .bind(env)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        for (name, (value, secret)) in &change.set {
            sqlx::query(
                "INSERT INTO environment_env (environment_id, name, value_enc, secret) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (environment_id, name) DO UPDATE SET value_enc = EXCLUDED.value_enc, secret = EXCLUDED.secret",
            )
            .bind(env)
            .bind(name)
            .bind(self.secrets().seal(&environment_aad(env, name), value))
            .bind(secret)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    async fn environment_vars_in(
        &self,
        conn: &mut PgConnection,
        env: Uuid,
    ) -> Result<BTreeMap<String, (String, bool)>> {
        let rows: Vec<(String, Vec<u8>, bool)> = sqlx::query_as(
            "SELECT name, value_enc, secret FROM environment_env WHERE environment_id = $1 ORDER BY name",
        )
        .bind(env)
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter()
            .map(|(name, enc, secret)| {
                let value = self.secrets().open(&environment_aad(env, &name), &enc)?;
                Ok((name, (value, secret)))
            })
            .collect()
    }

    /// An environment's variables in clear (for its services' containers, never the API).
    pub async fn environment_vars(&self, env: Uuid) -> Result<BTreeMap<String, (String, bool)>> {
        let mut conn = self.pool.acquire().await?;
        self.environment_vars_in(&mut conn, env).await
    }

    /// An environment's variables as the API shows them: secrets masked.
    pub async fn environment_vars_view(&self, env: Uuid) -> Result<BTreeMap<String, EnvVar>> {
        Ok(self
            .environment_vars(env)
            .await?
            .into_iter()
            .map(|(name, (value, secret))| {
                let value = (!secret).then_some(value);
                (name, EnvVar { value, secret })
            })
            .collect())
    }

    /// The variables of the environment `service_id` runs in.
    pub async fn service_environment_vars(
        &self,
        service_id: Uuid,
    ) -> Result<BTreeMap<String, (String, bool)>> {
        let env: Option<Uuid> =
            sqlx::query_scalar("SELECT environment_id FROM services WHERE id = $1")
                .bind(service_id)
                .fetch_optional(&self.pool)
                .await?;
        match env {
            Some(env) => self.environment_vars(env).await,
            None => Ok(BTreeMap::new()),
        }
    }

    /// Changes an environment's branch (when given) and variables.
    pub async fn update_environment(
        &self,
        organization_id: Uuid,
        id: Uuid,
        branch: Option<&GitRef>,
        vars: &VarChange,
    ) -> Result<Environment> {
        self.environment(organization_id, id).await?;
        let mut tx = self.pool.begin().await?;
        if let Some(branch) = branch {
            sqlx::query(
                "UPDATE environments SET branch = $3 WHERE id = $1 AND organization_id = $2",
            )
            .bind(id)
            .bind(organization_id)
            .bind(branch.as_str())
            .execute(&mut *tx)
            .await?;
        }
        self.change_vars(&mut tx, id, vars).await?;
        tx.commit().await?;
        self.environment(organization_id, id).await
    }

    pub async fn environment(&self, organization_id: Uuid, id: Uuid) -> Result<Environment> {
        let sql =
            format!("SELECT {COLUMNS} FROM environments WHERE id = $1 AND organization_id = $2");
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(organization_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("environment", id))
    }

    pub async fn environments(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
    ) -> Result<Vec<Environment>> {
        self.project(organization_id, project_id).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM environments WHERE project_id = $1 AND organization_id = $2 \
             ORDER BY created_at, id"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(project_id)
            .bind(organization_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Every service of an environment (`Some`) or of a whole project, for a teardown.
    pub async fn services_to_tear_down(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        environment_id: Option<Uuid>,
    ) -> Result<Vec<Service>> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM services WHERE organization_id = $1 AND project_id = $2 \
             AND ($3::uuid IS NULL OR environment_id = $3) ORDER BY created_at, id",
        )
        .bind(organization_id)
        .bind(project_id)
        .bind(environment_id)
        .fetch_all(&self.pool)
        .await?;
        let mut services = Vec::with_capacity(ids.len());
        for id in ids {
            services.push(self.service(organization_id, id).await?);
        }
        Ok(services)
    }

    /// The preview environment of pull request `number` in a project, if open.
    pub async fn preview_environment(
        &self,
        project_id: Uuid,
        number: i32,
    ) -> Result<Option<Environment>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM environments WHERE project_id = $1 AND preview_number = $2"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(project_id)
            .bind(number)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The pull request an environment previews; `None` for a lasting environment.
    pub async fn preview_of(&self, environment_id: Uuid) -> Result<Option<PreviewRow>> {
        Ok(sqlx::query_as(
            "SELECT preview_number AS number, preview_head_sha AS head_sha, sleeping_since \
             FROM environments \
             WHERE id = $1 AND preview_number IS NOT NULL",
        )
        .bind(environment_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records the head a preview was last deployed at.
    pub async fn set_preview_head(&self, environment_id: Uuid, head_sha: &str) -> Result<()> {
        sqlx::query("UPDATE environments SET preview_head_sha = $2 WHERE id = $1")
            .bind(environment_id)
            .bind(head_sha)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The state of the newest deployment of each service of an environment (services never
    /// deployed have none).
    pub async fn latest_deployment_states(
        &self,
        environment_id: Uuid,
    ) -> Result<Vec<::api::DeploymentState>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT ON (d.service_id) d.state FROM deployments d \
             JOIN services s ON s.id = d.service_id WHERE s.environment_id = $1 \
             ORDER BY d.service_id, d.created_at DESC, d.id DESC",
        )
        .bind(environment_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The deployments of an environment's services still queued, building or deploying.
    pub async fn active_deployments(&self, environment_id: Uuid) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT d.id FROM deployments d JOIN services s ON s.id = d.service_id \
             WHERE s.environment_id = $1 AND d.state IN ('queued', 'building', 'deploying')",
        )
        .bind(environment_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every service built from git in a project: (service, environment, git url, whether the
    /// environment is a preview).
    pub async fn git_services_of_project(
        &self,
        project_id: Uuid,
    ) -> Result<Vec<(Uuid, Uuid, String, bool)>> {
        Ok(sqlx::query_as(
            "SELECT s.id, s.environment_id, s.git_url, e.preview_number IS NOT NULL FROM services s \
             JOIN environments e ON e.id = s.environment_id \
             WHERE s.project_id = $1 AND s.git_url IS NOT NULL ORDER BY s.created_at, s.id",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes an environment and, through the schema, its services and their deployments.
    pub async fn delete_environment(&self, organization_id: Uuid, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM environments WHERE id = $1 AND organization_id = $2")
            .bind(id)
            .bind(organization_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("environment", id));
        }
        Ok(())
    }

    /// Awake previews of projects whose previews sleep when idle, with their idle clock's start.
    pub async fn awake_previews(&self) -> Result<Vec<AwakePreview>> {
        Ok(sqlx::query_as(
            "SELECT e.organization_id, e.id AS environment_id, p.preview_idle_seconds AS idle_seconds, \
             GREATEST(e.created_at, COALESCE(e.woken_at, e.created_at), \
                      COALESCE((SELECT max(GREATEST(d.created_at, d.ready_at)) FROM deployments d JOIN services s \
                                ON s.id = d.service_id WHERE s.environment_id = e.id), e.created_at)) \
                 AS active_at \
             FROM environments e JOIN projects p ON p.id = e.project_id \
             WHERE e.preview_number IS NOT NULL AND e.sleeping_since IS NULL \
             AND p.preview_idle_seconds IS NOT NULL ORDER BY e.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks a preview sleeping unless it already is or one of its deployments is on its way;
    /// true when this call did (only one caller stops it).
    pub async fn start_sleep(&self, environment_id: Uuid) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE environments e SET sleeping_since = now() WHERE e.id = $1 \
             AND e.sleeping_since IS NULL AND NOT EXISTS (SELECT 1 FROM deployments d \
                 JOIN services s ON s.id = d.service_id WHERE s.environment_id = e.id \
                 AND d.state IN ('queued', 'building', 'deploying'))",
        )
        .bind(environment_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends the sleep of the environment of `service_id`; its (organization, environment)
    /// when this call did (one wake per sleep, however many ask).
    pub async fn end_sleep_of_service(&self, service_id: Uuid) -> Result<Option<(Uuid, Uuid)>> {
        Ok(sqlx::query_as(
            "UPDATE environments SET sleeping_since = NULL, woken_at = now() \
             WHERE id = (SELECT environment_id FROM services WHERE id = $1) \
             AND sleeping_since IS NOT NULL RETURNING organization_id, id",
        )
        .bind(service_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Ends a sleep that failed half-way (the next idle pass tries again).
    pub async fn end_sleep(&self, environment_id: Uuid) -> Result<()> {
        sqlx::query("UPDATE environments SET sleeping_since = NULL WHERE id = $1")
            .bind(environment_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sleeping environments a deployment was queued in since (a push to the pull request):
    /// awake again, as that deployment starts their service. Their ids.
    pub async fn end_sleeps_redeployed(&self) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "UPDATE environments e SET sleeping_since = NULL, woken_at = now() \
             WHERE e.sleeping_since IS NOT NULL AND EXISTS (SELECT 1 FROM deployments d \
                 JOIN services s ON s.id = d.service_id WHERE s.environment_id = e.id \
                 AND d.created_at > e.sleeping_since) RETURNING e.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every sleeping environment: (organization, environment).
    pub async fn sleeping_environments(&self) -> Result<Vec<(Uuid, Uuid)>> {
        Ok(sqlx::query_as(
            "SELECT organization_id, id FROM environments WHERE sleeping_since IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
