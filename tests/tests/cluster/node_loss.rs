//! Node loss for real (#15): a web service with 2 replicas on 2 compute nodes serves through
//! the proxy under load, beside a service with a volume on one of them; every process of that
//! node (its agent, containerd, shims, WireGuard, its containers' tasks) is killed with SIGKILL
//! at once. Control marks the node down within its bound (the other nodes answering its
//! probes), the proxy ejects the dead upstream (its first connect failure, or its active
//! checks) and retries a request whose connect failed on the live one, control places the lost
//! replica on the other node and shows the service with the volume down with its node (not
//! moved). The node is then started again (`scripts/cluster up`): control removes the replica
//! it still holds of the replaced deployment (its orphan), keeps the volume's service, and
//! `scripts/cluster down` still removes everything.
//!
//! Printed: requests failed before and after the ejection, time from the kill to the node
//! marked down, and to both replicas serving again on the surviving node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::harness::{Cluster, HostPlatform};

/// Control's monitor for this test: a probe every second, down after 5 s of failed probes
/// (each waits 2.5 s) while the other nodes answer: a late answer alone marks nothing down,
/// so the whole suite's load on two cores does not take the live nodes down with the dead one.
pub const CONTROL: &str = "heartbeat_interval_ms = 1000\nnode_down_after_ms = 5000\n";
/// The bound the node must be marked down within: down_after, plus the monitor's round, which
/// waits for the dead node's probe to time out, and a round starved by the load.
const DOWN_WITHIN: Duration = Duration::from_secs(15);
/// The bound both replicas must serve again within.
const RECOVER_WITHIN: Duration = Duration::from_secs(45);
/// The bound a restarted node must be up and rid of its orphan within.
const CLEANED_WITHIN: Duration = Duration::from_secs(30);

/// busybox httpd serving `/id`: the deployment, the replica and a value drawn at start.
pub const COMMAND: &str = "mkdir -p /tmp/www && cp -r /www/. /tmp/www/ && \
    echo \"$STACKPAD_DEPLOYMENT_ID $STACKPAD_REPLICA $(cat /proc/sys/kernel/random/uuid)\" \
    > /tmp/www/id && exec httpd -f -p 8080 -h /tmp/www";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_marked_down_ejected_and_its_replica_rescheduled() -> anyhow::Result<()> {
    crate::harness::Binaries::get()?;
    let started = Instant::now();
    let platform = HostPlatform::start_with("cluster-node-loss", CONTROL).await?;
    let cluster = Cluster::up(2, &platform)?;
    let outcome = scenario(&platform, &cluster).await;
    if outcome.is_err() {
        eprintln!("{}", platform.logs());
        for node in &cluster.compute {
            eprintln!(
                "---- {} agent\n{}",
                node.name,
                cluster.agent_log(&node.name, 40)
            );
        }
    }
    let figures = outcome?;
    println!("{figures}");
    // The dead node's leftovers (namespaces, veths, pins, folders) go with `down` too.
    let left = cluster.down()?;
    ensure!(left.is_empty(), "scripts/cluster down left: {left:?}");
    eprintln!("node loss scenario in {:?}", started.elapsed());
    Ok(())
}

/// What the scenario measured.
pub struct Figures {
    pub total: u64,
    pub failed_before_ejection: u64,
    pub failed_after_ejection: u64,
    pub ejected_after: Option<Duration>,
    pub down_after: Duration,
    pub serving_after: Duration,
    /// From `scripts/cluster up` of the killed node to its orphan removed by control.
    pub orphan_removed_after: Duration,
    pub errors: Vec<String>,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node loss: {} requests, {} failed before ejection, {} after; ejected {:?} after the \
             kill, node down after {:?}, both replicas serving again after {:?}; the restarted \
             node's orphan removed {:?} after its restart; errors {:?}",
            self.total,
            self.failed_before_ejection,
            self.failed_after_ejection,
            self.ejected_after,
            self.down_after,
            self.serving_after,
            self.orphan_removed_after,
            self.errors
        )
    }
}

