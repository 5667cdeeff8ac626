//! `stackpad-control` assembled: the API server, the pipeline workers, the node monitor and the
//! custom-domain verifier.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::api::{self, AppState};
use crate::clients::grpc::{GrpcBuilder, GrpcNode, GrpcProxy};
use crate::config::Config;
use crate::crypto::SecretBox;
use crate::domains::resolver::{DnsLookup, HickoryLookup};
use crate::domains::verifier::{DomainSettings, Verifier};
use crate::pipeline::driver::{Clients, Driver, DriverConfig};
use crate::pipeline::jobs::run_singleton;
use crate::pipeline::monitor::Monitor;
use crate::pipeline::worker::run_worker;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("listening on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("config key dns_resolver: {0}")]
    Resolver(String),
    #[error(
        "the platform CA stored in the database cannot be opened with this config's encryption_key \
         (it was sealed with another key): start control with the encryption_key the database was \
         set up with; if no node ever joined with this CA, `DELETE FROM platform_ca` lets control \
         create a new one (nodes with certificates of the old CA must join again)"
    )]
    PlatformCaSealedWithAnotherKey,
}

/// The real clients for a config. Daemons at `https://` addresses are reached over mTLS with
/// control's certificate of the platform CA (read from `database_url` on first use).
pub fn grpc_clients(config: &Config) -> Clients {
    let tls = platform_tls(config);
    Clients {
        builder: Arc::new(GrpcBuilder::with_tls(tls.clone())),
        node: Arc::new(GrpcNode::with_tls(tls.clone())),
        proxy: (!config.proxy_address.is_empty()).then(|| {
            Arc::new(GrpcProxy::new(&config.proxy_address, &config.proxy_token).with_tls(tls)) as _
        }),
    }
}

/// Control's platform TLS over a lazily connected store; none for a config `start` refuses
/// anyway (bad key or database URL).
fn platform_tls(config: &Config) -> Option<Arc<crate::clients::tls::PlatformTls>> {
    let secrets = SecretBox::from_hex(&config.encryption_key).ok()?;
    let store = Store::connect_lazy(&config.database_url, secrets).ok()?;
    Some(crate::clients::tls::PlatformTls::new(store))
}

pub fn driver_config(config: &Config) -> DriverConfig {
    DriverConfig {
        registry: config.registry.clone(),
        apps_domain: config.apps_domain.clone(),
        lease: config.lease(),
        health_deadline_ms: config.health_deadline_ms,
        drain_deadline_ms: config.drain_deadline_ms,
        stop_grace_ms: config.stop_grace_ms,
        build_timeout_s: config.build_timeout_s,
        ..DriverConfig::default()
    }
}

/// A running control plane.
#[derive(Debug)]
pub struct Running {
    pub address: std::net::SocketAddr,
    pub store: Store,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops accepting, hands claimed deployments back, waits for every task.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Connects to PostgreSQL (applying migrations), registers the configured nodes, and starts
/// the API on `listener`, `config.workers` pipeline workers and the node monitor.
pub async fn start(
    config: &Config,
    listener: TcpListener,
    clients: Clients,
) -> Result<Running, DaemonError> {
    config.validate()?;
    let secrets = SecretBox::from_hex(&config.encryption_key)
        .map_err(crate::config::ConfigError::from_crypto)?;
    let store = Store::connect(&config.database_url, secrets).await?;
    // Bootstrap: the platform CA exists from the first start on (#15).
    store.platform_ca().await.map_err(|e| match e {
        StoreError::Crypto(crate::crypto::CryptoError::Decrypt { .. }) => {
            DaemonError::PlatformCaSealedWithAnotherKey
        }
        other => DaemonError::Store(other),
    })?;
    for n in &config.nodes {
        store
            .register_node(&n.name, n.role()?, &n.address, n.cpu_millis, n.memory_bytes)
            .await?;
    }
    let address = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen {
            address: config.listen.to_string(),
            source,
        })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let wake = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    // Several instances may share the database (#15): each periodic job runs in the one holding
    // its lease (pipeline::jobs), deployments are claimed one worker at a time (pipeline::worker).
    let instance = uuid::Uuid::new_v4();
    let job_lease = config.lease();

