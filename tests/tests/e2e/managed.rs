//! A managed cache through the shipped daemons (#14): a project with `cache` (engine redis,
//! image stackpad/redis:7 built by scripts/base-images) and a web service built from
//! `examples/visits`, whose env says `REDIS_URL = "${{ cache.REDIS_URL }}"`. The cache passes
//! its own probe (`redis-cli ping`, run inside the container), control resolves the reference
//! at deploy time to `cache.production.internal` with the generated password, and the app,
//! served by the proxy over HTTPS, counts visits across requests in Redis. Then the password
//! is rotated: the cache restarts with it on its volume and the app's next deploy counts on
//! from where it was.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::json;

use crate::harness::{Platform, Service};

const BUILD_AND_DEPLOY: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_app_counts_visits_in_its_managed_redis_through_the_proxy() -> anyhow::Result<()> {
    let mut platform = Platform::start("e2e-managed").await?;
    let outcome = scenario(&platform).await;
    platform.report(outcome)
}

/// A git repository of `examples/visits` under the platform's local sources; its head commit.
fn visits_repo(platform: &Platform) -> anyhow::Result<(String, String)> {
    let path = platform.repos.join("visits");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/visits");
    std::fs::create_dir_all(&path)?;
    for file in ["server.js", "package.json", "package-lock.json"] {
        std::fs::copy(example.join(file), path.join(file))?;
    }
    let git = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("git")
            .args(["-c", "user.name=e2e", "-c", "user.email=e2e@stackpad.test"])
            .args(args)
            .current_dir(&path)
            .output()?;
        ensure!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-qm", "visits"])?;
    Ok((
        format!("file://{}", path.display()),
        git(&["rev-parse", "HEAD"])?,
    ))
}

/// The number in the app's `visits N` answer.
fn visits(text: &str) -> anyhow::Result<u64> {
    text.trim()
        .strip_prefix("visits ")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("not a visit count: {text:?}"))
}

async fn scenario(platform: &Platform) -> anyhow::Result<()> {
    let tenant = platform.organization("e2e").await?;
    let project = platform.project(&tenant, "shop").await?;
    let t = &tenant.token;

    // The cache: Stackpad picks image, probe, password; deployed like any service.
    let cache = platform
        .expect(
            201,
            "POST",
            &format!("/projects/{project}/services"),
            t,
            Some(json!({ "name": "cache", "kind": "cache", "engine": "redis" })),
        )
        .await?;
    ensure!(
        cache["internal_host"] == "cache.production.internal",
        "{cache}"
    );
    let cache_id = cache["id"].as_str().context("cache id")?.to_owned();
    let d = platform
        .expect(
            201,
            "POST",
            &format!("/services/{cache_id}/deployments"),
            t,
            Some(json!({})),
        )
        .await?;
    let d = platform
        .wait_deployment(
            &tenant,
            d["id"].as_str().context("deployment id")?,
            BUILD_AND_DEPLOY,
        )
        .await?;
    ensure!(d["state"] == "ready", "cache deployment: {d}");

    // The app, built from git, with the cache's URL by reference.
    let (url, head) = visits_repo(platform)?;
    let web = platform
        .expect(
            201,
            "POST",
            &format!("/projects/{project}/services"),
            t,
            Some(json!({
                "name": "visits", "kind": "web", "git": { "url": url }, "port": 3000,
                "health_check": { "path": "/healthz", "interval_ms": 100 },
                "env": { "REDIS_URL": "${{ cache.REDIS_URL }}" },
            })),
        )
        .await?;
    let service = Service {
        id: web["id"].as_str().context("service id")?.to_owned(),
        webhook_secret: web["webhook_secret"]
            .as_str()
            .context("webhook secret")?
            .to_owned(),
        host: web["hosts"][0]
            .as_str()
            .context("platform host")?
            .to_owned(),
    };
    let deploy_app = |commit: String| {
        let service = service.clone();
        let tenant = tenant.clone();
        async move {
            let id = platform.push(&service, &commit).await?;
            let d = platform
                .wait_deployment(&tenant, &id, BUILD_AND_DEPLOY)
                .await?;
            ensure!(d["state"] == "ready", "app deployment: {d}");
            anyhow::Ok(())
        }
    };
    deploy_app(head.clone()).await?;
    let first = visits(
        &platform
            .wait_for_https(&service.host, "visits ", Duration::from_secs(90))
            .await?,
    )?;
    let (status, text) = platform.https_get(&service.host, "/").await?;
    ensure!(status == 200, "{status}: {text}");
    let second = visits(&text)?;
    ensure!(
        second == first + 1,
        "the count did not go on: {first} then {second}"
    );

    // Rotation: a new password, the cache redeployed with it (stop-old-then-start-new on its
    // volume: Redis saves on SIGTERM and loads at start), the app's next deploy connects with
    // it and the count goes on.
    let rotated = platform
        .expect(
            200,
            "POST",
            &format!("/services/{cache_id}/credentials/rotate"),
            t,
            None,
        )
        .await?;
    let d = platform
        .wait_deployment(
            &tenant,
            rotated["deployment"]["id"]
                .as_str()
                .context("rotation deployment")?,
            BUILD_AND_DEPLOY,
        )
        .await?;
    ensure!(d["state"] == "ready", "cache after rotation: {d}");
    let (status, text) = platform.https_get(&service.host, "/").await?;
    ensure!(
        status == 503,
        "the old password still works: {status} {text}"
    );
    let redeploy = platform
        .expect(
            201,
            "POST",
            &format!("/services/{}/deployments", service.id),
            t,
            Some(json!({ "git_commit": head })),
        )
        .await?;
    let d = platform
        .wait_deployment(
            &tenant,
            redeploy["id"].as_str().context("id")?,
            BUILD_AND_DEPLOY,
        )
        .await?;
    ensure!(d["state"] == "ready", "app after rotation: {d}");
    let text = platform
        .wait_for_https(&service.host, "visits ", Duration::from_secs(30))
        .await?;
    let third = visits(&text)?;
    ensure!(
        third > second,
        "the count did not survive the cache's redeploy: {second} then {third}"
    );
    Ok(())
}
