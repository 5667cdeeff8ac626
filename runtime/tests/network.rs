//! Per-project networks: names within a project, separate bridges and subnets between projects.

mod common;

use std::time::Duration;

use common::{TestNode, log_text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_of_a_project_reach_each_other_by_name_and_other_projects_not_at_all()
-> anyhow::Result<()> {
    let node = TestNode::start("net").await?;
    let project = stackpad_tests::unique_name("p");
    let other = stackpad_tests::unique_name("q");
    let web = node.agent.deploy(node.web(&project, "web")).await?;
    let web_ip = web.ip.expect("web address");

    // Same project: by service name.
    let client = node
        .agent
        .deploy(node.shell(
            &project,
            "client",
            // busybox-static's wget/ping crash in glibc's NSS inside a minimal image, so the name
            // is resolved the way the agent provides it, from /etc/hosts, and nc talks HTTP.
            "ip=$(awk '$2==\"web\" {print $1}' /etc/hosts); echo web=$ip; \
             for i in 1 2 3 4 5 6 7 8 9 10; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 $ip 8080 && break; sleep 0.3; done; \
             echo end; exec sleep 3600",
        ))
        .await?;
    let text = log_text(&node, &client.container_id, "end").await?;
    assert!(
        text.contains("Hello from stackpad/busybox"),
        "client did not reach web by name: {text}"
    );
    assert_eq!(client.bridge, web.bridge);

    // Another project: another bridge, another subnet, and no way through.
    let script = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {web_ip} 8080; echo rc=$?; exec sleep 3600"
    );
    let stranger = node
        .agent
        .deploy(node.shell(&other, "client", &script))
        .await?;
    assert_ne!(stranger.bridge, web.bridge);
    let (a, b) = (web_ip.octets(), stranger.ip.expect("address").octets());
    assert_ne!(
        a[..3],
        b[..3],
        "projects share a /24: {web_ip} vs {:?}",
        stranger.ip
    );
    let text = log_text(&node, &stranger.container_id, "rc=").await?;
    assert!(
        !text.contains("Hello from"),
        "other project reached web: {text}"
    );
    assert!(!text.contains("rc=0"), "{text}");

    // The host's own services are out of reach too (a listener on the project's gateway).
    let gateway = std::net::Ipv4Addr::new(a[0], a[1], a[2], 1);
    let host_service = tokio::net::TcpListener::bind((gateway, 0)).await?;
    let port = host_service.local_addr()?.port();
    let probe = node
        .agent
        .deploy(node.shell(
            &project,
            "prober",
            &format!("nc -w 2 {gateway} {port} </dev/null; echo host_rc=$?; exec sleep 3600"),
        ))
        .await?;
    let text = log_text(&node, &probe.container_id, "host_rc=").await?;
    assert!(
        !text.contains("host_rc=0"),
        "container reached a host service: {text}"
    );
    let accepted = tokio::time::timeout(Duration::from_millis(100), host_service.accept()).await;
    assert!(
        accepted.is_err(),
        "the host service saw a connection from a container"
    );
    node.agent.remove(&probe.container_id, true).await?;

    // Names resolve only within the project: the stranger's hosts file has no "web".
    let hosts = std::fs::read_to_string(format!("/proc/{}/root/etc/hosts", stranger.pid))?;
    assert!(!hosts.contains("\tweb"), "{hosts}");
    for s in [&web, &client, &stranger] {
        node.agent.remove(&s.container_id, true).await?;
    }
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    Ok(())
}
