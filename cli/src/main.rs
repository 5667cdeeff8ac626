//! `stackpad`: the command-line client of the control plane's REST API.

#![forbid(unsafe_code)]

use std::io::IsTerminal;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut cli = cli::Cli::parse();
    cli.colour = cli::output::colour_wanted(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    cli.interactive = std::io::stdin().is_terminal();
    let json = cli.json;
    let code = match cli::run(cli, &mut std::io::stdout()).await {
        Ok(code) => code,
        Err(e) => {
            if json {
                let error = serde_json::json!({
                    "error": { "message": e.to_string(), "exit_code": e.exit_code() }
                });
                eprintln!("{error}");
            } else {
                eprintln!("stackpad: {e}");
            }
            e.exit_code()
        }
    };
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
