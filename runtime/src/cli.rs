//! The daemon's configuration sources, in order: defaults, the TOML file (`--config` or
//! `STACKPAD_NODE_CONFIG`), environment variables, flags. Validated once at the end.

use std::path::PathBuf;

use crate::config::NodeConfig;
use crate::error::{Result, RuntimeError};

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Box<NodeConfig>),
    Version,
    Help,
}

pub const USAGE: &str = "usage: stackpad-node [--config FILE] [--listen ADDR] [--metrics-listen ADDR] \
[--namespace NS] [--containerd SOCKET] [--state-dir DIR] [--run-dir DIR] [--allow-egress] | --version
environment: STACKPAD_NODE_CONFIG, CONTAINERD_ADDRESS, STACKPAD_NODE_LISTEN, STACKPAD_NODE_METRICS_LISTEN, STACKPAD_NODE_NAMESPACE";

fn parse_addr(key: &str, v: &str) -> Result<std::net::SocketAddr> {
    v.parse()
        .map_err(|_| RuntimeError::invalid(key, format!("{v:?} is not host:port")))
}

/// Builds the configuration from `args` (without the program name) and `env`.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Command> {
    let mut config_file: Option<PathBuf> = env("STACKPAD_NODE_CONFIG").map(PathBuf::from);
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--version" => return Ok(Command::Version),
            "-h" | "--help" => return Ok(Command::Help),
            "--allow-egress" => flags.push((a.clone(), None)),
            "--config" | "--listen" | "--metrics-listen" | "--namespace" | "--containerd"
            | "--state-dir" | "--run-dir" => {
                let v = it
                    .next()
                    .ok_or_else(|| RuntimeError::invalid(a.clone(), "needs a value"))?;
                if a == "--config" {
                    config_file = Some(PathBuf::from(v));
                } else {
                    flags.push((a.clone(), Some(v.clone())));
                }
            }
            other => return Err(RuntimeError::invalid(other, "unknown argument")),
        }
    }
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
    for (flag, value) in flags {
        let v = value.unwrap_or_default();
        match flag.as_str() {
            "--allow-egress" => c.allow_egress = true,
            "--listen" => c.listen = parse_addr("--listen", &v)?,
            "--metrics-listen" => c.metrics_listen = parse_addr("--metrics-listen", &v)?,
            "--namespace" => c.namespace = v,
            "--containerd" => c.containerd_socket = v.into(),
            "--state-dir" => c.state_dir = v.into(),
            "--run-dir" => c.run_dir = v.into(),
            _ => {}
        }
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
}
