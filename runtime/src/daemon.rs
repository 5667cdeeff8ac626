//! Running the agent as a daemon: reconcile, then serve `NodeAgent` over gRPC and `/metrics`
//! over HTTP until SIGTERM/SIGINT. The containers keep running when the daemon exits.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::agent::{Agent, State};
use crate::config::NodeConfig;
use crate::error::{Result, RuntimeError};
use crate::grpc::NodeAgentService;
use crate::isolation::IsolationHook;
use crate::logs::LogSink;
use crate::metrics::ContainerUsage;

/// The `/metrics` text of an agent.
pub fn render_metrics(agent: &Agent) -> String {
    let counts = agent.state_counts();
    let states: Vec<(&str, u64)> = State::ALL
        .iter()
        .map(|s| (s.name(), counts.get(s).copied().unwrap_or(0)))
        .collect();
    let ns = &agent.config().namespace;
    let usage: Vec<ContainerUsage> = agent
        .list(None, None)
        .into_iter()
        .filter(|s| s.state.is_running())
        .map(|s| {
            let (cpu_ns, mem) =
                crate::usage::cgroup_reading(ns, &s.container_id).unwrap_or_default();
            ContainerUsage {
                container_id: s.container_id,
                project_id: s.spec.workload.project_id,
                service: s.spec.workload.service_name,
                cpu_seconds: cpu_ns as f64 / 1e9,
                memory_bytes: mem,
            }
        })
        .collect();
    let mut text = agent.metrics().render(&states, &usage);
    text.push_str(&agent.traffic_metrics());
    text.push_str(&agent.log_metrics());
    text
}

/// The metrics router (`GET /metrics`).
pub fn metrics_router(agent: Arc<Agent>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let agent = agent.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    render_metrics(&agent),
                )
            }
        }),
    )
}

/// Serves until `shutdown` resolves. Returns the addresses actually bound (port 0 allowed).
pub async fn serve(
    agent: Arc<Agent>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, SocketAddr, tokio::task::JoinHandle<()>)> {
    let config = agent.config().clone();
    let grpc_listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| RuntimeError::io(config.listen.to_string(), e))?;
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|e| RuntimeError::io(config.metrics_listen.to_string(), e))?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|e| RuntimeError::io("grpc listener", e))?;
    let metrics_addr = metrics_listener
        .local_addr()
        .map_err(|e| RuntimeError::io("metrics listener", e))?;
    // mTLS when configured (files reloaded on change); plain text only on loopback
    // (`NodeConfig::validate`).
    let tls = match &config.tls {
        Some(files) => Some(pki::server_config(
            pki::Material::from_files(files)
                .map_err(|e| RuntimeError::invalid("tls", e.to_string()))?,
            pki::Accept::control(),
        )),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut grpc_stop = stop_rx.clone();
    let mut metrics_stop = stop_rx;
    let grpc = tonic::transport::Server::builder()
        .add_service(NodeAgentService::new(agent.clone()).server())
        .serve_with_incoming_shutdown(pki::incoming(grpc_listener, tls), async move {
            let _ = grpc_stop.wait_for(|v| *v).await;
        });
    let metrics = axum::serve(metrics_listener, metrics_router(agent.clone()))
        .with_graceful_shutdown(async move {
            let _ = metrics_stop.wait_for(|v| *v).await;
        });
    let handle = tokio::spawn(async move {
        let stopper = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let (g, m, ()) = tokio::join!(grpc, metrics.into_future(), stopper);
        if let Err(e) = g {
            tracing::error!(error = %e, "grpc server");
        }
        if let Err(e) = m {
            tracing::error!(error = %e, "metrics server");
        }
        agent.detach_all();
    });
    tracing::info!(%grpc_addr, %metrics_addr, "stackpad-node serving");
    Ok((grpc_addr, metrics_addr, handle))
}

/// The whole daemon: agent, reconcile, servers, signals.
pub async fn run(
    config: NodeConfig,
    isolation: Arc<dyn IsolationHook>,
    sink: Arc<dyn LogSink>,
) -> Result<()> {
    let usage = (!config.clickhouse_url.is_empty() && config.usage_interval_ms > 0).then(|| {
        crate::usage::UsageConfig {
            clickhouse_url: config.clickhouse_url.clone(),
            database: config.clickhouse_database.clone(),
            node_id: config.node_id.clone(),
            interval: std::time::Duration::from_millis(config.usage_interval_ms),
            default_retention_days: config.log_retention_days,
            retention_days_by_organization: config
                .log_retention_days_by_organization
                .iter()
                .map(|(org, days)| (org.clone(), *days))
                .collect(),
        }
    });
    let agent = Agent::new(config, isolation, sink).await?;
    let actions = agent.reconcile().await?;
    tracing::info!(steps = actions.len(), "reconciled at start");
    // Per-container CPU, memory and network samples for the dashboard's graphs (#18).
    let (usage_stop, usage_stopped) = tokio::sync::watch::channel(false);
    let sampler = usage.map(|u| tokio::spawn(crate::usage::run(agent.clone(), u, usage_stopped)));
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down; containers keep running");
    };
    let (_, _, handle) = serve(agent, shutdown).await?;
    let _ = handle.await;
    let _ = usage_stop.send(true);
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    Ok(())
}
