//! The node agent with the `ebpf` crate's isolation attached to every container, on the real
//! kernel: containers of one project talk, another project's container is dropped by the
//! programs on its own veth (counted), and the node (health checks) and the proxy (from the
//! bridge gateway) still reach a web service on its port.

mod common;

use std::sync::Arc;

use common::{TestNode, http_get, log_text};
use runtime::isolation_ebpf::EbpfIsolation;

/// A bpffs directory of the test's own, removed (maps and links unpinned) at the end.
struct PinDir(std::path::PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn projects_are_kept_apart_by_ebpf_and_the_node_still_reaches_its_web_services()
-> anyhow::Result<()> {
    let pin =
        PinDir(std::path::Path::new("/sys/fs/bpf").join(stackpad_tests::unique_name("iso-test")));
    let ebpf = Arc::new(
        EbpfIsolation::load(pin.0.clone(), "10.200.0.0/16", 24).map_err(|e| {
            anyhow::anyhow!(
                "{e}: needs root, bpffs at /sys/fs/bpf (scripts/services up) and tc/TCX support"
            )
        })?,
    );
    let node = TestNode::start_with("iso", ebpf.clone()).await?;
    let project = stackpad_tests::unique_name("p");
    let other = stackpad_tests::unique_name("q");

    // Deploy waits for the health check: the node reached the container through the programs.
    let web = node.agent.deploy(node.web(&project, "web")).await?;
    let web_ip = web.ip.expect("web address");
    // The proxy's path on one machine: from the host, through the bridge gateway.
    let (code, body) = http_get(web_ip, 8080, "/").await?;
    assert_eq!(code, 200, "{body}");

    let script = format!(
        "for i in 1 2 3 4 5; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {web_ip} 8080 && break; sleep 0.3; done; echo rc=$?; exec sleep 3600"
    );
    let friend = node
        .agent
        .deploy(node.shell(&project, "friend", &script))
        .await?;
    let text = log_text(&node, &friend.container_id, "rc=").await?;
    assert!(
        text.contains("Hello from"),
        "same project did not reach web: {text}"
    );

    let stranger = node
        .agent
        .deploy(node.shell(&other, "stranger", &script))
        .await?;
    let text = log_text(&node, &stranger.container_id, "rc=").await?;
    assert!(
        !text.contains("Hello from"),
        "another project reached web: {text}"
    );
    let veth = runtime::network::veth_name(&stranger.container_id);
    let counters = ebpf
        .counters(&veth)
        .expect("counters of the stranger's veth");
    assert!(
        counters.drops_out(ebpf::DropReason::Policy) > 0,
        "the stranger's packets were not dropped by the eBPF policy: {counters:?}"
    );
    // The node's /metrics text carries the counters with the container's labels.
    let metrics = runtime::daemon::render_metrics(&node.agent);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("stackpad_container_drops_total")
                && l.contains(&stranger.container_id)
                && l.contains("reason=\"policy\"")
                && !l.ends_with(" 0")),
        "no policy drops of the stranger in /metrics:\n{metrics}"
    );
    for s in [&web, &friend, &stranger] {
        node.agent.remove(&s.container_id, true).await?;
    }
    Ok(())
}

/// The cluster's other containers (#15) go into the kernel's endpoint map and leave it again
/// with the next set; this node's own pool is never taken from a pushed set (attach owns it).
#[tokio::test]
async fn containers_of_other_nodes_are_registered_from_the_pushed_set() -> anyhow::Result<()> {
    use runtime::isolation::{IsolationHook, RemoteEndpoint};
    let pin =
        PinDir(std::path::Path::new("/sys/fs/bpf").join(stackpad_tests::unique_name("iso-remote")));
    let ebpf = EbpfIsolation::load(pin.0.clone(), "10.201.0.0/16", 24).map_err(|e| {
        anyhow::anyhow!("{e}: needs root, bpffs at /sys/fs/bpf (scripts/services up)")
    })?;
    let remote = |ip: [u8; 4], project: &str, web: bool| RemoteEndpoint {
        ip: ip.into(),
        project_id: project.into(),
        environment_id: "production".into(),
        service_type: if web { 1 } else { 4 },
        service_port: Some(8080),
    };
    let set = [
        remote([10, 201, 3, 2], "p", true),
        remote([10, 202, 0, 5], "p", true),
        remote([10, 202, 0, 6], "q", false),
    ];
    assert_eq!(ebpf.set_remote_endpoints(&set)?, 2, "own pool skipped");
    assert_eq!(ebpf.set_remote_endpoints(&set)?, 2, "idempotent");
    assert_eq!(
        ebpf.set_remote_endpoints(&set[1..2])?,
        1,
        "the gone one left"
    );
    assert_eq!(ebpf.set_remote_endpoints(&[])?, 0);
    ebpf.deny_cluster_pools(&["10.202.0.0/20".into()])?;
    ebpf.deny_cluster_pools(&["10.202.0.0/20".into()])?;
    let err = ebpf
        .deny_cluster_pools(&["10.202.0.1/20".into()])
        .unwrap_err();
    assert!(err.to_string().contains("10.202.0.1/20"), "{err}");
    Ok(())
}
