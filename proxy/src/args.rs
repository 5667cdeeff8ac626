//! Command-line arguments of `stackpad-proxy` (clap): `serve`'s flags, layered over the
//! optional config file, and the `routes` admin client's.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use proto::proxy::v1 as pb;
use proxy::config::ProxyConfig;

/// Stackpad's ingress proxy, and a client of its admin API.
#[derive(Debug, Parser)]
#[command(
    name = "stackpad-proxy",
    version,
    arg_required_else_help = true,
    after_help = "The admin token comes from --token-file, the config's admin_token_file, or \
                  STACKPAD_PROXY_TOKEN."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the proxy.
    Serve(ServeArgs),
    /// Lists, sets, switches or removes routes through the admin API.
    Routes(RoutesArgs),
}

/// `stackpad-proxy serve`: each flag overrides the config file's key.
#[derive(Debug, Default, PartialEq, Eq, Args)]
#[command(args_override_self = true)]
pub struct ServeArgs {
    /// JSON config file (proxy::config::ProxyConfig).
    #[arg(long, value_name = "FILE.json")]
    pub config: Option<PathBuf>,
    /// Plain HTTP listener (`http_listen`).
    #[arg(long, value_name = "ADDR", overrides_with = "no_http")]
    pub http: Option<String>,
    /// No plain HTTP listener.
    #[arg(long, overrides_with = "http")]
    pub no_http: bool,
    /// HTTPS listener (`tls_listen`).
    #[arg(long, value_name = "ADDR")]
    pub https: Option<String>,
    /// Default certificate (`tls_cert_file`).
    #[arg(long, value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// Its key (`tls_key_file`).
    #[arg(long, value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// Admin gRPC API and `/metrics` (`admin_listen`).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// File holding the admin token (`admin_token_file`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Where routes are kept across restarts (`state_file`).
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,
    /// Worker threads (`threads`).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Write no access log.
    #[arg(long)]
    pub no_access_log: bool,
    /// Socket a new process takes the listeners over from (`upgrade_sock`).
    #[arg(long, value_name = "PATH")]
    pub upgrade_sock: Option<PathBuf>,
    /// (`pid_file`).
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Take the listeners over from the running process (graceful upgrade).
    #[arg(long)]
    pub upgrade: bool,
}

impl ServeArgs {
    /// The config file (or the defaults) with these flags applied.
    pub fn config(&self) -> anyhow::Result<ProxyConfig> {
        let mut config = match &self.config {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading config {}", file.display()))?;
                serde_json::from_str(&text).with_context(|| format!("config {}", file.display()))?
            }
            None => ProxyConfig::default(),
        };
        // Both are never set: each overrides the other, the last given wins.
        if let Some(v) = &self.http {
            config.http_listen = Some(v.clone());
        }
        if self.no_http {
            config.http_listen = None;
        }
        if let Some(v) = &self.https {
            config.tls_listen = Some(v.clone());
        }
        if let Some(v) = &self.cert {
            config.tls_cert_file = Some(v.clone());
        }
        if let Some(v) = &self.key {
            config.tls_key_file = Some(v.clone());
        }
        if let Some(v) = &self.admin {
            config.admin_listen = v.clone();
        }
        if let Some(v) = &self.token_file {
            config.admin_token_file = Some(v.clone());
        }
        if let Some(v) = &self.state_file {
            config.state_file = v.clone();
        }
        if let Some(v) = self.threads {
            config.threads = v;
        }
        if self.no_access_log {
            config.access_log = false;
        }
        if let Some(v) = &self.upgrade_sock {
            config.upgrade_sock = v.clone();
        }
        if let Some(v) = &self.pid_file {
            config.pid_file = v.clone();
        }
        Ok(config)
    }
}

/// What `routes` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoutesCommand {
    List,
    Set,
    Switch,
    Remove,
}

/// How a switched set spreads requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lb {
    RoundRobin,
    LeastConnections,
}

