//! Clean and warm (one source file changed) build time of the Express fixture through
//! stackpad-buildd (gRPC StartBuild to SUCCEEDED: clone, detect, solve, push), side by side with
//! `docker build` of the same generated Dockerfile and context on the same dockerd.
//!
//! "Clean" prunes dockerd's build cache first (including the npm cache mount) and pushes to a
//! fresh repository, so nothing is reused; "warm" rebuilds after a one-line change. Run through
//! `bench/buildd/run`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use buildd::config::Config;
use buildd::daemon::Daemon;
use proto::build::v1 as pb;
use proto::build::v1::builder_client::BuilderClient;

const DOCKER: &str = "/usr/bin/docker";

fn registry() -> String {
    std::env::var("STACKPAD_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

fn sh(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    sh(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=b", "-c", "user.email=b@example.invalid"])
        .args(args))
}

fn prune() -> anyhow::Result<()> {
    sh(Command::new(DOCKER).args(["builder", "prune", "-af"]))?;
    Ok(())
}

fn change(repo: &Path, n: usize) -> anyhow::Result<String> {
    std::fs::write(
        repo.join("greeting.js"),
        format!("exports.greeting = () => \"hello {n}\";\n"),
    )?;
    git(repo, &["commit", "-q", "-am", "change"])?;
    git(repo, &["rev-parse", "HEAD"])
}

struct Buildd {
    client: BuilderClient<tonic::transport::Channel>,
    _daemon: Daemon,
}

impl Buildd {
    async fn build(
        &mut self,
        repo: &Path,
        sha: &str,
        image: &str,
    ) -> anyhow::Result<(Duration, pb::BuildStatus)> {
        let id = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let t = Instant::now();
        self.client
            .start_build(pb::StartBuildRequest {
                build_id: id.clone(),
                source: Some(pb::GitSource {
                    url: repo.display().to_string(),
                    commit: sha.to_owned(),
                    ..Default::default()
                }),
                image: image.to_owned(),
                ..Default::default()
            })
            .await?;
        let mut stream = self
            .client
            .watch_build(pb::WatchBuildRequest { build_id: id })
            .await?
            .into_inner();
        let mut last = None;
        let mut phases = Vec::new();
        while let Some(ev) = stream.message().await? {
            match ev.event {
                Some(pb::build_event::Event::Status(s)) => {
                    phases.push((format!("{:?}", s.state()), t.elapsed()));
                    last = Some(s);
                }
                Some(pb::build_event::Event::Step(s))
                    if s.completed_at_unix_ms > 0 && std::env::var_os("STEPS").is_some() =>
                {
                    eprintln!(
                        "    {:>5}ms cached={} {}",
                        s.completed_at_unix_ms - s.started_at_unix_ms,
                        s.cached,
                        s.name
                    );
                }
                _ => {}
            }
        }
        let elapsed = t.elapsed();
        if std::env::var_os("PHASES").is_some() {
            eprintln!("  phases: {phases:?}");
        }
        let status = last.context("no status")?;
        if status.state() != pb::BuildState::Succeeded {
            bail!("build failed: {}", status.failure_reason);
        }
        Ok((elapsed, status))
    }
}

/// `docker build` (BuildKit, no network for RUN, like buildd) of the same generated Dockerfile
/// and context, then `docker push`; returns (build, build + push).
fn docker_build(
    repo: &Path,
    dockerfile: &str,
    image: &str,
    scratch: &Path,
) -> anyhow::Result<(Duration, Duration)> {
    let ctx = scratch.join(format!("ctx-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&ctx)?;
    sh(Command::new("sh").arg("-c").arg(format!(
        "git -C {} archive --format=tar HEAD | tar -x -C {}",
        repo.display(),
        ctx.display()
    )))?;
    std::fs::write(ctx.join("Dockerfile.stackpad"), dockerfile)?;
    let t = Instant::now();
    sh(Command::new(DOCKER)
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "-q", "--network", "none", "-f"])
        .arg(ctx.join("Dockerfile.stackpad"))
        .args(["-t", image])
        .arg(&ctx))?;
    let build = t.elapsed();
    sh(Command::new(DOCKER).args(["push", image]))?;
    let total = t.elapsed();
    let _ = std::fs::remove_dir_all(&ctx);
    Ok((build, total))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let scratch = tempfile::tempdir()?;
    let repo = scratch.path().join("express");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/express");
    sh(Command::new("cp").arg("-r").arg(&fixture).arg(&repo))?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    git(&repo, &["add", "."])?;
    git(&repo, &["commit", "-q", "-m", "fixture"])?;

    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        metrics_listen: "127.0.0.1:0".parse()?,
        work_dir: scratch.path().join("work"),
        local_sources: vec![scratch.path().to_path_buf()],
        ..Config::default()
    };
    // git runs inside the fetch sandbox through stackpad-buildd's hidden subcommand (built
    // beside this example by bench/buildd/run).
    config.fetch_sandbox.helper = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("stackpad-buildd"))
        .unwrap_or_default();
    let socket: PathBuf = std::env::var("DOCKER_HOST")
        .unwrap_or_else(|_| "unix:///run/docker.sock".into())
        .trim_start_matches("unix://")
        .into();
    config.buildkit.socket = socket.clone();
    config.buildkit.docker_socket = socket;
    config.base_images.node = format!("{}/stackpad/node:20", registry());
    config.base_images.static_server = format!("{}/stackpad/busybox:1", registry());
    let bases = config.base_images.clone();
    let daemon = Daemon::start(config).await?;
    let client = BuilderClient::connect(format!("http://{}", daemon.grpc_addr)).await?;
    let mut buildd = Buildd {
        client,
        _daemon: daemon,
    };

    let detection = buildd::detect::detect(&buildd::detect::RepoSnapshot::read(&repo)?)?;
    let dockerfile = buildd::dockerfile::generate(
        &detection,
        &bases,
        &["NODE_OPTIONS".into()],
        &buildd::dockerfile::cache_key(&format!("{}/bench/buildd", registry())),
        // The Express fixture's only dependency is vendored: nothing is fetched.
        buildd::dockerfile::Served::default(),
    )
    .context("express gets a generated Dockerfile")?;

    let (mut b_clean, mut b_warm, mut d_clean, mut d_warm, mut dp_clean, mut dp_warm) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut n = 0;
    let mut cache_line = String::new();
    for run in 0..runs {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
        // buildd: clean, then warm after a one-line change.
        prune()?;
        let image = format!("{}/bench/buildd-{tag}", registry());
        let sha = git(&repo, &["rev-parse", "HEAD"])?;
        let (t, _) = buildd.build(&repo, &sha, &image).await?;
        b_clean.push(t);
        n += 1;
        let sha = change(&repo, n)?;
        let (t, s) = buildd.build(&repo, &sha, &image).await?;
        b_warm.push(t);
        if run == 0 {
            // Another build node: no local cache, only the registry's inline cache.
            prune()?;
            n += 1;
            let sha = change(&repo, n)?;
            let (t, other) = buildd.build(&repo, &sha, &image).await?;
            cache_line = format!(
                "warm steps cached {}/{}; after pruning the local cache (another node), registry cache import: {} with {}/{} steps cached",
                s.cached_steps,
                s.total_steps,
                secs(t),
                other.cached_steps,
                other.total_steps
            );
        }
        // docker build of the same Dockerfile and context.
        prune()?;
        let dimage = format!("{}/bench/docker-{tag}:1", registry());
        let (b, bp) = docker_build(&repo, &dockerfile, &dimage, scratch.path())?;
        d_clean.push(b);
        dp_clean.push(bp);
        n += 1;
        change(&repo, n)?;
        let (b, bp) = docker_build(&repo, &dockerfile, &dimage, scratch.path())?;
        d_warm.push(b);
        dp_warm.push(bp);
        let _ = sh(Command::new(DOCKER).args(["rmi", "-f", &dimage]));
        eprintln!(
            "run {}: buildd clean {} warm {} | docker build clean {} warm {} | docker build+push clean {} warm {}",
            run + 1,
            secs(b_clean[run]),
            secs(b_warm[run]),
            secs(d_clean[run]),
            secs(d_warm[run]),
            secs(dp_clean[run]),
            secs(dp_warm[run])
        );
    }
    let (bc, bw) = (median(b_clean), median(b_warm));
    let (dc, dw) = (median(d_clean), median(d_warm));
    let (dpc, dpw) = (median(dp_clean), median(dp_warm));
    println!(
        "express fixture, median of {runs} runs (buildd = StartBuild..SUCCEEDED incl. clone and push)"
    );
    println!("{:<28} {:>9} {:>9}", "", "clean", "warm");
    println!("{:<28} {:>9} {:>9}", "stackpad-buildd", secs(bc), secs(bw));
    println!("{:<28} {:>9} {:>9}", "docker build", secs(dc), secs(dw));
    println!(
        "{:<28} {:>9} {:>9}",
        "docker build + push",
        secs(dpc),
        secs(dpw)
    );
    println!(
        "warm buildd / docker build = {:.2}x (target <= 1.1x); / docker build+push = {:.2}x",
        bw.as_secs_f64() / dw.as_secs_f64(),
        bw.as_secs_f64() / dpw.as_secs_f64()
    );
    println!(
        "warm / clean (buildd) = {:.0}% (target <= 25%)",
        100.0 * bw.as_secs_f64() / bc.as_secs_f64()
    );
    // Read by bench/lib.sh (`--check`).
    println!(
        "target warm_buildd/docker_build {:.3} <= 1.1",
        bw.as_secs_f64() / dw.as_secs_f64()
    );
    println!(
        "target warm/clean_buildd_percent {:.1} <= 25",
        100.0 * bw.as_secs_f64() / bc.as_secs_f64()
    );
    println!("{cache_line}");
    Ok(())
}
