//! Replicas across compute nodes (#15): a web service with 3 replicas on 2 compute nodes, each
//! node's own containerd running its share; all three answer through the proxy on the host; a
//! redeploy under load fails no request (the new set starts beside the old, one switch carries
//! the whole set, the old set drains); a scale to 1 and back to 3 needs no build; a node serving
//! replicas drained under load fails no request either (its replicas move to the other node,
//! it holds no container after, GET /nodes shows it drained).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::harness::{Cluster, HostPlatform};

/// busybox httpd serving a copy of /www plus `/id`: the deployment, the replica and a value
/// drawn at the container's start (two containers never share it).
const COMMAND: &str = "mkdir -p /tmp/www && cp -r /www/. /tmp/www/ && \
    echo \"$STACKPAD_DEPLOYMENT_ID $STACKPAD_REPLICA $(cat /proc/sys/kernel/random/uuid)\" \
    > /tmp/www/id && exec httpd -f -p 8080 -h /tmp/www";

/// How long the redeploy's load runs at most (it stops once the new set serves alone).
const LOAD_FOR: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_two_nodes_all_serve_redeploy_under_load_fails_nothing_and_scale_needs_no_build()
-> anyhow::Result<()> {
    crate::harness::Binaries::get()?;
    let platform = HostPlatform::start("cluster-replicas").await?;
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
    outcome
}

async fn scenario(platform: &HostPlatform, cluster: &Cluster) -> anyhow::Result<()> {
    let tenant = platform.organization("cluster-replicas").await?;
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
                "name": "web", "kind": "web", "image": image, "port": 8080, "replicas": 3,
                "command": ["sh", "-c", COMMAND],
                "health_check": { "path": "/", "interval_ms": 100 },
            })),
        )
        .await?;
    let service = s["id"].as_str().context("service id")?.to_owned();
    let host = s["hosts"][0].as_str().context("platform host")?.to_owned();

    // Three replicas over both nodes, each in its node's own containerd.
    let deploying = Instant::now();
    let first = platform
        .deploy(&tenant, &service, Duration::from_secs(60))
        .await?;
    let first_took = deploying.elapsed();
    let placed = placement(&first)?;
    ensure!(
        placed.len() == 3 && placed.values().collect::<BTreeSet<_>>().len() == 2,
        "3 replicas over 2 nodes: {placed:?}"
    );
    check_containers(cluster, &placed).await?;
    let first_id = first["id"].as_str().context("deployment id")?.to_owned();
    let seen = answers(platform, &host, 30).await?;
    ensure!(
        seen.len() == 3 && seen.iter().all(|a| a.starts_with(&first_id)),
        "all 3 replicas of {first_id} answer through the proxy: {seen:?}"
    );
    let replicas: BTreeSet<&str> = seen
        .iter()
        .filter_map(|a| a.split_whitespace().nth(1))
        .collect();
    ensure!(
        replicas == BTreeSet::from(["0", "1", "2"]),
        "replicas 0, 1 and 2 answer: {seen:?}"
    );

    // A redeploy under load: no request fails.
    let load = Load::start(platform, &host, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deploying = Instant::now();
    let second = platform
        .deploy(&tenant, &service, Duration::from_secs(60))
        .await?;
    let second_took = deploying.elapsed();
    let second_id = second["id"].as_str().context("deployment id")?.to_owned();
    // Keep the load on a moment after the old set went.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = load.stop().await;
    ensure!(
        loaded.failed == 0,
        "{} of {} requests failed during the redeploy: {:?}",
        loaded.failed,
        loaded.total,
        loaded.errors
    );
    ensure!(
        loaded.by_deployment.contains_key(&first_id)
            && loaded.by_deployment.contains_key(&second_id),
        "the load saw both sets: {:?}",
        loaded.by_deployment
    );
    check_containers(cluster, &placement(&second)?).await?;
    eprintln!(
        "redeploy under load: {} requests, 0 failed, {:?} ({second_took:?} to ready)",
        loaded.total, loaded.by_deployment
    );

    // Scale to 1, then back to 3: the same image, no build.
    let mut scaled = vec![];
    for replicas in [1, 3] {
        let patched = platform
            .expect(
                200,
                "PATCH",
                &format!("/services/{service}"),
                &tenant.token,
                Some(json!({ "replicas": replicas })),
            )
            .await?;
        let d = patched["deployment"]["id"]
            .as_str()
            .with_context(|| format!("a scale to {replicas} queues a deployment: {patched}"))?;
        let started = Instant::now();
        let done = platform
            .wait_ready(&tenant, d, Duration::from_secs(60))
            .await?;
        scaled.push(started.elapsed());
        ensure!(
            done["image"].as_str() == second["image"].as_str() && done["build_node_id"].is_null(),
            "a scale runs the serving image without a build: {done}"
        );
        let placed = placement(&done)?;
        ensure!(placed.len() == replicas, "{replicas} instances: {placed:?}");
        check_containers(cluster, &placed).await?;
        let seen = answers(platform, &host, 20).await?;
        ensure!(
            seen.len() == replicas && seen.iter().all(|a| a.starts_with(d)),
            "{replicas} replicas of {d} answer: {seen:?}"
        );
    }
    eprintln!(
        "3 replicas ready in {first_took:?}; scale to 1 in {:?}, back to 3 in {:?}",
        scaled[0], scaled[1]
    );
    drain_under_load(platform, cluster, &tenant, &service, &host).await
}

