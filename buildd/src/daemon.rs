//! Wiring: the context listener, the pipeline, the queue, the gRPC service and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::build::{ContextTransport, Pipeline};
use crate::buildkit::Endpoint;
use crate::config::Config;
use crate::context::ContextServer;
use crate::engine::Engine;
use crate::manager::{Builds, Limits};
use crate::service::BuilderService;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find the fetch sandbox's helper (this executable): {0}")]
    Helper(#[source] std::io::Error),
    #[error("cannot create work_dir {path}: {source}")]
    WorkDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running daemon: its bound addresses and its builds.
#[derive(Debug)]
pub struct Daemon {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub builds: Builds<Pipeline>,
    server: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Validates `config`, binds every listener and serves in the background.
    pub async fn start(config: Config) -> Result<Self, DaemonError> {
        config.validate()?;
        std::fs::create_dir_all(&config.work_dir).map_err(|source| DaemonError::WorkDir {
            path: config.work_dir.display().to_string(),
            source,
        })?;
        // Checkouts left by a previous run that stopped mid-build: nothing else lives here.
        crate::source::sandbox::unmount_stale(&config.work_dir);
        if let Ok(entries) = std::fs::read_dir(&config.work_dir) {
            for entry in entries.flatten() {
                // The dependency cache is kept: a restart re-downloads nothing.
                if entry.file_name() == crate::source::deps::DEPS_DIR {
                    continue;
                }
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let contexts = ContextServer::start(config.context_listen).await?;
        let buildkit = match config.buildkit.kind.as_str() {
            "buildkitd" => Endpoint::Buildkitd(config.buildkit.socket.clone()),
            _ => Endpoint::Dockerd(config.buildkit.socket.clone()),
        };
        let network_mode = match config.network_mode.as_str() {
            "default" => String::new(),
            other => other.to_owned(),
        };
        let fetch =
            crate::source::FetchSettings::from_config(&config).map_err(DaemonError::Helper)?;
        let pipeline = Pipeline {
            fetch: Arc::new(fetch),
            buildkit,
            engine: Engine::new(&config.buildkit.docker_socket)
                .with_auth(config.registry_auth.clone()),
            contexts,
            bases: config.base_images.clone(),
            work_dir: config.work_dir.clone(),
            network_mode,
            context_transport: match config.context_transport.as_str() {
                "http" => ContextTransport::Http,
                _ => ContextTransport::Session,
            },
        };
        let builds = Builds::new(
            pipeline,
            Limits {
                max_running: config.max_concurrent_builds,
                default_timeout: std::time::Duration::from_secs(config.default_timeout_seconds),
                default_memory_bytes: config.default_memory_limit_bytes,
                keep_ended: config.keep_ended_builds,
            },
        );
        let listen = |addr: SocketAddr, what: &'static str| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Listen { addr, what, source })
        };
        let grpc = listen(config.listen, "listen").await?;
        let metrics = listen(config.metrics_listen, "metrics_listen").await?;
        let grpc_addr = grpc.local_addr().map_err(|source| DaemonError::Listen {
            addr: config.listen,
            what: "listen",
            source,
        })?;
        let metrics_addr = metrics.local_addr().map_err(|source| DaemonError::Listen {
            addr: config.metrics_listen,
            what: "metrics_listen",
            source,
        })?;
        // mTLS when configured (files reloaded on change); plain text only on loopback
        // (`Config::validate`).
        let tls = match &config.tls {
            Some(files) => Some(pki::server_config(
                pki::Material::from_files(files).map_err(|e| crate::config::ConfigError {
                    key: "tls",
                    reason: e.to_string(),
                })?,
                pki::Accept::control(),
            )),
            None => None,
        };
        let service = BuilderService::new(builds.clone()).into_server();
        let metrics_builds = Arc::new(builds.clone());
        let metrics_app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let b = metrics_builds.clone();
                async move {
                    let (running, waiting) = b.load();
                    b.metrics().render(running, waiting)
                }
            }),
        );
        let server = tokio::spawn(async move {
            let grpc = tonic::transport::Server::builder()
                .add_service(service)
                // No Nagle (pki::incoming sets it): small status/log messages must not wait
                // for delayed ACKs.
                .serve_with_incoming(pki::incoming(grpc, tls));
            let metrics = axum::serve(metrics, metrics_app);
            tokio::select! {
                r = grpc => if let Err(e) = r { tracing::error!(error = %e, "gRPC server stopped") },
                r = metrics => if let Err(e) = r { tracing::error!(error = %e, "metrics server stopped") },
            }
        });
        tracing::info!(%grpc_addr, %metrics_addr, "stackpad-buildd listening");
        Ok(Self {
            grpc_addr,
            metrics_addr,
            builds,
            server,
        })
    }

    /// Serves until the servers stop.
    pub async fn wait(mut self) {
        let _ = (&mut self.server).await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.server.abort();
    }
}
