//! A pull request's preview through the real daemons (#17). The project's production has the
//! sample web app (built from git) and a managed PostgreSQL holding data of its own.
//!
//! 1. A signed `pull_request` `opened` delivery copies production into `pr-1`: buildd builds
//!    the pull request's head, the node agent runs it beside a FRESH database (the template's
//!    table is not in it), and the proxy serves it at its own host over HTTPS with a
//!    certificate from the platform's ACME CA.
//! 2. `synchronize` to a new head switches the preview to it under a bounded load: no request
//!    fails.
//! 3. Left without requests for the project's `idle_seconds`, the preview sleeps: no container
//!    of it is left (the web app's and the database's), the database's volume stays.
//! 4. The next request is held by the proxy, which asks control to wake it, and is answered by
//!    the started container; the woken database still holds what was written before the sleep.
//! 5. `closed` removes every container of the preview, its route (404) and the proxy's
//!    permission to order certificates for its host, and its environment; the database's volume
//!    goes once the (test-short) grace is over. Production's database is untouched.
//!
//! Prints the figures: PR opened -> serving, the wake-up's first request, and PR
//! closed -> everything removed. `scenario` is shared with `bench/previews/run`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use stackpad_tests::unique_name;

use crate::harness::{AppRepo, Load, Platform, Tenant};

/// Seconds without a request before the preview sleeps.
const IDLE_SECONDS: u64 = 2;
/// A build and deploy with nothing cached.
const BUILD_AND_DEPLOY: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_preview_with_a_database_switches_sleeps_wakes_and_goes() -> anyhow::Result<()>
{
    let mut platform = Platform::start("e2e-previews").await?;
    let outcome = async {
        let shop = Shop::new(&platform).await?;
        let figures = shop.pull_request(&platform, 1).await?;
        figures.print();
        anyhow::Ok(())
    }
    .await;
    platform.report(outcome)
}

/// The long variant (`scripts/test --full`): two pull requests one after the other on one
/// platform, the second's trees built from BuildKit's cache.
#[cfg(feature = "full-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pull_requests_one_after_the_other() -> anyhow::Result<()> {
    let mut platform = Platform::start("e2e-previews-two").await?;
    let outcome = async {
        let shop = Shop::new(&platform).await?;
        for n in 1..=2 {
            shop.pull_request(&platform, n).await?.print();
        }
        anyhow::Ok(())
    }
    .await;
    platform.report(outcome)
}

/// What one pull request's round measured.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Delivery of `opened` -> the head served over HTTPS at the preview's host.
    pub opened_to_serving: Duration,
    /// The request that woke the sleeping preview, sent -> answered.
    pub wake_first_request: Duration,
    /// Delivery of `closed` -> no container, no route, no certificate permission.
    pub closed_to_removed: Duration,
    /// Requests answered during the synchronize's switch (none failed).
    pub requests_during_switch: usize,
}

impl Figures {
    pub fn print(&self) {
        println!(
            "preview figures: PR opened -> serving {:.1} s (build included), synchronize switched \
             under {} requests with 0 failed, idle wake-up first request {} ms, PR closed -> \
             removed {} ms",
            self.opened_to_serving.as_secs_f64(),
            self.requests_during_switch,
            self.wake_first_request.as_millis(),
            self.closed_to_removed.as_millis(),
        );
    }
}

/// The project: production's web app and database (with a table of its own), the project's
/// webhook secret, previews enabled with production as the template.
pub struct Shop {
    pub tenant: Tenant,
    pub project: String,
    pub repo: AppRepo,
    secret: String,
    /// Production's database: its service id and its serving deployment.
    template_db: (String, String),
}

