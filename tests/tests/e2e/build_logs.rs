//! Build logs, build args, build secrets and the build time limit, through the real daemons
//! (`harness::Platform`): a repository with its own Dockerfile is built by buildd on dockerd's
//! BuildKit while the API's follow streams its lines live; the stored log is paged and scoped to
//! the organization; a build secret reaches the build as a BuildKit secret mount and appears
//! neither in the stored log nor in the image's config, history or layers in the registry; a
//! failing step fails the deployment with the step and its last lines; a build over its time
//! limit is cancelled and the deployment names the limit; a service that names no port is
//! served on the port its build detected.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use stackpad_tests::unique_name;

use crate::harness::{AppRepo, Platform, Tenant};

const BUILD_AND_DEPLOY: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_logs_stream_live_are_stored_paged_and_keep_secrets_out() -> anyhow::Result<()> {
    let mut platform = Platform::start("e2e-buildlogs").await?;
    let outcome = scenario(&mut platform).await;
    platform.report(outcome)
}

/// A Dockerfile printing a build arg, ticking (so a follow sees lines while the build runs),
/// and reading a build secret (printing it, as a careless build would).
fn dockerfile(registry: &str, last: &str) -> String {
    format!(
        "FROM {registry}/stackpad/busybox:1\n\
         ARG GREETING\n\
         RUN echo \"greeting is $GREETING\" && for i in 1 2 3 4; do echo \"tick $i\"; sleep 1; done\n\
         RUN --mount=type=secret,id=API_TOKEN,required=true echo \"token is $(cat /run/secrets/API_TOKEN)\"\n\
         RUN mkdir -p /www && echo hello > /www/index.html\n\
         {last}\n\
         CMD [\"httpd\", \"-f\", \"-p\", \"3000\", \"-h\", \"/www\"]\n"
    )
}

