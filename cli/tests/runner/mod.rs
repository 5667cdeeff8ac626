//! Runs the CLI in-process for the tests that drive it against a real control plane (included
//! with `mod runner;`): `stackpad --config CONFIG ARGS...`, its exit code and what it printed.

#![allow(dead_code)]

use std::path::Path;

use clap::Parser;
use cli::{Cli, run};
use serde_json::Value;

/// Runs `stackpad --config CONFIG ARGS...` in-process; (exit code, stdout and error text).
pub async fn stackpad(config: &Path, args: &[&str]) -> (i32, String) {
    let mut argv = vec!["stackpad", "--config", config.to_str().unwrap()];
    argv.extend_from_slice(args);
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => return (e.exit_code(), e.to_string()),
    };
    let mut out = Vec::new();
    let code = match run(cli, &mut out).await {
        Ok(code) => code,
        Err(e) => {
            out.extend_from_slice(format!("error: {e}").as_bytes());
            e.exit_code()
        }
    };
    (code, String::from_utf8(out).unwrap())
}

/// `stackpad` that must exit 0; what it printed.
pub async fn ok(config: &Path, args: &[&str]) -> String {
    let (code, out) = stackpad(config, args).await;
    assert_eq!(code, 0, "{args:?}: {out}");
    out
}

/// `stackpad --json ARGS...` that must exit `want`, parsed.
pub async fn json_with(config: &Path, args: &[&str], want: i32) -> Value {
    let mut argv = vec!["--json"];
    argv.extend_from_slice(args);
    let (code, out) = stackpad(config, &argv).await;
    assert_eq!(code, want, "{args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

/// `stackpad --json ARGS...` that must exit 0, parsed.
pub async fn json_of(config: &Path, args: &[&str]) -> Value {
    let mut argv = vec!["--json"];
    argv.extend_from_slice(args);
    let out = ok(config, &argv).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}
