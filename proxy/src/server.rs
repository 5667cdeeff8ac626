//! Assembles and runs the daemon: the state (restored from the state file), the admin listener
//! with its health checkers on a small Tokio runtime, and the Pingora server with the plain and
//! TLS listeners.

use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::Server;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::services::listening::Service;

use crate::access_log::AccessLog;
use crate::acme::TlsState;
use crate::certs::{self, CertificateTable};
use crate::config::{ConfigError, ProxyConfig};
use crate::drain::{Drain, GracefulApp, OnDrained};
use crate::http::StackpadProxy;
use crate::keepalive::KeepAlive;
use crate::metrics::Metrics;
use crate::public_tls::{self, TlsTerminate};
use crate::state::{ProxyState, StateError};
use crate::store::StateFile;

/// The daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cert(#[from] certs::CertError),
    #[error("admin runtime: {0}")]
    Runtime(std::io::Error),
    #[error("admin listener {addr}: {source}")]
    AdminListen {
        addr: String,
        source: std::io::Error,
    },
    #[error("config key admin_tls: {0}")]
    AdminTls(pki::PkiError),
    #[error("config key tls_listen: {0:?} has no port")]
    TlsListen(String),
    #[error("TLS listener: {0}")]
    Tls(rustls::Error),
}

/// Starts everything and serves until the process is told to stop (SIGTERM: graceful
/// shutdown; SIGQUIT: graceful upgrade handing the listeners to a new process started with
/// `upgrade`). Never returns on success.
pub fn run(config: ProxyConfig, upgrade: bool) -> Result<(), StartError> {
    config.validate()?;
    let _ = rustls::crypto::ring::default_provider().install_default();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("stackpad-admin")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let metrics = Arc::new(Metrics::default());
    let access_log = config.access_log_clickhouse.clone().map(|settings| {
        tracing::info!(url = %settings.clickhouse_url, database = %settings.database, "access log rows to ClickHouse");
        Arc::new(AccessLog::start(
            settings,
            Arc::clone(&metrics.access_log),
            runtime.handle(),
        ))
    });
    let state = ProxyState::restore(
        Some(StateFile::new(&config.state_file)),
        metrics,
        runtime.handle().clone(),
        crate::wake::Wakes::new(
            ProxyConfig::ms(config.wake_timeout_ms),
            ProxyConfig::ms(config.wake_reask_ms),
        ),
    )?;
    let routes = state.snapshot().routes.routes().len();
    tracing::info!(routes, state_file = %config.state_file.display(), "state restored");

    let table = Arc::new(CertificateTable::default());
    let tls_state = TlsState::new(Arc::clone(&table));
    if let Some(acme) = &config.acme {
        tls_state.start(acme.clone(), runtime.handle());
    }
    start_admin(
        &runtime,
        &config,
        Arc::clone(&state),
        Arc::clone(&tls_state),
        upgrade,
    )?;

    let mut conf = ServerConf {
        threads: config.threads,
        work_stealing: config.work_stealing,
        upstream_keepalive_pool_size: config.upstream_keepalive_pool_size,
        grace_period_seconds: Some(config.grace_period_secs),
        graceful_shutdown_timeout_seconds: Some(config.grace_period_secs.min(10)),
        upgrade_sock: config.upgrade_sock.display().to_string(),
        pid_file: config.pid_file.display().to_string(),
        ..ServerConf::default()
    };
    conf.daemon = false;
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let drain = Arc::new(Drain::default());
    let app = StackpadProxy::new(Arc::clone(&state), &config)
        .with_tls(Arc::clone(&tls_state), config.tls_listen.is_some())
        .with_access_log(access_log)
        .with_drain(Arc::clone(&drain));
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, app);
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    // Idle h2 connections end after the idle timeout too (HTTP/1: [`KeepAlive`]).
    options.h2_idle_timeout = Some(ProxyConfig::ms(config.idle_timeout_ms));
    proxy.server_options = Some(options);
    // Pingora sleeps out the whole grace period after a shutdown or upgrade; the drain exits
    // as soon as the last connection has been answered.
    let exit: OnDrained = Box::new(|| std::process::exit(0));
    // The TLS listener is a TCP one: the handshake is ours (public_tls), for shared tickets.
    let tls = match (
        &config.tls_listen,
        &config.tls_cert_file,
        &config.tls_key_file,
    ) {
        (Some(addr), Some(cert), Some(key)) => {
            table.set_default(Arc::new(certs::load_pem_files(cert, key)?));
            let port = addr
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse().ok())
                .ok_or_else(|| StartError::TlsListen(addr.clone()))?;
            Some((addr, port))
        }
        _ => None,
    };
    let tickets = config
        .acme
        .as_ref()
        .map(|acme| (Arc::clone(tls_state.ticket_keys()), acme.tickets()));
    let tls_config = public_tls::server_config(table.clone(), tickets).map_err(StartError::Tls)?;
    let proxy = KeepAlive::new(
        proxy,
        Arc::clone(&drain),
        ProxyConfig::ms(config.idle_timeout_ms),
    );
    let proxy = TlsTerminate::new(proxy, tls_config, tls.map_or(0, |(_, port)| port));
    let app = GracefulApp::new(
        proxy,
        drain,
        ProxyConfig::ms(config.shutdown_idle_close_ms),
        exit,
    );
    let mut service = Service::new("stackpad-proxy".to_owned(), app);
    // Pingora's default 64 KiB read buffer per connection costs ~64 KiB of RSS per idle
    // keep-alive connection; plain HTTP reads into the parser's own buffer anyway. Its write
    // buffer, kept for the connection's life too, is replaced by `LazyWriteBuffer` (freed
    // between responses).
    let plain_buffer = L4BufferSettings::new(config.plain_read_buffer_bytes, 0);
    let tls_buffer = L4BufferSettings::new(config.tls_read_buffer_bytes, 0);
    if let Some(addr) = &config.http_listen {
        service.add_listener(ListenerConfig::tcp(addr.as_str()).l4_buffer(plain_buffer));
    }
    if let Some((addr, _)) = tls {
        service.add_listener(ListenerConfig::tcp(addr.as_str()).l4_buffer(tls_buffer));
    }
    server.add_service(service);
    tracing::info!(http = ?config.http_listen, tls = ?config.tls_listen, admin = %config.admin_listen, "stackpad-proxy serving");
    // Keep the admin runtime alive for the life of the process.
    let _runtime = runtime;
    server.run_forever()
}

