//! Routing across nodes: a web service deployed through the REST API to a compute node in its
//! own namespace answers through the proxy on the host, over WireGuard.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use crate::harness::{Cluster, HostPlatform};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_service_on_a_compute_node_answers_through_the_proxy_over_wireguard()
-> anyhow::Result<()> {
    // Built before the clock starts: a build is not the cluster's time.
    crate::harness::Binaries::get()?;
    let started = Instant::now();
    let platform = HostPlatform::start("cluster-routing").await?;
    let cluster = Cluster::up(2, &platform)?;
    let cluster_up = started.elapsed();
    let status = cluster.status()?;
    ensure!(
        status
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("up"))
            .count()
            == 4,
        "host, build-1 and two compute nodes up:\n{status}"
    );
    let outcome = async {
        let tenant = platform.organization("cluster-routing").await?;
        let image = platform.busybox_image(&tenant).await?;
        let (service, host) = platform.web_service(&tenant, "shop", &image, 1).await?;
        let deploying = Instant::now();
        let deployment = platform
            .deploy(&tenant, &service, Duration::from_secs(60))
            .await?;
        let deployed = deploying.elapsed();
        let node_id = deployment["node_id"]
            .as_str()
            .context("a ready deployment names its node")?;
        let node = &cluster
            .compute
            .iter()
            .find(|n| n.id == node_id)
            .with_context(|| format!("deployment placed on {node_id}, not a cluster node"))?
            .name;

        let deadline = Instant::now() + Duration::from_secs(10);
        let (status, body) = loop {
            let got = platform.get(&host, "/").await?;
            if got.0 == 200 || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        ensure!(
            status == 200 && body.contains("Hello from stackpad/busybox"),
            "http://{host}/ through the proxy (container on {node}): {status} {body}"
        );
        // The container runs in that node's own containerd, not the host's.
        let containers = cluster.containers(node)?;
        ensure!(
            containers.len() == 1,
            "{node}'s containerd holds {containers:?}"
        );
        for other in cluster.compute.iter().filter(|n| &n.name != node) {
            let theirs = cluster.containers(&other.name)?;
            ensure!(theirs.is_empty(), "{} holds {theirs:?}", other.name);
        }
        // A second `up` finds it all up: same nodes, nothing joined again.
        let again = Instant::now();
        cluster.up_again()?;
        let again = again.elapsed();
        let status = cluster.status()?;
        ensure!(!status.contains("down"), "after a second up:\n{status}");
        let (status, _) = platform.get(&host, "/").await?;
        ensure!(status == 200, "after a second up the page answers {status}");
        eprintln!("second up in {again:?}");
        eprintln!(
            "platform + cluster up in {cluster_up:?}, deployed to {node} in {deployed:?}, \
             served through the proxy over WireGuard {:?} after the start",
            started.elapsed()
        );
        anyhow::Ok(())
    }
    .await;
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
