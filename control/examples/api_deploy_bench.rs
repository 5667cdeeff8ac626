//! Deploy latency and throughput of the whole path with the real daemons on loopback: the
//! control plane (in-process, real gRPC clients, real PostgreSQL), `stackpad-node` (containerd)
//! and `stackpad-proxy` (HTTPS). Run by `bench/control/run`, which starts the daemons and passes
//! their addresses in the environment:
//!   NODE_ADDR, PROXY_ADMIN, PROXY_TOKEN, PROXY_HTTPS (host:port), REGISTRY, RUNS, SERVICES, SECS;
//!   TIMELINES=1 prints each measured deployment's timeline (where the time goes).
//!
//! 1. Time from `POST /services/{id}/deployments` to the proxy answering with the new version
//!    (the container echoes `$STACKPAD_DEPLOYMENT_ID`), image already in the registry (no
//!    build): median and p99 over RUNS deploys, against kamal's 1 s health-check interval.
//! 2. Deploys queued and completed per minute with SERVICES services deploying at once.
//!
//! The peer of 1 (the same deploy by hand: `ctr run`, a wait for 200, a proxy switch) is measured
//! by bench/control/peer.py in the same run, on the same proxy.
//!
//! Every measured deploy replaces a running v1 in a project of its own: the node agent hands a
//! freed container address out again at once, and a replacement landing on an address that
//! served a moment ago was seen to miss its health deadline (reported to the node agent's
//! owner); a fresh project network keeps that out of these numbers.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::Harness;
use serde_json::json;
use stackpad_tests::registry::{PushedImages, Registry};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let median = v[v.len() / 2];
    let p99 = v[((v.len() * 99).div_ceil(100)).saturating_sub(1)];
    (median, p99)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

type Times = (Duration, Duration);

struct Bench {
    h: Harness,
    token: String,
    proxy: SocketAddr,
    /// busybox:1 copied under the organization's own repository (tenants run only their own
    /// builds from the platform registry).
    image: String,
}

impl Bench {
    /// A project with one web service running busybox httpd, which serves its deployment id.
    async fn service(&self, project: &str) -> anyhow::Result<(String, String)> {
        let (status, p) = self
            .h
            .call(
                "POST",
                "/projects",
                &self.token,
                Some(json!({ "name": project })),
            )
            .await;
        if status != 201 {
            bail!("creating project {project}: {status} {p}");
        }
        let body = json!({
            "name": "web",
            "image": self.image,
            "command": ["sh", "-c", "echo $STACKPAD_DEPLOYMENT_ID > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"],
            "port": 8080,
            // The smallest reservation: every measured service stays up until the bench ends,
            // and the node's capacity (its cores) must hold them all.
            "resources": { "memory_bytes": 32u64 << 20, "cpu_millis": 10 },
            "health_check": { "path": "/index.html", "interval_ms": 20, "deadline_ms": 30000 }
        });
        let path = format!(
            "/projects/{}/services",
            p["id"].as_str().context("project id")?
        );
        let (status, s) = self.h.call("POST", &path, &self.token, Some(body)).await;
        if status != 201 {
            bail!("creating the service of {project}: {status} {s}");
        }
        let host = s["hosts"][0]
            .as_str()
            .context("service has no host")?
            .to_owned();
        Ok((s["id"].as_str().context("service id")?.to_owned(), host))
    }

    /// v1 deployed, then v2 deployed replacing it; returns v2's times, then v1's.
    async fn version_pair(&self, project: &str) -> anyhow::Result<(Times, Times)> {
        let (service, host) = self.service(project).await?;
        let client = reqwest::Client::builder()
            // Loopback only, self-signed certificate made by the run script.
            .danger_accept_invalid_certs(true)
            .resolve(&host, self.proxy)
            .timeout(Duration::from_secs(2))
            .build()?;
        let v1 = self.deploy_and_time(&client, &service, &host).await?;
        let v2 = self.deploy_and_time(&client, &service, &host).await?;
        Ok((v2, v1))
    }

    async fn body(&self, client: &reqwest::Client, host: &str) -> Option<String> {
        let url = format!("https://{host}:{}/index.html", self.proxy.port());
        let resp = client.get(url).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.text().await.ok().map(|t| t.trim().to_owned())
    }

