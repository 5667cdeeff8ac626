//! Clean and warm (one source file changed) builds of the generator-made apps in `examples/`
//! (Vite, Next.js) through stackpad-buildd, side by side with `docker build` + `docker push` of
//! a well-written multi-stage Dockerfile for the same app (npm cache mount, dependencies before
//! sources, production-only runtime stage) on the same dockerd and registry, and the images'
//! sizes. `ROUNDS` rounds (default 3), interleaved (buildd clean, docker clean, buildd warm,
//! docker warm), medians reported, with where each side's time went.
//!
//! What each figure includes:
//! - buildd: StartBuild -> SUCCEEDED over gRPC: the fetch sandbox's clone, detection, the
//!   dependency fetch (sandbox), the context session, the BuildKit solve (export to dockerd
//!   included) and the push of the commit tag to the registry (the cache tag's push runs after
//!   SUCCEEDED and is not counted, as a deployment does not wait for it).
//! - docker: `docker build` (context from a work tree of the same commit, not timed) then
//!   `docker push` of the image to the same registry; its ratio uses build + push.
//!
//! "Clean": each round's app has a unique `description` in package.json, so no BuildKit cache
//! entry from an earlier round matches from the manifests' copy on, buildd starts with a fresh
//! work dir (no dependency cache) and pushes to a fresh repository (no registry cache), and the
//! peer's npm cache mount has a per-round id (empty). After each app's round, the build cache
//! records that appeared in dockerd during it (both sides' layers and cache mounts, which no
//! later round can use) are pruned, and buildd's work dir is removed; older records are kept
//! (other builds share the machine); the base images are in dockerd for both sides.
//! "Warm": a one-line change of the app's page. buildd's `RUN` steps have no network (its
//! dependencies come from its fetch sandbox); the peer installs with `--network host`. buildd
//! keeps the framework's build cache (`.next/cache`, ...) in a cache mount per app; the peer
//! does not (Next's documented Dockerfile keeps none), unless `PEER_BUILD_CACHE=1`. `NODE=22`
//! (or 24): both sides build on that Node major (an `.nvmrc` in the app, the peer's `FROM`).
//! Run through `bench/buildd/apps`.

use std::collections::HashSet;
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

