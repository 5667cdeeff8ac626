//! What the fetch sandbox adds to a checkout: the same shallow init + fetch + checkout of the
//! Express fixture (a local repository) run as plain git on the host and through
//! `buildd::source::checkout` (namespaces, tmpfs, pivot, uid switch, egress proxy); medians over
//! `RUNS` (default 15). Run by `bench/buildd/fetch`.
#![allow(clippy::print_stdout, reason = "a benchmark prints its results")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use buildd::source::egress::{Egress, Resolver};
use buildd::source::{FetchSettings, GitSource, checkout};

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("/usr/bin/git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=b", "-c", "user.email=b@example.invalid"])
        .args(["-c", "protocol.file.allow=always"])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    let scratch = tempfile::tempdir()?;
    let repo = scratch.path().join("express");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/express");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&fixture)
        .arg(&repo)
        .status()?;
    if !status.success() {
        bail!("cp -r {}", fixture.display());
    }
    git(&repo, &["init", "-q", "-b", "main"])?;
    git(&repo, &["add", "."])?;
    git(&repo, &["commit", "-q", "-m", "fixture"])?;
    let sha = git(&repo, &["rev-parse", "HEAD"])?;
    let url = format!("file://{}", repo.display());

    let helper = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("stackpad-buildd"))
        .context("locating stackpad-buildd beside the example")?;
    let settings = Arc::new(FetchSettings {
        helper,
        uid: 65532,
        gid: 65532,
        timeout: Duration::from_secs(60),
        max_bytes: 256 << 20,
        max_files: 20_000,
        ca_file: None,
        ssh_known_hosts: None,
        local_roots: vec![scratch.path().to_path_buf()],
        egress: Egress {
            policy: Default::default(),
            resolver: Resolver::System,
        },
    });

    let mut plain = Vec::new();
    let mut sandboxed = Vec::new();
    for i in 0..runs {
        let dest = scratch.path().join(format!("plain-{i}"));
        std::fs::create_dir_all(&dest)?;
        let started = Instant::now();
        git(&dest, &["init", "-q", "--template="])?;
        git(
            &dest,
            &[
                "fetch",
                "-q",
                "--depth",
                "1",
                "--no-tags",
                "--end-of-options",
                &url,
                &sha,
            ],
        )?;
        git(&dest, &["checkout", "-q", "--detach", "FETCH_HEAD"])?;
        plain.push(started.elapsed());

        let dest = scratch.path().join(format!("sandboxed-{i}"));
        let source = GitSource {
            url: url.clone(),
            commit: sha.clone(),
            ..GitSource::default()
        };
        let started = Instant::now();
        let co = checkout(&settings, &source, &dest, &mut |_| {}).await?;
        sandboxed.push(started.elapsed());
        drop(co);
    }
    let (p, s) = (median(plain), median(sandboxed));
    println!(
        "checkout of the express fixture (init + shallow fetch + checkout), median of {runs}:"
    );
    println!("  plain git on the host: {:>6.1} ms", p.as_secs_f64() * 1e3);
    println!("  fetch sandbox:         {:>6.1} ms", s.as_secs_f64() * 1e3);
    println!(
        "  added:                 {:>6.1} ms ({:.2}x)",
        (s.as_secs_f64() - p.as_secs_f64()) * 1e3,
        s.as_secs_f64() / p.as_secs_f64()
    );
    Ok(())
}
