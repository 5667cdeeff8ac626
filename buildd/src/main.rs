//! `stackpad-buildd`: parses its arguments and runs the daemon from the `buildd` library.

fn main() -> std::process::ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version") => {
            println!("stackpad-buildd {}", env!("CARGO_PKG_VERSION"));
            std::process::ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "stackpad-buildd: the daemon is not built yet (issue #7); only --version works"
            );
            std::process::ExitCode::FAILURE
        }
    }
}
