//! `stackpad-node`: parses its configuration and runs the daemon from the `runtime` library.

use std::process::ExitCode;
use std::sync::Arc;

use runtime::cli::{Command, USAGE, parse};
use runtime::isolation::IsolationDisabled;
use runtime::logs::NoShipping;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse(&args, &|k| std::env::var(k).ok()) {
        Ok(Command::Run(c)) => *c,
        Ok(Command::Version) => {
            println!("stackpad-node {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("stackpad-node: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stackpad-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The ebpf crate's hook and the ClickHouse shipper replace these when they are wired in.
    match runtime.block_on(runtime::daemon::run(
        config,
        Arc::new(IsolationDisabled),
        Arc::new(NoShipping),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stackpad-node: {e}");
            ExitCode::FAILURE
        }
    }
}
