//! `stackpad-buildd`: reads its configuration and runs the daemon from the `buildd` library.
//!
//! Usage: `stackpad-buildd [--config FILE] [--listen ADDR]`; the file defaults to
//! `$STACKPAD_BUILDD_CONFIG` and, without either, every key takes its default.
//!
//! `stackpad-buildd __fetch-sandbox SPEC` (hidden) is what buildd runs inside the fetch
//! sandbox's namespaces: `buildd::source::inside`.

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(buildd::source::inside::HELPER_ARG) {
        std::process::exit(buildd::source::inside::helper_main(&args[1..]));
    }
    tokio::runtime::Runtime::new()
        .context("starting the Tokio runtime")?
        .block_on(daemon())
}

async fn daemon() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let mut file = std::env::var("STACKPAD_BUILDD_CONFIG").ok();
    let mut listen = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--version" => {
                println!("stackpad-buildd {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            "--config" => file = Some(args.next().context("--config needs a file")?),
            "--listen" => listen = Some(args.next().context("--listen needs an address")?),
            other => anyhow::bail!(
                "unknown argument {other:?}; usage: stackpad-buildd [--config FILE] [--listen ADDR]"
            ),
        }
    }
    let text = match &file {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => String::new(),
    };
    let mut config = buildd::config::Config::from_toml(&text)?;
    if let Some(addr) = listen {
        config.listen = addr.parse().with_context(|| format!("--listen {addr:?}"))?;
    }
    buildd::daemon::Daemon::start(config).await?.wait().await;
    Ok(())
}
