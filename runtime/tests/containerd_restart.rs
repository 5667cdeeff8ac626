//! containerd restarts under running containers. In a test binary of its own: cargo runs test
//! binaries one after another, so no other test talks to containerd while it restarts.

mod common;

use std::time::Duration;

use common::{TestNode, http_get, wait_until};
use runtime::agent::State;

/// Restarts the machine's containerd (SIGTERM, then `scripts/services up`) while a container
/// runs: the container keeps running and the agent keeps managing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_a_containerd_restart() -> anyhow::Result<()> {
    let node = TestNode::start("ctrd").await?;
    let project = stackpad_tests::unique_name("p");
    let s = node.agent.deploy(node.web(&project, "web")).await?;
    let pid = std::fs::read_to_string("/run/containerd/containerd.pid")
        .ok()
        .or_else(|| {
            std::process::Command::new("pidof")
                .arg("containerd")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        })
        .and_then(|p| {
            p.split_whitespace()
                .next()
                .and_then(|p| p.parse::<i32>().ok())
        })
        .ok_or_else(|| anyhow::anyhow!("cannot find containerd's pid"))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let up = std::process::Command::new(root.join("scripts/services"))
        .arg("up")
        .output()?;
    anyhow::ensure!(
        up.status.success(),
        "scripts/services up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    // Same process, still serving.
    assert!(
        std::path::Path::new(&format!("/proc/{}", s.pid)).exists(),
        "container process died"
    );
    let (code, _) = http_get(s.ip.expect("ip"), 8080, "/").await?;
    assert_eq!(code, 200);
    // And still managed: a kill -9 is still noticed and restarted.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    wait_until(
        &node,
        &s.container_id,
        "restart after containerd restart",
        |n| n.restart_count >= 1 && n.state == State::Healthy,
    )
    .await?;
    Ok(())
}
