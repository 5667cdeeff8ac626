//! The `stackpad` CLI: subcommands over the REST API. `main` in `src/main.rs` only parses
//! arguments, decides colours and interactivity, and calls [`run`]. Names become ids in one
//! place (`resolve`), with the linked directory (`link`) as the default; results print for
//! people or, with `--json`, as the API's objects (`output`); each failure class has its exit
//! code (`error::exit`).

#![forbid(unsafe_code)]

mod access;
pub mod backups;
mod client;
mod commands;
mod deployments;
mod domains;
mod env;
mod environments;
pub mod error;
pub mod files;
pub mod init;
pub mod link;
mod logs;
pub mod output;
pub mod previews;
pub mod resolve;
pub mod services;

use std::io::Write;
use std::path::PathBuf;

/// The human renderings of lists and objects, as pure functions (snapshot-tested in
/// `tests/render.rs` with fixed ids and times).
pub mod render {
    pub use crate::access::{members_table, tokens_table};
    pub use crate::backups::backups_table;
    pub use crate::deployments::{deployment_list, show_deployment};
    pub use crate::domains::line as domain_line;
    pub use crate::environments::describe as describe_environment;
    pub use crate::init::detection_lines;
    pub use crate::previews::previews_lines;
    pub use crate::services::{describe as describe_service, services_table};
}

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

pub use client::ApiClient;
pub use error::{CliError, exit};
use resolve::ServiceArgs;

const AFTER_HELP: &str = "\
Names: projects, environments and services are named by name or id: `--service web`,
`--service shop/web`, `--service shop/staging/web`, or `--project shop --environment staging
--service web`. In a directory linked with `stackpad link` (or below it) they may be left out.

Output: lines for people; `--json` prints the API's objects (lists as a JSON array) for scripts.
Colours only on a terminal, never with NO_COLOR set.