    /// Deploys; returns (API call -> new version answers through the proxy, -> ready).
    async fn deploy_and_time(
        &self,
        client: &reqwest::Client,
        service: &str,
        host: &str,
    ) -> anyhow::Result<Times> {
        let started = Instant::now();
        let id = self.h.deploy(&self.token, service, json!({})).await;
        let deadline = started + Duration::from_secs(60);
        while self.body(client, host).await.as_deref() != Some(id.as_str()) {
            if Instant::now() > deadline {
                let (_, d) = self
                    .h
                    .call("GET", &format!("/deployments/{id}"), &self.token, None)
                    .await;
                bail!("deployment {id} not serving after 60 s: {d}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let serving = started.elapsed();
        let d = self
            .h
            .wait_terminal(&self.token, &id, Duration::from_secs(60))
            .await;
        if d["state"] != "ready" {
            bail!(
                "deployment {id} ended {}: {}",
                d["state"],
                d["failure_reason"]
            );
        }
        if std::env::var_os("TIMELINES").is_some() {
            println!("{id}: serving after {}: {}", ms(serving), d["timeline"]);
        }
        Ok((serving, started.elapsed()))
    }
}

/// Redeploys under a bounded load (CLIENTS keep-alive clients, each request after the last) and
/// checks: every response 2xx, no socket error, and each client sees v1 then v2, never back.
async fn redeploy_under_load(b: &Bench, clients: usize) -> anyhow::Result<()> {
    let (service, host) = b.service("underload").await?;
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve(&host, b.proxy)
        .timeout(Duration::from_secs(5))
        .build()?;
    b.deploy_and_time(&client, &service, &host).await?;
    let v1 = b.body(&client, &host).await.context("v1 answers")?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = format!("https://{host}:{}/index.html", b.proxy.port());
    let load: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut bodies, mut non_2xx, mut errors) = (Vec::new(), 0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => match r.text().await {
                            Ok(t) => bodies.push(t.trim().to_owned()),
                            Err(_) => errors += 1,
                        },
                        Ok(_) => non_2xx += 1,
                        Err(_) => errors += 1,
                    }
                }
                (bodies, non_2xx, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (serving, ready) = b.deploy_and_time(&client, &service, &host).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let v2 = b.body(&client, &host).await.context("v2 answers")?;
    let (mut requests, mut non_2xx, mut errors, mut back) = (0, 0, 0, 0);
    for task in load {
        let (bodies, n, e) = task.await?;
        requests += bodies.len() + n as usize + e as usize;
        non_2xx += n;
        errors += e;
        // v1* then v2*: once v2 was seen, v1 never again.
        let first_v2 = bodies.iter().position(|x| *x == v2).unwrap_or(bodies.len());
        back += bodies[first_v2..].iter().filter(|x| **x != v2).count();
        back += bodies[..first_v2].iter().filter(|x| **x != v1).count();
    }
    println!(
        "redeploy under load ({clients} clients, {requests} requests, switch after {}, ready after {}): non-2xx {non_2xx}, socket errors {errors}, responses out of order {back}",
        ms(serving),
        ms(ready)
    );
    if non_2xx + errors > 0 || back > 0 {
        bail!("redeploy under load was not clean");
    }
    Ok(())
}

/// A version whose health check fails: the deployment fails with the check's last answer and v1
/// keeps serving.
async fn failing_version_keeps_the_old(b: &Bench) -> anyhow::Result<()> {
    let (service, host) = b.service("failing").await?;
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve(&host, b.proxy)
        .timeout(Duration::from_secs(2))
        .build()?;
    b.deploy_and_time(&client, &service, &host).await?;
    let v1 = b.body(&client, &host).await.context("v1 answers")?;
    // v2 serves nothing at the checked path.
    let patch = json!({ "command": ["sh", "-c", "exec httpd -f -p 8080 -h /etc"],
        "health_check": { "path": "/index.html", "interval_ms": 50, "deadline_ms": 2000 } });
    let (status, v) =
        b.h.call(
            "PATCH",
            &format!("/services/{service}"),
            &b.token,
            Some(patch),
        )
        .await;
    if status != 200 {
        bail!("patching the service: {status} {v}");
    }
    let id = b.h.deploy(&b.token, &service, json!({})).await;
    let d =
        b.h.wait_terminal(&b.token, &id, Duration::from_secs(60))
            .await;
    let reason = d["failure_reason"].as_str().unwrap_or("").to_owned();
    let still = b.body(&client, &host).await;
    println!(
        "failing version: state {}, old still serving: {}, reason: {reason}",
        d["state"],
        still.as_deref() == Some(v1.as_str())
    );
    if d["state"] != "failed" || still.as_deref() != Some(v1.as_str()) {
        bail!("a failing version must fail and leave the old one serving");
    }
    Ok(())
}

/// The full path with the real buildd: a signed GitHub push webhook for a commit of a local git
/// repository (the sample app), built by buildd with BuildKit, run by the node agent, answering
/// over HTTPS through the proxy; then a second push with a new version replaces it.
async fn full_path(b: &Bench, buildd: &str) -> anyhow::Result<()> {
    let repo =
        std::env::var("APP_REPO").context("APP_REPO (a git repository of examples/hello)")?;
    b.h.register_node("bench-build", "build", buildd).await;
    let (status, p) =
        b.h.call(
            "POST",
            "/projects",
            &b.token,
            Some(json!({ "name": "fullpath" })),
        )
        .await;
    if status != 201 {
        bail!("creating the project: {status} {p}");
    }
    let secret = "bench-webhook-secret";
    let body = json!({ "name": "hello", "git": { "url": repo }, "port": 3000,
        "health_check": { "path": "/healthz", "interval_ms": 50 }, "webhook_secret": secret });
    let path = format!(
        "/projects/{}/services",
        p["id"].as_str().context("project id")?
    );
    let (status, s) = b.h.call("POST", &path, &b.token, Some(body)).await;
    if status != 201 {
        bail!("creating the service: {status} {s}");
    }
    let service = s["id"].as_str().context("service id")?.to_owned();
    let host = s["hosts"][0].as_str().context("host")?.to_owned();
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve(&host, b.proxy)
        .timeout(Duration::from_secs(2))
        .build()?;
    for (n, commit_var) in [(1, "APP_COMMIT_1"), (2, "APP_COMMIT_2")] {
        let commit = std::env::var(commit_var).context(commit_var)?;
        let push = serde_json::to_vec(&json!({ "ref": "refs/heads/main", "after": commit }))?;
        let started = Instant::now();
        let resp =
            b.h.http
                .post(format!("{}/webhooks/github/{service}", b.h.url))
                .header("x-github-event", "push")
                .header("x-github-delivery", format!("bench-{n}"))
                .header(
                    "x-hub-signature-256",
                    control::crypto::github_signature(secret.as_bytes(), &push),
                )
                .body(push)
                .send()
                .await?;
        let answered = started.elapsed();
        let v: serde_json::Value = resp.json().await?;
        let id = v["deployment_id"]
            .as_str()
            .with_context(|| format!("webhook answer {v}"))?
            .to_owned();
        let d =
            b.h.wait_terminal(&b.token, &id, Duration::from_secs(300))
                .await;
        if d["state"] != "ready" {
            bail!(
                "push {n}: deployment {id} ended {}: {}",
                d["state"],
                d["failure_reason"]
            );
        }
        let page = b.body(&client, &host).await.unwrap_or_default();
        let steps: Vec<String> = d["timeline"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["phase"].as_str().unwrap_or("").to_owned())
            .collect();
        println!(
            "full path, push {n}: webhook answered in {}, ready after {}, steps {steps:?}, HTTPS answers {page:?}",
            ms(answered),
            ms(started.elapsed())
        );
        if !page.contains(&format!("version 1.0.{n}")) {
            bail!("push {n}: HTTPS answered {page:?}, not version 1.0.{n}");
        }
    }
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let runs: usize = env("RUNS", "20").parse()?;
    let services: usize = env("SERVICES", "20").parse()?;
    let secs: u64 = env("SECS", "60").parse()?;
    let node = std::env::var("NODE_ADDR").context("NODE_ADDR (run bench/control/run)")?;
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.proxy_address = std::env::var("PROXY_ADMIN").context("PROXY_ADMIN")?;
    config.proxy_token = std::env::var("PROXY_TOKEN").context("PROXY_TOKEN")?;
    config.workers = services.clamp(1, 20);
    config.drain_deadline_ms = 2_000;
    config.stop_grace_ms = 500;
    let clients = control::daemon::grpc_clients(&config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = control::daemon::start(&config, listener, clients).await?;
    let url = format!("http://{}", running.address);
    let h = Harness {
        db,
        running: Some(running),
        url,
        http: reqwest::Client::new(),
    };
    h.register_node("bench-node", "compute", &node).await;
    let (organization, token) = h.org("bench").await;
    let registry = env("REGISTRY", "127.0.0.1:5000");
    let repository = format!("{organization}/busybox");
    let platform_registry = Registry::new(&registry);
    // Deleted from the registry when the bench ends, also on failure.
    let pushed = PushedImages::on(platform_registry.clone());
    pushed.track(&repository);
    platform_registry
        .copy("stackpad/busybox", "1", &repository, "1")
        .await?;
    let bench = Arc::new(Bench {
        h,
        token,
        proxy: std::env::var("PROXY_HTTPS")
            .context("PROXY_HTTPS")?
            .parse()?,
        image: format!("{registry}/{repository}:1"),
    });

    // Warm-up: the node pulls the image once.
    bench
        .version_pair("warmup")
        .await
        .context("warm-up deploys")?;
    if let Ok(buildd) = std::env::var("BUILDD_ADDR") {
        full_path(&bench, &buildd).await?;
    }
    redeploy_under_load(&bench, env("CLIENTS", "8").parse()?).await?;
    failing_version_keeps_the_old(&bench).await?;
    let mut serving = vec![];
    let mut ready = vec![];
    for i in 0..runs {
        let ((s, r), _) = bench.version_pair(&format!("lat{i}")).await?;
        serving.push(s);
        ready.push(r);
    }
    let (med, p99) = stats(serving);
    let (rmed, rp99) = stats(ready);
    println!(
        "API call -> new version answering through the proxy (image in the registry, no build), {runs} deploys:"
    );
    println!(
        "  median {}  p99 {}   (target: median < 1000 ms; kamal's health-check interval alone is 1000 ms)",
        ms(med),
        ms(p99)
    );
    println!("  ratio median / 1 s = {:.2}", med.as_secs_f64());
    // Read by bench/control/run (the ratio to the peer it measures) and bench/lib.sh (`--check`).
    println!("stackpad_median_ms={:.1}", med.as_secs_f64() * 1000.0);
    println!(
        "target api_call_to_serving_median_ms {:.1} < 1000",
        med.as_secs_f64() * 1000.0
    );
    println!(
        "API call -> deployment ready (old drained and stopped): median {}  p99 {}",
        ms(rmed),
        ms(rp99)
    );

    // Throughput: SERVICES services at once, each deploying v1 then v2 (replacing v1), repeatedly.
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..services)
        .map(|i| {
            let b = bench.clone();
            tokio::spawn(async move {
                let mut done = 0u32;
                let mut round = 0;
                while Instant::now() < until {
                    b.version_pair(&format!("t{i}x{round}")).await?;
                    done += 2;
                    round += 1;
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{services} services deploying at once for {elapsed:.0} s: {total} deploys queued and completed = {:.0} per minute",
        total as f64 * 60.0 / elapsed
    );
    let bench = Arc::into_inner(bench).context("tasks ended")?;
    bench.h.stop().await;
    Ok(())
}

/// Removes every container the node agent runs for the bench (it has its own namespace); goes
/// on past a failed removal and says how many failed.
async fn remove_containers() -> anyhow::Result<(usize, usize)> {
    use proto::node::v1 as n;
    let node = std::env::var("NODE_ADDR")?;
    let mut client = n::node_agent_client::NodeAgentClient::connect(node).await?;
    let list = client.list(n::ListRequest::default()).await?.into_inner();
    let (mut removed, mut failed) = (0, 0);
    for c in list.containers {
        let id = c.container_id.clone();
        let req = n::RemoveRequest {
            container_id: c.container_id,
            force: true,
        };
        match client.remove(req).await {
            Ok(_) => removed += 1,
            Err(e) => {
                failed += 1;
                eprintln!("removing container {id} failed: {}", e.message());
            }
        }
    }
    Ok((removed, failed))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let result = run().await;
    match remove_containers().await {
        Ok((removed, failed)) => eprintln!("removed {removed} containers ({failed} failed)"),
        Err(e) => eprintln!("removing the bench's containers failed: {e}"),
    }
    result
}
