//! Helpers for Stackpad's black-box tests: where the platform services listen, names a test can
//! own, errors that say which service is missing and how to start it, and the guards every
//! crate's tests share: databases of the test's own ([`db`]) and the deletion of what a test
//! pushed to the registry ([`registry`]), both also when the test fails.
//!
//! Owns: nothing of the product. The tests under `tests/` drive the real daemons and services
//! (containerd, PostgreSQL, ClickHouse, the registry, Pebble, BuildKit, the kernel); a service
//! that is not there fails the test with its name and the command that starts it.
#![forbid(unsafe_code)]

use std::fmt::Display;
use std::future::Future;

pub mod daemon;
pub mod db;
pub mod prometheus;
#[cfg(feature = "registry")]
pub mod registry;
#[cfg(feature = "rest")]
pub mod rest;
pub mod sshd;

#[cfg(feature = "acme")]
pub mod acme;

/// How a newcomer brings every platform service up.
pub const START_SERVICES: &str = "scripts/services up";

/// Addresses of the platform services, from the environment `scripts/services env` prints, with
/// the same defaults.
#[derive(Debug, Clone)]
pub struct Services {
    pub containerd_socket: String,
    pub registry: String,
    pub database_url: String,
    pub clickhouse_url: String,
    pub pebble_directory: String,
    pub pebble_management: String,
    pub pebble_listener_ca: String,
    pub docker_socket: String,
    pub bpffs: String,
}

impl Services {
    /// Reads the addresses from the environment, falling back to the script's defaults.
    pub fn from_env() -> Self {
        let home = var("STACKPAD_HOME", "/var/lib/stackpad");
        Self {
            containerd_socket: var("CONTAINERD_ADDRESS", "/run/containerd/containerd.sock"),
            registry: var("STACKPAD_REGISTRY", "127.0.0.1:5000"),
            database_url: var(
                "DATABASE_URL",
                "postgres://stackpad:stackpad@127.0.0.1:5432/stackpad",
            ),
            clickhouse_url: var("CLICKHOUSE_URL", "http://127.0.0.1:8123"),
            pebble_directory: var("PEBBLE_DIRECTORY", "https://127.0.0.1:14000/dir"),
            pebble_management: var("PEBBLE_MANAGEMENT", "https://127.0.0.1:15000"),
            pebble_listener_ca: var(
                "PEBBLE_LISTENER_CA",
                &format!("{home}/services/pebble/config/listener-ca.pem"),
            ),
            docker_socket: var("DOCKER_HOST", "unix:///run/docker.sock")
                .trim_start_matches("unix://")
                .to_owned(),
            bpffs: var("BPFFS", "/sys/fs/bpf"),
        }
    }
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The error a test returns when a platform service does not answer: names the service, where
/// it was looked for, what went wrong and how to start it.
pub fn service_down(service: &str, address: &str, cause: impl Display) -> anyhow::Error {
    anyhow::anyhow!(
        "{service} is not reachable at {address}: {cause}\n\
         start the platform services with `{START_SERVICES}` (or run the whole suite with scripts/test)"
    )
}

/// A name no other test (or other run) uses: `<prefix>-<12 hex digits>`, lower case, safe for
/// databases, containers, namespaces and image repositories.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// Like [`unique_name`] but with `_`, for SQL identifiers.
pub fn unique_ident(prefix: &str) -> String {
    unique_name(prefix).replace('-', "_")
}

/// Runs `work` to completion on a thread with a runtime of its own and waits for it: for the
/// `Drop` of a guard, which may run inside a test's runtime (where blocking on it would panic)
/// or outside any. A failure is printed, naming `what`; it does not fail the test.
pub fn on_own_thread<F>(what: &str, work: F)
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let outcome = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(work)
    })
    .join();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("{what}: {e:#}"),
        Err(_) => eprintln!("{what}: the cleanup thread panicked"),
    }
}
