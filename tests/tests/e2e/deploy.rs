//! The product as shipped, end to end, through the real daemons (`harness::Platform`): a signed
//! GitHub push of the sample app's local repository is built by buildd, run by the node agent
//! under its default eBPF isolation and served by the proxy over HTTPS with a certificate from
//! the platform's ACME CA; then a redeploy under load drops no request, a version whose health
//! check fails leaves the old one serving and says why, a rollback serves the old version again,
//! and deleting the service leaves nothing behind.

use std::time::Duration;

use crate::harness::{AppRepo, Load, Platform};
use anyhow::{Context, ensure};

const BUILD_AND_DEPLOY: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_build_deploy_https_redeploy_rollback_delete() -> anyhow::Result<()> {
    let mut platform = Platform::start("e2e-deploy").await?;
    let outcome = scenario(&mut platform).await;
    platform.report(outcome)
}

async fn scenario(platform: &mut Platform) -> anyhow::Result<()> {
    let tenant = platform.organization("e2e").await?;
    let repo = AppRepo::sample(platform, "hello", "1.0.0")?;
    let project_id = platform.project(&tenant, "shop").await?;
    let service = platform
        .git_service(&tenant, (&project_id, "shop"), "hello", &repo)
        .await?;
    let service_id = service.id.clone();
    let host = service.host.clone();
    let head = repo.head()?;

    // 1. A signed push: build, deploy, HTTPS with the platform CA's certificate.
    let v1 = platform.push(&service, &head).await?;
    let d = platform
        .wait_deployment(&tenant, &v1, BUILD_AND_DEPLOY)
        .await?;
    ensure!(d["state"] == "ready", "first deployment: {d}");
    ensure!(
        d["git_commit"] == head.as_str(),
        "built another commit: {d}"
    );
    platform
        .wait_for_https(&host, "version 1.0.0", Duration::from_secs(90))
        .await?;

    // 2. A redeploy under bounded load: every request answers 200, from one version or the
    //    other.
    let load = Load::start(platform, &host)?;
    let v2_commit = repo.set_version("1.0.1")?;
    let v2 = platform.push(&service, &v2_commit).await?;
    let d = platform
        .wait_deployment(&tenant, &v2, BUILD_AND_DEPLOY)
        .await?;
    ensure!(d["state"] == "ready", "second deployment: {d}");
    platform
        .wait_for_https(&host, "version 1.0.1", Duration::from_secs(10))
        .await?;
    let (ok, failed, errors) = load.stop().await;
    ensure!(
        ok >= 20,
        "the load made too few requests to mean anything: {ok}"
    );
    ensure!(
        failed == 0,
        "{failed} of {} requests failed during the redeploy: {errors:?}",
        ok + failed
    );

    // 3. A version whose health check fails: failed, with the reason; the old one serves.
    let broken = repo.break_health()?;
    let v3 = platform.push(&service, &broken).await?;
    let d = platform
        .wait_deployment(&tenant, &v3, BUILD_AND_DEPLOY)
        .await?;
    ensure!(
        d["state"] == "failed",
        "a failing health check deployed: {d}"
    );
    let reason = d["failure_reason"].as_str().unwrap_or_default();
    ensure!(
        reason.contains("health"),
        "the failure does not say the health check failed: {d}"
    );
    let (status, body) = platform.https_get(&host, "/").await?;
    ensure!(
        status == 200 && body.contains("version 1.0.1"),
        "the old version stopped serving: {status} {body}"
    );

    // 4. Rollback to the first deployment.
    let rollback = platform
        .expect(
            201,
            "POST",
            &format!("/deployments/{v1}/rollback"),
            &tenant.token,
            None,
        )
        .await?;
    let r = rollback["id"].as_str().context("rollback id")?.to_owned();
    let d = platform
        .wait_deployment(&tenant, &r, BUILD_AND_DEPLOY)
        .await?;
    ensure!(d["state"] == "ready", "rollback: {d}");
    platform
        .wait_for_https(&host, "version 1.0.0", Duration::from_secs(10))
        .await?;
    let before = platform.containers().await?;
    ensure!(!before.is_empty(), "no container runs the service");

    // 5. Deleting the service leaves no container, route or container snapshot.
    platform
        .expect(
            204,
            "DELETE",
            &format!("/services/{service_id}"),
            &tenant.token,
            None,
        )
        .await?;
    let left = platform.containers().await?;
    ensure!(left.is_empty(), "containers left after delete: {left:?}");
    let snapshots = platform.snapshots().await?;
    let kept: Vec<_> = snapshots
        .iter()
        .filter(|s| before.iter().any(|c| s.contains(c.as_str())))
        .collect();
    ensure!(kept.is_empty(), "container snapshots left: {kept:?}");
    match platform.https_get(&host, "/").await {
        Ok((200, body)) if body.contains("Hello") => {
            anyhow::bail!("the deleted service still answers: {body}")
        }
        _ => {}
    }
    Ok(())
}
