//! Isolation across nodes (#15): control pushes the cluster's endpoint set to every node, so a
//! node's eBPF policy knows the project of the containers on the others. The truth table is
//! checked from inside containers on both compute nodes (real eBPF, real WireGuard): the same
//! project across nodes connects (both ways), another project is dropped (across nodes and on
//! one node), and so are the metadata address and the platform's own addresses. Draining a
//! node keeps new placements off it (how the test puts containers on both nodes); removing one
//! is refused while it runs containers undrained.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use crate::harness::{Cluster, HostPlatform, Tenant};

/// How long a probe waits for a connection; a dropped SYN gets no answer within it.
const PROBE_TIMEOUT: &str = "2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_stay_apart_across_nodes_and_the_same_project_connects() -> anyhow::Result<()> {
    crate::harness::Binaries::get()?;
    let started = Instant::now();
    let platform = HostPlatform::start("cluster-isolation").await?;
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
    eprintln!("cross-node isolation scenario in {:?}", started.elapsed());
    outcome
}

/// A running container: where it is and its address.
#[derive(Clone)]
pub(crate) struct Placed {
    pub node: String,
    pub ip: String,
    pub pid: u32,
}

async fn scenario(platform: &HostPlatform, cluster: &Cluster) -> anyhow::Result<()> {
    let a = platform.organization("iso-a").await?;
    let b = platform.organization("iso-b").await?;
    let image_a = platform.busybox_image(&a).await?;
    let image_b = platform.busybox_image(&b).await?;
    let (web_a, _) = platform.web_service(&a, "shop", &image_a, 1).await?;
    // A volume keeps web of shop on its node when that node is drained (a drain moves the
    // stateless services, #15): it stays the one container of the first node.
    platform
        .expect(
            200,
            "PATCH",
            &format!("/services/{web_a}"),
            &a.token,
            Some(json!({ "volumes": [{ "name": "data", "mount_path": "/data", "size_bytes": 16 << 20 }] })),
        )
        .await?;
    let project_a = service_project(platform, &a, &web_a).await?;
    let api_a = service_in(platform, &a, &project_a, "api", &image_a).await?;
    let (web_b, _) = platform.web_service(&b, "other", &image_b, 1).await?;

    let d = platform.deploy(&a, &web_a, Duration::from_secs(60)).await?;
    let first = d["node_id"]
        .as_str()
        .context("placed on a node")?
        .to_owned();
    // Drained, the first node takes nothing new: the next two land on the other one.
    let drained = platform
        .expect(
            200,
            "POST",
            &format!("/nodes/{first}/drain"),
            &platform.operator_token,
            None,
        )
        .await?;
    ensure!(
        drained["remaining"].as_array().map(Vec::len) == Some(1)
            && drained["staying"].as_array().map(Vec::len) == Some(1),
        "the drained node still runs web of shop, which stays with its volume: {drained}"
    );
    let d_api = platform.deploy(&a, &api_a, Duration::from_secs(60)).await?;
    let d_b = platform.deploy(&b, &web_b, Duration::from_secs(60)).await?;
    for d in [&d_api, &d_b] {
        ensure!(
            d["node_id"].as_str() != Some(first.as_str()),
            "placed on the drained node {first}: {d}"
        );
    }
    let web_a = placed(cluster, &d).await?;
    let api_a = placed(cluster, &d_api).await?;
    let web_b = placed(cluster, &d_b).await?;
    ensure!(
        web_a.node != api_a.node && api_a.node == web_b.node,
        "web of shop on {}, api of shop on {}, other on {}",
        web_a.node,
        api_a.node,
        web_b.node
    );

    // Allowed first (waiting for the push to reach both nodes), then what must be dropped.
    let same_project = format!("{}:8080", api_a.ip);
    eventually_connects(&web_a, &same_project).await?;
    eventually_connects(&api_a, &format!("{}:8080", web_a.ip)).await?;
    let host_wg = cluster.host_wg.clone();
    let agent_of = |name: &str| -> anyhow::Result<String> {
        let n = cluster
            .compute
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name}"))?;
        Ok(n.agent
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .to_owned())
    };
    let dropped = [
        (
            &web_a,
            format!("{}:8080", web_b.ip),
            "another project on another node",
        ),
        (
            &web_b,
            format!("{}:8080", web_a.ip),
            "another project on another node (back)",
        ),
        (
            &web_b,
            same_project.clone(),
            "another project on the same node",
        ),
        (
            &web_a,
            "169.254.169.254:80".to_owned(),
            "the metadata address",
        ),
        (
            &web_b,
            "169.254.169.254:80".to_owned(),
            "the metadata address",
        ),
        (&web_a, agent_of(&web_a.node)?, "its own node's agent"),
        (&web_a, agent_of(&api_a.node)?, "the other node's agent"),
        (
            &web_b,
            format!("{host_wg}:{}", platform.http.port()),
            "the host (proxy, control) over WireGuard",
        ),
    ];
    // In parallel: each dropped probe waits its whole timeout.
    let mut probes = tokio::task::JoinSet::new();
    for (from, to, what) in dropped {
        let from = (*from).clone();
        probes.spawn(async move { (probe(&from, &to).await, what, from.node, to) });
    }
    let mut failures = Vec::new();
    while let Some(done) = probes.join_next().await {
        let (got, what, from, to) = done?;
        let got = got?;
        if got != "timeout" {
            failures.push(format!("{what}: {from} -> {to}: {got}"));
        }
    }
    ensure!(failures.is_empty(), "not dropped:\n{}", failures.join("\n"));
    // The same project still connects after all that (the drops were policy, not breakage).
    ensure!(
        probe(&web_a, &same_project).await? == "connected",
        "web of shop lost api of shop"
    );

    // Removal: refused for a node running containers undrained; the drained one goes.
    let other = d_api["node_id"].as_str().context("placed")?;
    let refused = platform
        .expect(
            409,
            "DELETE",
            &format!("/nodes/{other}"),
            &platform.operator_token,
            None,
        )
        .await?;
    ensure!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("drain it first"),
        "the refusal says to drain: {refused}"
    );
    let removed = platform
        .expect(
            200,
            "DELETE",
            &format!("/nodes/{first}"),
            &platform.operator_token,
            None,
        )
        .await?;
    ensure!(
        removed["abandoned"].as_array().map(Vec::len) == Some(1),
        "removing the drained node reports what it ran: {removed}"
    );
    let nodes = platform
        .expect(200, "GET", "/nodes", &platform.operator_token, None)
        .await?;
    ensure!(
        !nodes.to_string().contains(&first),
        "a removed node is not listed: {nodes}"
    );
    Ok(())
}

