//! Benchmark driver for `bench/runtime/run`: time from a `Deploy` call (over gRPC on loopback)
//! to its healthy answer, for a cached busybox httpd image, side by side with `ctr run -d` +
//! first HTTP 200 for the same image; then a burst of concurrent deploys. Containers run in
//! user namespaces (ctr's do not): the runs above share one project, whose remapped snapshot
//! is built at the warm-up; `FIRST_RUNS` (default 10) deploys of a new project each show the
//! first-deploy cost, and the remapped snapshot's build time is shown per base image.
//!
//! Traffic stays on loopback and inside the network namespaces this program creates. Bounded:
//! `RUNS` sequential runs per side (default 50) and one burst of `BURST` (default 50).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use proto::node::v1 as pb;
use proto::node::v1::node_agent_client::NodeAgentClient;
use runtime::NodeConfig;
use runtime::agent::Agent;
use runtime::image::{ImageStore, RegistryClient};
use runtime::isolation::IsolationDisabled;
use runtime::logs::NoShipping;
use runtime::userns::{Remapper, UsernsFile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Base images whose remapped snapshot build is timed (`scripts/base-images`).
const REMAP_IMAGES: [&str; 2] = ["busybox:1", "node:20"];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn stats(label: &str, mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = if v.len() % 2 == 1 {
        ms(v[v.len() / 2])
    } else {
        (ms(v[v.len() / 2 - 1]) + ms(v[v.len() / 2])) / 2.0
    };
    let p99 = ms(v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]);
    println!(
        "{label:<28} n={:<3} median {median:7.1} ms   p99 {p99:7.1} ms   min {:7.1} ms   max {:7.1} ms",
        v.len(),
        ms(v[0]),
        ms(v[v.len() - 1])
    );
    (median, p99)
}

fn request(registry: &str, project: &str, deployment: &str) -> pb::DeployRequest {
    pb::DeployRequest {
        workload: Some(pb::Workload {
            organization_id: "bench".into(),
            project_id: project.into(),
            environment_id: "production".into(),
            service_id: "web".into(),
            service_name: "web".into(),
            deployment_id: deployment.into(),
            service_type: pb::ServiceType::Web as i32,
            environment_name: "production".into(),
            replica: 0,
        }),
        image: format!("{registry}/stackpad/busybox:1"),
        command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
            .map(String::from)
            .to_vec(),
        resources: Some(pb::Resources {
            cpu_millis: 0,
            memory_bytes: 32 << 20,
            pids_limit: 0,
        }),
        health_check: Some(pb::HealthCheck {
            probe: Some(pb::health_check::Probe::Http(pb::HttpProbe {
                path: "/".into(),
                port: 8080,
            })),
            interval_ms: 100,
            timeout_ms: 1000,
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            deadline_ms: 30_000,
        }),
        restart_policy: Some(pb::RestartPolicy {
            mode: pb::restart_policy::Mode::Never as i32,
            max_restarts: 0,
        }),
        stop_grace_period_ms: 100,
        ..Default::default()
    }
}

async fn http_ok(addr: &str) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.is_ok() && &buf[9..12] == b"200"
}

fn ctr(ns: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let out = std::process::Command::new("ctr")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()?;
    Ok(out)
}

/// `ctr` without blocking the async runtime (the burst runs many at once).
async fn ctr_async(ns: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(tokio::process::Command::new("ctr")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .await?)
}

