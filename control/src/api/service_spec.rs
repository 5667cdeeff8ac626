//! A service's request bodies parsed into domain types: every field bounded, every value that
//! reaches a command line, a host path, an HTTP request or the network parsed by the `tenant`
//! crate. The handlers in `services.rs` hand the store only what came out of here.
//!
//! Bounds (also in the OpenAPI document): port 1..=65535; replicas 1..=20; `cpu_millis`
//! 10..=64000, default [`DEFAULT_CPU_MILLIS`] (every container gets a CPU limit);
//! `memory_bytes` 16 MiB..=64 GiB, default the node's; `build.timeout_seconds` 1..=3600;
//! health `interval_ms` 10..=60000 and `deadline_ms` 100..=3600000; at most 200 env vars and
//! secrets together (names <= 255 bytes, values <= 32 KiB), 64 build args, 64 command and 64
//! args items of <= 4 KiB each.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use ::api::{Engine, ServiceKind};
use serde::{Deserialize, Serialize};
use tenant::image::ImageRef;
use tenant::path::{HealthPath, Subdirectory};
use tenant::source::SourceUrl;
use uuid::Uuid;

use super::error::{ApiError, ApiResult, invalid};
use super::validate::{self, parsed, within};
use crate::store::{
    BuildSettings, HealthCheck, NewService, Resources, ServicePatch, VarChange, Volume,
};

pub const PORTS: RangeInclusive<u32> = 1..=65535;
pub const REPLICAS: RangeInclusive<u32> = 1..=20;
pub const CPU_MILLIS: RangeInclusive<u64> = 10..=64_000;
/// Half a core: the scheduler reserves what a container may use, and a 2-core node then holds
/// four services.
pub const DEFAULT_CPU_MILLIS: u32 = 500;
pub const MEMORY_BYTES: RangeInclusive<u64> = (16 << 20)..=(64 << 30);
pub const BUILD_TIMEOUT_SECONDS: RangeInclusive<u64> = 1..=3600;
pub const HEALTH_INTERVAL_MS: RangeInclusive<u64> = 10..=60_000;
pub const HEALTH_DEADLINE_MS: RangeInclusive<u64> = 100..=3_600_000;
pub const MAX_ENV_VARS: usize = 200;
pub const MAX_ENV_VALUE: usize = 32 << 10;
pub const MAX_BUILD_ARGS: usize = 64;
pub const MAX_ARGV_ITEMS: usize = 64;
pub const MAX_ARGV_ITEM: usize = 4 << 10;
pub const MAX_WEBHOOK_SECRET: usize = 1024;

/// `resources` as sent; numbers wider than the stored ones so an overflow is a range error.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesInput {
    #[serde(default)]
    pub cpu_millis: Option<u64>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

