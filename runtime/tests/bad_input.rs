//! Bad deploys fail with a clear error and leave nothing behind.

mod common;

use common::TestNode;

fn leftovers(node: &TestNode) -> Vec<String> {
    let mut found: Vec<String> = node
        .leases()
        .into_iter()
        .map(|(b, c)| format!("lease {b}/{c}"))
        .collect();
    found.extend(
        node.agent
            .list(None, None)
            .into_iter()
            .map(|s| format!("container {}", s.container_id)),
    );
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deploys_fail_clearly_and_leave_nothing() -> anyhow::Result<()> {
    let node = TestNode::start("bad").await?;
    let project = stackpad_tests::unique_name("p");
    let mut cases = Vec::new();

    let mut s = node.web(&project, "web");
    s.image = node.image("does-not-exist:1");
    cases.push((s, "not found"));
    let mut s = node.web(&project, "web");
    s.image = node.image("busybox-arm64:1");
    cases.push((s, "linux/arm64"));
    let mut s = node.web(&project, "web");
    s.env.insert("BAD-NAME".into(), "x".into());
    cases.push((s, "env"));
    let mut s = node.web(&project, "web");
    s.ports[0].container_port = 70_000;
    cases.push((s, "port 70000 is out of range"));
    let mut s = node.web(&project, "web");
    s.resources.memory_bytes = 1 << 20;
    cases.push((s, "below the node's floor"));
    let mut s = node.web(&project, "web");
    s.command = vec!["/nonexistent-binary".into()];
    cases.push((s, "nonexistent-binary"));

    for (spec, expected) in cases {
        let err = node
            .agent
            .deploy(spec)
            .await
            .expect_err("must fail")
            .to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert!(
            leftovers(&node).is_empty(),
            "after {expected:?}: {:?}",
            leftovers(&node)
        );
    }
    let containers = node
        .ns
        .containerd
        .containers()
        .list(
            node.ns
                .containerd
                .req(containerd_client::services::v1::ListContainersRequest { filters: vec![] }),
        )
        .await?
        .into_inner()
        .containers;
    assert!(
        containers.is_empty(),
        "containerd still holds {:?}",
        containers.iter().map(|c| &c.id).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_that_never_passes_fails_the_deploy_and_stops_the_container()
-> anyhow::Result<()> {
    let node = TestNode::start("unhealthy").await?;
    let project = stackpad_tests::unique_name("p");
    let mut spec = node.web(&project, "web");
    if let Some(h) = spec.health.as_mut() {
        h.probe = runtime::spec::Probe::Tcp { port: 9999 };
        h.deadline_ms = 1_000;
    }
    let id = spec.container_id();
    let err = node
        .agent
        .deploy(spec)
        .await
        .expect_err("never healthy")
        .to_string();
    assert!(
        err.contains("did not become healthy") && err.contains("9999"),
        "{err}"
    );
    let s = node.agent.status(&id)?;
    assert_eq!(s.state, runtime::agent::State::Failed, "{s:?}");
    assert!(!s.wanted_running, "the restart policy must not revive it");
    // Kept (stopped) for its logs until removed, and not revived: watched over 300 ms (an
    // absence has no event to wait on); then removing releases everything.
    for _ in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let s = node.agent.status(&id)?;
        assert_eq!(s.state, runtime::agent::State::Failed, "{s:?}");
    }
    assert!(node.agent.remove(&id, false).await?);
    assert!(leftovers(&node).is_empty(), "{:?}", leftovers(&node));
    Ok(())
}
