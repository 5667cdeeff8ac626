//! `stackpad`'s help: every command and flag says what it does with an example, the text of
//! `stackpad --help` and of every command's help is compared with the checked-in
//! `tests/help.txt` (so a change shows in review; `UPDATE_HELP=1 cargo test -p stackpad-cli
//! --test help` rewrites it), and shell completions come from the same definitions.

use clap::CommandFactory;
use cli::Cli;

/// Every command path with its command, depth first: `stackpad`, `stackpad deploy`, ...
fn commands() -> Vec<(String, clap::Command)> {
    fn walk(prefix: &str, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        let path = if prefix.is_empty() {
            cmd.get_name().to_owned()
        } else {
            format!("{prefix} {}", cmd.get_name())
        };
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(&path, sub, out);
        }
    }
    let mut root = Cli::command();
    root.build();
    let mut out = vec![];
    walk("", &root, &mut out);
    out
}

#[test]
fn every_command_has_help_with_an_example_and_every_flag_has_help() {
    let mut missing = vec![];
    for (path, cmd) in commands() {
        if cmd.get_about().is_none() {
            missing.push(format!("{path}: no about"));
        }
        let example = cmd
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        if !example.contains("stackpad ") {
            missing.push(format!("{path}: no example in after_help"));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") || arg.is_hide_set() {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            if help.is_empty() {
                missing.push(format!("{path} {id}: no help"));
            } else if arg.get_long().is_some()
                && arg.get_num_args().is_some_and(|n| n.takes_values())
                && !help.contains("e.g.")
                && !help.contains("default")
            {
                missing.push(format!("{path} --{id}: no example value"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

fn rendered_help() -> String {
    let mut text = String::new();
    for (path, mut cmd) in commands() {
        text.push_str(&format!("=== {path} --help\n"));
        text.push_str(&cmd.render_long_help().to_string());
        text.push('\n');
    }
    text
}

#[test]
fn help_text_matches_the_checked_in_snapshot() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/help.txt");
    let now = rendered_help();
    if std::env::var_os("UPDATE_HELP").is_some() {
        std::fs::write(&path, &now).unwrap();
    }
    let then = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_HELP=1 writes it)", path.display()));
    if now != then {
        let first = now
            .lines()
            .zip(then.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(now.lines().count().min(then.lines().count()));
        panic!(
            "help changed from {} at line {}: now {:?}, was {:?} (UPDATE_HELP=1 rewrites it)",
            path.display(),
            first + 1,
            now.lines().nth(first),
            then.lines().nth(first)
        );
    }
}

#[test]
fn the_binary_prints_the_same_top_level_help() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stackpad"))
        .arg("--help")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed, Cli::command().render_long_help().to_string());
    for line in [
        "Exit codes:",
        "  5  a followed deployment failed",
        "stackpad link --service shop/web",
    ] {
        assert!(printed.contains(line), "{line:?} in {printed}");
    }
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stackpad"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        for word in ["deploy", "link", "backups", "--service", "--json"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stackpad"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}