/// `ctr run -d --net-host` of httpd on `port`, polled every 2 ms until the first 200.
async fn ctr_run(ns: &str, image: &str, id: &str, port: u16) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = ctr_async(
        ns,
        &[
            "run",
            "-d",
            "--net-host",
            image,
            id,
            "httpd",
            "-f",
            "-p",
            &format!("127.0.0.1:{port}"),
            "-h",
            "/www",
        ],
    )
    .await?;
    anyhow::ensure!(
        out.status.success(),
        "ctr run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = format!("127.0.0.1:{port}");
    while !http_ok(&addr).await {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "ctr container never answered"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(started.elapsed())
}

fn ctr_remove(ns: &str, id: &str) {
    let _ = ctr(ns, &["task", "kill", "-s", "SIGKILL", id]);
    for _ in 0..50 {
        if ctr(ns, &["task", "rm", id])
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = ctr(ns, &["container", "rm", id]);
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // RUST_LOG=runtime=debug shows each deploy's phases.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runs = env_usize("RUNS", 50);
    let burst = env_usize("BURST", 50);
    let services = stackpad_tests::Services::from_env();
    let registry = services.registry.clone();
    let ns = stackpad_tests::unique_name("bench");
    let dirs = tempfile::tempdir()?;
    let config = NodeConfig {
        namespace: ns.clone(),
        containerd_socket: services.containerd_socket.clone().into(),
        state_dir: dirs.path().join("state"),
        run_dir: dirs.path().join("run"),
        listen: "127.0.0.1:0".parse()?,
        metrics_listen: "127.0.0.1:0".parse()?,
        max_containers: 500,
        ..NodeConfig::default()
    };
    let agent = Agent::new(config, Arc::new(IsolationDisabled), Arc::new(NoShipping))
        .await
        .context("agent (is containerd up? scripts/services up)")?;
    let outcome = bench(agent.clone(), &registry, &ns, runs, burst).await;
    // Whatever happened, leave nothing behind: the agent's containers (with their networks)
    // and the ctr side's.
    for s in agent.list(None, None) {
        let _ = agent.remove(&s.container_id, true).await;
    }
    if let Ok(out) = ctr(&ns, &["container", "ls", "-q"]) {
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            ctr_remove(&ns, id);
        }
    }
    for image in REMAP_IMAGES {
        let _ = ctr(
            &ns,
            &[
                "image",
                "rm",
                "--sync",
                &format!("{registry}/stackpad/{image}"),
            ],
        );
    }
    let _ = ctr(&ns, &["namespaces", "rm", &ns]);
    // The id ranges of the bench's projects.
    if let Ok(table) = UsernsFile::new(&agent.config().userns_dir) {
        let _ = table.update(|s| {
            s.release_namespace(&ns);
            Ok(())
        });
    }
    let _ = std::process::Command::new("ctr")
        .args(["namespaces", "rm", &ns])
        .output();
    outcome
}

async fn bench(
    agent: Arc<Agent>,
    registry: &str,
    ns: &str,
    runs: usize,
    burst: usize,
) -> anyhow::Result<()> {
    let (registry, ns) = (registry.to_owned(), ns.to_owned());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, _, server) = runtime::daemon::serve(agent.clone(), async {
        let _ = stop_rx.await;
    })
    .await?;
    let mut client = NodeAgentClient::connect(format!("http://{addr}")).await?;
    let project = stackpad_tests::unique_name("bp");

    // Warm-up: pulls the image into the bench namespace (the runs below use it cached).
    let warm = client
        .deploy(request(&registry, &project, "warm"))
        .await?
        .into_inner();
    let warm_id = warm.container.expect("status").container_id;
    client
        .remove(pb::RemoveRequest {
            container_id: warm_id,
            force: true,
        })
        .await?;

    let mut ours = Vec::with_capacity(runs);
    for i in 0..runs {
        let req = request(&registry, &project, &format!("run-{i}"));
        let t = Instant::now();
        let status = client
            .deploy(req)
            .await?
            .into_inner()
            .container
            .expect("status");
        ours.push(t.elapsed());
        anyhow::ensure!(
            status.state == pb::ContainerState::Healthy as i32,
            "not healthy: {status:?}"
        );
        client
            .remove(pb::RemoveRequest {
                container_id: status.container_id,
                force: true,
            })
            .await?;
    }

    // A new project's first deploy: its id range is allocated and the image remapped into it.
    let mut firsts = Vec::new();
    for i in 0..env_usize("FIRST_RUNS", 10) {
        let fresh = stackpad_tests::unique_name("bf");
        let t = Instant::now();
        let status = client
            .deploy(request(&registry, &fresh, &format!("first-{i}")))
            .await?
            .into_inner()
            .container
            .expect("status");
        firsts.push(t.elapsed());
        client
            .remove(pb::RemoveRequest {
                container_id: status.container_id,
                force: true,
            })
            .await?;
    }

    // The peer: ctr run -d (host network: ctr sets up none) + first HTTP 200.
    let image = format!("{registry}/stackpad/busybox:1");
    let pulled = ctr(&ns, &["image", "pull", "--plain-http", &image])?;
    anyhow::ensure!(
        pulled.status.success(),
        "ctr pull: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let mut theirs = Vec::with_capacity(runs);
    for i in 0..runs {
        let id = format!("ctr-{i}");
        let port = free_port()?;
        let d = ctr_run(&ns, &image, &id, port).await;
        ctr_remove(&ns, &id);
        theirs.push(d?);
    }

    println!("deploy-to-healthy, cached busybox httpd image, {runs} sequential runs each");
    let (m_ours, p_ours) = stats("stackpad Deploy -> healthy", ours);
    let (m_ctr, p_ctr) = stats("ctr run -d -> first 200", theirs);
    if !firsts.is_empty() {
        stats("  first deploy of a project", firsts);
    }
    println!(
        "ratio stackpad/ctr: median {:.2}x   p99 {:.2}x   (target <= 1.2x, median < 200 ms)",
        m_ours / m_ctr,
        p_ours / p_ctr
    );
    // Read by bench/lib.sh (`--check`).
    println!(
        "target stackpad/ctr_median_ratio {:.3} <= 1.2",
        m_ours / m_ctr
    );
    println!("target stackpad_median_ms {m_ours:.1} < 200");

    // Burst: `burst` concurrent deploys.
    let t = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..burst {
        let mut c = client.clone();
        let req = request(&registry, &project, &format!("burst-{i}"));
        calls.spawn(async move {
            let t = Instant::now();
            let r = c.deploy(req).await;
            (r, t.elapsed())
        });
    }
    let mut ids = Vec::new();
    let mut each = Vec::new();
    let mut failures = 0;
    while let Some(r) = calls.join_next().await {
        let (r, d) = r?;
        match r {
            Ok(resp) => {
                ids.push(resp.into_inner().container.expect("status").container_id);
                each.push(d);
            }
            Err(e) => {
                failures += 1;
                eprintln!("burst deploy failed: {e}");
            }
        }
    }
    let wall = t.elapsed();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "burst of {burst} concurrent deploys on {cores} cores: all healthy in {:.0} ms = {:.1} containers/s ({failures} failed)",
        wall.as_secs_f64() * 1000.0,
        ids.len() as f64 / wall.as_secs_f64()
    );
    if !each.is_empty() {
        stats("  per-deploy in the burst", each);
    }
    for id in ids {
        let _ = client
            .remove(pb::RemoveRequest {
                container_id: id,
                force: true,
            })
            .await;
    }

    // The same burst with ctr.
    let t = Instant::now();
    let mut runs_ctr = tokio::task::JoinSet::new();
    for i in 0..burst {
        let (ns, image) = (ns.clone(), image.clone());
        let port = free_port()?;
        runs_ctr.spawn(async move { ctr_run(&ns, &image, &format!("burst-{i}"), port).await });
    }
    let mut ctr_each = Vec::new();
    while let Some(r) = runs_ctr.join_next().await {
        match r? {
            Ok(d) => ctr_each.push(d),
            Err(e) => eprintln!("ctr burst run failed: {e}"),
        }
    }
    let ctr_wall = t.elapsed();
    for i in 0..burst {
        ctr_remove(&ns, &format!("burst-{i}"));
    }
    println!(
        "burst of {burst} concurrent ctr run -d: all answering in {:.0} ms = {:.1} containers/s",
        ctr_wall.as_secs_f64() * 1000.0,
        ctr_each.len() as f64 / ctr_wall.as_secs_f64()
    );
    println!(
        "burst ratio stackpad/ctr (wall time): {:.2}x",
        wall.as_secs_f64() / ctr_wall.as_secs_f64()
    );
    remap_cost(&agent, &registry, &ns).await?;
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}

/// The one-off cost of a project's first container of an image: its remapped layers (each
/// unpacked again and chowned into the range), per base image; then the cost of finding
/// them again.
async fn remap_cost(agent: &Agent, registry: &str, ns: &str) -> anyhow::Result<()> {
    let c = agent.containerd().clone();
    let config = agent.config();
    let store = ImageStore::new(
        c.clone(),
        RegistryClient::new(Vec::new())?,
        &config.snapshotter,
    );
    let remapper = Remapper::new(c, &config.snapshotter);
    let table = UsernsFile::new(&config.userns_dir)?;
    for image in REMAP_IMAGES {
        let reference = format!("{registry}/stackpad/{image}");
        let pulled = store.pull(&reference).await?;
        let map = table.ensure(ns, &format!("remap-{image}"))?;
        let t = Instant::now();
        remapper.remapped(&pulled, map).await?;
        let built = t.elapsed();
        let t = Instant::now();
        remapper.remapped(&pulled, map).await?;
        println!(
            "remapped snapshot of {image:<10} built in {:7.1} ms, found again in {:5.1} ms",
            built.as_secs_f64() * 1000.0,
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
