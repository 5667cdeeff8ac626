//! The daemon's configuration sources, in order: defaults, the TOML file (`--config` or
//! `STACKPAD_NODE_CONFIG`), environment variables, flags. Validated once at the end. The flags
//! are parsed by clap ([`Args`]); the environment is read through the function `parse` is given.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use crate::config::NodeConfig;
use crate::error::{Result, RuntimeError};

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Box<NodeConfig>),
    Version,
    /// `--help`: the text to print.
    Help(String),
}

/// The environment variables read, in `--help`.
const ENVIRONMENT: &str = "environment: STACKPAD_NODE_CONFIG, CONTAINERD_ADDRESS, \
STACKPAD_NODE_LISTEN, STACKPAD_NODE_METRICS_LISTEN, STACKPAD_NODE_NAMESPACE";

/// `stackpad-node`'s flags; each overrides the file and the environment.
#[derive(Debug, Default, PartialEq, Eq, Parser)]
#[command(
    name = "stackpad-node",
    version,
    about = "Stackpad's node agent: containers through containerd, networks, health, logs",
    after_help = ENVIRONMENT,
    args_override_self = true
)]
pub struct Args {
    /// TOML config file (default: $STACKPAD_NODE_CONFIG).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The NodeAgent gRPC address.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The `/metrics` address.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// containerd namespace of the node's containers.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// containerd's socket.
    #[arg(long, value_name = "SOCKET")]
    pub containerd: Option<PathBuf>,
    /// Persistent state (logs).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Volatile state (log FIFOs, hosts files).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Let containers reach addresses outside the node.
    #[arg(long)]
    pub allow_egress: bool,
}

/// The one-line usage, printed after an error.
pub fn usage() -> String {
    Args::command().render_usage().to_string()
}

fn parse_addr(key: &str, v: &str) -> Result<SocketAddr> {
    v.parse()
        .map_err(|_| RuntimeError::invalid(key, format!("{v:?} is not host:port")))
}

/// Builds the configuration from `args` (without the program name) and `env`.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Command> {
    let argv = std::iter::once("stackpad-node").chain(args.iter().map(String::as_str));
    let flags = match Args::try_parse_from(argv) {
        Ok(flags) => flags,
        Err(e) => {
            return match e.kind() {
                clap::error::ErrorKind::DisplayVersion => Ok(Command::Version),
                clap::error::ErrorKind::DisplayHelp => Ok(Command::Help(e.to_string())),
                _ => {
                    // clap's first line, without its "error: " and the usage printed anyway.
                    let text = e.to_string();
                    let first = text.lines().next().unwrap_or_default();
                    Err(RuntimeError::invalid(
                        "arguments",
                        first.trim_start_matches("error: "),
                    ))
                }
            };
        }
    };
    let config_file = flags
        .config
        .clone()
        .or_else(|| env("STACKPAD_NODE_CONFIG").map(PathBuf::from));
    let mut c = match &config_file {
        Some(p) => NodeConfig::from_file(p)?,
        None => NodeConfig::default(),
    };
    if let Some(v) = env("CONTAINERD_ADDRESS") {
        c.containerd_socket = v.trim_start_matches("unix://").into();
    }
    if let Some(v) = env("STACKPAD_NODE_LISTEN") {
        c.listen = parse_addr("STACKPAD_NODE_LISTEN", &v)?;
    }
    if let Some(v) = env("STACKPAD_NODE_METRICS_LISTEN") {
        c.metrics_listen = parse_addr("STACKPAD_NODE_METRICS_LISTEN", &v)?;
    }
    if let Some(v) = env("STACKPAD_NODE_NAMESPACE") {
        c.namespace = v;
    }
    let Args {
        config: _,
        listen,
        metrics_listen,
        namespace,
        containerd,
        state_dir,
        run_dir,
        allow_egress,
    } = flags;
    if allow_egress {
        c.allow_egress = true;
    }
    if let Some(v) = listen {
        c.listen = v;
    }
    if let Some(v) = metrics_listen {
        c.metrics_listen = v;
    }
    if let Some(v) = namespace {
        c.namespace = v;
    }
    if let Some(v) = containerd {
        c.containerd_socket = v;
    }
    if let Some(v) = state_dir {
        c.state_dir = v;
    }
    if let Some(v) = run_dir {
        c.run_dir = v;
    }
    c.validate()?;
    Ok(Command::Run(Box::new(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_override_env_override_defaults() {
        let env = |k: &str| match k {
            "STACKPAD_NODE_LISTEN" => Some("127.0.0.1:9000".to_owned()),
            "STACKPAD_NODE_NAMESPACE" => Some("from-env".to_owned()),
            _ => None,
        };
        let Command::Run(c) =
            parse(&args(&["--namespace", "from-flag", "--allow-egress"]), &env).unwrap()
        else {
            panic!("expected run")
        };
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.namespace, "from-flag");
        assert!(c.allow_egress);
        assert_eq!(
            parse(&args(&["--version"]), &|_| None).unwrap(),
            Command::Version
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = parse(&args(&["--listen", "nope"]), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--listen"), "{err}");
        let err = parse(&args(&["--bogus"]), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--bogus"), "{err}");
        let err = parse(&args(&["--namespace", "bad ns"]), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("namespace"), "{err}");
    }

    #[test]
    fn todays_flag_set_parses() {
        let argv = args(&[
            "--config",
            "/etc/stackpad/node.toml",
            "--listen",
            "127.0.0.1:9101",
            "--metrics-listen",
            "127.0.0.1:9102",
            "--namespace",
            "ns1",
            "--containerd",
            "/run/c.sock",
            "--state-dir",
            "/var/lib/sp",
            "--run-dir",
            "/run/sp",
            "--allow-egress",
        ]);
        let argv = std::iter::once("stackpad-node").chain(argv.iter().map(String::as_str));
        assert_eq!(
            Args::try_parse_from(argv).unwrap(),
            Args {
                config: Some("/etc/stackpad/node.toml".into()),
                listen: Some("127.0.0.1:9101".parse().unwrap()),
                metrics_listen: Some("127.0.0.1:9102".parse().unwrap()),
                namespace: Some("ns1".into()),
                containerd: Some("/run/c.sock".into()),
                state_dir: Some("/var/lib/sp".into()),
                run_dir: Some("/run/sp".into()),
                allow_egress: true,
            }
        );
        let Command::Run(c) = parse(
            &args(&[
                "--containerd",
                "/run/c.sock",
                "--state-dir",
                "/var/lib/sp",
                "--run-dir",
                "/run/sp",
                "--metrics-listen",
                "127.0.0.1:9102",
            ]),
            &|k| (k == "CONTAINERD_ADDRESS").then(|| "unix:///env.sock".to_owned()),
        )
        .unwrap() else {
            panic!("expected run")
        };
        assert_eq!(c.containerd_socket, PathBuf::from("/run/c.sock"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/sp"));
        assert_eq!(c.run_dir, PathBuf::from("/run/sp"));
        assert_eq!(c.metrics_listen.port(), 9102);
        let Command::Help(help) = parse(&args(&["--help"]), &|_| None).unwrap() else {
            panic!("expected help")
        };
        assert!(help.contains("--allow-egress") && help.contains("STACKPAD_NODE_CONFIG"));
        assert!(parse(&args(&["--config"]), &|_| None).is_err());
    }
}
