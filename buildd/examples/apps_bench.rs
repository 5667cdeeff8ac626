//! Clean and warm (one source file changed) builds of the generator-made apps in `examples/`
//! (Vite, Next.js) through stackpad-buildd, side by side with `docker build` of a well-written
//! multi-stage Dockerfile for the same app (npm cache mount, dependencies before sources,
//! production-only runtime stage) on the same dockerd, and the images' sizes.
//!
//! "Clean": dockerd's build cache pruned, and for buildd a fresh work dir (no dependency cache);
//! "warm": a one-line change of the app's page. buildd's `RUN` steps have no network (its
//! dependencies come from its fetch sandbox); the docker peer installs with `--network host`.
//! Run through `bench/buildd/apps`.

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

struct App {
    name: &'static str,
    /// The file a warm build changes, and the text replaced in it.
    page: &'static str,
    text: &'static str,
    peer: fn(&str) -> String,
}

/// What a careful hand-written Dockerfile for the Vite app looks like: static files served by
/// busybox httpd.
fn vite_peer(registry: &str) -> String {
    format!(
        "FROM {registry}/stackpad/node:20 AS build\nWORKDIR /app\nCOPY package.json package-lock.json ./\n\
         RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund\nCOPY . .\nRUN npm run build\n\n\
         FROM {registry}/stackpad/busybox:1\nCOPY --from=build /app/dist /www\nUSER 1000:1000\nEXPOSE 8080\n\
         CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    )
}

fn next_peer(registry: &str) -> String {
    format!(
        "FROM {registry}/stackpad/node:20 AS deps\nWORKDIR /app\nCOPY package.json package-lock.json ./\n\
         RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund\n\n\
         FROM deps AS build\nENV NODE_ENV=production NEXT_TELEMETRY_DISABLED=1\nCOPY . .\n\
         RUN npm run build && npm prune --omit=dev && rm -rf .next/cache\n\n\
         FROM {registry}/stackpad/node:20\nWORKDIR /app\nENV NODE_ENV=production PORT=3000\n\
         COPY --from=build --chown=1000:1000 /app ./\nUSER 1000:1000\nEXPOSE 3000\n\
         CMD [\"node_modules/.bin/next\", \"start\"]\n"
    )
}

/// The peer's npm trusts this machine's CA store (the node image's copy), as buildd's fetch does.
fn with_ca(dockerfile: String) -> String {
    dockerfile.replace(
        "\nWORKDIR /app\nCOPY package.json",
        "\nWORKDIR /app\nENV NPM_CONFIG_CAFILE=/etc/ssl/certs/ca-certificates.crt\nCOPY package.json",
    )
}

fn prune() -> anyhow::Result<()> {
    sh(Command::new(DOCKER).args(["builder", "prune", "-af"]))?;
    Ok(())
}

fn change(repo: &Path, app: &App, n: usize) -> anyhow::Result<String> {
    let path = repo.join(app.page);
    let text = std::fs::read_to_string(&path)?;
    std::fs::write(
        &path,
        text.replacen(app.text, &format!("{} {n}", app.text), 1),
    )?;
    git(repo, &["commit", "-q", "-am", "change"])?;
    git(repo, &["rev-parse", "HEAD"])
}

/// Size in bytes of `image` as dockerd stores it (pulled first when it is a registry digest).
fn docker_size(image: &str) -> anyhow::Result<u64> {
    if image.contains('@') {
        sh(Command::new(DOCKER).args(["pull", "-q", image]))?;
    }
    Ok(sh(Command::new(DOCKER).args(["image", "inspect", "-f", "{{.Size}}", image]))?.parse()?)
}

async fn buildd_build(
    client: &mut BuilderClient<tonic::transport::Channel>,
    repo: &Path,
    sha: &str,
    image: &str,
) -> anyhow::Result<(Duration, pb::BuildStatus)> {
    let id = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let t = Instant::now();
    client
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
    let mut stream = client
        .watch_build(pb::WatchBuildRequest { build_id: id })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(ev) = stream.message().await? {
        if let Some(pb::build_event::Event::Status(s)) = ev.event {
            last = Some(s);
        }
    }
    let status = last.context("no status")?;
    if status.state() != pb::BuildState::Succeeded {
        bail!("build failed: {}", status.failure_reason);
    }
    Ok((t.elapsed(), status))
}

fn docker_build(
    repo: &Path,
    dockerfile: &str,
    image: &str,
    scratch: &Path,
) -> anyhow::Result<Duration> {
    let ctx = scratch.join(format!("ctx-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&ctx)?;
    sh(Command::new("sh").arg("-c").arg(format!(
        "git -C {} archive --format=tar HEAD | tar -x -C {}",
        repo.display(),
        ctx.display()
    )))?;
    std::fs::write(ctx.join("Dockerfile.peer"), dockerfile)?;
    let t = Instant::now();
    sh(Command::new(DOCKER)
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "-q", "--network", "host", "-f"])
        .arg(ctx.join("Dockerfile.peer"))
        .args(["-t", image])
        .arg(&ctx))?;
    let took = t.elapsed();
    let _ = std::fs::remove_dir_all(&ctx);
    Ok(took)
}

async fn daemon(
    scratch: &Path,
    work: &str,
) -> anyhow::Result<(Daemon, BuilderClient<tonic::transport::Channel>)> {
    use std::net::ToSocketAddrs as _;
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        metrics_listen: "127.0.0.1:0".parse()?,
        work_dir: scratch.join(work),
        local_sources: vec![scratch.to_path_buf()],
        ..Config::default()
    };
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
    // The registry's addresses, opened as an operator would where they are not public unicast.
    for addr in ("registry.npmjs.org", 443).to_socket_addrs()? {
        config.egress_allow.push(format!(
            "{}/{}",
            addr.ip(),
            if addr.is_ipv4() { 32 } else { 128 }
        ));
    }
    let daemon = Daemon::start(config).await?;
    let client = BuilderClient::connect(format!("http://{}", daemon.grpc_addr)).await?;
    Ok((daemon, client))
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let apps = [
        App {
            name: "vite-react",
            page: "src/App.tsx",
            text: "Get started",
            peer: vite_peer,
        },
        App {
            name: "nextjs",
            page: "app/page.tsx",
            text: "Hello world!",
            peer: next_peer,
        },
    ];
    let only = std::env::var("APPS").unwrap_or_default();
    let scratch = tempfile::tempdir()?;
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut rows = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        if !only.is_empty() && !only.split(',').any(|a| a == app.name) {
            continue;
        }
        let repo = scratch.path().join(app.name);
        sh(Command::new("cp")
            .arg("-r")
            .arg(examples.join(app.name))
            .arg(&repo))?;
        git(&repo, &["init", "-q", "-b", "main"])?;
        git(&repo, &["add", "."])?;
        git(&repo, &["commit", "-q", "-m", "example"])?;
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];

        // buildd: a fresh work dir (no dependency cache) and no BuildKit cache, then warm.
        let (d, mut client) = daemon(scratch.path(), &format!("work-{i}")).await?;
        prune()?;
        let image = format!("{}/bench/apps-{}-{tag}", registry(), app.name);
        let sha = git(&repo, &["rev-parse", "HEAD"])?;
        let (b_clean, _) = buildd_build(&mut client, &repo, &sha, &image).await?;
        let sha = change(&repo, app, 1)?;
        let (b_warm, status) = buildd_build(&mut client, &repo, &sha, &image).await?;
        let b_size = docker_size(&format!("{image}@{}", status.image_digest))?;
        drop(d);

        // The peer: docker build of a hand-written multi-stage Dockerfile.
        prune()?;
        let peer_image = format!("bench/apps-peer-{}-{tag}:1", app.name);
        let dockerfile = with_ca((app.peer)(&registry()));
        let d_clean = docker_build(&repo, &dockerfile, &peer_image, scratch.path())?;
        change(&repo, app, 2)?;
        let d_warm = docker_build(&repo, &dockerfile, &peer_image, scratch.path())?;
        let d_size = docker_size(&peer_image)?;
        let _ = sh(Command::new(DOCKER).args(["rmi", "-f", &peer_image]));
        let _ = sh(Command::new(DOCKER).args([
            "rmi",
            "-f",
            &format!("{image}@{}", status.image_digest),
        ]));
        eprintln!(
            "{}: buildd clean {} warm {} ({}) | docker build clean {} warm {} ({})",
            app.name,
            secs(b_clean),
            secs(b_warm),
            mb(b_size),
            secs(d_clean),
            secs(d_warm),
            mb(d_size)
        );
        rows.push((app.name, b_clean, b_warm, b_size, d_clean, d_warm, d_size));
    }
    println!(
        "{:<12} {:>13} {:>13} {:>11} {:>13} {:>13} {:>11}",
        "app", "buildd clean", "buildd warm", "image", "docker clean", "docker warm", "image"
    );
    for (name, bc, bw, bs, dc, dw, ds) in &rows {
        println!(
            "{:<12} {:>13} {:>13} {:>11} {:>13} {:>13} {:>11}",
            name,
            secs(*bc),
            secs(*bw),
            mb(*bs),
            secs(*dc),
            secs(*dw),
            mb(*ds)
        );
    }
    for (name, bc, bw, bs, dc, dw, ds) in &rows {
        // Read by bench/lib.sh (`--check`).
        println!(
            "target {name}_clean_buildd/docker {:.3} <= 1.1",
            bc.as_secs_f64() / dc.as_secs_f64()
        );
        println!(
            "target {name}_warm_buildd/docker {:.3} <= 1.0",
            bw.as_secs_f64() / dw.as_secs_f64()
        );
        println!(
            "target {name}_warm/clean_buildd_percent {:.1} <= 25",
            100.0 * bw.as_secs_f64() / bc.as_secs_f64()
        );
        println!(
            "target {name}_image_buildd/docker {:.3} <= 1.0",
            *bs as f64 / *ds as f64
        );
    }
    Ok(())
}
