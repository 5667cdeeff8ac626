//! `stackpad-control`: parses its arguments and runs the daemon from the `control` library.

fn main() -> std::process::ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version") => {
            println!("stackpad-control {}", env!("CARGO_PKG_VERSION"));
            std::process::ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "stackpad-control: the daemon is not built yet (issue #8); only --version works"
            );
            std::process::ExitCode::FAILURE
        }
    }
}
