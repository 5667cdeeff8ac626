//! `stackpad-node`: parses its arguments and runs the daemon from the `runtime` library.

fn main() -> std::process::ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version") => {
            println!("stackpad-node {}", env!("CARGO_PKG_VERSION"));
            std::process::ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "stackpad-node: the daemon is not built yet (issue #5); only --version works"
            );
            std::process::ExitCode::FAILURE
        }
    }
}