/// The ids of dockerd's build cache records.
fn cache_ids() -> anyhow::Result<HashSet<String>> {
    let out = sh(Command::new(DOCKER).args([
        "system",
        "df",
        "-v",
        "--format",
        "{{range .BuildCache}}{{.ID}}\n{{end}}",
    ]))?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// Prunes the build cache records that are not in `before`: what a round made. One prune call
/// (an `id` regex: dockerd takes one value per filter key), so BuildKit releases a chain of
/// records child first. A record another build made meanwhile and is not using goes too: a
/// cache miss for it, no more.
fn prune_new(before: &HashSet<String>) -> anyhow::Result<()> {
    let new: Vec<String> = cache_ids()?
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    sh(Command::new(DOCKER).args([
        "builder",
        "prune",
        "-f",
        "-a",
        "--filter",
        &format!("id=\"^({})$\"", new.join("|")),
    ]))?;
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    sh(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=b", "-c", "user.email=b@example.invalid"])
        .args(args))
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

struct App {
    name: &'static str,
    /// The file a warm build changes, and the text replaced in it.
    page: &'static str,
    text: &'static str,
    /// The peer's Dockerfile for (registry, npm cache mount id, whether it keeps the build's
    /// cache in a cache mount: `PEER_BUILD_CACHE=1`, the Node major).
    peer: fn(&str, &str, bool, u64) -> String,
}

/// What a careful hand-written Dockerfile for the Vite app looks like: static files served by
/// busybox httpd. With `build_cache`, create-vite's tsbuildinfo folder is a cache mount.
fn vite_peer(registry: &str, cache: &str, build_cache: bool, node: u64) -> String {
    let mount = if build_cache {
        format!("--mount=type=cache,id={cache}-tmp,target=/app/node_modules/.tmp ")
    } else {
        String::new()
    };
    format!(
        "FROM {registry}/stackpad/node:{node} AS build\nWORKDIR /app\nCOPY package.json package-lock.json ./\n\
         RUN --mount=type=cache,id={cache},target=/root/.npm npm ci --no-audit --no-fund\nCOPY . .\nRUN {mount}npm run build\n\n\
         FROM {registry}/stackpad/busybox:1\nCOPY --from=build /app/dist /www\nUSER 1000:1000\nEXPOSE 8080\n\
         CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    )
}

/// The Next.js app (no standalone output configured): production dependencies pruned in a
/// stage of their own (cached while the lock file is unchanged, so a source change neither
/// prunes nor pushes them again), the build's output copied beside them. Next's documented
/// Dockerfile deletes nothing and mounts nothing for `.next/cache`; with `build_cache` it is a
/// cache mount (as buildd's), else deleted from the build's layer.
fn next_peer(registry: &str, cache: &str, build_cache: bool, node: u64) -> String {
    let build = if build_cache {
        format!("RUN --mount=type=cache,id={cache}-next,target=/app/.next/cache npm run build")
    } else {
        "RUN npm run build && rm -rf .next/cache".to_owned()
    };
    format!(
        "FROM {registry}/stackpad/node:{node} AS deps\nWORKDIR /app\nCOPY package.json package-lock.json ./\n\
         RUN --mount=type=cache,id={cache},target=/root/.npm npm ci --no-audit --no-fund\n\n\
         FROM deps AS prod-deps\nRUN npm prune --omit=dev --no-audit --no-fund\n\n\
         FROM deps AS build\nENV NODE_ENV=production NEXT_TELEMETRY_DISABLED=1\nCOPY . .\n\
         {build}\n\n\
         FROM {registry}/stackpad/node:{node}\nWORKDIR /app\nENV NODE_ENV=production PORT=3000\n\
         COPY --from=prod-deps --chown=1000:1000 /app/node_modules ./node_modules\n\
         COPY --from=build --chown=1000:1000 /app/package.json /app/next.config.ts ./\n\
         COPY --from=build --chown=1000:1000 /app/.next ./.next\nUSER 1000:1000\nEXPOSE 3000\n\
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

/// A fresh repository of the example whose package.json carries `salt` (see the header), with
/// an `.nvmrc` asking for `node` when it is not the node image's major (20).
fn salted_repo(
    examples: &Path,
    scratch: &Path,
    app: &App,
    salt: &str,
    node: u64,
) -> anyhow::Result<PathBuf> {
    let repo = scratch.join(format!("{}-{salt}", app.name));
    sh(Command::new("cp")
        .arg("-r")
        .arg(examples.join(app.name))
        .arg(&repo))?;
    let manifest = repo.join("package.json");
    let text = std::fs::read_to_string(&manifest)?;
    let salted = text.replacen('{', &format!("{{\n  \"description\": \"bench {salt}\","), 1);
    std::fs::write(&manifest, salted)?;
    if node != 20 {
        std::fs::write(repo.join(".nvmrc"), format!("{node}\n"))?;
    }
    git(&repo, &["init", "-q", "-b", "main"])?;
    git(&repo, &["add", "."])?;
    git(&repo, &["commit", "-q", "-m", "example"])?;
    Ok(repo)
}

/// Size in bytes of `image` as dockerd stores it (pulled first when it is a registry digest).
fn docker_size(image: &str) -> anyhow::Result<u64> {
    if image.contains('@') {
        sh(Command::new(DOCKER).args(["pull", "-q", image]))?;
    }
    Ok(sh(Command::new(DOCKER).args(["image", "inspect", "-f", "{{.Size}}", image]))?.parse()?)
}

/// One timed build and where its time went.
struct Timed {
    total: Duration,
    /// (phase, seconds), in order.
    phases: Vec<(String, f64)>,
    /// (step, seconds) of the slowest steps (BuildKit's vertex times), slowest first.
    steps: Vec<(String, f64)>,
}

impl Timed {
    fn line(&self) -> String {
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(p, s)| format!("{p} {s:.1}s"))
            .collect();
        let steps: Vec<String> = self
            .steps
            .iter()
            .take(5)
            .map(|(p, s)| format!("{s:.1}s {}", short(p)))
            .collect();
        format!(
            "{:.1}s = {}\n      slowest steps: {}",
            self.total.as_secs_f64(),
            phases.join(" + "),
            steps.join(" | ")
        )
    }
}

fn short(step: &str) -> String {
    let s: String = step.chars().take(70).collect();
    if s.len() < step.len() {
        format!("{s}...")
    } else {
        s
    }
}

fn slowest(mut steps: Vec<(String, f64)>) -> Vec<(String, f64)> {
    steps.sort_by(|a, b| b.1.total_cmp(&a.1));
    steps
}

async fn buildd_build(
    client: &mut BuilderClient<tonic::transport::Channel>,
    repo: &Path,
    sha: &str,
    image: &str,
) -> anyhow::Result<(Timed, pb::BuildStatus)> {
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
    // When each state began (as the watcher saw it) and when the first/last step ran.
    let mut marks: Vec<(&'static str, Duration)> = Vec::new();
    let mut steps = std::collections::HashMap::new();
    let mut fetch_line = None;
    let mut timeline = Vec::new();
    while let Some(ev) = stream.message().await? {
        match ev.event {
            Some(pb::build_event::Event::Status(s)) => {
                let name = match s.state() {
                    pb::BuildState::Cloning => "clone+detect+fetch+session",
                    pb::BuildState::Building => "solve",
                    pb::BuildState::Pushing => "push",
                    _ => "",
                };
                if !name.is_empty() && marks.last().is_none_or(|(n, _)| *n != name) {
                    marks.push((name, t.elapsed()));
                }
                last = Some(s);
            }
            Some(pb::build_event::Event::Step(s)) if s.completed_at_unix_ms > 0 => {
                let took = (s.completed_at_unix_ms - s.started_at_unix_ms) as f64 / 1000.0;
                steps.insert(s.name.clone(), took);
                timeline.push(s);
            }
            Some(pb::build_event::Event::Log(l))
                if l.step == "dependencies"
                    && (l.line.starts_with("fetched ")
                        || l.line.starts_with("lock file unchanged")) =>
            {
                fetch_line = Some(l.line);
            }
            _ => {}
        }
    }
    let total = t.elapsed();
    if std::env::var_os("STEPS").is_some() {
        // Every step: start after the first step's start, duration, cached.
        let first = timeline
            .iter()
            .map(|s| s.started_at_unix_ms)
            .filter(|t| *t > 0)
            .min()
            .unwrap_or_default();
        timeline.sort_by_key(|s| s.started_at_unix_ms);
        for s in &timeline {
            eprintln!(
                "        +{:>6}ms {:>6}ms {} {}",
                s.started_at_unix_ms - first,
                s.completed_at_unix_ms - s.started_at_unix_ms,
                if s.cached { "cached" } else { "      " },
                short(&s.name)
            );
        }
    }
    let status = last.context("no status")?;
    if status.state() != pb::BuildState::Succeeded {
        bail!("build failed: {}", status.failure_reason);
    }
    let mut phases = Vec::new();
    let mut from = Duration::ZERO;
    let mut prev = "start";
    for (name, at) in &marks {
        phases.push((prev.to_owned(), (*at - from).as_secs_f64()));
        (prev, from) = (name, *at);
    }
    phases.push((prev.to_owned(), (total - from).as_secs_f64()));
    phases.retain(|(p, s)| p != "start" || *s >= 0.05);
    if let Some(line) = fetch_line {
        phases.push((format!("[deps: {line}]"), 0.0));
    }
    Ok((
        Timed {
            total,
            phases,
            steps: slowest(steps.into_iter().collect()),
        },
        status,
    ))
}

/// `docker build` (BuildKit, plain progress parsed for step times) then `docker push`.
fn docker_build(
    repo: &Path,
    dockerfile: &str,
    image: &str,
    scratch: &Path,
) -> anyhow::Result<Timed> {
    let ctx = scratch.join(format!("ctx-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&ctx)?;
    sh(Command::new("sh").arg("-c").arg(format!(
        "git -C {} archive --format=tar HEAD | tar -x -C {}",
        repo.display(),
        ctx.display()
    )))?;
    std::fs::write(ctx.join("Dockerfile.peer"), dockerfile)?;
    let t = Instant::now();
    let out = Command::new(DOCKER)
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "--progress=plain", "--network", "host", "-f"])
        .arg(ctx.join("Dockerfile.peer"))
        .args(["-t", image])
        .arg(&ctx)
        .output()?;
    if !out.status.success() {
        bail!("docker build: {}", String::from_utf8_lossy(&out.stderr));
    }
    let build = t.elapsed();
    sh(Command::new(DOCKER).args(["push", image]))?;
    let total = t.elapsed();
    let _ = std::fs::remove_dir_all(&ctx);
    // `#7 [build 4/6] RUN npm ci` ... `#7 DONE 12.3s`
    let progress = String::from_utf8_lossy(&out.stderr);
    let mut names: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut steps = Vec::new();
    for line in progress.lines() {
        let Some((num, rest)) = line.split_once(' ') else {
            continue;
        };
        if !num.starts_with('#') {
            continue;
        }
        if let Some(secs) = rest.strip_prefix("DONE ").and_then(|s| s.strip_suffix('s')) {
            if let (Some(name), Ok(secs)) = (names.get(num), secs.parse::<f64>()) {
                steps.push((name.clone(), secs));
            }
        } else if !names.contains_key(num) && !rest.starts_with(|c: char| c.is_ascii_digit()) {
            names.insert(num.to_owned(), rest.to_owned());
        }
    }
    Ok(Timed {
        total,
        phases: vec![
            ("build".into(), build.as_secs_f64()),
            ("push".into(), (total - build).as_secs_f64()),
        ],
        steps: slowest(steps),
    })
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
    // The other majors scripts/base-images publishes (`NODE=22` asks for one in `.nvmrc`).
    config.base_images.node_majors = vec![22, 24];
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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One app's figures over the rounds.
#[derive(Default)]
struct Figures {
    b_clean: Vec<Duration>,
    b_warm: Vec<Duration>,
    d_clean: Vec<Duration>,
    d_warm: Vec<Duration>,
    b_size: u64,
    d_size: u64,
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
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let peer_build_cache = std::env::var("PEER_BUILD_CACHE").is_ok_and(|v| v == "1");
    let node: u64 = match std::env::var("NODE") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|m| [20, 22, 24].contains(m))
            .with_context(|| format!("NODE={v}: 20, 22 or 24"))?,
        Err(_) => 20,
    };
    let scratch = tempfile::tempdir()?;
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let apps: Vec<&App> = apps
        .iter()
        .filter(|a| only.is_empty() || only.split(',').any(|o| o == a.name))
        .collect();
    let mut figures: Vec<Figures> = apps.iter().map(|_| Figures::default()).collect();
    eprintln!(
        "load before: {}; Node {node}; the peer keeps its build cache in a cache mount: {}",
        load(),
        if peer_build_cache {
            "yes (PEER_BUILD_CACHE=1)"
        } else {
            "no"
        }
    );
    for round in 1..=rounds {
        for (i, app) in apps.iter().enumerate() {
            let salt = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
            let cache_before = cache_ids()?;
            let repo = salted_repo(&examples, scratch.path(), app, &salt, node)?;
            let f = &mut figures[i];

            // buildd: a fresh work dir (no dependency cache) and a fresh repository.
            let (d, mut client) = daemon(scratch.path(), &format!("work-{salt}")).await?;
            let image = format!("{}/bench/apps-{}-{salt}", registry(), app.name);
            let sha = git(&repo, &["rev-parse", "HEAD"])?;
            let (b_clean, _) = buildd_build(&mut client, &repo, &sha, &image).await?;
            eprintln!("round {round} {} buildd clean {}", app.name, b_clean.line());

            // The peer, clean: same commit, its own npm cache mount id.
            let peer_image = format!("{}/bench/apps-peer-{}-{salt}:1", registry(), app.name);
            let dockerfile = with_ca((app.peer)(
                &registry(),
                &format!("npm-bench-{salt}"),
                peer_build_cache,
                node,
            ));
            let d_clean = docker_build(&repo, &dockerfile, &peer_image, scratch.path())?;
            eprintln!("round {round} {} docker clean {}", app.name, d_clean.line());

            let sha = change(&repo, app, 1)?;
            let (b_warm, status) = buildd_build(&mut client, &repo, &sha, &image).await?;
            eprintln!("round {round} {} buildd warm  {}", app.name, b_warm.line());
            let d_warm = docker_build(&repo, &dockerfile, &peer_image, scratch.path())?;
            eprintln!("round {round} {} docker warm  {}", app.name, d_warm.line());
            drop(d);

            let built = format!("{image}@{}", status.image_digest);
            f.b_size = docker_size(&built)?;
            f.d_size = docker_size(&peer_image)?;
            let cache_tag = format!("{image}:buildcache");
            let _ = sh(Command::new(DOCKER).args(["rmi", "-f", &peer_image, &built, &cache_tag]));
            f.b_clean.push(b_clean.total);
            f.b_warm.push(b_warm.total);
            f.d_clean.push(d_clean.total);
            f.d_warm.push(d_warm.total);
            eprintln!(
                "round {round} {}: buildd clean {} warm {} ({}) | docker build+push clean {} warm {} ({}) | load {}",
                app.name,
                secs(b_clean.total),
                secs(b_warm.total),
                mb(f.b_size),
                secs(d_clean.total),
                secs(d_warm.total),
                mb(f.d_size),
                load()
            );
            let _ = std::fs::remove_dir_all(&repo);
            let _ = std::fs::remove_dir_all(scratch.path().join(format!("work-{salt}")));
            prune_new(&cache_before)?;
        }
    }
    println!(
        "medians of {rounds} interleaved rounds on Node {node}; load at the end: {}; the peer's build cache {}",
        load(),
        if peer_build_cache {
            "in a cache mount (PEER_BUILD_CACHE=1)"
        } else {
            "not kept (as Next's docs' Dockerfile)"
        }
    );
    println!(
        "{:<12} {:>13} {:>13} {:>11} {:>13} {:>13} {:>11}",
        "app", "buildd clean", "buildd warm", "image", "docker clean", "docker warm", "image"
    );
    let mut targets = Vec::new();
    for (app, f) in apps.iter().zip(figures) {
        let (bc, bw) = (median(f.b_clean), median(f.b_warm));
        let (dc, dw) = (median(f.d_clean), median(f.d_warm));
        println!(
            "{:<12} {:>13} {:>13} {:>11} {:>13} {:>13} {:>11}",
            app.name,
            secs(bc),
            secs(bw),
            mb(f.b_size),
            secs(dc),
            secs(dw),
            mb(f.d_size)
        );
        let name = app.name;
        targets.push(format!(
            "target {name}_clean_buildd/docker {:.3} <= 1.1",
            bc.as_secs_f64() / dc.as_secs_f64()
        ));
        targets.push(format!(
            "target {name}_warm_buildd/docker {:.3} <= 1.0",
            bw.as_secs_f64() / dw.as_secs_f64()
        ));
        targets.push(format!(
            "target {name}_warm/clean_buildd_percent {:.1} <= 25",
            100.0 * bw.as_secs_f64() / bc.as_secs_f64()
        ));
        targets.push(format!(
            "target {name}_image_buildd/docker {:.3} <= 1.0",
            f.b_size as f64 / f.d_size as f64
        ));
    }
    println!(
        "(docker = docker build + docker push to the same registry; buildd = StartBuild to SUCCEEDED)"
    );
    // Read by bench/lib.sh (`--check`).
    for t in targets {
        println!("{t}");
    }
    Ok(())
}
