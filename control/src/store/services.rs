//! Services: source, build settings, resources, health check, domains, env vars and secrets
//! (encrypted at rest).

use std::collections::BTreeMap;

use ::api::{Engine, ServiceKind};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use tenant::image::ImageRef;
use tenant::path::Subdirectory;
use tenant::source::SourceUrl;
use uuid::Uuid;

use super::{
    BuildSettings, EnvVar, HealthCheck, Page, PageRequest, Resources, Result, Service, Store,
    StoreError, Volume, page,
};

/// A service to create; validated by the API before it gets here (the values a command line,
/// a host path or the network sees are domain types).
#[derive(Debug, Clone, Default)]
pub struct NewService {
    pub environment_id: Uuid,
    pub name: String,
    pub kind: ServiceKind,
    /// A managed database or cache (`crate::managed`); recorded in `managed_services`.
    pub engine: Option<Engine>,
    pub image: Option<ImageRef>,
    pub git_url: Option<SourceUrl>,
    pub git_subdirectory: Subdirectory,
    pub build: BuildSettings,
    pub resources: Resources,
    pub health_check: Option<HealthCheck>,
    pub port: i32,
    /// Whether `port` was given (else a build's detected port wins over it).
    pub port_explicit: bool,
    pub replicas: i32,
    pub domains: Vec<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    pub webhook_secret: Option<String>,
    pub volumes: Vec<Volume>,
}

/// Fields to change; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct ServicePatch {
    pub image: Option<ImageRef>,
    pub resources: Option<Resources>,
    pub health_check: Option<HealthCheck>,
    pub port: Option<i32>,
    pub replicas: Option<i32>,
    pub domains: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    /// Replaces every env var and secret when set.
    pub env: Option<(BTreeMap<String, String>, BTreeMap<String, String>)>,
    /// Sets and removes the variables it names, the others kept.
    pub vars: Option<super::VarChange>,
    /// Replaces the service's volumes (checked by the API against the current ones).
    pub volumes: Option<Vec<Volume>>,
}

const COLUMNS: &str = "id, project_id, environment_id, name, kind, image, git_url, git_subdirectory, build, \
    resources, health_check, port, port_explicit, replicas, domains, command, args, webhook_secret_enc IS NOT NULL AS has_webhook_secret, \
    volumes, current_deployment_id, created_at";

pub(super) fn from_row(row: &PgRow) -> Result<Service> {
    let build: Json<BuildSettings> = row.try_get("build")?;
    let resources: Json<Resources> = row.try_get("resources")?;
    let health: Option<Json<HealthCheck>> = row.try_get("health_check")?;
    let volumes: Json<Vec<Volume>> = row.try_get("volumes")?;
    Ok(Service {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        environment_id: row.try_get("environment_id")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        image: row.try_get("image")?,
        git_url: row.try_get("git_url")?,
        git_subdirectory: row.try_get("git_subdirectory")?,
        build: build.0,
        resources: resources.0,
        health_check: health.map(|h| h.0),
        port: row.try_get("port")?,
        port_explicit: row.try_get("port_explicit")?,
        replicas: row.try_get("replicas")?,
        domains: row.try_get("domains")?,
        command: row.try_get("command")?,
        args: row.try_get("args")?,
        env: BTreeMap::new(),
        volumes: volumes.0,
        has_webhook_secret: row.try_get("has_webhook_secret")?,
        current_deployment_id: row.try_get("current_deployment_id")?,
        created_at: row.try_get("created_at")?,
    })
}

/// A git source as stored (and handed to buildd): the https or ssh URL as given, or `file://` + the
/// path of a local repository.
pub fn source_text(url: &SourceUrl) -> String {
    match url {
        SourceUrl::Https(u) => u.as_str().to_owned(),
        SourceUrl::Ssh(u) => u.as_str().to_owned(),
        SourceUrl::Local(path) => format!("file://{}", path.display()),
    }
}

pub(super) fn env_aad(service_id: Uuid, name: &str) -> String {
    format!("service/{service_id}/env/{name}")
}

pub(super) fn webhook_aad(service_id: Uuid) -> String {
    format!("service/{service_id}/webhook")
}