impl Shop {
    pub async fn new(platform: &Platform) -> anyhow::Result<Self> {
        let tenant = platform.organization("e2e").await?;
        let repo = AppRepo::sample(platform, "shop", "1.0.0")?;
        let project = platform.project(&tenant, "shop").await?;
        platform
            .git_service(&tenant, (&project, "shop"), "web", &repo)
            .await?;
        let db = platform
            .expect(
                201,
                "POST",
                &format!("/projects/{project}/services"),
                &tenant.token,
                Some(json!({ "name": "db", "kind": "database", "engine": "postgres" })),
            )
            .await?;
        let db = db["id"].as_str().context("database id")?.to_owned();
        let d = platform
            .expect(
                201,
                "POST",
                &format!("/services/{db}/deployments"),
                &tenant.token,
                Some(json!({})),
            )
            .await?;
        let deployment = d["id"].as_str().context("deployment id")?.to_owned();
        let d = platform
            .wait_deployment(&tenant, &deployment, BUILD_AND_DEPLOY)
            .await?;
        ensure!(d["state"] == "ready", "production's database: {d}");
        psql(
            platform,
            &deployment,
            "CREATE TABLE template_only (v text); INSERT INTO template_only VALUES ('production')",
        )
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
        set_previews(platform, &tenant, &project, None).await?;
        Ok(Self {
            tenant,
            project,
            repo,
            secret,
            template_db: (db, deployment),
        })
    }