Exit codes:
  0  ok
  1  anything else (network, the API's own failure, local files)
  2  usage: a bad command line, no target named, an ambiguous name, not logged in
  3  the API refused the request (4xx other than 404)
  4  not found (no such name or id)
  5  a followed deployment failed (or was cancelled or superseded), or a followed backup
     or restore failed

Examples:
  stackpad login --url https://api.stackpad.example --token sp_...
  stackpad link --service shop/web
  stackpad deploy
  stackpad deployments --json | jq '.[0].state'";

#[derive(Debug, Parser)]
#[command(
    name = "stackpad",
    version,
    about = "Deploy and manage apps on Stackpad",
    long_about = "Deploy and manage apps on Stackpad: projects, environments, services, \
                  deployments, domains, logs and tokens through the control plane's REST API.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Where login stores the API URL and token (default ~/.config/stackpad/cli.json), e.g.
    /// `--config ./ci.json`.
    #[arg(
        long,
        env = "STACKPAD_CLI_CONFIG",
        hide_env_values = true,
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Print the API's objects as JSON (lists as an array) instead of lines for people, e.g.
    /// `stackpad services list --json`.
    #[arg(long, global = true)]
    pub json: bool,
    /// Run as if started in this directory (where `.stackpad.json` is looked for), e.g.
    /// `-C ~/src/shop`.
    #[arg(short = 'C', long = "dir", global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Colours in human output; set by `main` (a terminal, and `NO_COLOR` unset).
    #[arg(skip)]
    pub colour: bool,
    /// Whether a question may be asked on stdin (a terminal); set by `main`.
    #[arg(skip)]
    pub interactive: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store the API URL and a token (checked against the API).
    #[command(after_help = "Example:\n  stackpad login --url http://127.0.0.1:8080 --token sp_...")]
    Login {
        /// The control plane's API, e.g. `--url https://api.stackpad.example`.
        #[arg(long)]
        url: String,
        /// An API token (`stackpad tokens create` mints one), e.g. `--token sp_...`.
        #[arg(long, env = "STACKPAD_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Link this directory to a project (and environment, service): commands run here or
    /// below need no --project/--service. Without flags: show the current link.
    #[command(
        long_about = "Link this directory to a project and, optionally, an environment and a \
                      service, by writing .stackpad.json here (names and ids, no secret; it may \
                      be committed). Commands run in this directory or below it use the link \
                      when no flag names another target. Without flags: show the link in force.",
        after_help = "Examples:\n  stackpad link --service shop/production/web\n  \
                      stackpad link --project shop --service web\n  stackpad link --project shop\n  \
                      stackpad link"
    )]
    Link {
        #[command(flatten)]
        target: LinkArgs,
    },
    /// Remove this directory's link (the nearest .stackpad.json at or above it).
    #[command(after_help = "Example:\n  stackpad unlink")]
    Unlink,
    /// Projects of the organization: list, create, delete, deploy-key.
    #[command(
        subcommand,
        after_help = "Examples:\n  stackpad projects list\n  stackpad projects create shop"
    )]
    Projects(Projects),
    /// A project's environments (each deploys its own branch): list, show, create (a copy of
    /// another with --from), set (branch, variables), delete.
    #[command(
        subcommand,
        after_help = "Examples:\n  stackpad environments list --project shop\n  \
                      stackpad environments create staging --branch develop --from production\n  \
                      stackpad environments set staging MODE=staging\n  \
                      stackpad environments delete staging --yes"
    )]
    Environments(environments::Environments),
    /// Services of a project: list, show, create, set (replicas, resources, health check,
    /// image, port), delete.
    #[command(
        subcommand,
        after_help = "Examples:\n  stackpad services list --project shop\n  \
                      stackpad services create --project shop --name web --image nginx:1.27\n  \
                      stackpad services set --service shop/web --cpu 0.5 --memory 512Mi"
    )]
    Services(Box<services::Services>),
    /// Set how many containers serve the service (1 to 20); the running version is deployed
    /// again with the new count and followed (exit 5 unless it ends ready).
    #[command(after_help = "Examples:\n  stackpad scale 3\n  \
                      stackpad scale 1 --service shop/web --no-wait")]
    Scale {
        #[command(flatten)]
        target: ServiceArgs,
        /// The number of replicas, e.g. `3`.
        replicas: u32,
        /// Return once queued instead of following the deployment.
        #[arg(long)]
        no_wait: bool,
    },
    /// Make this app directory a service: detect its framework (as the build node does),
    /// create a git service building it from the repository's origin, and link the directory.
    #[command(
        long_about = "Make this app directory a service. Its framework is detected by the \
                      build node's own detection and shown; then a service building this \
                      directory (its folder in the repository) from the repository's origin \
                      remote is created in the project and the directory is linked to it. \
                      `stackpad up` then deploys its HEAD.",
        after_help = "Examples:\n  stackpad init --project shop --create-project\n  \
                      stackpad init --project shop --environment staging --name web\n  \
                      stackpad init --dry-run"
    )]
    Init {
        #[command(flatten)]
        args: init::InitArgs,
    },
    /// Deploy the directory's git HEAD (its commit, on its branch) to the linked service and
    /// follow it to its URL (exit 5 unless it ends ready). HEAD must be pushed.
    #[command(after_help = "Examples:\n  git push && stackpad up\n  \
                      stackpad up --service shop/staging/web --no-wait")]
    Up {
        #[command(flatten)]
        target: ServiceArgs,
        /// Return once queued instead of following the steps.
        #[arg(long)]
        no_wait: bool,
    },
    /// A web service's custom domains: add, list, verify, remove.
    #[command(
        subcommand,
        after_help = "Examples:\n  stackpad domains add --service shop/web www.shop.example\n  \
                      stackpad domains verify www.shop.example"
    )]
    Domains(domains::Domains),
    /// A service's environment variables and secrets: list (secrets masked), set, unset.
    #[command(
        subcommand,
        after_help = "Examples:\n  stackpad env list --service shop/web\n  \
                      stackpad env set MODE=prod\n  stackpad env set --secret API_KEY=...\n  \
                      stackpad env unset MODE"
    )]
    Env(env::Env),
    /// A project's pull-request previews: list them (pull request, status, head, URLs),
    /// enable them with a template environment, disable them.
    #[command(
        subcommand,
        after_help = "Examples:\n  stackpad previews enable --template production --project shop\n  \
                      stackpad previews list"
    )]
    Previews(previews::Previews),
    /// A git service's webhook secret, and the deliveries webhooks received.
    #[command(
        subcommand,
        after_help = "Example:\n  stackpad webhook rotate --service shop/web"
    )]
    Webhook(Webhook),
    /// API tokens of the organization: list, create (with a role), revoke.
    #[command(
        subcommand,
        after_help = "Examples:\n  stackpad tokens create --name ci --role deployer\n  \
                      stackpad tokens list\n  stackpad tokens revoke ci"
    )]
    Tokens(access::Tokens),
    /// A managed database's or cache's backups: list, create (followed until verified),
    /// restore (into the same service or, with --into, another of the same engine).
    #[command(
        subcommand,
        after_help = "Examples:\n  stackpad backups list --service shop/db\n  \
                      stackpad backups create --service shop/db\n  \
                      stackpad backups restore latest --service shop/db --yes"
    )]
    Backups(backups::Backups),
    /// Members of the organization and their roles: list, add, remove.
    #[command(
        subcommand,
        after_help = "Examples:\n  stackpad members list\n  \
                      stackpad members add ada@shop.example --role developer\n  \
                      stackpad members remove ada@shop.example --yes"
    )]
    Members(access::Members),
    /// Queue a deployment and follow its steps until it ends (exit 5 unless it ends ready).
    #[command(after_help = "Examples:\n  stackpad deploy --service shop/web\n  \
                      stackpad deploy --image registry.example/shop:v2 --no-wait\n  \
                      stackpad deploy --ref main")]
    Deploy {
        #[command(flatten)]
        target: ServiceArgs,
        /// Deploy this image instead of the service's, e.g. `--image shop:v2`.
        #[arg(long, conflicts_with_all = ["git_ref", "commit"])]
        image: Option<String>,
        /// Build this branch or tag of a git service, e.g. `--ref main`.
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// Build this exact commit of a git service, e.g. `--commit 3f2a9c1...`.
        #[arg(long)]
        commit: Option<String>,
        /// Return once queued instead of following the steps.
        #[arg(long)]
        no_wait: bool,
    },
    /// List a service's deployments, newest first; or show one with its timeline.
    #[command(
        after_help = "Examples:\n  stackpad deployments --service shop/web\n  stackpad deployments --json\n  \
                            stackpad deployments 4ef546c0-1b2c-4d5e-8f90-a1b2c3d4e5f6"
    )]
    Deployments {
        #[command(flatten)]
        target: ServiceArgs,
        /// Show this deployment (its id) with its timeline instead of listing.
        deployment: Option<String>,
        #[command(subcommand)]
        command: Option<DeploymentCommand>,
    },
    /// Cancel a deployment that has not finished (the running one stays).
    #[command(after_help = "Example:\n  stackpad cancel 4ef546c0-1b2c-4d5e-8f90-a1b2c3d4e5f6")]
    Cancel {
        /// The deployment's id (`stackpad deployments` lists them).
        deployment: String,
    },
    /// Deploy again what an earlier ready deployment ran, and follow it.
    #[command(after_help = "Example:\n  stackpad rollback 4ef546c0-1b2c-4d5e-8f90-a1b2c3d4e5f6")]
    Rollback {
        /// The id of the earlier deployment (`stackpad deployments` lists them).
        deployment: String,
        /// Return once queued instead of following the steps.
        #[arg(long)]
        no_wait: bool,
    },
    /// A service's latest log lines (or, with --access, requests), oldest first.
    #[command(
        after_help = "Examples:\n  stackpad logs --service shop/web --grep error\n  \
                      stackpad logs --follow --grep error\n  \
                      stackpad logs --access --status 5xx --min-duration-ms 500"
    )]
    Logs {
        #[command(flatten)]
        target: ServiceArgs,
        /// Only lines (with --access: paths) containing this text (case-insensitive), e.g.
        /// `--grep timeout`.
        #[arg(long)]
        grep: Option<String>,
        /// How many lines (1..=1000), e.g. `--limit 20`.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// The proxy's access log instead of the containers' output.
        #[arg(long)]
        access: bool,
        /// Keep printing new lines as they come (until interrupted); with --json one JSON
        /// object per line.
        #[arg(long, short = 'f', conflicts_with = "access")]
        follow: bool,
        /// With --access: `5xx`, `404`, `500-599` or a comma-separated list, e.g. `--status 5xx`.
        #[arg(long, requires = "access")]
        status: Option<String>,
        /// With --access: only requests that took at least this long, e.g. `--min-duration-ms 500`.
        #[arg(long, requires = "access")]
        min_duration_ms: Option<u64>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(
        long_about = "Print a completion script for the shell, generated from the same \
                      definitions as this help. Load it from the shell's startup file.",
        after_help = "Examples:\n  stackpad completions bash > ~/.local/share/bash-completion/completions/stackpad\n  \
                      stackpad completions zsh > \"${fpath[1]}/_stackpad\"\n  \
                      stackpad completions fish > ~/.config/fish/completions/stackpad.fish"
    )]
    Completions {
        /// The shell, e.g. `bash`.
        shell: clap_complete::Shell,
    },
}

