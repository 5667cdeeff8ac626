//! `stackpad-buildd`: reads its configuration and runs the daemon from the `buildd` library.
//!
//! Usage: `stackpad-buildd [--config FILE] [--listen ADDR]`; the file defaults to
//! `$STACKPAD_BUILDD_CONFIG` and, without either, every key takes its default.
//!
//! `stackpad-buildd __fetch-sandbox SPEC` (hidden) is what buildd runs inside the fetch
//! sandbox's namespaces: `buildd::source::inside`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// Stackpad's build daemon: clones, builds with BuildKit and pushes images.
#[derive(Debug, PartialEq, Parser)]
#[command(name = "stackpad-buildd", version, args_override_self = true)]
struct Args {
    /// TOML config file; without it every key takes its default.
    #[arg(long, value_name = "FILE", env = "STACKPAD_BUILDD_CONFIG")]
    config: Option<PathBuf>,
    /// The Builder API's address (overrides the file's `listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

fn main() -> std::process::ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).and_then(|a| a.to_str()) == Some(buildd::source::inside::HELPER_ARG) {
        let args: Vec<String> = std::env::args().skip(2).collect();
        std::process::exit(buildd::source::inside::helper_main(&args));
    }
    let args = match Args::try_parse_from(argv) {
        Ok(args) => args,
        // --help and --version print and succeed; a bad argument fails with 1, as every
        // other start-up error does.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            };
        }
    };
    let result = tokio::runtime::Runtime::new()
        .context("starting the Tokio runtime")
        .and_then(|runtime| runtime.block_on(daemon(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn daemon(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let text = match &args.config {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => String::new(),
    };
    let mut config = buildd::config::Config::from_toml(&text)?;
    if let Some(addr) = args.listen {
        config.listen = addr;
    }
    buildd::daemon::Daemon::start(config).await?.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("stackpad-buildd").chain(argv.iter().copied()))
    }

    #[test]
    fn todays_flags_parse() {
        assert_eq!(
            parse(&["--config", "/etc/buildd.toml", "--listen", "127.0.0.1:9300"]).unwrap(),
            Args {
                config: Some("/etc/buildd.toml".into()),
                listen: Some("127.0.0.1:9300".parse().unwrap()),
            }
        );
        // The last of a repeated flag wins.
        let args = parse(&["--listen", "127.0.0.1:1", "--listen", "127.0.0.1:2"]).unwrap();
        assert_eq!(args.listen, Some("127.0.0.1:2".parse().unwrap()));
    }

    #[test]
    fn version_and_help_succeed_and_bad_arguments_name_themselves() {
        let version = parse(&["--version"]).unwrap_err();
        assert_eq!(version.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(!version.use_stderr());
        assert_eq!(
            version.to_string(),
            format!("stackpad-buildd {}\n", env!("CARGO_PKG_VERSION"))
        );
        let unknown = parse(&["--bogus"]).unwrap_err();
        assert!(unknown.use_stderr());
        assert!(unknown.to_string().contains("--bogus"), "{unknown}");
        let listen = parse(&["--listen", "nowhere"]).unwrap_err();
        assert!(listen.to_string().contains("--listen"), "{listen}");
        assert!(
            parse(&["--config"])
                .unwrap_err()
                .to_string()
                .contains("--config")
        );
    }
}