    /// One pull request `n` from open to close (its branch `pr-<n>`, two commits ahead of
    /// `main`: versions 2.0.0 then 3.0.0, the same trees for every `n`, so a later pull request
    /// builds from BuildKit's cache).
    pub async fn pull_request(&self, platform: &Platform, n: u32) -> anyhow::Result<Figures> {
        let (platform, t) = (platform, &self.tenant.token);
        let branch = format!("pr-{n}");
        git(&self.repo, &["checkout", "-q", "-B", &branch, "main"])?;
        let head = self.repo.set_version("2.0.0")?;
        // Previews do not sleep until the switch under load is over.
        set_previews(platform, &self.tenant, &self.project, None).await?;

        // 1. Opened: pr-<n> built at the head, with a fresh database, served over HTTPS.
        let opened_at = Instant::now();
        let (status, opened) = self.deliver(platform, n, "opened", &head).await?;
        ensure!(status == 202, "opened: {status} {opened}");
        let env_id = opened["environment_id"]
            .as_str()
            .context("the opened delivery names its environment")?
            .to_owned();
        let env = platform
            .expect(200, "GET", &format!("/environments/{env_id}"), t, None)
            .await?;
        let url = env["preview"]["urls"][0]
            .as_str()
            .with_context(|| format!("the preview shows its URL: {env}"))?;
        let host = url.trim_start_matches("https://").to_owned();
        ensure!(
            host.starts_with(&format!("pr-{n}-web-")),
            "the preview's host: {host}"
        );
        platform
            .wait_for_https(&host, "version 2.0.0", BUILD_AND_DEPLOY)
            .await?;
        let opened_to_serving = opened_at.elapsed();
        ensure!(
            allowed_domain(platform, &host).await?,
            "the proxy may not order certificates for the preview's host {host}"
        );
        self.wait_ready(platform, &env_id).await?;
        let db = self.service_of(platform, &env_id, "db").await?;
        ensure!(
            db.0 != self.template_db.0,
            "the preview has a database of its own"
        );
        let fresh = psql(
            platform,
            &db.1,
            "SELECT to_regclass('template_only') IS NULL",
        )
        .await?;
        ensure!(
            fresh == "t",
            "the preview's database holds the template's table: {fresh}"
        );
        psql(
            platform,
            &db.1,
            "CREATE TABLE preview_data (v text); INSERT INTO preview_data VALUES ('kept')",
        )
        .await?;

        // 2. Synchronize under load: the new head switched in, no request failed.
        let load = Load::start(platform, &host)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let head = self.repo.set_version("3.0.0")?;
        let (status, synced) = self.deliver(platform, n, "synchronize", &head).await?;
        ensure!(status == 202, "synchronize: {status} {synced}");
        let web = synced["deployments"][0]["deployment_id"]
            .as_str()
            .with_context(|| format!("synchronize queues the web app: {synced}"))?;
        let d = platform
            .wait_deployment(&self.tenant, web, BUILD_AND_DEPLOY)
            .await?;
        ensure!(d["state"] == "ready", "the synchronized head: {d}");
        platform
            .wait_for_https(&host, "version 3.0.0", Duration::from_secs(10))
            .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (ok, failed, errors) = load.stop().await;
        ensure!(
            ok >= 20,
            "the load made too few requests to mean anything: {ok}"
        );
        ensure!(
            failed == 0,
            "{failed} of {} requests failed during the synchronize's switch: {errors:?}",
            ok + failed
        );

        // 3. Idle: the preview sleeps, no container of it left, its database's volume kept.
        let web = self.service_of(platform, &env_id, "web").await?;
        let serving = [container(&web.1), container(&db.1)];
        set_previews(platform, &self.tenant, &self.project, Some(IDLE_SECONDS)).await?;
        let volume = platform.dir.path().join("node/volumes").join(&db.0);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let env = platform
                .expect(200, "GET", &format!("/environments/{env_id}"), t, None)
                .await?;
            let left = still_there(platform, &serving).await?;
            if !env["preview"]["sleeping_since"].is_null() && left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the idle preview was not stopped within 30 s: {env}; containers {left:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(
            volume.is_dir(),
            "the sleeping preview's database volume is gone: {}",
            volume.display()
        );

        // 4. The next request wakes it and is answered by the started container; the woken
        //    database still has its data.
        let woken_at = Instant::now();
        let (status, body) = platform.https_get(&host, "/").await?;
        let wake_first_request = woken_at.elapsed();
        ensure!(
            status == 200 && body.contains("version 3.0.0"),
            "the request that woke the preview: {status} {body}"
        );
        // No sleep while the data is checked.
        set_previews(platform, &self.tenant, &self.project, None).await?;
        self.wait_ready(platform, &env_id).await?;
        let woken_db = self.service_of(platform, &env_id, "db").await?;
        ensure!(woken_db.1 != db.1, "the database was started again");
        let kept = psql(platform, &woken_db.1, "SELECT v FROM preview_data").await?;
        let woken_web = self.service_of(platform, &env_id, "web").await?;
        let serving = [container(&woken_web.1), container(&woken_db.1)];
        ensure!(kept == "kept", "the woken database lost its data: {kept:?}");

        // 5. Closed: containers, route, certificate permission and environment gone; the
        //    database's volume after the grace.
        let closed_at = Instant::now();
        let (status, closed) = self.deliver(platform, n, "closed", &head).await?;
        ensure!(status == 200, "closed: {status} {closed}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = still_there(platform, &serving).await?;
            let answer = platform.https_get(&host, "/").await.map(|(s, _)| s).ok();
            let allowed = allowed_domain(platform, &host).await?;
            if left.is_empty() && answer == Some(404) && !allowed {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the closed preview is still there: containers {left:?}, answer {answer:?}, \
                     certificates allowed for {host}: {allowed}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let closed_to_removed = closed_at.elapsed();
        let (status, _) = platform
            .call("GET", &format!("/environments/{env_id}"), t, None)
            .await?;
        ensure!(status == 404, "the closed preview's environment: {status}");
        wait_gone(&volume, Duration::from_secs(30)).await?;
        let production = platform
            .dir
            .path()
            .join("node/volumes")
            .join(&self.template_db.0);
        ensure!(
            production.is_dir(),
            "production's database volume went with the preview"
        );
        let template = psql(platform, &self.template_db.1, "SELECT v FROM template_only").await?;
        ensure!(template == "production", "production's data: {template:?}");
        Ok(Figures {
            opened_to_serving,
            wake_first_request,
            closed_to_removed,
            requests_during_switch: ok,
        })
    }

    /// Waits until every service of the preview has its newest deployment ready.
    async fn wait_ready(&self, platform: &Platform, env_id: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + BUILD_AND_DEPLOY;
        loop {
            let env = platform
                .expect(
                    200,
                    "GET",
                    &format!("/environments/{env_id}"),
                    &self.tenant.token,
                    None,
                )
                .await?;
            match env["preview"]["status"].as_str() {
                Some("ready") => return Ok(()),
                Some("failed") => bail!("the preview failed: {env}"),
                _ if Instant::now() > deadline => bail!("the preview is not ready: {env}"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The service `name` of environment `env_id`: its id and its serving deployment.
    async fn service_of(
        &self,
        platform: &Platform,
        env_id: &str,
        name: &str,
    ) -> anyhow::Result<(String, String)> {
        let list = platform
            .expect(
                200,
                "GET",
                &format!("/projects/{}/services?limit=100", self.project),
                &self.tenant.token,
                None,
            )
            .await?;
        let service = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["environment_id"] == env_id && s["name"] == name)
            .with_context(|| format!("no service {name} in environment {env_id}: {list}"))?;
        Ok((
            service["id"].as_str().context("service id")?.to_owned(),
            service["current_deployment_id"]
                .as_str()
                .with_context(|| format!("{name} serves no deployment: {service}"))?
                .to_owned(),
        ))
    }

    /// A `pull_request` delivery for pull request `n` (branch `pr-<n>` at `head`), signed with
    /// the project's secret.
    async fn deliver(
        &self,
        platform: &Platform,
        n: u32,
        action: &str,
        head: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let repository = json!({ "full_name": "e2e/shop", "clone_url": self.repo.url() });
        let body = json!({
            "action": action,
            "number": n,
            "pull_request": {
                "head": { "sha": head, "ref": format!("pr-{n}"), "repo": repository },
                "base": { "sha": head, "ref": "main", "repo": repository },
                "merged": false,
            },
            "repository": repository,
        })
        .to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes())?;
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let response = reqwest::Client::new()
            .post(format!(
                "{}/webhooks/github/projects/{}",
                platform.api, self.project
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
}

/// Previews on with production as the template, sleeping after `idle_seconds` (none: never).
async fn set_previews(
    platform: &Platform,
    tenant: &Tenant,
    project: &str,
    idle_seconds: Option<u64>,
) -> anyhow::Result<()> {
    let previews = platform
        .expect(
            200,
            "PUT",
            &format!("/projects/{project}/previews"),
            &tenant.token,
            Some(json!({
                "enabled": true, "template": "production", "idle_seconds": idle_seconds,
            })),
        )
        .await?;
    ensure!(
        previews["idle_seconds"] == json!(idle_seconds),
        "{previews}"
    );
    Ok(())
}

/// The container of a deployment (its one replica).
fn container(deployment: &str) -> String {
    runtime::spec::deploy::container_id(deployment, 0)
}

/// Which of `containers` the node agent still has (backup verifications of the databases run
/// throwaway containers of their own beside them, so only these are looked at).
async fn still_there(platform: &Platform, containers: &[String]) -> anyhow::Result<Vec<String>> {
    let now = platform.containers().await?;
    Ok(containers
        .iter()
        .filter(|c| now.contains(c))
        .cloned()
        .collect())
}

/// Whether the proxy may still order certificates for `host` (its shared store).
async fn allowed_domain(platform: &Platform, host: &str) -> anyhow::Result<bool> {
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(platform.database_url()).await?;
    let row: Option<(String,)> =
        sqlx::query_as("SELECT domain FROM stackpad_proxy.allowed_domains WHERE domain = $1")
            .bind(host)
            .fetch_optional(&mut db)
            .await?;
    Ok(row.is_some())
}

async fn wait_gone(path: &Path, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while path.exists() {
        ensure!(
            Instant::now() < deadline,
            "{} is still there {within:?} after the grace",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Runs `sql` with psql inside the managed PostgreSQL of `deployment` (its first replica), as
/// the node agent runs the engine's fixed commands: `nsenter` into its namespaces with the
/// container's environment, over the engine's local socket. The output, trimmed.
pub async fn psql(platform: &Platform, deployment: &str, sql: &str) -> anyhow::Result<String> {
    let container = container(deployment);
    let pid = platform.task_pid(&container).await?;
    let environ = std::fs::read(format!("/proc/{pid}/environ"))
        .with_context(|| format!("the environment of {container}"))?;
    let mut cmd = tokio::process::Command::new("nsenter");
    cmd.arg(format!("--target={pid}"))
        .args([
            "--user", "--mount", "--uts", "--ipc", "--net", "--root", "--wd",
        ])
        .args(["--setuid=0", "--setgid=0", "--", "sh", "-c"])
        .arg(
            "exec psql -X -q -tA --no-password -h /run/postgresql -U \"$POSTGRES_USER\" \
             -d \"$POSTGRES_DB\" -v ON_ERROR_STOP=1 -c \"$STACKPAD_TEST_SQL\"",
        )
        .env_clear()
        .kill_on_drop(true);
    for pair in environ.split(|b| *b == 0) {
        if let Some((k, v)) = std::str::from_utf8(pair)
            .ok()
            .and_then(|p| p.split_once('='))
        {
            cmd.env(k, v);
        }
    }
    cmd.env("STACKPAD_TEST_SQL", sql);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .context("psql took over 30 s")??;
    ensure!(
        out.status.success(),
        "psql {sql:?} in {container}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
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
