//! Managed database and cache services (#14): `kind: database` with `engine: postgres|mariadb`,
//! `kind: cache` with `engine: redis`. Stackpad picks the image (`scripts/base-images` builds
//! `stackpad/<engine>:<version>` from Debian packages), generates the credentials (stored as the
//! service's own secrets, sealed like every secret), probes the engine with its own check inside
//! the container (exec probe), sizes its memory from the service's limit (the entrypoint reads
//! `STACKPAD_MEMORY_LIMIT_BYTES`) and never exposes it: no route, no public host, no domains.
//!
//! Other services of the same project and environment reach it at
//! `<service>.<environment>.internal` (also by its bare name) and get its connection string by
//! reference (`refs`): `DATABASE_URL = "${{ db.DATABASE_URL }}"`, resolved by the pipeline at
//! deploy time, so a rotated password reaches them on their next deploy.

pub mod refs;
pub mod spec;

use std::collections::BTreeMap;

use ::api::Engine;
use rand::RngCore;

/// The one user and database Stackpad creates in a managed database.
pub const USER: &str = "app";
pub const DATABASE: &str = "app";

/// The repository of an engine's image in the platform registry (tag: [`Engine::version`]).
pub fn image(registry: &str, engine: Engine) -> String {
    format!(
        "{registry}/stackpad/{}:{}",
        engine.as_str(),
        engine.version()
    )
}

/// The port the engine listens on inside the project network.
pub const fn port(engine: Engine) -> u16 {
    match engine {
        Engine::Postgres => 5432,
        Engine::Mariadb => 3306,
        Engine::Redis => 6379,
    }
}

/// Memory given when the request names none (the entrypoints size caches from it).
pub const fn default_memory_bytes(engine: Engine) -> u64 {
    match engine {
        Engine::Postgres | Engine::Mariadb => 512 << 20,
        Engine::Redis => 256 << 20,
    }
}

/// Where the engine keeps its data (the entrypoints' defaults): a volume of the service.
pub const fn data_dir(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "/var/lib/postgresql/data",
        Engine::Mariadb => "/var/lib/mysql",
        Engine::Redis => "/var/lib/redis",
    }
}

/// The data volume's size when the request names none.
pub const fn default_volume_bytes(engine: Engine) -> u64 {
    match engine {
        Engine::Postgres | Engine::Mariadb => 1 << 30,
        Engine::Redis => 512 << 20,
    }
}

/// The engine's own readiness check, run inside the container by the node agent.
pub fn probe(engine: Engine) -> Vec<String> {
    let argv: &[&str] = match engine {
        Engine::Postgres => &["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"],
        // `ping` answers 0 once the server accepts connections, whatever the credentials.
        Engine::Mariadb => &["mariadb-admin", "ping", "--silent", "-h", "127.0.0.1"],
        Engine::Redis => &[
            "sh",
            "-c",
            "[ \"$(REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli -h 127.0.0.1 ping)\" = PONG ]",
        ],
    };
    argv.iter().map(|s| (*s).to_owned()).collect()
}

/// The secret holding the engine's password (the entrypoint applies it at every start).
pub const fn password_var(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "POSTGRES_PASSWORD",
        Engine::Mariadb => "MARIADB_PASSWORD",
        Engine::Redis => "REDIS_PASSWORD",
    }
}

/// A new password: 32 hex digits (128 bits) from the OS; safe in URLs, SQL quotes and configs.
pub fn generate_password() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The env vars and secrets the engine's entrypoint reads (see `scripts/engines/`).
pub fn container_env(
    engine: Engine,
    password: &str,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let env: &[(&str, &str)] = match engine {
        Engine::Postgres => &[("POSTGRES_USER", USER), ("POSTGRES_DB", DATABASE)],
        Engine::Mariadb => &[("MARIADB_USER", USER), ("MARIADB_DATABASE", DATABASE)],
        Engine::Redis => &[],
    };
    let env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let secrets = BTreeMap::from([(password_var(engine).to_owned(), password.to_owned())]);
    (env, secrets)
}

/// The stable name other services of the environment reach a service by.
pub fn internal_host(service: &str, environment: &str) -> String {
    format!("{service}.{environment}.internal")
}

/// What a managed service offers to references (`${{ <service>.<VAR> }}`): its connection
/// string and parts, from the password in its stored `env`. `None` when the password is missing.
pub fn exports(
    engine: Engine,
    host: &str,
    env: &BTreeMap<String, String>,
) -> Option<BTreeMap<String, String>> {
    let password = env.get(password_var(engine))?;
    let port = port(engine).to_string();
    let pairs: Vec<(&str, String)> = match engine {
        Engine::Postgres => vec![
            (
                "DATABASE_URL",
                format!("postgres://{USER}:{password}@{host}:{port}/{DATABASE}"),
            ),
            ("PGHOST", host.to_owned()),
            ("PGPORT", port),
            ("PGUSER", USER.to_owned()),
            ("PGPASSWORD", password.clone()),
            ("PGDATABASE", DATABASE.to_owned()),
        ],
        Engine::Mariadb => vec![
            (
                "DATABASE_URL",
                format!("mysql://{USER}:{password}@{host}:{port}/{DATABASE}"),
            ),
            ("MYSQL_HOST", host.to_owned()),
            ("MYSQL_PORT", port),
            ("MYSQL_USER", USER.to_owned()),
            ("MYSQL_PASSWORD", password.clone()),
            ("MYSQL_DATABASE", DATABASE.to_owned()),
        ],
        Engine::Redis => vec![
            (
                "REDIS_URL",
                format!("redis://default:{password}@{host}:{port}"),
            ),
            ("REDIS_HOST", host.to_owned()),
            ("REDIS_PORT", port),
            ("REDIS_PASSWORD", password.clone()),
        ],
    };
    Some(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_the_platform_registrys_engine_images() {
        assert_eq!(
            image("127.0.0.1:5000", Engine::Mariadb),
            "127.0.0.1:5000/stackpad/mariadb:10.11"
        );
        assert_eq!(image("r:1", Engine::Postgres), "r:1/stackpad/postgres:15");
    }

    #[test]
    fn passwords_are_fresh_hex() {
        let (a, b) = (generate_password(), generate_password());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn exports_build_the_connection_string_from_the_stored_password() {
        let (env, secrets) = container_env(Engine::Postgres, "pw");
        let mut all = env;
        all.extend(secrets);
        let x = exports(Engine::Postgres, "db.production.internal", &all).unwrap();
        assert_eq!(
            x["DATABASE_URL"],
            "postgres://app:pw@db.production.internal:5432/app"
        );
        assert_eq!(x["PGPASSWORD"], "pw");
        let (_, secrets) = container_env(Engine::Redis, "s3");
        let x = exports(Engine::Redis, "cache.staging.internal", &secrets).unwrap();
        assert_eq!(
            x["REDIS_URL"],
            "redis://default:s3@cache.staging.internal:6379"
        );
        assert!(exports(Engine::Mariadb, "h", &BTreeMap::new()).is_none());
    }
}
