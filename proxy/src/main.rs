//! `stackpad-proxy`: parses its arguments and runs the daemon from the `proxy` library.

fn main() -> std::process::ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version") => {
            println!("stackpad-proxy {}", env!("CARGO_PKG_VERSION"));
            std::process::ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "stackpad-proxy: the daemon is not built yet (issue #3); only --version works"
            );
            std::process::ExitCode::FAILURE
        }
    }
}
