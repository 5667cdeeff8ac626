//! `stackpad-control`: parses its arguments and runs the daemon from the `control` library.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Stackpad's control plane: REST API, deploy pipeline workers, node monitor.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML config file (see control::config::Config); env STACKPAD_* and DATABASE_URL override.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = control::config::Config::load(args.config.as_deref())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let clients = control::daemon::grpc_clients(&config);
    let running = control::daemon::start(&config, listener, clients).await?;
    println!("stackpad-control listening on http://{}", running.address);
    tokio::signal::ctrl_c().await?;
    running.shutdown().await;
    Ok(())
}