/// A compute node serving replicas is drained under load: its replicas move to the other node
/// (a deployment of the serving image, started beside, one switch), no request fails, the
/// drained node holds no container any more and is listed drained.
async fn drain_under_load(
    platform: &HostPlatform,
    cluster: &Cluster,
    tenant: &crate::harness::Tenant,
    service: &str,
    host: &str,
) -> anyhow::Result<()> {
    let (s, _) = platform.serving_other_than(tenant, service, "").await?;
    let serving = s["current_deployment_id"]
        .as_str()
        .context("a deployment serves")?
        .to_owned();
    let d = platform
        .wait_ready(tenant, &serving, Duration::from_secs(5))
        .await?;
    let placed = placement(&d)?;
    let drained = cluster
        .compute
        .iter()
        .find(|n| placed.values().any(|p| *p == n.id))
        .context("a node serves a replica")?;
    let load = Load::start(platform, host, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let draining = Instant::now();
    let answer = platform
        .expect(
            200,
            "POST",
            &format!("/nodes/{}/drain", drained.id),
            &platform.operator_token,
            None,
        )
        .await?;
    let moving = answer["moving"][0]["deployment_id"]
        .as_str()
        .with_context(|| format!("the drain moves web: {answer}"))?
        .to_owned();
    let moved = platform
        .wait_ready(tenant, &moving, Duration::from_secs(30))
        .await?;
    let moved_after = draining.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = load.stop().await;
    ensure!(
        loaded.failed == 0,
        "{} of {} requests failed during the drain of {}: {:?}",
        loaded.failed,
        loaded.total,
        drained.name,
        loaded.errors
    );
    let now = placement(&moved)?;
    ensure!(
        now.len() == 3 && now.values().all(|n| *n != drained.id),
        "3 replicas off the drained {}: {now:?}",
        drained.name
    );
    check_containers(cluster, &now).await?;
    let nodes = platform
        .expect(200, "GET", "/nodes", &platform.operator_token, None)
        .await?;
    let listed = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["id"] == drained.id.as_str())
        .with_context(|| format!("{} is listed: {nodes}", drained.name))?;
    ensure!(
        !listed["drained_at"].is_null(),
        "{} is listed drained: {listed}",
        drained.name
    );
    eprintln!(
        "drain of {} under load: {} requests, 0 failed, {:?}; its replicas serve elsewhere {moved_after:?} after the drain",
        drained.name, loaded.total, loaded.by_deployment
    );
    Ok(())
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

/// Each node's containerd holds exactly the replicas placed on it (the old set is gone).
async fn check_containers(cluster: &Cluster, placed: &BTreeMap<i64, String>) -> anyhow::Result<()> {
    for node in &cluster.compute {
        let expected = placed.values().filter(|n| **n == node.id).count();
        // The old set is removed right after the switch; give the removal a moment.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let held = cluster.containers(&node.name)?;
            if held.len() == expected {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{} holds {held:?}, {expected} placed there",
                node.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The distinct `/id` answers of `requests` requests through the proxy.
async fn answers(
    platform: &HostPlatform,
    host: &str,
    requests: usize,
) -> anyhow::Result<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    for _ in 0..requests {
        let (status, body) = platform.get(host, "/id").await?;
        ensure!(status == 200, "GET /id answered {status}: {body}");
        seen.insert(body.trim().to_owned());
    }
    Ok(seen)
}

struct Loaded {
    total: u64,
    failed: u64,
    errors: Vec<String>,
    by_deployment: BTreeMap<String, u64>,
}

/// `clients` keep-alive clients asking `/id` in a loop until stopped (at most [`LOAD_FOR`]).
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Loaded>>,
}

impl Load {
    fn start(platform: &HostPlatform, host: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                let client = platform.client(host);
                let url = platform.url(host, "/id");
                tokio::spawn(async move {
                    let mut loaded = Loaded {
                        total: 0,
                        failed: 0,
                        errors: vec![],
                        by_deployment: BTreeMap::new(),
                    };
                    let until = Instant::now() + LOAD_FOR;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        loaded.total += 1;
                        let answer = match client.get(&url).send().await {
                            Ok(r) if r.status() == 200 => r.text().await.map_err(|e| e.to_string()),
                            Ok(r) => Err(format!("status {}", r.status())),
                            Err(e) => Err(e.to_string()),
                        };
                        match answer {
                            Ok(body) => {
                                let deployment =
                                    body.split_whitespace().next().unwrap_or("").to_owned();
                                *loaded.by_deployment.entry(deployment).or_default() += 1;
                            }
                            Err(e) => {
                                loaded.failed += 1;
                                if loaded.errors.len() < 5 {
                                    loaded.errors.push(e);
                                }
                            }
                        }
                    }
                    loaded
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn stop(self) -> Loaded {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Loaded {
            total: 0,
            failed: 0,
            errors: vec![],
            by_deployment: BTreeMap::new(),
        };
        for task in self.tasks {
            match task.await {
                Ok(l) => {
                    all.total += l.total;
                    all.failed += l.failed;
                    all.errors.extend(l.errors);
                    for (d, n) in l.by_deployment {
                        *all.by_deployment.entry(d).or_default() += n;
                    }
                }
                Err(e) => {
                    all.failed += 1;
                    all.errors.push(format!("load task: {e}"));
                }
            }
        }
        all
    }
}