/// `stackpad-proxy routes list|set|switch|remove`.
#[derive(Debug, PartialEq, Args)]
#[command(args_override_self = true)]
pub struct RoutesArgs {
    pub command: RoutesCommand,
    /// The admin API.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9180")]
    pub admin: String,
    /// File holding the admin token (else STACKPAD_PROXY_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Route id (set, remove).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// A host of the route (repeatable).
    #[arg(long, value_name = "HOST")]
    pub host: Vec<String>,
    /// Path prefix of the route.
    #[arg(long, value_name = "PATH")]
    pub prefix: Option<String>,
    /// The service routed to (set) or switched (switch).
    #[arg(long, value_name = "ID")]
    pub service: Option<String>,
    /// Largest request body, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_body: Option<u64>,
    /// Serve the route over plain HTTP too.
    #[arg(long)]
    pub plain_http: bool,
    /// An upstream of the new set (repeatable).
    #[arg(long, value_name = "ADDR[=DEPLOYMENT[=WEIGHT]]", value_parser = upstream)]
    pub upstream: Vec<pb::Upstream>,
    /// Drain deadline of the old set.
    #[arg(long, value_name = "MS")]
    pub drain_ms: Option<u32>,
    /// Switch without waiting for the new set's health.
    #[arg(long)]
    pub skip_health: bool,
    #[arg(long, value_name = "MS")]
    pub health_timeout_ms: Option<u32>,
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    #[arg(long, value_name = "MS")]
    pub health_interval_ms: Option<u32>,
    #[arg(long, value_name = "N")]
    pub healthy_threshold: Option<u32>,
    #[arg(long, value_name = "N")]
    pub unhealthy_threshold: Option<u32>,
    #[arg(long, value_enum, value_name = "round-robin|least-connections")]
    pub lb: Option<Lb>,
}

/// `ADDR[=DEPLOYMENT[=WEIGHT]]`; the weight defaults to 1.
fn upstream(v: &str) -> anyhow::Result<pb::Upstream> {
    let mut parts = v.splitn(3, '=');
    let address = parts.next().unwrap_or_default().into();
    let deployment_id = parts.next().unwrap_or_default().into();
    let weight = parts
        .next()
        .map(str::parse)
        .transpose()
        .context("--upstream weight")?
        .unwrap_or(1);
    Ok(pb::Upstream {
        address,
        deployment_id,
        weight,
    })
}

impl RoutesArgs {
    /// The route (`set`, `remove`) and the switch request (`switch`) these flags describe.
    pub fn requests(&self) -> (pb::Route, pb::SwitchRequest) {
        let service = self.service.clone().unwrap_or_default();
        let route = pb::Route {
            route_id: self.id.clone().unwrap_or_default(),
            hosts: self.host.clone(),
            path_prefix: self.prefix.clone().unwrap_or_default(),
            service_id: service.clone(),
            max_body_bytes: self.max_body.unwrap_or_default(),
            allow_plain_http: self.plain_http,
            ..pb::Route::default()
        };
        let health_set = self.health_path.is_some()
            || self.health_interval_ms.is_some()
            || self.healthy_threshold.is_some()
            || self.unhealthy_threshold.is_some();
        let mut switch = pb::SwitchRequest {
            service_id: service,
            upstreams: self.upstream.clone(),
            drain_deadline_ms: self.drain_ms.unwrap_or_default(),
            skip_health_wait: self.skip_health,
            health_timeout_ms: self.health_timeout_ms.unwrap_or_default(),
            health_check: health_set.then(|| pb::HealthCheck {
                path: self.health_path.clone().unwrap_or_default(),
                interval_ms: self.health_interval_ms.unwrap_or_default(),
                healthy_threshold: self.healthy_threshold.unwrap_or_default(),
                unhealthy_threshold: self.unhealthy_threshold.unwrap_or_default(),
                ..pb::HealthCheck::default()
            }),
            ..pb::SwitchRequest::default()
        };
        if let Some(lb) = self.lb {
            switch.set_load_balancing(match lb {
                Lb::RoundRobin => pb::LoadBalancing::RoundRobin,
                Lb::LeastConnections => pb::LoadBalancing::LeastConnections,
            });
        }
        (route, switch)
    }
}

/// Reads a token file (trimmed) or the environment.
pub fn token(file: Option<&PathBuf>) -> anyhow::Result<String> {
    if let Some(file) = file {
        let t = std::fs::read_to_string(file)
            .with_context(|| format!("reading admin token file {}", file.display()))?;
        return Ok(t.trim().to_owned());
    }
    Ok(std::env::var("STACKPAD_PROXY_TOKEN")
        .unwrap_or_default()
        .trim()
        .to_owned())
}

pub fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let mut config = args.config()?;
    let token = token(config.admin_token_file.as_ref())?;
    if !token.is_empty() {
        config.admin_token = token;
    }
    init_tracing();
    proxy::server::run(config, args.upgrade)?;
    Ok(())
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("STACKPAD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("STACKPAD_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests;
