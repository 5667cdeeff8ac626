//! A managed service's create request: the engine checked against the kind, the fields a
//! managed service does not take refused (Stackpad picks the image, command, port, health
//! check and credentials), then the ordinary service spec is built from what Stackpad picked,
//! so every bound of `api::service_spec` holds for it too.

use ::api::{Engine, ServiceKind};

use crate::api::error::{ApiResult, invalid};
use crate::api::service_spec::{
    CreateService, HealthInput, ResourcesInput, ServiceSpec, UpdateService, VolumeInput,
};

/// How long a managed engine may take to pass its probe on first start (initdb included).
pub const HEALTH_DEADLINE_MS: u64 = 120_000;
pub const HEALTH_INTERVAL_MS: u64 = 250;

/// The engine a request names, checked against its kind; `None` = not a managed service.
pub fn engine(kind: &str, engine: Option<&str>) -> ApiResult<Option<Engine>> {
    let Some(name) = engine else {
        return Ok(None);
    };
    let engine: Engine = name
        .parse()
        .map_err(|e: ::api::UnknownValue| invalid("engine", e.to_string()))?;
    let kind: ServiceKind = kind
        .parse()
        .map_err(|_| invalid("kind", "must be web, database, cache or worker"))?;
    if engine.kind() == kind {
        return Ok(Some(engine));
    }
    let allowed: Vec<&str> = Engine::for_kind(kind).iter().map(|e| e.as_str()).collect();
    Err(invalid(
        "engine",
        if allowed.is_empty() {
            format!(
                "{name}: a {kind} service has no engine (engines are for database and cache services)"
            )
        } else {
            format!(
                "{name} is a {} engine; a {kind} service takes {}",
                engine.kind(),
                allowed.join(" or ")
            )
        },
    ))
}

/// The spec of a managed service: `req` names an engine; `registry` is the platform's.
pub fn parse(req: &CreateService, engine: Engine, registry: &str) -> ApiResult<ServiceSpec> {
    let refuse = |field: &str, given: bool| -> ApiResult<()> {
        if given {
            Err(invalid(
                field,
                format!(
                    "a managed {} service ({}) takes no {field}: Stackpad picks it",
                    engine.kind(),
                    engine
                ),
            ))
        } else {
            Ok(())
        }
    };
    refuse("image", req.image.is_some())?;
    refuse("git", req.git.is_some())?;
    refuse("command", !req.command.is_empty())?;
    refuse("args", !req.args.is_empty())?;
    refuse("health_check", req.health_check.is_some())?;
    refuse("port", req.port.is_some())?;
    refuse("webhook_secret", req.webhook_secret.is_some())?;
    if !req.domains.is_empty() {
        return Err(invalid(
            "domains",
            "a managed service is reachable only inside its project and environment: no domains",
        ));
    }
    if req.replicas.is_some_and(|r| r != 1) {
        return Err(invalid("replicas", "a managed service runs one replica"));
    }
    let password = super::generate_password();
    let (engine_env, engine_secrets) = super::container_env(engine, &password);
    for name in engine_env.keys().chain(engine_secrets.keys()) {
        if req.env.contains_key(name) || req.secrets.contains_key(name) {
            return Err(invalid(
                "env",
                format!("{name} is set by Stackpad for a managed {engine} service"),
            ));
        }
    }
    let volumes = data_volume(req, engine)?;
    let mut env = req.env.clone();
    env.extend(engine_env);
    let mut secrets = req.secrets.clone();
    secrets.extend(engine_secrets);
    let normal = CreateService {
        name: req.name.clone(),
        environment_id: req.environment_id,
        kind: engine.kind().as_str().into(),
        engine: None,
        image: Some(super::image(registry, engine)),
        git: None,
        build: Default::default(),
        resources: ResourcesInput {
            cpu_millis: req.resources.cpu_millis,
            memory_bytes: Some(
                req.resources
                    .memory_bytes
                    .unwrap_or(super::default_memory_bytes(engine)),
            ),
        },
        health_check: Some(HealthInput {
            path: None,
            interval_ms: Some(HEALTH_INTERVAL_MS),
            deadline_ms: Some(HEALTH_DEADLINE_MS),
        }),
        port: Some(super::port(engine).into()),
        replicas: Some(1),
        domains: vec![],
        command: vec![],
        args: vec![],
        env,
        secrets,
        webhook_secret: None,
        volumes,
    };
    let mut spec = normal.parse()?;
    spec.engine = Some(engine);
    Ok(spec)
}

/// The engine's data directory as a volume of its own, so its data survives redeploys: the
/// default size, or the size of the one volume the request gives at that directory.
fn data_volume(req: &CreateService, engine: Engine) -> ApiResult<Vec<VolumeInput>> {
    let path = super::data_dir(engine);
    let size_bytes = match req.volumes.as_slice() {
        [] => super::default_volume_bytes(engine),
        [v] if v.mount_path == path => v.size_bytes,
        _ => {
            return Err(invalid(
                "volumes",
                format!(
                    "a managed {engine} service has one volume, at {path}: give none (default \
                     size) or that one with its size_bytes"
                ),
            ));
        }
    };
    Ok(vec![VolumeInput {
        name: "data".into(),
        mount_path: path.into(),
        size_bytes,
    }])
}

