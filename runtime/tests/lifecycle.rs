//! Surviving restarts: of the agent, of containerd, and of the container's own process.

mod common;

use std::time::Duration;

use common::{TestNode, http_get, wait_until};
use runtime::agent::State;
use runtime::agent::reconcile::Action;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_adopts_running_containers_without_restarting_them() -> anyhow::Result<()> {
    let mut node = TestNode::start("adopt").await?;
    let project = stackpad_tests::unique_name("p");
    let a = node.agent.deploy(node.web(&project, "web")).await?;
    let b = node.agent.deploy(node.web(&project, "api")).await?;

    let actions = node.restart_agent().await?;
    assert!(
        actions.contains(&Action::Adopt(a.container_id.clone())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&Action::Adopt(b.container_id.clone())),
        "{actions:?}"
    );
    assert_eq!(
        node.agent.list(Some(&project), None).len(),
        2,
        "duplicated or lost"
    );
    for before in [&a, &b] {
        let after = wait_until(&node, &before.container_id, "healthy after adoption", |s| {
            s.state == State::Healthy
        })
        .await?;
        assert_eq!(after.pid, before.pid, "container was restarted");
        assert_eq!(after.created_ms, before.created_ms);
        assert_eq!(after.image_digest, before.image_digest);
        assert_eq!(after.ip, before.ip);
        let (code, _) = http_get(after.ip.expect("ip"), 8080, "/").await?;
        assert_eq!(code, 200);
    }
    // A retried deploy after the restart still finds the same container.
    let mut again = node.web(&project, "web");
    again.workload.deployment_id = a.spec.workload.deployment_id.clone();
    assert_eq!(node.agent.deploy(again).await?.pid, a.pid);

    // Stopped containers stay stopped through a restart; orphans are removed.
    node.agent
        .stop(&b.container_id, Some(Duration::ZERO))
        .await?;
    let actions = node.restart_agent().await?;
    assert!(
        actions.contains(&Action::KeepStopped(b.container_id.clone())),
        "{actions:?}"
    );
    assert_eq!(node.agent.status(&b.container_id)?.state, State::Stopped);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_process_is_restarted_by_policy() -> anyhow::Result<()> {
    let node = TestNode::start("kill9").await?;
    let project = stackpad_tests::unique_name("p");
    let s = node.agent.deploy(node.web(&project, "web")).await?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let after = wait_until(&node, &s.container_id, "restart after kill -9", |n| {
        n.restart_count >= 1 && n.state == State::Healthy
    })
    .await?;
    assert_ne!(after.pid, s.pid);
    assert_eq!(after.exit_code, 137);
    let (code, _) = http_get(after.ip.expect("ip"), 8080, "/").await?;
    assert_eq!(code, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_keep_flowing_across_an_agent_restart() -> anyhow::Result<()> {
    let mut node = TestNode::start("logs").await?;
    let project = stackpad_tests::unique_name("p");
    let s = node
        .agent
        .deploy(node.shell(
            &project,
            "ticker",
            "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done",
        ))
        .await?;
    common::log_text(&node, &s.container_id, "tick-2").await?;
    let (before, _) = node.agent.logs(&s.container_id, 1000, false)?;
    assert!(before.len() >= 2, "{before:?}");
    node.restart_agent().await?;
    let (_, live) = node.agent.logs(&s.container_id, 0, true)?;
    let mut live = live.ok_or_else(|| anyhow::anyhow!("no live feed after adoption"))?;
    let line = tokio::time::timeout(Duration::from_secs(5), live.recv()).await??;
    let text = String::from_utf8_lossy(&line.line).into_owned();
    assert!(text.starts_with("tick-"), "{text}");
    let n: u32 = text.trim_start_matches("tick-").parse()?;
    let last_before: u32 = String::from_utf8_lossy(&before.last().expect("lines").line)
        .trim_start_matches("tick-")
        .parse()?;
    assert!(
        n > last_before,
        "same process keeps counting: {n} after {last_before}"
    );
    // The file on disk holds lines from before and after the restart.
    let (all, _) = node.agent.logs(&s.container_id, 10_000, false)?;
    assert!(all.len() > before.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_backs_off_and_gives_up_at_the_limit() -> anyhow::Result<()> {
    let node = TestNode::start("crash").await?;
    let project = stackpad_tests::unique_name("p");
    let mut spec = node.shell(&project, "crasher", "echo boom; exit 3");
    spec.restart.max_restarts = 2;
    let s = node.agent.deploy(spec).await?;
    let failed = wait_until(&node, &s.container_id, "give up after 2 restarts", |n| {
        n.state == State::Failed
    })
    .await?;
    assert_eq!(failed.restart_count, 2, "{failed:?}");
    assert_eq!(failed.exit_code, 3);
    assert!(
        failed.message.contains("restart limit"),
        "{}",
        failed.message
    );
    let (lines, _) = node.agent.logs(&s.container_id, 100, false)?;
    assert_eq!(
        lines.iter().filter(|l| l.line == b"boom").count(),
        3,
        "one line per run"
    );

    // A clean exit under on-failure is left alone.
    let ok = node
        .agent
        .deploy(node.shell(&project, "oneshot", "exit 0"))
        .await?;
    let done = wait_until(&node, &ok.container_id, "clean exit", |n| {
        n.state == State::Stopped
    })
    .await?;
    assert_eq!((done.restart_count, done.exit_code), (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_removes_orphaned_endpoints_and_containers() -> anyhow::Result<()> {
    let mut node = TestNode::start("orphan").await?;
    let project = stackpad_tests::unique_name("p");
    // An endpoint left by a deploy that died before creating its container.
    let c = &node.config;
    let networks = runtime::network::Networks::new(
        &c.ipam_dir,
        &c.run_dir,
        &c.namespace,
        c.pool()?,
        c.subnet_prefix,
    )?;
    let ep = networks
        .attach("sp-orphan0000000000000000", &project, "production", "ghost")
        .await?;
    assert!(std::path::Path::new(&ep.netns_path).exists());
    // A container whose record containerd lost while its process ran.
    let s = node.agent.deploy(node.web(&project, "web")).await?;
    runtime::agent::task::kill_and_delete(node.agent.containerd(), &s.container_id).await?;
    runtime::agent::task::delete_container(node.agent.containerd(), &s.container_id).await?;

    let actions = node.restart_agent().await?;
    assert!(
        actions.contains(&Action::ReleaseLease {
            id: "sp-orphan0000000000000000".into(),
            bridge: ep.bridge.clone()
        }),
        "{actions:?}"
    );
    assert!(
        actions.contains(&Action::ReleaseLease {
            id: s.container_id.clone(),
            bridge: s.bridge.clone()
        }),
        "{actions:?}"
    );
    assert!(
        actions.contains(&Action::RemoveLogs(s.container_id.clone())),
        "{actions:?}"
    );
    assert!(
        !std::path::Path::new(&ep.netns_path).exists(),
        "orphan netns left"
    );
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(&ep.bridge)
            .exists(),
        "orphan bridge left"
    );
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.agent.list(None, None).is_empty());
    Ok(())
}