impl Store {
    pub async fn create_service(&self, organization_id: Uuid, s: &NewService) -> Result<Service> {
        let env = self.environment(organization_id, s.environment_id).await?;
        let id = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "INSERT INTO services (id, organization_id, project_id, environment_id, name, kind, image, git_url, \
             git_subdirectory, build, resources, health_check, port, replicas, domains, webhook_secret_enc, command, args, volumes, port_explicit) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(organization_id)
            .bind(env.project_id)
            .bind(env.id)
            .bind(&s.name)
            .bind(s.kind)
            .bind(s.image.as_ref().map(ImageRef::to_string))
            .bind(s.git_url.as_ref().map(source_text))
            .bind(s.git_subdirectory.as_str())
            .bind(Json(&s.build))
            .bind(Json(&s.resources))
            .bind(s.health_check.as_ref().map(Json))
            .bind(s.port)
            .bind(s.replicas)
            .bind(&s.domains)
            .bind(
                s.webhook_secret
                    .as_ref()
                    .map(|w| self.secrets().seal(&webhook_aad(id), w)),
            )
            .bind(&s.command)
            .bind(&s.args)
            .bind(Json(&s.volumes))
            .bind(s.port_explicit)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::unique(e, || format!("service {:?} already exists", s.name))
            })?;
        self.write_env(&mut tx, id, &s.env, &s.secrets).await?;
        if let Some(engine) = s.engine {
            sqlx::query("INSERT INTO managed_services (service_id, engine) VALUES ($1, $2)")
                .bind(id)
                .bind(engine)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let mut service = from_row(&row)?;
        service.env = self.env_view(id).await?;
        Ok(service)
    }

    async fn write_env(
        &self,
        tx: &mut sqlx::PgConnection,
        service_id: Uuid,
        env: &BTreeMap<String, String>,
        secrets: &BTreeMap<String, String>,
    ) -> Result<()> {
        sqlx::query("DELETE FROM service_env WHERE service_id = $1")
            .bind(service_id)
            .execute(&mut *tx)
            .await?;
        let all = env
            .iter()
            .map(|kv| (kv, false))
            .chain(secrets.iter().map(|kv| (kv, true)));
        for ((name, value), secret) in all {
            sqlx::query("INSERT INTO service_env (service_id, name, value_enc, secret) VALUES ($1, $2, $3, $4)")
                .bind(service_id)
                .bind(name)
                .bind(self.secrets().seal(&env_aad(service_id, name), value))
                .bind(secret)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::unique(e, || format!("env var {name} is set twice")))?;
        }
        Ok(())
    }

    /// Sets (sealed, a name's secrecy replaced too) and removes the variables `change` names.
    async fn change_env(
        &self,
        tx: &mut sqlx::PgConnection,
        service_id: Uuid,
        change: &super::VarChange,
    ) -> Result<()> {
        for name in &change.unset {
            sqlx::query("DELETE FROM service_env WHERE service_id = $1 AND name = $2")
                .bind(service_id)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        for (name, (value, secret)) in &change.set {
            sqlx::query(
                "INSERT INTO service_env (service_id, name, value_enc, secret) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (service_id, name) DO UPDATE SET value_enc = EXCLUDED.value_enc, secret = EXCLUDED.secret",
            )
            .bind(service_id)
            .bind(name)
            .bind(self.secrets().seal(&env_aad(service_id, name), value))
            .bind(secret)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// The service's own env vars decrypted, secrets masked.
    async fn env_view(&self, service_id: Uuid) -> Result<BTreeMap<String, EnvVar>> {
        Ok(self
            .own_env(service_id)
            .await?
            .into_iter()
            .map(|(name, (value, secret))| {
                let value = (!secret).then_some(value);
                (name, EnvVar { value, secret })
            })
            .collect())
    }

    /// Every env var and secret in clear, for the container (never for the API): the
    /// service's own, overridden by its environment's of the same name.
    pub async fn service_env(&self, service_id: Uuid) -> Result<BTreeMap<String, (String, bool)>> {
        let mut vars = self.own_env(service_id).await?;
        vars.extend(self.service_environment_vars(service_id).await?);
        Ok(vars)
    }

    async fn own_env(&self, service_id: Uuid) -> Result<BTreeMap<String, (String, bool)>> {
        let rows: Vec<(String, Vec<u8>, bool)> = sqlx::query_as(
            "SELECT name, value_enc, secret FROM service_env WHERE service_id = $1 ORDER BY name",
        )
        .bind(service_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(name, enc, secret)| {
                let value = self.secrets().open(&env_aad(service_id, &name), &enc)?;
                Ok((name, (value, secret)))
            })
            .collect()
    }

    pub async fn service(&self, organization_id: Uuid, id: Uuid) -> Result<Service> {
        let sql = format!("SELECT {COLUMNS} FROM services WHERE id = $1 AND organization_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(organization_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("service", id))?;
        let mut service = from_row(&row)?;
        service.env = self.env_view(id).await?;
        Ok(service)
    }

    /// A service and its organization, unscoped: for the pipeline and webhooks only.
    pub async fn service_unscoped(&self, id: Uuid) -> Result<(Uuid, Service)> {
        let org: Option<Uuid> =
            sqlx::query_scalar("SELECT organization_id FROM services WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let org = org.ok_or_else(|| StoreError::not_found("service", id))?;
        Ok((org, self.service(org, id).await?))
    }

    pub async fn webhook_secret(&self, service_id: Uuid) -> Result<Option<String>> {
        let enc: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT webhook_secret_enc FROM services WHERE id = $1")
                .bind(service_id)
                .fetch_optional(&self.pool)
                .await?;
        match enc.flatten() {
            Some(enc) => Ok(Some(self.secrets().open(&webhook_aad(service_id), &enc)?)),
            None => Ok(None),
        }
    }

    pub async fn services(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        req: PageRequest,
    ) -> Result<Page<Service>> {
        self.project(organization_id, project_id).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM services WHERE organization_id = $1 AND project_id = $2 \
             AND ($3::uuid IS NULL OR (created_at, id) > (SELECT created_at, id FROM services WHERE id = $3)) \
             ORDER BY created_at, id LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(organization_id)
            .bind(project_id)
            .bind(req.after)
            .bind(req.limit + 1)
            .fetch_all(&self.pool)
            .await?;
        let mut items = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
        for s in &mut items {
            s.env = self.env_view(s.id).await?;
        }
        Ok(page(items, req, |s: &Service| s.id))
    }

    pub async fn update_service(
        &self,
        organization_id: Uuid,
        id: Uuid,
        p: &ServicePatch,
    ) -> Result<Service> {
        let current = self.service(organization_id, id).await?;
        if p.image.is_some() && current.git_url.is_some() {
            return Err(StoreError::Conflict(format!(
                "service {id} builds from git; it has no image to change"
            )));
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE services SET image = COALESCE($3, image), resources = COALESCE($4, resources), \
             health_check = COALESCE($5, health_check), port = COALESCE($6, port), \
             port_explicit = port_explicit OR $6 IS NOT NULL, \
             replicas = COALESCE($7, replicas), domains = COALESCE($8, domains), \
             command = COALESCE($9, command), args = COALESCE($10, args), \
             volumes = COALESCE($11, volumes) \
             WHERE id = $1 AND organization_id = $2",
        )
        .bind(id)
        .bind(organization_id)
        .bind(p.image.as_ref().map(ImageRef::to_string))
        .bind(p.resources.as_ref().map(Json))
        .bind(p.health_check.as_ref().map(Json))
        .bind(p.port)
        .bind(p.replicas)
        .bind(&p.domains)
        .bind(&p.command)
        .bind(&p.args)
        .bind(p.volumes.as_ref().map(Json))
        .execute(&mut *tx)
        .await?;
        if let Some((env, secrets)) = &p.env {
            self.write_env(&mut tx, id, env, secrets).await?;
        }
        if let Some(change) = &p.vars {
            self.change_env(&mut tx, id, change).await?;
        }
        tx.commit().await?;
        self.service(organization_id, id).await
    }

    pub async fn delete_service(&self, organization_id: Uuid, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM services WHERE id = $1 AND organization_id = $2")
            .bind(id)
            .bind(organization_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("service", id));
        }
        Ok(())
    }

    /// Services of an environment built from `git_url` (for webhooks).
    pub async fn services_for_push(&self, service_id: Uuid) -> Result<Option<(Uuid, String)>> {
        Ok(sqlx::query_as(
            "SELECT s.organization_id, e.branch FROM services s JOIN environments e ON e.id = s.environment_id \
             WHERE s.id = $1 AND s.git_url IS NOT NULL",
        )
        .bind(service_id)
        .fetch_optional(&self.pool)
        .await?)
    }
}