pub async fn scenario(platform: &HostPlatform, cluster: &Cluster) -> anyhow::Result<Figures> {
    cluster.wait_up(platform, Duration::from_secs(15)).await?;
    let tenant = platform.organization("node-loss").await?;
    let image = platform.busybox_image(&tenant).await?;
    let p = platform
        .expect(
            201,
            "POST",
            "/projects",
            &tenant.token,
            Some(json!({ "name": "shop" })),
        )
        .await?;
    let project = p["id"].as_str().context("project id")?;
    let s = platform
        .expect(
            201,
            "POST",
            &format!("/projects/{project}/services"),
            &tenant.token,
            Some(json!({
                "name": "web", "kind": "web", "image": image, "port": 8080, "replicas": 2,
                "command": ["sh", "-c", COMMAND],
                "health_check": { "path": "/", "interval_ms": 100 },
            })),
        )
        .await?;
    let service = s["id"].as_str().context("service id")?.to_owned();
    let host = s["hosts"][0].as_str().context("platform host")?.to_owned();
    // A service with a volume: its node is the one killed, and it is not moved.
    let v = platform
        .expect(
            201,
            "POST",
            &format!("/projects/{project}/services"),
            &tenant.token,
            Some(json!({
                "name": "db", "kind": "web", "image": image, "port": 8080,
                "command": ["sh", "-c", COMMAND],
                "volumes": [{ "name": "data", "mount_path": "/data", "size_bytes": 16 << 20 }],
            })),
        )
        .await?;
    let stateful = v["id"].as_str().context("service id")?.to_owned();
    let (first, stateful_first) = tokio::join!(
        platform.deploy(&tenant, &service, Duration::from_secs(60)),
        platform.deploy(&tenant, &stateful, Duration::from_secs(60)),
    );
    let (first, stateful_first) = (first?, stateful_first?);
    let placed = placement(&first)?;
    let nodes: BTreeSet<&String> = placed.values().collect();
    ensure!(nodes.len() == 2, "2 replicas over 2 nodes: {placed:?}");
    let first_id = first["id"].as_str().context("deployment id")?.to_owned();

    // The load runs while the node dies; the victim is the node of the volume's service, and
    // the replica of web there is the one lost.
    let load = Load::start(platform, &host, 4);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victim_id = placement(&stateful_first)?[&0].clone();
    let lost_replica = *placed
        .iter()
        .find(|(_, node)| **node == victim_id)
        .context("a replica of web on the victim")?
        .0;
    let victim = cluster
        .compute
        .iter()
        .find(|n| n.id == victim_id)
        .context("the victim is a cluster node")?
        .clone();
    let lost_instance = first["instances"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["replica"] == lost_replica))
        .context("the lost replica's instance")?;
    let dead = lost_instance["upstream_address"]
        .as_str()
        .context("the lost replica's upstream address")?
        .to_owned();
    let orphan = lost_instance["container_id"]
        .as_str()
        .context("the lost replica's container")?
        .to_owned();
    let kept_container = stateful_first["instances"][0]["container_id"]
        .as_str()
        .context("the volume's service's container")?
        .to_owned();
    let held = cluster.containers(&victim.name)?;
    ensure!(
        held.contains(&orphan) && held.contains(&kept_container),
        "{} runs {orphan} and {kept_container} before the kill: {held:?}",
        victim.name
    );
    ensure!(
        upstream_healthy(platform, &dead).await? == Some(true),
        "the proxy does not hold {dead} as a healthy upstream before the kill"
    );
    let killed = kill_node(cluster, &victim.name)?;
    let kill = Instant::now();
    eprintln!("killed {} ({} processes)", victim.name, killed);

    // The proxy's first connect failure to the dead upstream ejects it.
    let ejection = async {
        let deadline = kill + Duration::from_secs(15);
        while Instant::now() < deadline {
            if upstream_healthy(platform, &dead).await.ok().flatten() == Some(false) {
                return Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    };
    let down = async {
        loop {
            let listed = platform
                .expect(200, "GET", "/nodes", &platform.operator_token, None)
                .await?;
            let status = listed["items"]
                .as_array()
                .and_then(|a| a.iter().find(|n| n["id"] == victim_id.as_str()))
                .map(|n| n["status"].as_str().unwrap_or("").to_owned());
            if status.as_deref() == Some("down") {
                return anyhow::Ok(kill.elapsed());
            }
            ensure!(
                kill.elapsed() < DOWN_WITHIN,
                "{} not marked down {DOWN_WITHIN:?} after the kill: {listed}",
                victim.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (ejected_at, down_after) = tokio::join!(ejection, down);
    let down_after = down_after?;
    // The service with the volume is shown down with the node, not moved.
    let v = platform
        .expect(
            200,
            "GET",
            &format!("/services/{stateful}"),
            &tenant.token,
            None,
        )
        .await?;
    ensure!(
        v["down_with_node"]["id"] == victim_id.as_str()
            && v["current_deployment_id"] == stateful_first["id"],
        "the service with a volume on {} is not shown down with it: {v}",
        victim.name
    );

    // Rescheduled: a new deployment serves both replicas on the surviving node.
    let serving_after = loop {
        let (s, replaced) = platform
            .serving_other_than(&tenant, &service, &first_id)
            .await?;
        if let Some(d) = replaced {
            let current = d["id"].as_str().unwrap_or_default();
            let now = placement(&d).unwrap_or_default();
            if now.len() == 2 && now.values().all(|n| *n != victim_id) {
                let seen = load.seen_since(current).await;
                if seen.len() == 2 {
                    break kill.elapsed();
                }
            }
        }
        ensure!(
            kill.elapsed() < RECOVER_WITHIN,
            "both replicas not serving on the surviving node {RECOVER_WITHIN:?} after the kill: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = load.stop().await;

    // The node starts again: control sees it answer and removes its orphan (the replica of the
    // replaced deployment); the volume's service's container stays, no longer down.
    let restart = Instant::now();
    cluster.up_again()?;
    cluster.wait_up(platform, CLEANED_WITHIN).await?;
    let orphan_removed_after = loop {
        let now = cluster.containers(&victim.name)?;
        if !now.contains(&orphan) {
            ensure!(
                now.contains(&kept_container),
                "the volume's service's container went from {}: {now:?}",
                victim.name
            );
            break restart.elapsed();
        }
        ensure!(
            restart.elapsed() < CLEANED_WITHIN,
            "{orphan} (replica {lost_replica} of the replaced deployment) still on {} \
             {CLEANED_WITHIN:?} after its restart: {now:?}",
            victim.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let v = platform
        .expect(
            200,
            "GET",
            &format!("/services/{stateful}"),
            &tenant.token,
            None,
        )
        .await?;
    ensure!(
        v["down_with_node"].is_null(),
        "the volume's service still shown down once its node answers: {v}"
    );
    let ejected = ejected_at.unwrap_or(kill);
    let before = loaded
        .failures
        .iter()
        .filter(|(sent, _)| *sent < ejected)
        .count() as u64;
    let figures = Figures {
        total: loaded.total,
        failed_before_ejection: before,
        failed_after_ejection: loaded.failures.len() as u64 - before,
        ejected_after: ejected_at.map(|at| at - kill),
        down_after,
        serving_after,
        orphan_removed_after,
        errors: loaded
            .failures
            .iter()
            .take(5)
            .map(|(sent, e)| {
                format!(
                    "{:?} after the kill: {e}",
                    sent.saturating_duration_since(kill)
                )
            })
            .collect(),
    };
    ensure!(
        figures.failed_after_ejection == 0,
        "requests failed after the dead upstream was ejected: {figures}"
    );
    ensure!(
        ejected_at.is_some(),
        "the proxy never ejected the dead upstream: {figures}"
    );
    Ok(figures)
}

/// SIGKILLs every process of a compute node at once: those in its network namespace (agent,
/// containerd, shims, WireGuard, the registry relay) and its containers' tasks (each in a
/// namespace of its own). Returns how many.
fn kill_node(cluster: &Cluster, node: &str) -> anyhow::Result<usize> {
    let netns = cluster
        .compute
        .iter()
        .find(|n| n.name == node)
        .context("node")?
        .netns
        .clone();
    let mut pids: BTreeSet<u32> = BTreeSet::new();
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", &netns])
        .output()
        .context("ip netns pids")?;
    ensure!(
        out.status.success(),
        "ip netns pids {netns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pids.extend(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok()),
    );
    let socket = format!(
        "/run/stackpad/cluster/{}/{node}/containerd.sock",
        cluster.name
    );
    let namespace = format!("cluster-{}-{node}", cluster.name);
    let tasks = std::process::Command::new("ctr")
        .args(["--address", &socket, "-n", &namespace, "tasks", "ls"])
        .output()
        .context("ctr tasks ls")?;
    pids.extend(
        String::from_utf8_lossy(&tasks.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok()),
    );
    ensure!(!pids.is_empty(), "no process found on {node}");
    let args: Vec<String> = pids.iter().map(u32::to_string).collect();
    let status = std::process::Command::new("kill")
        .arg("-KILL")
        .args(&args)
        .status()
        .context("kill -KILL")?;
    ensure!(status.success(), "kill -KILL {args:?} failed");
    Ok(pids.len())
}

/// Whether the proxy holds `upstream` healthy (`stackpad_proxy_upstream_healthy` on its
/// admin /metrics: passive ejection and active checks both clear it); `None`: not listed.
async fn upstream_healthy(platform: &HostPlatform, upstream: &str) -> anyhow::Result<Option<bool>> {
    let config: Value = serde_json::from_str(&std::fs::read_to_string(
        platform.dir.path().join("proxy.json"),
    )?)?;
    let admin = config["admin_listen"].as_str().context("admin_listen")?;
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await?
        .text()
        .await?;
    let label = format!("upstream=\"{upstream}\"");
    Ok(text
        .lines()
        .filter(|l| l.starts_with("stackpad_proxy_upstream_healthy{") && l.contains(&label))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|v| v > 0.0)
        .reduce(|a, b| a || b))
}

/// Replica -> node id, from a deployment's instances.
fn placement(deployment: &Value) -> anyhow::Result<BTreeMap<i64, String>> {
    deployment["instances"]
        .as_array()
        .with_context(|| format!("a deployment lists its instances: {deployment}"))?
        .iter()
        .map(|i| {
            Ok((
                i["replica"].as_i64().context("replica")?,
                i["node_id"].as_str().context("node_id")?.to_owned(),
            ))
        })
        .collect()
}

/// What the load saw: every request's result with the time it was sent.
#[derive(Default)]
struct Seen {
    total: u64,
    failures: Vec<(Instant, String)>,
    /// The distinct `/id` answers, in order.
    answers: Vec<String>,
}

/// `clients` keep-alive clients asking `/id` in a loop until stopped (at most 60 s).
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<tokio::sync::Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(platform: &HostPlatform, host: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(tokio::sync::Mutex::new(Seen::default()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, seen) = (stop.clone(), seen.clone());
                let client = platform.client(host);
                let url = platform.url(host, "/id");
                tokio::spawn(async move {
                    let until = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        let sent = Instant::now();
                        let answer = match client.get(&url).send().await {
                            Ok(r) if r.status() == 200 => r.text().await.map_err(|e| e.to_string()),
                            Ok(r) => Err(format!("status {}", r.status())),
                            Err(e) => Err(e.to_string()),
                        };
                        let mut seen = seen.lock().await;
                        seen.total += 1;
                        match answer {
                            Ok(body) => {
                                let body = body.trim().to_owned();
                                if !seen.answers.contains(&body) {
                                    seen.answers.push(body);
                                }
                            }
                            Err(e) => seen.failures.push((sent, e)),
                        }
                    }
                })
            })
            .collect();
        Self { stop, seen, tasks }
    }

    /// The distinct answers of deployment `id` so far.
    async fn seen_since(&self, id: &str) -> BTreeSet<String> {
        self.seen
            .lock()
            .await
            .answers
            .iter()
            .filter(|a| a.starts_with(id))
            .cloned()
            .collect()
    }

    async fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        std::mem::take(&mut *self.seen.lock().await)
    }
}
