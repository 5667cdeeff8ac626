//! `stackpad-proxy`: parses its arguments (clap) and runs the daemon or the `routes` admin
//! client from the `proxy` library.

mod args;
mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the request path allocates and frees small buffers and
/// header maps per request, and glibc's malloc/free were ~12% of the proxy's CPU under
/// keep-alive load (bench/proxy/profile); side by side (bench/proxy/run with PROXY_B set to a
/// glibc build) a request took 43.1 us of CPU instead of 49.2.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print and succeed; a bad or missing argument fails with 1, as
        // every other error does.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match &cli.command {
        args::Command::Serve(serve) => args::serve(serve),
        args::Command::Routes(routes) => cli::routes(routes),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stackpad-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}