fn start_admin(
    runtime: &tokio::runtime::Runtime,
    config: &ProxyConfig,
    state: Arc<ProxyState>,
    tls: Arc<TlsState>,
    upgrade: bool,
) -> Result<(), StartError> {
    let addr = config.admin_listen.clone();
    let token = config.admin_token.clone();
    let admin_tls =
        crate::admin::admin_tls(config.admin_tls.as_ref()).map_err(StartError::AdminTls)?;
    if upgrade {
        // During a graceful upgrade the old process holds the admin port until it exits:
        // bind in the background, retrying, so the listener handover is not held up.
        runtime.spawn(async move {
            for _ in 0..1200 {
                if let Ok(listener) = tokio::net::TcpListener::bind(&addr).await {
                    if let Err(e) =
                        crate::admin::serve(listener, state, tls, token, admin_tls).await
                    {
                        tracing::error!(error = %e, "admin listener stopped");
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tracing::error!(%addr, "admin listener never became free after the upgrade");
        });
        return Ok(());
    }
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&addr))
        .map_err(|source| StartError::AdminListen {
            addr: addr.clone(),
            source,
        })?;
    runtime.spawn(async move {
        if let Err(e) = crate::admin::serve(listener, state, tls, token, admin_tls).await {
            tracing::error!(error = %e, "admin listener stopped");
        }
    });
    Ok(())
}
