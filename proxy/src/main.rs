//! `stackpad-proxy`: parses its arguments and runs the daemon or the `routes` admin client
//! from the `proxy` library.

mod args;
mod cli;

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.first().map(String::as_str) {
        Some("--version") => {
            println!("stackpad-proxy {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some("serve") => args::serve(&argv[1..]),
        Some("routes") => cli::routes(&argv[1..]),
        _ => Err(anyhow::anyhow!("{}", args::USAGE)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stackpad-proxy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
