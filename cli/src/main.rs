//! `stackpad`: the command-line client of the control plane's REST API.

#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli, &mut std::io::stdout()).await {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("stackpad: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
