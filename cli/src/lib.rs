//! The `stackpad` CLI: subcommands over the REST API. `main` in `src/main.rs` only
//! parses arguments and calls [`run`].

#![forbid(unsafe_code)]

mod client;
mod domains;
pub mod files;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use client::ApiClient;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("not logged in: run `stackpad login --url URL --token TOKEN` first ({0})")]
    NotLoggedIn(String),
    #[error("{0}")]
    Usage(String),
    #[error("request failed: {0}")]
    Http(String),
    #[error("the API answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Parser)]
#[command(
    name = "stackpad",
    version,
    about = "Deploy and manage apps on Stackpad"
)]
pub struct Cli {
    /// Where login stores the API URL and token (default ~/.config/stackpad/cli.json).
    #[arg(long, env = "STACKPAD_CLI_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store the API URL and a token (checked against the API).
    Login {
        #[arg(long)]
        url: String,
        #[arg(long, env = "STACKPAD_TOKEN")]
        token: String,
    },
    #[command(subcommand)]
    Projects(Projects),
    #[command(subcommand)]
    Services(Services),
    /// A web service's custom domains.
    #[command(subcommand)]
    Domains(domains::Domains),
    /// A git service's webhook secret.
    #[command(subcommand)]
    Webhook(Webhook),
    /// API tokens of the organization (owner tokens only).
    #[command(subcommand)]
    Tokens(Tokens),
    /// Queue a deployment and follow its steps until it ends.
    Deploy {
        #[arg(long)]
        service: String,
        #[arg(long, conflicts_with_all = ["git_ref", "commit"])]
        image: Option<String>,
        #[arg(long = "ref")]
        git_ref: Option<String>,
        #[arg(long)]
        commit: Option<String>,
        /// Return once queued.
        #[arg(long)]
        no_wait: bool,
    },
    /// List a service's deployments, newest first.
    Deployments {
        #[arg(long)]
        service: String,
    },
    /// Deploy again what an earlier ready deployment ran, and follow it.
    Rollback {
        deployment: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// A service's latest log lines (or, with --access, requests), oldest first.
    Logs {
        #[arg(long)]
        service: String,
        /// Only lines (with --access: paths) containing this text (case-insensitive).
        #[arg(long)]
        grep: Option<String>,
        /// How many lines (1..=1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// The proxy's access log instead of the containers' output.
        #[arg(long)]
        access: bool,
        /// With --access: `5xx`, `404`, `500-599` or a comma-separated list.
        #[arg(long, requires = "access")]
        status: Option<String>,
        /// With --access: only requests that took at least this long.
        #[arg(long, requires = "access")]
        min_duration_ms: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Projects {
    List,
    Create { name: String },
}

#[derive(Debug, Subcommand)]
pub enum Services {
    List {
        #[arg(long)]
        project: String,
    },
    Create {
        #[arg(long)]
        project: String,
        #[arg(long)]
        name: String,
        #[arg(long, conflicts_with = "git")]
        image: Option<String>,
        #[arg(long)]
        git: Option<String>,
        #[arg(long)]
        port: Option<u32>,
        /// HTTP health check path, e.g. /healthz.
        #[arg(long)]
        health_path: Option<String>,
        /// NAME=VALUE, repeatable.
        #[arg(long = "env")]
        env: Vec<String>,
        #[arg(long)]
        webhook_secret: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Webhook {
    /// Replace the secret GitHub signs with (the old one stops working at once); prints the new
    /// one, which is not shown again.
    Rotate {
        #[arg(long)]
        service: String,
        /// Use this secret (32 to 256 characters) instead of a generated one.
        #[arg(long)]
        secret: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Tokens {
    /// Mint a token; prints its secret, which is not shown again.
    Create {
        #[arg(long)]
        name: String,
        /// owner, deployer or read_only (default: this token's role; never more).
        #[arg(long)]
        role: Option<String>,
        /// RFC 3339 time after which the token stops working (at most 366 days ahead).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Revoke a token by id.
    Revoke { id: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    pub url: String,
    pub token: String,
}

fn config_path(cli: &Cli) -> Result<PathBuf, CliError> {
    if let Some(p) = &cli.config {
        return Ok(p.clone());
    }
    let home = std::env::var("HOME")
        .map_err(|_| CliError::Usage("HOME is not set; pass --config".into()))?;
    Ok(PathBuf::from(home).join(".config/stackpad/cli.json"))
}

fn load_login(path: &PathBuf) -> Result<Login, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::NotLoggedIn(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::NotLoggedIn(format!("{}: {e}", path.display())))
}

fn out(w: &mut impl Write, line: impl AsRef<str>) {
    let _ = writeln!(w, "{}", line.as_ref());
}

/// Runs a command; returns the process exit code (1 when a followed deployment failed).
pub async fn run(cli: Cli, w: &mut impl Write) -> Result<i32, CliError> {
    let path = config_path(&cli)?;
    if let Command::Login { url, token } = &cli.command {
        let api = ApiClient::new(url, token);
        let org: Value = api.get("/organization").await?;
        let login = Login {
            url: url.clone(),
            token: token.clone(),
        };
        // The token is a secret: 0600, written atomically (an older 0644 file is replaced).
        let text = serde_json::to_string_pretty(&login).expect("login serializes");
        files::write_private(&path, text.as_bytes()).map_err(|source| CliError::Io {
            path: path.display().to_string(),
            source,
        })?;
        out(
            w,
            format!(
                "logged in to {url} as organization {}",
                org["name"].as_str().unwrap_or("?")
            ),
        );
        return Ok(0);
    }
    let login = load_login(&path)?;
    let api = ApiClient::new(&login.url, &login.token);
    match cli.command {
        Command::Login { .. } => unreachable!("handled above"),
        Command::Domains(cmd) => return domains::run(&api, cmd, w).await,
        Command::Projects(Projects::List) => {
            let page: Value = api.get("/projects?limit=200").await?;
            for p in page["items"].as_array().into_iter().flatten() {
                out(
                    w,
                    format!(
                        "{}  {}",
                        p["id"].as_str().unwrap_or(""),
                        p["name"].as_str().unwrap_or("")
                    ),
                );
            }
        }
        Command::Projects(Projects::Create { name }) => {
            let p = api.post("/projects", &json!({ "name": name })).await?;
            out(
                w,
                format!(
                    "created project {} ({})",
                    name,
                    p["id"].as_str().unwrap_or("")
                ),
            );
        }
        Command::Services(Services::List { project }) => {
            let page: Value = api
                .get(&format!("/projects/{project}/services?limit=200"))
                .await?;
            for s in page["items"].as_array().into_iter().flatten() {
                out(
                    w,
                    format!(
                        "{}  {}  {}",
                        s["id"].as_str().unwrap_or(""),
                        s["name"].as_str().unwrap_or(""),
                        s["image"].as_str().or(s["git_url"].as_str()).unwrap_or("")
                    ),
                );
            }
        }
        Command::Services(Services::Create {
            project,
            name,
            image,
            git,
            port,
            health_path,
            env,
            webhook_secret,
        }) => {
            let mut env_map = serde_json::Map::new();
            for kv in env {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| CliError::Usage(format!("--env {kv:?}: expected NAME=VALUE")))?;
                env_map.insert(k.to_owned(), json!(v));
            }
            let mut body = json!({ "name": name, "env": env_map });
            if let Some(i) = image {
                body["image"] = json!(i);
            }
            if let Some(g) = git {
                body["git"] = json!({ "url": g });
            }
            if let Some(p) = port {
                body["port"] = json!(p);
            }
            if let Some(h) = health_path {
                body["health_check"] = json!({ "path": h });
            }
            if let Some(s) = webhook_secret {
                body["webhook_secret"] = json!(s);
            }
            let s = api
                .post(&format!("/projects/{project}/services"), &body)
                .await?;
            out(
                w,
                format!(
                    "created service {name} ({})",
                    s["id"].as_str().unwrap_or("")
                ),
            );
            for h in s["hosts"].as_array().into_iter().flatten() {
                out(w, format!("  https://{}", h.as_str().unwrap_or("")));
            }
            if let Some(secret) = s["webhook_secret"].as_str() {
                out(
                    w,
                    format!(
                        "  webhook: POST /webhooks/github/{} signed with secret {secret} \
                         (shown once; `stackpad webhook rotate` makes a new one)",
                        s["id"].as_str().unwrap_or("")
                    ),
                );
            }
        }
        Command::Webhook(Webhook::Rotate { service, secret }) => {
            let body = match secret {
                Some(s) => json!({ "secret": s }),
                None => json!({}),
            };
            let v = api
                .patch(&format!("/services/{service}/webhook"), &body)
                .await?;
            out(
                w,
                format!(
                    "webhook secret of service {service} rotated: {}",
                    v["webhook_secret"].as_str().unwrap_or("")
                ),
            );
            out(
                w,
                "  shown once: set it in the repository's webhook settings now",
            );
        }
        Command::Tokens(Tokens::Create {
            name,
            role,
            expires_at,
        }) => {
            let mut body = json!({ "name": name });
            if let Some(r) = role {
                body["role"] = json!(r);
            }
            if let Some(t) = expires_at {
                body["expires_at"] = json!(t);
            }
            let v = api.post("/tokens", &body).await?;
            out(
                w,
                format!(
                    "token {} ({}, role {}, expires {}): {}",
                    name,
                    v["token"]["id"].as_str().unwrap_or(""),
                    v["token"]["role"].as_str().unwrap_or(""),
                    v["token"]["expires_at"].as_str().unwrap_or("never"),
                    v["secret"].as_str().unwrap_or("")
                ),
            );
        }
        Command::Tokens(Tokens::Revoke { id }) => {
            api.delete(&format!("/tokens/{id}")).await?;
            out(w, format!("token {id} revoked"));
        }
        Command::Deploy {
            service,
            image,
            git_ref,
            commit,
            no_wait,
        } => {
            let mut body = json!({});
            if let Some(i) = image {
                body["image"] = json!(i);
            }
            if let Some(r) = git_ref {
                body["git_ref"] = json!(r);
            }
            if let Some(c) = commit {
                body["git_commit"] = json!(c);
            }
            let d = api
                .post(&format!("/services/{service}/deployments"), &body)
                .await?;
            let id = d["id"].as_str().unwrap_or("").to_owned();
            out(w, format!("deployment {id} queued"));
            if !no_wait {
                return follow(&api, &id, w).await;
            }
        }
        Command::Deployments { service } => {
            let page: Value = api
                .get(&format!("/services/{service}/deployments?limit=50"))
                .await?;
            for d in page["items"].as_array().into_iter().flatten() {
                out(
                    w,
                    format!(
                        "{}  {:<10}  {}  {}",
                        d["id"].as_str().unwrap_or(""),
                        d["state"].as_str().unwrap_or(""),
                        d["created_at"].as_str().unwrap_or(""),
                        d["failure_reason"].as_str().unwrap_or("")
                    ),
                );
            }
        }
        Command::Rollback {
            deployment,
            no_wait,
        } => {
            let d = api
                .post(&format!("/deployments/{deployment}/rollback"), &json!({}))
                .await?;
            let id = d["id"].as_str().unwrap_or("").to_owned();
            out(w, format!("rollback deployment {id} queued"));
            if !no_wait {
                return follow(&api, &id, w).await;
            }
        }
        Command::Logs {
            service,
            grep,
            limit,
            access,
            status,
            min_duration_ms,
        } => {
            let resource = if access { "access-logs" } else { "logs" };
            let mut path = format!("/services/{service}/{resource}?limit={limit}");
            if let Some(text) = grep {
                path.push_str(&format!("&q={}", query_encode(&text)));
            }
            if let Some(status) = status {
                path.push_str(&format!("&status={}", query_encode(&status)));
            }
            if let Some(ms) = min_duration_ms {
                path.push_str(&format!("&min_duration_ms={ms}"));
            }
            let page: Value = api.get(&path).await?;
            if access {
                let requests = page["requests"].as_array().cloned().unwrap_or_default();
                for r in requests.iter().rev() {
                    out(w, access_line(r));
                }
                return Ok(0);
            }
            let lines = page["lines"].as_array().cloned().unwrap_or_default();
            for l in lines.iter().rev() {
                out(
                    w,
                    format!(
                        "{} {}",
                        l["stream"].as_str().unwrap_or(""),
                        l["line"].as_str().unwrap_or("")
                    ),
                );
            }
        }
    }
    Ok(0)
}

/// Percent-encodes a query parameter's value.
fn query_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `<time> <status> <method> <host><path> <ms>ms <bytes>B`, one request per line.
fn access_line(r: &Value) -> String {
    let ts = r["timestamp_ns"].as_i64().unwrap_or(0);
    let time = chrono::DateTime::from_timestamp_nanos(ts)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        "{time} {} {} {}{} {:.1}ms {}B",
        r["status"].as_u64().unwrap_or(0),
        r["method"].as_str().unwrap_or(""),
        r["host"].as_str().unwrap_or(""),
        r["path"].as_str().unwrap_or(""),
        r["duration_ms"].as_f64().unwrap_or(0.0),
        r["response_bytes"].as_u64().unwrap_or(0),
    )
}

/// Prints each new step of the timeline until the deployment ends; exit code 1 unless ready.
async fn follow(api: &ApiClient, id: &str, w: &mut impl Write) -> Result<i32, CliError> {
    let mut shown = 0;
    loop {
        let d: Value = api.get(&format!("/deployments/{id}")).await?;
        let timeline = d["timeline"].as_array().cloned().unwrap_or_default();
        for step in timeline.iter().skip(shown) {
            let detail = step["detail"].as_str().unwrap_or("");
            out(
                w,
                format!(
                    "  {}  {}{}",
                    step["at"].as_str().unwrap_or(""),
                    step["phase"].as_str().unwrap_or(""),
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {detail}")
                    }
                ),
            );
        }
        shown = shown.max(timeline.len());
        match d["state"].as_str() {
            Some("ready") => {
                out(w, format!("deployment {id} is ready"));
                return Ok(0);
            }
            Some(state @ ("failed" | "cancelled" | "superseded")) => {
                out(
                    w,
                    format!(
                        "deployment {id} {state}: {}",
                        d["failure_reason"].as_str().unwrap_or("")
                    ),
                );
                return Ok(1);
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}