/// A change of a managed service: its resources only (memory and CPU; the engine sizes its
/// caches from the memory limit at its next start). Everything Stackpad picked is refused.
pub fn check_patch(req: &UpdateService, engine: Engine) -> ApiResult<()> {
    let given = [
        ("image", req.image.is_some()),
        ("health_check", req.health_check.is_some()),
        ("port", req.port.is_some()),
        ("replicas", req.replicas.is_some_and(|r| r != 1)),
        (
            "domains",
            req.domains.as_ref().is_some_and(|d| !d.is_empty()),
        ),
        ("command", req.command.is_some()),
        ("args", req.args.is_some()),
        // Replacing env would drop the generated credentials: rotate them instead.
        ("env", req.env.is_some()),
        ("secrets", req.secrets.is_some()),
        ("env_set", req.env_set.is_some()),
        ("secrets_set", req.secrets_set.is_some()),
        ("unset", req.unset.is_some()),
        // Its data volume is the platform's.
        ("volumes", req.volumes.is_some()),
    ];
    match given.iter().find(|(_, g)| *g) {
        None => Ok(()),
        Some((field, _)) => Err(invalid(
            field,
            format!(
                "a managed {} service ({engine}) changes only its resources; its credentials \
                 change with POST /services/{{id}}/credentials/rotate",
                engine.kind()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: &str, engine: &str) -> CreateService {
        serde_json::from_value(serde_json::json!({
            "name": "db", "kind": kind, "engine": engine,
        }))
        .unwrap()
    }

    fn message(e: crate::api::error::ApiError) -> String {
        format!("{e:?}")
    }

    #[test]
    fn an_engine_must_fit_the_kind_and_the_error_names_it() {
        assert_eq!(
            engine("database", Some("postgres")).unwrap(),
            Some(Engine::Postgres)
        );
        assert_eq!(engine("cache", Some("redis")).unwrap(), Some(Engine::Redis));
        assert_eq!(engine("database", None).unwrap(), None);
        let e = message(engine("cache", Some("postgres")).unwrap_err());
        assert!(
            e.contains("postgres is a database engine; a cache service takes redis"),
            "{e}"
        );
        let e = message(engine("database", Some("mongo")).unwrap_err());
        assert!(
            e.contains("mongo") && e.contains("postgres, mariadb, redis"),
            "{e}"
        );
        let e = message(engine("web", Some("redis")).unwrap_err());
        assert!(e.contains("a web service has no engine"), "{e}");
    }

    #[test]
    fn stackpad_picks_image_port_probe_memory_and_a_sealed_password() {
        let spec = parse(&request("database", "postgres"), Engine::Postgres, "r:5000").unwrap();
        assert_eq!(spec.engine, Some(Engine::Postgres));
        assert_eq!(spec.port, 5432);
        assert_eq!(spec.resources.memory_bytes, 512 << 20);
        assert_eq!(spec.env["POSTGRES_USER"], "app");
        assert_eq!(spec.secrets["POSTGRES_PASSWORD"].len(), 32);
        assert_eq!(spec.volumes.len(), 1);
        assert_eq!(spec.volumes[0].mount_path, "/var/lib/postgresql/data");
        assert_eq!(spec.volumes[0].size_bytes, 1 << 30);
        assert!(!spec.env.contains_key("POSTGRES_PASSWORD"));
        let new = spec.into_new_service(uuid::Uuid::nil());
        assert_eq!(
            new.image.unwrap().to_string(),
            "r:5000/stackpad/postgres:15"
        );
        assert_eq!(new.health_check.unwrap().exec.unwrap()[0], "pg_isready");
        assert_eq!(new.engine, Some(Engine::Postgres));
    }

    #[test]
    fn fields_stackpad_picks_are_refused_by_name() {
        let mut req = request("cache", "redis");
        req.image = Some("redis:7".into());
        let e = message(parse(&req, Engine::Redis, "r").unwrap_err());
        assert!(
            e.contains("image") && e.contains("Stackpad picks it"),
            "{e}"
        );
        let mut req = request("cache", "redis");
        req.domains = vec!["cache.example.com".into()];
        assert!(message(parse(&req, Engine::Redis, "r").unwrap_err()).contains("no domains"));
        let mut req = request("database", "mariadb");
        req.secrets.insert("MARIADB_PASSWORD".into(), "mine".into());
        let e = message(parse(&req, Engine::Mariadb, "r").unwrap_err());
        assert!(e.contains("MARIADB_PASSWORD is set by Stackpad"), "{e}");
    }
}
