//! Crashes through the real daemons (`harness::Platform`): `kill -9` of the node agent (a real
//! process restart: the running container is adopted, not restarted), of buildd in the middle of
//! a build and of control in the middle of a deploy. Each deployment ends ready or cleanly
//! failed (with its reason), never stuck, and the service keeps one serving container.

use std::time::Duration;

use crate::harness::{AppRepo, Platform, Role, Service};
use anyhow::ensure;

const END: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_node_agent_buildd_and_control_mid_deploy() -> anyhow::Result<()> {
    let mut platform = Platform::start("e2e-faults").await?;
    let outcome = scenario(&mut platform).await;
    platform.report(outcome)
}

async fn scenario(platform: &mut Platform) -> anyhow::Result<()> {
    let tenant = platform.organization("e2e").await?;
    let repo = AppRepo::sample(platform, "hello", "2.0.0")?;
    let project = platform.project(&tenant, "crash").await?;
    let service = platform
        .git_service(&tenant, (&project, "crash"), "hello", &repo)
        .await?;
    let first = platform.push(&service, &repo.head()?).await?;
    let d = platform.wait_deployment(&tenant, &first, END).await?;
    ensure!(d["state"] == "ready", "first deployment: {d}");
    platform
        .wait_for_https(&service.host, "version 2.0.0", Duration::from_secs(90))
        .await?;

    // The node agent: killed and started again, it adopts the container without restarting it.
    let containers = platform.containers().await?;
    ensure!(
        containers.len() == 1,
        "one container expected: {containers:?}"
    );
    let task = platform.task_pid(&containers[0]).await?;
    let agent = platform.pid(Role::Node);
    platform.kill9(Role::Node)?;
    platform.restart(Role::Node).await?;
    ensure!(
        platform.pid(Role::Node) != agent,
        "the agent did not restart"
    );
    ensure!(
        platform.containers().await? == containers,
        "the containers changed across the agent's restart"
    );
    ensure!(
        platform.task_pid(&containers[0]).await? == task,
        "the agent restarted the container's process instead of adopting it"
    );
    let (status, body) = platform.https_get(&service.host, "/").await?;
    ensure!(
        status == 200 && body.contains("version 2.0.0"),
        "not served after the agent's restart: {status} {body}"
    );

    // buildd, in the middle of a build.
    let commit = repo.set_version("2.0.1")?;
    let building = platform.push(&service, &commit).await?;
    platform
        .wait_state(&tenant, &building, "building", END)
        .await?;
    platform.kill9(Role::Buildd)?;
    platform.restart(Role::Buildd).await?;
    let d = platform.wait_deployment(&tenant, &building, END).await?;
    ended_cleanly(platform, &service, &d, "2.0.1", "2.0.0").await?;
    let serving = if d["state"] == "ready" {
        "2.0.1"
    } else {
        "2.0.0"
    };

    // control, in the middle of a deploy.
    let commit = repo.set_version("2.0.2")?;
    let deploying = platform.push(&service, &commit).await?;
    platform
        .wait_state(&tenant, &deploying, "deploying", END)
        .await?;
    platform.kill9(Role::Control)?;
    platform.restart(Role::Control).await?;
    let d = platform.wait_deployment(&tenant, &deploying, END).await?;
    ended_cleanly(platform, &service, &d, "2.0.2", serving).await?;
    Ok(())
}

/// A deployment that ended after a crash: ready and serving its version, or failed with a reason
/// while the previous version serves; one container either way (nothing leaked).
async fn ended_cleanly(
    platform: &Platform,
    service: &Service,
    d: &serde_json::Value,
    new: &str,
    old: &str,
) -> anyhow::Result<()> {
    eprintln!(
        "after the crash the deployment ended {} ({})",
        d["state"], d["failure_reason"]
    );
    let expected = match d["state"].as_str() {
        Some("ready") => new,
        Some("failed") => {
            let reason = d["failure_reason"].as_str().unwrap_or_default();
            ensure!(!reason.is_empty(), "failed without a reason: {d}");
            old
        }
        _ => anyhow::bail!("the deployment did not end ready or failed: {d}"),
    };
    platform
        .wait_for_https(
            &service.host,
            &format!("version {expected}"),
            Duration::from_secs(30),
        )
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let containers = platform.containers().await?;
        if containers.len() == 1 {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "{} containers for one service after the crash: {containers:?}",
            containers.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
