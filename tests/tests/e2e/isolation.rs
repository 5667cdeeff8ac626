//! Isolation under the shipped default (the node agent's eBPF programs), through the real
//! daemons (`harness::Platform`): a container of one project reaches another service of its own
//! project but not a container of another organization's project; and what a container prints is
//! searchable through the logs API.

use std::time::{Duration, Instant};

use crate::harness::{AppRepo, Platform, Service, Tenant};
use anyhow::{Context, bail, ensure};

const END: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_are_isolated_and_logs_are_searchable() -> anyhow::Result<()> {
    let mut platform = Platform::start("e2e-isolation").await?;
    let outcome = scenario(&mut platform).await;
    platform.report(outcome)
}

async fn scenario(platform: &mut Platform) -> anyhow::Result<()> {
    let shop = platform.organization("e2e").await?;
    let other = platform.organization("e2e-other").await?;
    let shop_project = platform.project(&shop, "shop").await?;
    let other_project = platform.project(&other, "other").await?;
    let shop_repo = AppRepo::sample(platform, "shop", "3.0.0")?;
    let other_repo = AppRepo::sample(platform, "other", "3.0.0")?;
    let web = platform
        .git_service(&shop, (&shop_project, "shop"), "web", &shop_repo)
        .await?;
    let api = platform
        .git_service(&shop, (&shop_project, "shop"), "api", &shop_repo)
        .await?;
    let foreign = platform
        .git_service(&other, (&other_project, "other"), "hello", &other_repo)
        .await?;
    let web_at = deploy(platform, &shop, &web, &shop_repo).await?;
    let api_at = deploy(platform, &shop, &api, &shop_repo).await?;
    let foreign_at = deploy(platform, &other, &foreign, &other_repo).await?;

    let web_container = container_at(platform, &web_at).await?;
    // Positive control: the same project's other service answers.
    let same = probe(platform, &web_container, &api_at).await?;
    ensure!(
        same == "connected",
        "web could not reach api of its own project ({api_at}): {same}"
    );
    // Another organization's container: dropped by the eBPF policy (no answer at all).
    let cross = probe(platform, &web_container, &foreign_at).await?;
    ensure!(
        cross == "timeout",
        "web reached (or was refused by) another project's container {foreign_at}: {cross}"
    );
    // And the other way round.
    let foreign_container = container_at(platform, &foreign_at).await?;
    let back = probe(platform, &foreign_container, &web_at).await?;
    ensure!(
        back == "timeout",
        "another project's container reached web ({web_at}): {back}"
    );

    // The app's start-up line, searched through the API (shipped to ClickHouse by the node).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = platform
            .expect(
                200,
                "GET",
                &format!("/services/{}/logs?q=listening", web.id),
                &shop.token,
                None,
            )
            .await?;
        if found
            .to_string()
            .contains("hello listening on :3000, version 3.0.0")
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the container's start-up line is not searchable: {found}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Another organization's token does not see it.
    let (status, body) = platform
        .call(
            "GET",
            &format!("/services/{}/logs?q=listening", web.id),
            &other.token,
            None,
        )
        .await?;
    ensure!(
        status == 404,
        "another organization read the logs: {status} {body}"
    );
    Ok(())
}

/// Deploys the repository's head; the container's `ip:port`.
async fn deploy(
    platform: &Platform,
    tenant: &Tenant,
    service: &Service,
    repo: &AppRepo,
) -> anyhow::Result<String> {
    let id = platform.push(service, &repo.head()?).await?;
    let d = platform.wait_deployment(tenant, &id, END).await?;
    ensure!(d["state"] == "ready", "deployment of {}: {d}", service.host);
    Ok(d["upstream_address"]
        .as_str()
        .context("a ready deployment has an upstream address")?
        .to_owned())
}

/// The container listening on `address`.
async fn container_at(platform: &Platform, address: &str) -> anyhow::Result<String> {
    let ip = address.rsplit_once(':').context("ip:port")?.0;
    for id in platform.containers().await? {
        let pid = platform.task_pid(&id).await?;
        let addresses = in_netns(pid, &["ip", "-4", "-o", "addr", "show"])?;
        if addresses.stdout.contains(&format!(" {ip}/")) {
            return Ok(id);
        }
    }
    bail!("no container of the platform has {address}")
}

/// Connects to `address` from inside `container`'s network namespace (so the packets leave
/// through its veth, with its address, past its eBPF programs), for at most 4 s: `connected`,
/// `timeout` (no answer at all) or `error: ...` (e.g. refused).
async fn probe(platform: &Platform, container: &str, address: &str) -> anyhow::Result<String> {
    let (ip, port) = address.rsplit_once(':').context("ip:port")?;
    let pid = platform.task_pid(container).await?;
    let out = in_netns(
        pid,
        &[
            "timeout",
            "4",
            "bash",
            "-c",
            "exec 3<>/dev/tcp/$0/$1 && echo connected",
            ip,
            port,
        ],
    )?;
    Ok(match out.code {
        0 if out.stdout.trim() == "connected" => "connected".to_owned(),
        124 => "timeout".to_owned(),
        code => format!("error: exit {code}: {}", out.stderr.trim()),
    })
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs a host program in the network namespace of process `pid` (`nsenter --net`).
fn in_netns(pid: u32, cmd: &[&str]) -> anyhow::Result<Output> {
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "--"])
        .args(cmd)
        .output()
        .context("running nsenter")?;
    Ok(Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