async fn scenario(platform: &mut Platform) -> anyhow::Result<()> {
    let registry = stackpad_tests::Services::from_env().registry;
    let tenant = platform.organization("e2e").await?;
    let other = platform.organization("e2e-other").await?;
    let project = platform.project(&tenant, "shop").await?;
    let secret = unique_name("tok-secret-value");
    // Unique, so no step after the ARG comes from an earlier run's cache (a cached step prints
    // nothing).
    let greeting = unique_name("hello-from-args");
    let repo = AppRepo::sample(platform, "logs", "1.0.0")?;
    let commit = repo.write_and_commit(
        "Dockerfile",
        &dockerfile(&registry, "RUN echo built"),
        "a Dockerfile",
    )?;
    let service = platform
        .expect(
            201,
            "POST",
            &format!("/projects/{project}/services"),
            &tenant.token,
            Some(json!({
                "name": "logs", "kind": "web", "git": { "url": repo.url() }, "port": 3000,
                "health_check": { "path": "/", "interval_ms": 100 },
                "secrets": { "API_TOKEN": secret },
                "build": {
                    "build_args": { "GREETING": greeting },
                    "secrets": ["API_TOKEN"],
                },
            })),
        )
        .await?;
    let service_id = service["id"].as_str().context("service id")?.to_owned();

    // 1. A deployment, its build log followed live (SSE) from the moment it is queued: the
    //    stream ends by itself once the build is over.
    let d = deploy(platform, &tenant, &service_id, &commit).await?;
    let started = Instant::now();
    let (followed, end) = follow(platform, &tenant, &d, 0).await?;
    let followed_for = started.elapsed();
    let texts: Vec<&str> = followed
        .iter()
        .map(|l| l["line"].as_str().unwrap_or_default())
        .collect();
    ensure!(
        texts
            .iter()
            .any(|t| t.contains(&format!("greeting is {greeting}"))),
        "the build arg did not reach the build: {texts:?}"
    );
    ensure!(
        texts.iter().any(|t| t.contains("tick 4")),
        "the ticks are missing: {texts:?}"
    );
    ensure!(
        texts.iter().any(|t| t.contains("token is [redacted]")),
        "the secret mount printed nothing (or was not redacted): {texts:?}"
    );
    let numbers: Vec<u64> = followed
        .iter()
        .filter_map(|l| l["line_number"].as_u64())
        .collect();
    ensure!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1) && numbers.first() == Some(&1),
        "followed lines are not each line once in order: {numbers:?}"
    );
    ensure!(
        end["state"] != "building" && end["state"] != "queued",
        "the follow ended while the build ran: {end}"
    );
    let done = platform
        .wait_deployment(&tenant, &d, BUILD_AND_DEPLOY)
        .await?;
    ensure!(done["state"] == "ready", "the deployment: {done}");
    println!("followed {} lines live in {followed_for:?}", followed.len());

    // 2. The stored log, paged: the same lines, each once, in order; tail = the last ones.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = platform
            .expect(
                200,
                "GET",
                &format!("/deployments/{d}/build-logs?limit=7&after={after}"),
                &tenant.token,
                None,
            )
            .await?;
        let lines = page["lines"].as_array().cloned().unwrap_or_default();
        paged.extend(lines.iter().cloned());
        match page["next_cursor"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    ensure!(
        paged == followed,
        "pages and the follow differ:\n{paged:?}\n{followed:?}"
    );
    let tail = platform
        .expect(
            200,
            "GET",
            &format!("/deployments/{d}/build-logs?tail=true&limit=2"),
            &tenant.token,
            None,
        )
        .await?;
    ensure!(
        tail["lines"].as_array().map(Vec::as_slice) == Some(&paged[paged.len() - 2..]),
        "tail: {tail}"
    );
    // A follow from the last line of a finished build ends at once with the end event.
    let last = paged
        .last()
        .and_then(|l| l["line_number"].as_u64())
        .unwrap_or(0);
    let (more, end) = follow(platform, &tenant, &d, last).await?;
    ensure!(more.is_empty() && end["state"] == "ready", "{more:?} {end}");
    // Another organization's deployment does not exist for it.
    let (status, _) = platform
        .call(
            "GET",
            &format!("/deployments/{d}/build-logs"),
            &other.token,
            None,
        )
        .await?;
    ensure!(
        status == 404,
        "another organization read the build log: {status}"
    );

    // 3. The secret is nowhere: not in the stored log, not in the image in the registry.
    let stored = serde_json::to_string(&paged)?;
    ensure!(!stored.contains(&secret), "the stored log holds the secret");
    let image = done["image"].as_str().context("image")?;
    let digest = done["image_digest"].as_str().context("image digest")?;
    let (config, layers) = image_parts(&registry, image, digest).await?;
    ensure!(
        config.contains(&greeting),
        "the config shows no build step at all: {config}"
    );
    ensure!(
        !config.contains(&secret),
        "the image config or history holds the secret"
    );
    for layer in &layers {
        ensure!(
            !contains(layer, secret.as_bytes()),
            "a layer of the image holds the secret"
        );
    }

    // 4. A failing step: the deployment fails naming the step and showing its last lines.
    let failing = repo.write_and_commit(
        "Dockerfile",
        &dockerfile(&registry, "RUN echo 'about to fail' && exit 3"),
        "a failing step",
    )?;
    let d = deploy(platform, &tenant, &service_id, &failing).await?;
    let failed = platform
        .wait_deployment(&tenant, &d, BUILD_AND_DEPLOY)
        .await?;
    let reason = failed["failure_reason"].as_str().unwrap_or_default();
    ensure!(
        failed["state"] == "failed"
            && reason.contains("RUN echo 'about to fail'")
            && reason.contains("last lines of the build log")
            && reason.contains("\n  about to fail"),
        "a failing step: {failed}"
    );
    ensure!(!reason.contains(&secret), "the failure shows the secret");

    // 5. The build time limit (a service's own): cancelled at the limit, the deployment says
    //    which.
    let slow_service = platform
        .expect(
            201,
            "POST",
            &format!("/projects/{project}/services"),
            &tenant.token,
            Some(json!({
                "name": "slow", "kind": "web", "git": { "url": repo.url() }, "port": 3000,
                "secrets": { "API_TOKEN": secret },
                "build": { "secrets": ["API_TOKEN"], "timeout_seconds": 8 },
            })),
        )
        .await?;
    let slow_service = slow_service["id"]
        .as_str()
        .context("service id")?
        .to_owned();
    let slow = repo.write_and_commit(
        "Dockerfile",
        &dockerfile(&registry, "RUN echo slow && sleep 120"),
        "a slow step",
    )?;
    let d = deploy(platform, &tenant, &slow_service, &slow).await?;
    let started = Instant::now();
    let limited = platform
        .wait_deployment(&tenant, &d, BUILD_AND_DEPLOY)
        .await?;
    let reason = limited["failure_reason"].as_str().unwrap_or_default();
    ensure!(
        limited["state"] == "failed" && reason.contains("time limit of 8s"),
        "a build over its limit: {limited}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(60),
        "the limit did not stop the build: {:?}",
        started.elapsed()
    );

    // 6. The port the build detects (here the Dockerfile's EXPOSE; for a framework its own
    //    default) is the one the health check and the proxy reach when the service names
    //    none: the server listens on 8081 only and ignores PORT.
    let exposed = repo.write_and_commit(
        "Dockerfile",
        &format!(
            "FROM {registry}/stackpad/busybox:1
             RUN mkdir -p /www && echo listening-on-8081 > /www/index.html
             EXPOSE 8081
             CMD [\"httpd\", \"-f\", \"-p\", \"8081\", \"-h\", \"/www\"]\n"
        ),
        "a server on the port it exposes",
    )?;
    let service = platform
        .expect(
            201,
            "POST",
            &format!("/projects/{project}/services"),
            &tenant.token,
            Some(json!({
                "name": "exposed", "kind": "web", "git": { "url": repo.url() },
                "health_check": { "path": "/", "interval_ms": 100 },
            })),
        )
        .await?;
    let id = service["id"].as_str().context("service id")?.to_owned();
    let host = service["hosts"][0]
        .as_str()
        .context("a web service shows its platform host")?
        .to_owned();
    let d = deploy(platform, &tenant, &id, &exposed).await?;
    let ready = platform
        .wait_deployment(&tenant, &d, BUILD_AND_DEPLOY)
        .await?;
    ensure!(
        ready["state"] == "ready" && ready["container_port"] == 8081,
        "a deployment on the detected port: {ready}"
    );
    platform
        .wait_for_https(&host, "listening-on-8081", Duration::from_secs(60))
        .await?;
    let shown = platform
        .expect(200, "GET", &format!("/services/{id}"), &tenant.token, None)
        .await?;
    // The service's own `port` stays its default, not chosen by the user: each deployment
    // runs on the port its build detected.
    ensure!(
        shown["port_explicit"] == false,
        "a service that named no port: {shown}"
    );
    Ok(())
}

async fn deploy(
    platform: &Platform,
    tenant: &Tenant,
    service: &str,
    commit: &str,
) -> anyhow::Result<String> {
    let d = platform
        .expect(
            201,
            "POST",
            &format!("/services/{service}/deployments"),
            &tenant.token,
            Some(json!({ "git_commit": commit })),
        )
        .await?;
    Ok(d["id"].as_str().context("deployment id")?.to_owned())
}

/// `GET /deployments/{id}/build-logs?follow=true&after=`: the lines, then the `end` event's
/// data; fails if the stream does not end within the build's time.
async fn follow(
    platform: &Platform,
    tenant: &Tenant,
    deployment: &str,
    after: u64,
) -> anyhow::Result<(Vec<Value>, Value)> {
    let url = format!(
        "{}/deployments/{deployment}/build-logs?follow=true&after={after}",
        platform.api
    );
    let read = async {
        let mut response = reqwest::Client::new()
            .get(&url)
            .bearer_auth(&tenant.token)
            .send()
            .await?;
        ensure!(response.status() == 200, "follow: {}", response.status());
        let mut text = String::new();
        while let Some(chunk) = response.chunk().await? {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        Ok(text)
    };
    let text = tokio::time::timeout(BUILD_AND_DEPLOY, read)
        .await
        .context("the follow did not end")??;
    let mut lines = Vec::new();
    let mut end = None;
    for event in text.split("\n\n") {
        let data: String = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect();
        if data.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&data)?;
        if event.lines().any(|l| l == "event: end") {
            end = Some(value);
        } else {
            lines.push(value);
        }
    }
    let Some(end) = end else {
        bail!("the follow ended without its end event: {text}")
    };
    Ok((lines, end))
}

/// The image's config blob (text) and its layers (uncompressed), from the registry.
async fn image_parts(
    registry: &str,
    image: &str,
    digest: &str,
) -> anyhow::Result<(String, Vec<Vec<u8>>)> {
    let repository = image
        .strip_prefix(&format!("{registry}/"))
        .and_then(|r| r.rsplit_once(':').map(|(repo, _)| repo))
        .with_context(|| format!("image {image} is not in {registry}"))?;
    let http = reqwest::Client::new();
    let manifest: Value = http
        .get(format!("http://{registry}/v2/{repository}/manifests/{digest}"))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let blob = |digest: &str| {
        http.get(format!("http://{registry}/v2/{repository}/blobs/{digest}"))
            .send()
    };
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .context("manifest without config")?;
    let config = blob(config_digest)
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut layers = Vec::new();
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let digest = layer["digest"].as_str().context("layer digest")?;
        let bytes = blob(digest).await?.error_for_status()?.bytes().await?;
        layers.push(gunzip(&bytes)?);
    }
    Ok((config, layers))
}

fn gunzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("gzip is needed to read image layers")?;
    let mut stdin = child.stdin.take().context("gzip stdin")?;
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer panicked"))??;
    ensure!(out.status.success(), "gzip -dc failed");
    Ok(out.stdout)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