/// The project of a service.
pub(crate) async fn service_project(
    platform: &HostPlatform,
    tenant: &Tenant,
    service: &str,
) -> anyhow::Result<String> {
    let s = platform
        .expect(
            200,
            "GET",
            &format!("/services/{service}"),
            &tenant.token,
            None,
        )
        .await?;
    Ok(s["project_id"]
        .as_str()
        .context("service project")?
        .to_owned())
}

/// Another busybox httpd service in the project's production environment.
pub(crate) async fn service_in(
    platform: &HostPlatform,
    tenant: &Tenant,
    project: &str,
    name: &str,
    image: &str,
) -> anyhow::Result<String> {
    let s = platform
        .expect(
            201,
            "POST",
            &format!("/projects/{project}/services"),
            &tenant.token,
            Some(json!({
                "name": name, "kind": "web", "image": image, "port": 8080,
                "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                "health_check": { "path": "/", "interval_ms": 100 },
            })),
        )
        .await?;
    Ok(s["id"].as_str().context("service id")?.to_owned())
}

/// The node, address and task pid of a ready deployment's container.
pub(crate) async fn placed(cluster: &Cluster, d: &Value) -> anyhow::Result<Placed> {
    let node_id = d["node_id"].as_str().context("node_id")?;
    let node = cluster
        .compute
        .iter()
        .find(|n| n.id == node_id)
        .with_context(|| format!("deployment on {node_id}, not a cluster node"))?;
    let address = d["upstream_address"].as_str().context("upstream_address")?;
    let ip = address.rsplit_once(':').context("ip:port")?.0.to_owned();
    for pid in task_pids(cluster, &node.name)? {
        let out = in_netns(pid, &["ip", "-4", "-o", "addr", "show"])?;
        if out.1.contains(&format!(" {ip}/")) {
            return Ok(Placed {
                node: node.name.clone(),
                ip,
                pid,
            });
        }
    }
    bail!("no task on {} has {ip}", node.name)
}

/// The pids of the tasks in a compute node's own containerd.
fn task_pids(cluster: &Cluster, node: &str) -> anyhow::Result<Vec<u32>> {
    let socket = format!(
        "/run/stackpad/cluster/{}/{node}/containerd.sock",
        cluster.name
    );
    let namespace = format!("cluster-{}-{node}", cluster.name);
    let out = std::process::Command::new("ctr")
        .args(["--address", &socket, "-n", &namespace, "tasks", "ls"])
        .output()
        .context("running ctr tasks ls")?;
    ensure!(
        out.status.success(),
        "ctr tasks ls on {node}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect())
}

/// Connects to `address` from inside the container's network namespace (its packets leave
/// through its veth with its address, past its node's eBPF programs): `connected`, `timeout`
/// (no answer at all) or `error: ...` (refused, unreachable).
async fn probe(from: &Placed, address: &str) -> anyhow::Result<String> {
    let (ip, port) = address.rsplit_once(':').context("ip:port")?;
    let (pid, ip, port) = (from.pid, ip.to_owned(), port.to_owned());
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        in_netns(
            pid,
            &[
                "timeout",
                PROBE_TIMEOUT,
                "bash",
                "-c",
                "exec 3<>/dev/tcp/$0/$1 && echo connected",
                &ip,
                &port,
            ],
        )
    })
    .await??;
    Ok(match code {
        0 if out.trim() == "connected" => "connected".to_owned(),
        124 => "timeout".to_owned(),
        code => format!("error: exit {code}: {}", err.trim()),
    })
}

/// Probes until `address` connects (the endpoint set reaches a node at its push or at the next
/// monitor tick), for at most 15 s.
async fn eventually_connects(from: &Placed, address: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = probe(from, address).await?;
        if got == "connected" {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{} ({}) never reached {address} of its own project: {got}",
            from.node,
            from.ip
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a host program in the network namespace of `pid`: exit code, stdout, stderr.
fn in_netns(pid: u32, cmd: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "--"])
        .args(cmd)
        .output()
        .context("running nsenter")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