/// What `stackpad deployments` does to one deployment.
#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// A deployment's build log, oldest line first; with --follow, new lines as the build
    /// prints them, until the deployment ends (exit 5 unless it ends ready).
    #[command(
        after_help = "Examples:\n  stackpad deployments logs 4ef546c0-1b2c-4d5e-8f90-a1b2c3d4e5f6\n  \
                      stackpad deployments logs 4ef546c0-1b2c-4d5e-8f90-a1b2c3d4e5f6 --follow --json"
    )]
    Logs {
        /// The deployment's id (`stackpad deployments` lists them).
        deployment: String,
        /// Keep printing lines as the build prints them, until the deployment ends; with
        /// --json one JSON object per line.
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

/// What `stackpad link` links to.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LinkArgs {
    /// The project, by name or id, e.g. `--project shop`.
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
    /// The environment, by name or id (default with --service: the service's), e.g.
    /// `--environment staging`.
    #[arg(long, value_name = "ENVIRONMENT")]
    pub environment: Option<String>,
    /// The service: `web`, `shop/web`, `shop/production/web` or its id, e.g.
    /// `--service shop/web`.
    #[arg(long, value_name = "SERVICE")]
    pub service: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Projects {
    /// The organization's projects.
    #[command(after_help = "Example:\n  stackpad projects list --json")]
    List,
    /// Create a project (with a production environment deploying `main`).
    #[command(after_help = "Example:\n  stackpad projects create shop")]
    Create {
        /// Lower-case letters, digits and '-', starting with a letter, e.g. `shop`.
        name: String,
    },
    /// Delete a project: its services first (containers stopped, routes removed), then the
    /// project with its environments. Asks to type the name unless --yes.
    #[command(
        after_help = "Examples:\n  stackpad projects delete shop\n  stackpad projects delete shop --yes"
    )]
    Delete {
        /// The project, by name or id, e.g. `shop`.
        project: String,
        /// Do not ask (for scripts; without a terminal --yes is required).
        #[arg(long)]
        yes: bool,
    },
    /// The project's SSH deploy key for private repositories: prints its public half (made on
    /// first use) to add to the repository as a read-only deploy key; services of the project
    /// can then build from `git@host:owner/repo.git` or `ssh://git@host/owner/repo.git`.
    #[command(
        name = "deploy-key",
        after_help = "Examples:\n  stackpad projects deploy-key shop\n  \
                      stackpad projects deploy-key shop --rotate"
    )]
    DeployKey {
        /// The project, by name or id, e.g. `shop`.
        project: String,
        /// Make a new key; the one before stops working at once (add the new public half to
        /// the repository).
        #[arg(long)]
        rotate: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum Webhook {
    /// Replace the secret GitHub signs with (the old one stops working at once); prints the new
    /// one, which is not shown again.
    #[command(after_help = "Example:\n  stackpad webhook rotate --service shop/web")]
    Rotate {
        #[command(flatten)]
        target: ServiceArgs,
        /// Use this secret (32 to 256 characters) instead of a generated one, e.g.
        /// `--secret "$(openssl rand -hex 32)"`.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Recent deliveries to a project's webhooks (or one service's with --service), newest
    /// first, and what became of each: deployed, ignored and why, refused and why.
    #[command(
        after_help = "Examples:\n  stackpad webhook deliveries --project shop\n  \
                      stackpad webhook deliveries --service shop/web --limit 5"
    )]
    Deliveries {
        #[command(flatten)]
        target: ServiceArgs,
        /// At most this many (1 to 200), e.g. `--limit 5`.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
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

/// The directory commands run in: `-C DIR`, else the current one.
fn work_dir(cli: &Cli) -> Result<PathBuf, CliError> {
    match &cli.dir {
        Some(d) => Ok(d.clone()),
        None => std::env::current_dir().map_err(|source| CliError::Io {
            path: ".".into(),
            source,
        }),
    }
}

/// Runs a command; returns the process exit code (`exit::DEPLOYMENT_FAILED` when a followed
/// deployment did not end ready). An error's code is [`CliError::exit_code`].
pub async fn run(cli: Cli, w: &mut impl Write) -> Result<i32, CliError> {
    if let Command::Completions { shell } = cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "stackpad", w);
        return Ok(exit::OK);
    }
    let path = config_path(&cli)?;
    let dir = work_dir(&cli)?;
    let mut p = output::Printer::new(w, cli.json, cli.colour);
    if let Command::Login { url, token } = &cli.command {
        return commands::login(&path, url, token, &mut p).await;
    }
    if let Command::Unlink = &cli.command {
        return commands::unlink(&dir, &mut p);
    }
    let login = load_login(&path)?;
    let api = ApiClient::new(&login.url, &login.token);
    let linked = link::load(&dir)?;
    let names = resolve::Resolver::new(&api, linked.as_ref().map(|(_, l)| l.clone()));
    let ctx = commands::Context {
        api: &api,
        names: &names,
        interactive: cli.interactive,
    };
    match cli.command {
        Command::Login { .. } | Command::Unlink | Command::Completions { .. } => {
            unreachable!("handled above")
        }
        Command::Link { target } => commands::link(&ctx, &dir, linked, target, &mut p).await,
        Command::Domains(cmd) => domains::run(&ctx, cmd, &mut p).await,
        Command::Env(cmd) => env::run(&ctx, cmd, &mut p).await,
        Command::Projects(cmd) => commands::projects(&ctx, cmd, &mut p).await,
        Command::Environments(cmd) => environments::run(&ctx, cmd, &mut p).await,
        Command::Services(cmd) => services::run(&ctx, *cmd, &mut p).await,
        Command::Scale {
            target,
            replicas,
            no_wait,
        } => services::scale(&ctx, target, replicas, no_wait, &mut p).await,
        Command::Init { args } => init::init(&ctx, &dir, args, &mut p).await,
        Command::Up { target, no_wait } => init::up(&ctx, &dir, target, no_wait, &mut p).await,
        Command::Members(cmd) => access::members(&ctx, cmd, &mut p).await,
        Command::Backups(cmd) => backups::run(&ctx, cmd, &mut p).await,
        Command::Previews(cmd) => previews::run(&ctx, cmd, &mut p).await,
        Command::Webhook(Webhook::Rotate { target, secret }) => {
            commands::webhook_rotate(&ctx, target, secret, &mut p).await
        }
        Command::Webhook(Webhook::Deliveries { target, limit }) => {
            commands::webhook_deliveries(&ctx, target, limit, &mut p).await
        }
        Command::Tokens(cmd) => access::tokens(&ctx, cmd, &mut p).await,
        Command::Deploy {
            target,
            image,
            git_ref,
            commit,
            no_wait,
        } => deployments::deploy(&ctx, target, image, git_ref, commit, no_wait, &mut p).await,
        Command::Deployments {
            command: Some(DeploymentCommand::Logs { deployment, follow }),
            ..
        } => deployments::build_logs(&ctx, &deployment, follow, &mut p).await,
        Command::Deployments {
            target,
            deployment: None,
            command: None,
        } => deployments::deployments(&ctx, target, &mut p).await,
        Command::Deployments {
            deployment: Some(id),
            command: None,
            ..
        } => deployments::deployment(&ctx, &id, &mut p).await,
        Command::Cancel { deployment } => deployments::cancel(&ctx, &deployment, &mut p).await,
        Command::Rollback {
            deployment,
            no_wait,
        } => deployments::rollback(&ctx, &deployment, no_wait, &mut p).await,
        Command::Logs {
            target,
            grep,
            limit,
            access,
            follow,
            status,
            min_duration_ms,
        } => {
            let query = logs::LogQuery {
                grep,
                limit,
                access,
                follow,
                status,
                min_duration_ms,
            };
            logs::run(&ctx, target, query, &mut p).await
        }
    }
}