    let mut state = AppState::new(
        store.clone(),
        wake.clone(),
        &config.admin_token,
        &config.apps_domain,
    );
    let build_logs = (!config.clickhouse_url.is_empty()).then(|| {
        crate::buildlogs::BuildLogStore::new(
            &config.clickhouse_url,
            &config.clickhouse_database,
            config.build_log_retention_days,
        )
    });
    if !config.clickhouse_url.is_empty() {
        state = state.with_logs(crate::logsearch::LogSearch::new(
            &config.clickhouse_url,
            &config.clickhouse_database,
        ));
    }
    if let Some(build_logs) = &build_logs {
        state = state.with_build_logs(build_logs.clone());
    }
    let dns: Arc<dyn DnsLookup> = match config.dns_resolver_address()? {
        Some(nameserver) => Arc::new(HickoryLookup::with_nameserver(nameserver)),
        None => Arc::new(HickoryLookup::system().map_err(DaemonError::Resolver)?),
    };
    let verifier = Arc::new(Verifier::new(
        store.clone(),
        dns,
        clients.proxy.clone(),
        DomainSettings {
            apps_domain: config.apps_domain.clone(),
            ingress_ips: config.ingress_ips.clone(),
        },
    ));
    // The same rules for git sources at the API edge and when the pipeline builds one.
    let sources = crate::api::sources::SourcePolicy::from_config(config)?;
    state = state
        .with_sources(sources.clone())
        .with_domains(verifier.clone())
        .with_teardown(
            clients.clone(),
            config.stop_grace_ms,
            Duration::from_secs(config.volume_grace_secs),
        );
    {
        let verifier = verifier.clone();
        let every = Duration::from_millis(config.domain_check_interval_ms);
        tasks.spawn(run_singleton(
            store.clone(),
            "domain-checks",
            instance,
            job_lease,
            shutdown_rx.clone(),
            move |stop| verifier.clone().run(every, stop),
        ));
    }
    if !config.clickhouse_url.is_empty() && config.log_retention_interval_ms > 0 {
        let retention = crate::logretention::Retention::new(
            &config.clickhouse_url,
            &config.clickhouse_database,
        );
        let every = Duration::from_millis(config.log_retention_interval_ms);
        tasks.spawn(run_singleton(
            store.clone(),
            "log-retention",
            instance,
            job_lease,
            shutdown_rx.clone(),
            move |stop| retention.clone().run(every, stop),
        ));
    }
    let backups = crate::backups::Backups::new(
        store.clone(),
        config.backups.clone(),
        &config.registry,
        platform_tls(config),
    )
    .map_err(|e| crate::config::ConfigError::Invalid {
        key: "backups.store",
        reason: e.to_string(),
    })?;
    state = state.with_backups(backups.clone());
    if config.backups.interval_ms > 0 {
        let backups = backups.clone();
        let every = Duration::from_millis(config.backups.interval_ms);
        tasks.spawn(run_singleton(
            store.clone(),
            "backup-scheduler",
            instance,
            job_lease,
            shutdown_rx.clone(),
            move |stop| backups.clone().run_scheduler(every, stop),
        ));
    }
    let http_metrics = Arc::new(crate::metrics::HttpMetrics::default());
    let app = api::router(state).layer(axum::middleware::from_fn_with_state(
        http_metrics.clone(),
        crate::metrics::track,
    ));
    if let Some(at) = config.metrics_listen {
        let metrics_listener =
            TcpListener::bind(at)
                .await
                .map_err(|source| DaemonError::Listen {
                    address: at.to_string(),
                    source,
                })?;
        // The volumes' figures: refreshed by this process in the background, read by scrapes.
        let volumes = Arc::new(crate::metrics::volumes::VolumeGauges::new(
            Duration::from_millis(config.volume_metrics_interval_ms),
        ));
        tasks.spawn(
            volumes
                .clone()
                .run(store.clone(), clients.clone(), shutdown_rx.clone()),
        );
        let metrics = crate::metrics::router(store.clone(), http_metrics, Some(volumes));
        let mut rx = shutdown_rx.clone();
        tasks.spawn(async move {
            let serve = axum::serve(metrics_listener, metrics).with_graceful_shutdown(async move {
                let _ = rx.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
    }
    let mut rx = shutdown_rx.clone();
    tasks.spawn(async move {
        // The peer address is the source the webhook rate limit counts by.
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = rx.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "API server stopped");
        }
    });

    let dconfig = driver_config(config);
    for _ in 0..config.workers {
        let mut driver = Driver::new(store.clone(), clients.clone(), dconfig.clone())
            .with_sources(sources.clone());
        if let Some(build_logs) = &build_logs {
            driver = driver.with_build_logs(build_logs.clone());
        }
        tasks.spawn(run_worker(
            driver,
            wake.clone(),
            Duration::from_millis(250),
            shutdown_rx.clone(),
        ));
    }
    if !config.clickhouse_url.is_empty() {
        // Idle previews (#17): wakes are followed wherever a proxy is; passes when configured.
        let idle = Arc::new(crate::idle::Idle::new(
            store.clone(),
            clients.clone(),
            crate::logsearch::LogSearch::new(&config.clickhouse_url, &config.clickhouse_database),
            wake.clone(),
            config.stop_grace_ms,
        ));
        tasks.spawn(Arc::clone(&idle).watch_wakes(shutdown_rx.clone()));
        if config.idle_check_interval_ms > 0 {
            let every = Duration::from_millis(config.idle_check_interval_ms);
            tasks.spawn(run_singleton(
                store.clone(),
                "idle-previews",
                instance,
                job_lease,
                shutdown_rx.clone(),
                move |stop| Arc::clone(&idle).run(every, stop),
            ));
        }
    } else {
        tracing::info!("no clickhouse_url: idle previews are never stopped");
    }
    if config.github_status_interval_ms > 0 {
        // Previews' deployment statuses for projects with a GitHub token (#17).
        let reporter = crate::github::Reporter::new(
            store.clone(),
            &config.github_api_url,
            &config.apps_domain,
        );
        let every = Duration::from_millis(config.github_status_interval_ms);
        tasks.spawn(run_singleton(
            store.clone(),
            "github-statuses",
            instance,
            job_lease,
            shutdown_rx.clone(),
            move |stop| reporter.clone().run(every, stop),
        ));
    }
    {
        let store = store.clone();
        let every = Duration::from_millis(config.heartbeat_interval_ms);
        let down_after = Duration::from_millis(config.node_down_after_ms);
        tasks.spawn(run_singleton(
            store.clone(),
            "node-monitor",
            instance,
            job_lease,
            shutdown_rx,
            move |stop| monitor_nodes(store.clone(), clients.clone(), every, down_after, stop),
        ));
    }
    tracing::info!(%address, workers = config.workers, %instance, "stackpad-control started");
    Ok(Running {
        address,
        store,
        shutdown,
        tasks,
    })
}

/// Runs the node monitor's rounds ([`Monitor`]) every `interval` (from the start of one to the
/// next: a round waiting on a dead node's probe is followed at once) and, on a cadence of its
/// own so a slow call to a dead node never delays the next probe, pushes the cluster endpoints
/// where stale and sweeps deleted services' volumes.
async fn monitor_nodes(
    store: Store,
    clients: Clients,
    interval: Duration,
    down_after: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let probing = async {
        let mut monitor = Monitor::new(down_after);
        loop {
            let started = tokio::time::Instant::now();
            if let Err(e) = monitor.round(&store, &clients).await {
                tracing::warn!(error = %e, "a round of the node monitor failed");
            }
            let next = started + interval;
            if next > tokio::time::Instant::now() {
                tokio::time::sleep_until(next).await;
                monitor.woke_late(tokio::time::Instant::now().saturating_duration_since(next));
            }
        }
    };
    let housekeeping = async {
        loop {
            crate::endpoints::reconcile(&store, &clients).await;
            // Volumes of deleted services whose grace period is over (#14).
            if let Err(e) = crate::volumes::sweep(&store, &clients).await {
                tracing::warn!(error = %e, "sweeping the volumes of deleted services failed");
            }
            tokio::time::sleep(interval).await;
        }
    };
    tokio::select! {
        _ = futures::future::join(probing, housekeeping) => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
}
