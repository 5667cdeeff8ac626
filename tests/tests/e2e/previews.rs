//! A pull request's preview through the real daemons (#17): a signed `pull_request` opened
//! delivery to the project's webhook copies production into `pr-1`, buildd builds the pull
//! request's head, the node agent runs it and the proxy serves it at its own host over HTTPS
//! with a certificate from the platform's ACME CA. Left without requests for the project's
//! `idle_seconds`, the preview is stopped (no container left, its route sleeping at the proxy);
//! the next request is held by the proxy, which asks control to wake it, and answered by the
//! started container. Closing the pull request removes its containers and its route.
//!
//! Prints the figures: PR opened -> serving, the wake-up's first request, and PR
//! closed -> everything removed.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use stackpad_tests::unique_name;

use crate::harness::{AppRepo, Platform};

/// Seconds without a request before the preview sleeps.
const IDLE_SECONDS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_preview_serves_sleeps_wakes_and_goes() -> anyhow::Result<()> {
    let mut platform = Platform::start("e2e-previews").await?;
    let outcome = scenario(&mut platform).await;
    platform.report(outcome)
}

async fn scenario(platform: &mut Platform) -> anyhow::Result<()> {
    let tenant = platform.organization("e2e").await?;
    let repo = AppRepo::sample(platform, "shop", "1.0.0")?;
    let project = platform.project(&tenant, "shop").await?;
    platform
        .git_service(&tenant, (&project, "shop"), "web", &repo)
        .await?;
    let hook = platform
        .expect(
            200,
            "PATCH",
            &format!("/projects/{project}/webhook"),
            &tenant.token,
            Some(json!({})),
        )
        .await?;
    let secret = hook["webhook_secret"]
        .as_str()
        .context("the project's webhook secret is shown once")?
        .to_owned();
    let previews = platform
        .expect(
            200,
            "PUT",
            &format!("/projects/{project}/previews"),
            &tenant.token,
            Some(json!({
                "enabled": true, "template": "production", "idle_seconds": IDLE_SECONDS,
            })),
        )
        .await?;
    ensure!(previews["idle_seconds"] == IDLE_SECONDS, "{previews}");
    // The pull request's branch, one version ahead.
    git(&repo, &["checkout", "-q", "-b", "feature"])?;
    let head = repo.set_version("2.0.0")?;

    // 1. Opened: pr-1 built at the head, deployed, served over HTTPS at its own host.
    let opened_at = Instant::now();
    let (status, opened) = deliver(platform, &project, &secret, "opened", &head, &repo).await?;
    ensure!(status == 202, "opened: {status} {opened}");
    let env_id = opened["environment_id"]
        .as_str()
        .context("the opened delivery names its environment")?
        .to_owned();
    let env = platform
        .expect(
            200,
            "GET",
            &format!("/environments/{env_id}"),
            &tenant.token,
            None,
        )
        .await?;
    let url = env["preview"]["urls"][0]
        .as_str()
        .with_context(|| format!("the preview shows its URL: {env}"))?;
    let host = url.trim_start_matches("https://").to_owned();
    ensure!(host.starts_with("pr-1-web-"), "the preview's host: {host}");
    platform
        .wait_for_https(&host, "version 2.0.0", Duration::from_secs(240))
        .await?;
    let to_serving = opened_at.elapsed();
    ensure!(
        !platform.containers().await?.is_empty(),
        "the preview runs a container"
    );

    // 2. Idle: stopped, no container left.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let env = platform
            .expect(
                200,
                "GET",
                &format!("/environments/{env_id}"),
                &tenant.token,
                None,
            )
            .await?;
        if !env["preview"]["sleeping_since"].is_null() && platform.containers().await?.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the idle preview was not stopped within 30 s: {env}; containers {:?}",
                platform.containers().await?
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 3. The next request wakes it and is answered by the started container.
    let woken_at = Instant::now();
    let (status, body) = platform.https_get(&host, "/").await?;
    let wake = woken_at.elapsed();
    ensure!(
        status == 200 && body.contains("version 2.0.0"),
        "the request that woke the preview: {status} {body}"
    );
    ensure!(
        !platform.containers().await?.is_empty(),
        "the woken preview runs a container"
    );

    println!(
        "preview figures: PR opened -> serving {:.1} s (build included), idle wake-up first \
         request {} ms",
        to_serving.as_secs_f64(),
        wake.as_millis(),
    );

    // 4. Closed: containers and route gone, the environment deleted.
    let closed_at = Instant::now();
    let (status, closed) = deliver(platform, &project, &secret, "closed", &head, &repo).await?;
    ensure!(status == 200, "closed: {status} {closed}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let containers = platform.containers().await?;
        let answer = platform.https_get(&host, "/").await.map(|(s, _)| s).ok();
        if containers.is_empty() && answer == Some(404) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the closed preview is still there: containers {containers:?}, answer {answer:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let to_removed = closed_at.elapsed();
    let (status, _) = platform
        .call(
            "GET",
            &format!("/environments/{env_id}"),
            &tenant.token,
            None,
        )
        .await?;
    ensure!(status == 404, "the closed preview's environment: {status}");
    println!(
        "preview figures: PR closed -> removed {} ms",
        to_removed.as_millis()
    );
    Ok(())
}

fn git(repo: &AppRepo, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("git")
        .args(args)
        .current_dir(&repo.path)
        .output()
        .context("running git")?;
    ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A `pull_request` delivery for pull request 1 (`feature` at `head`), signed with the
/// project's secret.
async fn deliver(
    platform: &Platform,
    project: &str,
    secret: &str,
    action: &str,
    head: &str,
    repo: &AppRepo,
) -> anyhow::Result<(u16, Value)> {
    let repository = json!({ "full_name": "e2e/shop", "clone_url": repo.url() });
    let body = json!({
        "action": action,
        "number": 1,
        "pull_request": {
            "head": { "sha": head, "ref": "feature", "repo": repository },
            "base": { "sha": head, "ref": "main", "repo": repository },
            "merged": false,
        },
        "repository": repository,
    })
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let response = reqwest::Client::new()
        .post(format!(
            "{}/webhooks/github/projects/{project}",
            platform.api
        ))
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", unique_name("delivery"))
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}