impl ResourcesInput {
    pub fn parse(&self) -> ApiResult<Resources> {
        let cpu_millis = match self.cpu_millis {
            None => DEFAULT_CPU_MILLIS,
            Some(c) => within("resources.cpu_millis", c, CPU_MILLIS)? as u32,
        };
        let memory_bytes = match self.memory_bytes {
            None => 0,
            Some(m) => within("resources.memory_bytes", m, MEMORY_BYTES)?,
        };
        Ok(Resources {
            cpu_millis,
            memory_bytes,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthInput {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub interval_ms: Option<u64>,
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

/// A health check whose path can be written into a request line as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub path: Option<HealthPath>,
    pub interval_ms: Option<u32>,
    pub deadline_ms: Option<u32>,
}

impl HealthInput {
    pub fn parse(&self) -> ApiResult<Health> {
        Ok(Health {
            path: self
                .path
                .as_deref()
                .map(|p| parsed("health_check.path", HealthPath::parse(p)))
                .transpose()?,
            interval_ms: self
                .interval_ms
                .map(|v| within("health_check.interval_ms", v, HEALTH_INTERVAL_MS))
                .transpose()?
                .map(|v| v as u32),
            deadline_ms: self
                .deadline_ms
                .map(|v| within("health_check.deadline_ms", v, HEALTH_DEADLINE_MS))
                .transpose()?
                .map(|v| v as u32),
        })
    }
}

impl From<Health> for HealthCheck {
    fn from(h: Health) -> Self {
        HealthCheck {
            path: h.path.map(|p| p.as_str().to_owned()),
            interval_ms: h.interval_ms,
            deadline_ms: h.deadline_ms,
            exec: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildInput {
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// Names of the service's secrets offered to the build as BuildKit secrets.
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

impl BuildInput {
    pub fn parse(&self) -> ApiResult<BuildSettings> {
        if self.build_args.len() > MAX_BUILD_ARGS {
            return Err(invalid(
                "build.build_args",
                format!("at most {MAX_BUILD_ARGS} build args"),
            ));
        }
        for (name, value) in &self.build_args {
            validate::env_name("build.build_args", name)?;
            validate::text(&format!("build.build_args.{name}"), value, MAX_ENV_VALUE)?;
        }
        if self.secrets.len() > MAX_BUILD_ARGS {
            return Err(invalid(
                "build.secrets",
                format!("at most {MAX_BUILD_ARGS} build secrets"),
            ));
        }
        for name in &self.secrets {
            validate::env_name("build.secrets", name)?;
            if self.build_args.contains_key(name) {
                return Err(invalid(
                    "build.secrets",
                    format!("{name} is also a build arg: a secret never goes as a build arg"),
                ));
            }
        }
        let mut secrets = self.secrets.clone();
        secrets.sort();
        secrets.dedup();
        Ok(BuildSettings {
            build_args: self.build_args.clone(),
            secrets,
            timeout_seconds: self
                .timeout_seconds
                .map(|t| within("build.timeout_seconds", t, BUILD_TIMEOUT_SECONDS))
                .transpose()?
                .map(|t| t as u32),
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GitSource {
    pub url: String,
    #[serde(default)]
    pub subdirectory: String,
}

/// Where a service's code comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Image(ImageRef),
    /// The URL is parsed but not yet checked against the organization and the address policy
    /// (`super::sources::SourcePolicy::check`, which resolves the host).
    Git {
        url: SourceUrl,
        subdirectory: Subdirectory,
    },
}

impl Source {
    pub fn parse(image: Option<&str>, git: Option<&GitSource>) -> ApiResult<Self> {
        match (image, git) {
            (Some(_), Some(_)) | (None, None) => {
                Err(invalid("image", "give exactly one of image and git"))
            }
            (Some(i), None) => image_ref("image", i).map(Source::Image),
            (None, Some(g)) => Ok(Source::Git {
                url: parsed("git.url", SourceUrl::parse(&g.url))?,
                subdirectory: parsed("git.subdirectory", Subdirectory::parse(&g.subdirectory))?,
            }),
        }
    }
}

pub fn image_ref(field: &str, value: &str) -> ApiResult<ImageRef> {
    parsed(field, ImageRef::parse(value))
}

pub fn kind(value: &str) -> ApiResult<ServiceKind> {
    value
        .parse()
        .map_err(|_| invalid("kind", "must be web, database, cache or worker"))
}

pub fn port(value: u32) -> ApiResult<i32> {
    within("port", value, PORTS).map(|p| p as i32)
}

pub fn replicas(value: u32) -> ApiResult<i32> {
    within("replicas", value, REPLICAS).map(|r| r as i32)
}

/// A command or its args: bounded items, each bounded.
pub fn argv(field: &str, items: &[String]) -> ApiResult<Vec<String>> {
    if items.len() > MAX_ARGV_ITEMS {
        return Err(invalid(field, format!("at most {MAX_ARGV_ITEMS} items")));
    }
    for (i, item) in items.iter().enumerate() {
        validate::text(&format!("{field}[{i}]"), item, MAX_ARGV_ITEM)?;
    }
    Ok(items.to_vec())
}

/// Env vars and secrets: valid names, none in both, bounded count and values.
pub fn env_vars(
    env: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
) -> ApiResult<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    if env.len() + secrets.len() > MAX_ENV_VARS {
        return Err(invalid(
            "env",
            format!("at most {MAX_ENV_VARS} env vars and secrets together"),
        ));
    }
    for (name, value) in env {
        validate::env_name("env", name)?;
        validate::text(&format!("env.{name}"), value, MAX_ENV_VALUE)?;
    }
    for (name, value) in secrets {
        validate::env_name("secrets", name)?;
        validate::text(&format!("secrets.{name}"), value, MAX_ENV_VALUE)?;
        if env.contains_key(name) {
            return Err(invalid("secrets", format!("{name} is also in env")));
        }
    }
    Ok((env.clone(), secrets.clone()))
}

/// Custom domains have one way in, the one that verifies them (a host routed on a mere claim
/// could take traffic for a name its owner verified on another service).
pub fn no_domains(domains: &[String]) -> ApiResult<()> {
    match domains.first() {
        None => Ok(()),
        Some(d) => Err(invalid(
            "domains",
            format!(
                "{}: custom domains are added with POST /services/{{id}}/domains \
                 (`stackpad domains add`) and routed once their DNS record is verified",
                tenant::echo(d)
            ),
        )),
    }
}

/// `POST /projects/{id}/services` as sent.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateService {
    pub name: String,
    /// Default: the project's `production` environment.
    #[serde(default)]
    pub environment_id: Option<Uuid>,
    #[serde(default = "web")]
    pub kind: String,
    /// A managed database or cache (`crate::managed`): postgres or mariadb for `database`,
    /// redis for `cache`. Stackpad then picks the image, port, probe and credentials.
    #[serde(default)]
    pub engine: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub git: Option<GitSource>,
    #[serde(default)]
    pub build: BuildInput,
    #[serde(default)]
    pub resources: ResourcesInput,
    #[serde(default)]
    pub health_check: Option<HealthInput>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Persistent volumes (#14); a service with volumes deploys stop-old-then-start-new.
    #[serde(default)]
    pub volumes: Vec<VolumeInput>,
}

/// A volume as sent: `{"name": "data", "mount_path": "/var/lib/data", "size_bytes": 1073741824}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeInput {
    pub name: String,
    pub mount_path: String,
    pub size_bytes: u64,
}

/// Volumes one service may have, and the sizes one may be (the node agent holds the same
/// bounds: ext4 needs a few MiB of its own).
pub const MAX_VOLUMES: usize = 8;
pub const VOLUME_SIZE_BYTES: RangeInclusive<u64> = (16 << 20)..=(1 << 40);
const MAX_MOUNT_PATH: usize = 1024;
/// Where a volume may not be mounted: the kernel's and the platform's own mounts.
const RESERVED_MOUNTS: &[&str] = &["/proc", "/sys", "/dev", "/etc/hosts"];

/// Whether `path` is `dir` or inside it (both normalized absolute paths).
fn is_under(path: &str, dir: &str) -> bool {
    path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// An absolute, normalized mount path (no `.`, `..`, `//`, trailing `/`), not `/`, not on
/// the platform's mounts.
fn mount_path(field: &str, path: &str) -> ApiResult<()> {
    validate::text(field, path, MAX_MOUNT_PATH)?;
    let shown = tenant::echo(path);
    if !path.starts_with('/') || path == "/" {
        return Err(invalid(
            field,
            format!("{shown} must be an absolute path other than /"),
        ));
    }
    if path.chars().any(char::is_control)
        || path[1..]
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(invalid(
            field,
            format!("{shown} must be a plain path (no . or .. parts, no // or trailing /)"),
        ));
    }
    if let Some(r) = RESERVED_MOUNTS.iter().find(|r| is_under(path, r)) {
        return Err(invalid(
            field,
            format!("{shown} is under {r}, which the platform mounts"),
        ));
    }
    Ok(())
}

/// A service's volumes: each named (DNS label) once, at its own path, sized within bounds.
pub fn volumes(given: &[VolumeInput]) -> ApiResult<Vec<Volume>> {
    if given.len() > MAX_VOLUMES {
        return Err(invalid(
            "volumes",
            format!("{} volumes: at most {MAX_VOLUMES}", given.len()),
        ));
    }
    let mut out: Vec<Volume> = Vec::with_capacity(given.len());
    for (i, v) in given.iter().enumerate() {
        validate::name(&format!("volumes[{i}].name"), &v.name)?;
        mount_path(&format!("volumes[{i}].mount_path"), &v.mount_path)?;
        validate::within(
            &format!("volumes[{i}].size_bytes"),
            v.size_bytes,
            VOLUME_SIZE_BYTES,
        )?;
        for other in &out {
            if other.name == v.name {
                return Err(invalid(
                    &format!("volumes[{i}].name"),
                    format!("{} is given twice", v.name),
                ));
            }
            if is_under(&v.mount_path, &other.mount_path)
                || is_under(&other.mount_path, &v.mount_path)
            {
                return Err(invalid(
                    &format!("volumes[{i}].mount_path"),
                    format!(
                        "{} overlaps volume {} at {}",
                        tenant::echo(&v.mount_path),
                        other.name,
                        other.mount_path
                    ),
                ));
            }
        }
        out.push(Volume {
            name: v.name.clone(),
            mount_path: v.mount_path.clone(),
            size_bytes: v.size_bytes,
        });
    }
    Ok(out)
}

fn web() -> String {
    ServiceKind::default().as_str().into()
}

/// A service to create, every field parsed and bounded.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub environment_id: Option<Uuid>,
    pub kind: ServiceKind,
    /// Set for managed services (built by `crate::managed::spec::parse`).
    pub engine: Option<Engine>,
    pub source: Source,
    pub build: BuildSettings,
    pub resources: Resources,
    pub health: Option<Health>,
    pub port: i32,
    /// Whether `port` was given.
    pub port_explicit: bool,
    pub replicas: i32,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    pub webhook_secret: Option<String>,
    pub volumes: Vec<Volume>,
}

impl CreateService {
    pub fn parse(&self) -> ApiResult<ServiceSpec> {
        validate::name("name", &self.name)?;
        let kind = kind(&self.kind)?;
        if self.engine.is_some() {
            return Err(invalid(
                "engine",
                "a managed service is parsed by crate::managed::spec",
            ));
        }
        let source = Source::parse(self.image.as_deref(), self.git.as_ref())?;
        no_domains(&self.domains)?;
        let (env, secrets) = env_vars(&self.env, &self.secrets)?;
        if let Some(secret) = &self.webhook_secret {
            validate::text("webhook_secret", secret, MAX_WEBHOOK_SECRET)?;
        }
        Ok(ServiceSpec {
            name: self.name.clone(),
            environment_id: self.environment_id,
            kind,
            engine: None,
            source,
            build: self.build.parse()?,
            resources: self.resources.parse()?,
            health: self
                .health_check
                .as_ref()
                .map(HealthInput::parse)
                .transpose()?,
            port: port(self.port.unwrap_or(8080))?,
            port_explicit: self.port.is_some(),
            replicas: replicas(self.replicas.unwrap_or(1))?,
            command: argv("command", &self.command)?,
            args: argv("args", &self.args)?,
            env,
            secrets,
            webhook_secret: self.webhook_secret.clone(),
            volumes: volumes(&self.volumes)?,
        })
    }
}

impl ServiceSpec {
    /// What the store is given, in `environment_id`.
    pub fn into_new_service(self, environment_id: Uuid) -> NewService {
        let (image, git_url, git_subdirectory) = match self.source {
            Source::Image(image) => (Some(image), None, Subdirectory::default()),
            Source::Git { url, subdirectory } => (None, Some(url), subdirectory),
        };
        let mut health_check = self.health.map(HealthCheck::from);
        if let (Some(engine), Some(h)) = (self.engine, health_check.as_mut()) {
            h.exec = Some(crate::managed::probe(engine));
        }
        NewService {
            environment_id,
            name: self.name,
            kind: self.kind,
            engine: self.engine,
            image,
            git_url,
            git_subdirectory,
            build: self.build,
            resources: self.resources,
            health_check,
            port: self.port,
            port_explicit: self.port_explicit,
            replicas: self.replicas,
            domains: vec![],
            command: self.command,
            args: self.args,
            env: self.env,
            secrets: self.secrets,
            webhook_secret: self.webhook_secret,
            volumes: self.volumes,
        }
    }
}

/// `PATCH /services/{id}` as sent.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateService {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub resources: Option<ResourcesInput>,
    #[serde(default)]
    pub health_check: Option<HealthInput>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub domains: Option<Vec<String>>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Replaces env vars and secrets when either is given.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub secrets: Option<BTreeMap<String, String>>,
    /// The merge form (not with `env`/`secrets`): variables to set, the others kept...
    #[serde(default)]
    pub env_set: Option<BTreeMap<String, String>>,
    /// ...secrets to set...
    #[serde(default)]
    pub secrets_set: Option<BTreeMap<String, String>>,
    /// ...and variables or secrets to remove.
    #[serde(default)]
    pub unset: Option<Vec<String>>,
    /// The whole set of volumes from now on (added ones are created at the next deploy); one
    /// left out is removed with its data only with `purge_volumes`.
    #[serde(default)]
    pub volumes: Option<Vec<VolumeInput>>,
    #[serde(default)]
    pub purge_volumes: bool,
    /// Fixed at create: accepted only unchanged (`services::update` refuses a change, saying
    /// what to do instead).
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub engine: Option<String>,
}

impl UpdateService {
    pub fn parse(&self) -> ApiResult<ServicePatch> {
        no_domains(self.domains.as_deref().unwrap_or_default())?;
        if self.purge_volumes && self.volumes.is_none() {
            return Err(invalid(
                "purge_volumes",
                "goes with volumes: send the volumes to keep, purge_volumes removes the others",
            ));
        }
        let env = match (&self.env, &self.secrets) {
            (None, None) => None,
            (e, s) => Some(env_vars(
                &e.clone().unwrap_or_default(),
                &s.clone().unwrap_or_default(),
            )?),
        };
        let vars = self.var_change()?;
        if env.is_some() && vars.is_some() {
            return Err(invalid(
                "env_set",
                "give env/secrets (they replace every variable) or env_set/secrets_set/unset \
                 (they change those named), not both",
            ));
        }
        Ok(ServicePatch {
            image: self
                .image
                .as_deref()
                .map(|i| image_ref("image", i))
                .transpose()?,
            resources: self
                .resources
                .as_ref()
                .map(ResourcesInput::parse)
                .transpose()?,
            health_check: self
                .health_check
                .as_ref()
                .map(|h| h.parse().map(HealthCheck::from))
                .transpose()?,
            port: self.port.map(port).transpose()?,
            replicas: self.replicas.map(replicas).transpose()?,
            domains: self.domains.clone(),
            command: self
                .command
                .as_deref()
                .map(|c| argv("command", c))
                .transpose()?,
            args: self.args.as_deref().map(|a| argv("args", a)).transpose()?,
            env,
            vars,
            volumes: self.volumes.as_deref().map(volumes).transpose()?,
        })
    }

    /// The merge form's change, checked like the replace form's (names, sizes, a name both
    /// set and removed refused); errors name `env_set`, `secrets_set` or `unset`.
    fn var_change(&self) -> ApiResult<Option<VarChange>> {
        if self.env_set.is_none() && self.secrets_set.is_none() && self.unset.is_none() {
            return Ok(None);
        }
        let (env, secrets) = env_vars(
            &self.env_set.clone().unwrap_or_default(),
            &self.secrets_set.clone().unwrap_or_default(),
        )
        .map_err(|e| match e {
            ApiError::Invalid { field, message } => {
                let field = match field.split_once('.') {
                    Some(("env", name)) => format!("env_set.{name}"),
                    Some(("secrets", name)) => format!("secrets_set.{name}"),
                    _ if field == "env" => "env_set".to_owned(),
                    _ => "secrets_set".to_owned(),
                };
                ApiError::Invalid { field, message }
            }
            other => other,
        })?;
        let unset = self.unset.clone().unwrap_or_default();
        for name in &unset {
            validate::env_name("unset", name)?;
            if env.contains_key(name) || secrets.contains_key(name) {
                return Err(invalid("unset", format!("{name} is also set")));
            }
        }
        let set = env
            .into_iter()
            .map(|(k, v)| (k, (v, false)))
            .chain(secrets.into_iter().map(|(k, v)| (k, (v, true))))
            .collect();
        Ok(Some(VarChange { set, unset }))
    }
}

#[cfg(test)]
#[path = "service_spec_tests.rs"]
mod tests;
