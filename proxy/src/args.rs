//! Command-line flags of `stackpad-proxy serve`, layered over the optional config file.

use std::path::PathBuf;

use anyhow::{Context, bail};
use proxy::config::ProxyConfig;

pub const USAGE: &str = "usage:
  stackpad-proxy serve [--config FILE.json] [--http ADDR] [--no-http] [--https ADDR --cert PEM --key PEM]
                       [--admin ADDR] [--token-file FILE] [--state-file FILE] [--threads N]
                       [--no-access-log] [--upgrade-sock PATH] [--pid-file PATH] [--upgrade]
  stackpad-proxy routes list|set|switch|remove [--admin ADDR] [--token-file FILE] ...
  stackpad-proxy --version
The admin token comes from --token-file, the config's admin_token_file, or STACKPAD_PROXY_TOKEN.";

/// Flag parsing shared with the CLI: `--name value` pairs and bare switches.
pub struct Flags<'a> {
    args: &'a [String],
    pos: usize,
}

impl<'a> Flags<'a> {
    pub fn new(args: &'a [String]) -> Self {
        Self { args, pos: 0 }
    }

    /// The next flag name, or `None` at the end.
    pub fn next_flag(&mut self) -> anyhow::Result<Option<&'a str>> {
        let Some(arg) = self.args.get(self.pos) else {
            return Ok(None);
        };
        self.pos += 1;
        if !arg.starts_with("--") {
            bail!("unexpected argument {arg:?}\n{USAGE}");
        }
        Ok(Some(arg.as_str()))
    }

    pub fn value(&mut self, flag: &str) -> anyhow::Result<&'a str> {
        let v = self
            .args
            .get(self.pos)
            .with_context(|| format!("{flag} needs a value"))?;
        self.pos += 1;
        Ok(v.as_str())
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

pub fn serve(argv: &[String]) -> anyhow::Result<()> {
    let mut config = ProxyConfig::default();
    let mut flags = Flags::new(argv);
    let mut upgrade = false;
    let mut overrides: Vec<(&str, &str)> = Vec::new();
    while let Some(flag) = flags.next_flag()? {
        match flag {
            "--upgrade" => upgrade = true,
            "--no-access-log" | "--no-http" => overrides.push((flag, "")),
            _ => overrides.push((flag, flags.value(flag)?)),
        }
    }
    if let Some((_, file)) = overrides.iter().find(|(f, _)| *f == "--config") {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading config {file}"))?;
        config = serde_json::from_str(&text).with_context(|| format!("config {file}"))?;
    }
    for (flag, v) in overrides {
        match flag {
            "--config" => {}
            "--http" => config.http_listen = Some(v.into()),
            "--no-http" => config.http_listen = None,
            "--https" => config.tls_listen = Some(v.into()),
            "--cert" => config.tls_cert_file = Some(v.into()),
            "--key" => config.tls_key_file = Some(v.into()),
            "--admin" => config.admin_listen = v.into(),
            "--token-file" => config.admin_token_file = Some(v.into()),
            "--state-file" => config.state_file = v.into(),
            "--threads" => {
                config.threads = v.parse().with_context(|| format!("--threads {v:?}"))?
            }
            "--no-access-log" => config.access_log = false,
            "--upgrade-sock" => config.upgrade_sock = v.into(),
            "--pid-file" => config.pid_file = v.into(),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    let token = token(config.admin_token_file.as_ref())?;
    if !token.is_empty() {
        config.admin_token = token;
    }
    init_tracing();
    proxy::server::run(config, upgrade)?;
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
