//! The dashboard (#18) in a real browser against the real platform: headless Chromium from
//! Debian driven over WebDriver (chromedriver, fantoccini). A user signs in with a token,
//! creates a project and a git service, deploys it and watches the timeline reach `ready`
//! without a reload, opens the app at the URL the page shows, sees a new container's log line
//! arrive in the live tail, sees the app's CPU, memory and network graphs drawn from the node's
//! samples, edits the service's own variables (a secret stays masked), creates a token on the
//! team page (its secret works) and revokes it (it stops working), adds members there and
//! changes a role (the last owner cannot be demoted: the refusal shows beside it), rolls back,
//! adds a domain and reads the DNS record to create; the project's list shows the app's
//! address; a managed cache is created (its volume's use shown as its node reports it),
//! backed up on demand (listed as verified) and restored after the dialog asks, its steps
//! shown live, its settings changed (a refusal beside the field) and the service deleted
//! once its name is typed; a page of another organization is "Not found". Screenshots of the main pages
//! at 375 and 1440 px wide are saved under the target directory (`tmp/dashboard-screenshots/`)
//! to be looked at.
//!
//! The browser reaches only loopback: the API's address is an IP, the platform's host names
//! are mapped to 127.0.0.1 and every other name fails to resolve; its background services
//! (updates, sync, safe browsing) are off.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::harness::{AppRepo, Platform};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const BUILD_AND_DEPLOY: Duration = Duration::from_secs(300);

/// A chromedriver with one headless Chromium session; both end on drop.
struct Browser {
    client: Option<Client>,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(apps_domain: &str) -> anyhow::Result<Self> {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            ensure!(
                Path::new(path).exists(),
                "{path} is missing: the browser tests need Debian's {package} (scripts/services up installs it)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver")?;
        let profile = tempfile::Builder::new().prefix("e2e-chromium-").tempdir()?;
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1440,1000".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
            // The platform's names go to the proxy on loopback; no other name resolves.
            format!(
                "--host-resolver-rules=MAP *.{apps_domain} 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
            ),
            // The proxy's certificate comes from this platform's test CA.
            "--ignore-certificate-errors".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-default-apps".to_owned(),
            "--disable-domain-reliability".to_owned(),
            "--disable-client-side-phishing-detection".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--metrics-recording-only".to_owned(),
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication"
                .to_owned(),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => bail!("no WebDriver session from chromedriver at {url}: {e}"),
            }
        };
        Ok(Self {
            client: Some(client),
            _driver: driver,
            _profile: profile,
        })
    }

    async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.c()
            .goto(url)
            .await
            .with_context(|| format!("opening {url}"))
    }

    fn c(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the session is open until close")
    }

    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }

    /// Waits until the page's text (or the text of `css`) contains `text`.
    async fn wait_text(&self, css: &str, text: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(el) = self.c().find(Locator::Css(css)).await
                && let Ok(t) = el.text().await
            {
                if t.contains(text) {
                    return Ok(t);
                }
                last = t;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("{css} never showed {text:?} within {within:?}; last: {last:?}")
    }

    /// Fills the form holding `first_field` (by input name) and submits it.
    async fn fill_and_submit(&self, fields: &[(&str, &str)]) -> anyhow::Result<()> {
        let (first, _) = fields[0];
        let form = self
            .c()
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::XPath(&format!("//form[.//*[@name='{first}']]")))
            .await?;
        for (name, value) in fields {
            let input = form.find(Locator::Css(&format!("[name='{name}']"))).await?;
            if input.tag_name().await? == "select" {
                input.select_by_value(value).await?;
            } else {
                input.clear().await?;
                input.send_keys(value).await?;
            }
        }
        form.find(Locator::Css("button[type='submit']"))
            .await?
            .click()
            .await?;
        Ok(())
    }

    /// Waits until the location's fragment matches `prefix` and returns the id after it.
    async fn wait_route(&self, prefix: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let url = self.c().current_url().await?;
            if let Some(rest) = url.fragment().and_then(|f| f.strip_prefix(prefix)) {
                return Ok(rest.split(['/', '?']).next().unwrap_or_default().to_owned());
            }
            if Instant::now() > deadline {
                bail!("the page never went to #{prefix}…; it is at {url}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
        std::fs::create_dir_all(&dir)?;
        for (width, height) in [(1440, 1000), (375, 812)] {
            self.c().set_window_size(width, height).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let png = self.c().screenshot().await?;
            std::fs::write(dir.join(format!("{name}-{width}.png")), png)?;
        }
        self.c().set_window_size(1440, 1000).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deploys_watches_and_rolls_back_from_the_browser() -> anyhow::Result<()> {
    let mut platform = Platform::start("e2e-dashboard").await?;
    let browser = match Browser::start(&platform.apps_domain).await {
        Ok(b) => b,
        Err(e) => return platform.report(Err(e)),
    };
    let outcome = scenario(&platform, &browser).await;
    browser.close().await;
    platform.report(outcome)
}

async fn scenario(platform: &Platform, b: &Browser) -> anyhow::Result<()> {
    let tenant = platform.organization("e2e").await?;
    let other = platform.organization("e2e-other").await?;
    let foreign_project = platform.project(&other, "hidden").await?;
    let repo = AppRepo::sample(platform, "hello", "1.0.0")?;
    let dash = format!("{}/dashboard/", platform.api);

    // Sign in with the organization's token.
    // Without a session the page is the sign-in form.
    b.goto(&dash).await?;
    b.fill_and_submit(&[("token", &tenant.token)]).await?;
    b.wait_text("main h1", "e2e", Duration::from_secs(20))
        .await?;
    let cookies = b.c().get_all_cookies().await?;
    let session = cookies
        .iter()
        .find(|c| c.name() == "stackpad_session")
        .context("no session cookie")?;
    ensure!(
        session.http_only() == Some(true) && session.secure() == Some(true),
        "the session cookie must be HttpOnly and Secure: {session:?}"
    );
    ensure!(
        b.c()
            .execute("return document.cookie", vec![])
            .await?
            .as_str()
            .is_some_and(|c| !c.contains("stackpad_session")),
        "page scripts must not read the session cookie"
    );

    // A project, then a git service in it.
    b.fill_and_submit(&[("name", "shop")]).await?;
    let project = b.wait_route("/projects/").await?;
    b.wait_text("main h1", "shop", Duration::from_secs(20))
        .await?;
    b.screenshot("project-empty").await?;
    b.fill_and_submit(&[
        ("name", "web"),
        ("kind", "web"),
        ("git", &repo.url()),
        ("port", "3000"),
    ])
    .await?;
    let service = b.wait_route("/services/").await?;
    b.wait_text("main h1", "web", Duration::from_secs(20))
        .await?;

    // Deploy main and watch it, without a reload, reach ready.
    b.fill_and_submit(&[("git_ref", "main")]).await?;
    let first = b.wait_route("/deployments/").await?;
    b.c().execute("window.__noReload = true", vec![]).await?;
    b.wait_text("main .title .badge", "ready", BUILD_AND_DEPLOY)
        .await
        .context("the deployment page never showed ready")?;
    ensure!(
        b.c()
            .execute("return window.__noReload === true", vec![])
            .await?
            == json!(true),
        "the page reloaded while the deployment ran"
    );
    let ready = b
        .c()
        .find(Locator::Css(".stepper li[data-step='ready']"))
        .await?;
    ensure!(
        ready.attr("class").await?.as_deref() == Some("done"),
        "the timeline's ready step is not done: {}",
        b.c().find(Locator::Css(".stepper")).await?.text().await?
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = b.c().find(Locator::Css(".build-log")).await?.text().await?;
        if !log.trim().is_empty() {
            break;
        }
        ensure!(Instant::now() < deadline, "the build log stayed empty");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.screenshot("deployment-ready").await?;

    // The app, at the URL the service page shows.
    b.goto(&format!("{dash}#/services/{service}")).await?;
    let link = b
        .c()
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("a.host"))
        .await?;
    let href = link
        .attr("href")
        .await?
        .context("the host link has no href")?;
    let host = href
        .strip_prefix("https://")
        .and_then(|h| h.strip_suffix('/'))
        .with_context(|| format!("unexpected app URL {href}"))?
        .to_owned();
    ensure!(host.ends_with(&platform.apps_domain), "{host}");
    platform
        .wait_for_https(&host, "version 1.0.0", Duration::from_secs(60))
        .await?;
    b.screenshot("service").await?;
    b.goto(&format!("https://{host}:{}/", platform.https.port()))
        .await?;
    b.wait_text(
        "body",
        "Hello from Stackpad! version 1.0.0",
        Duration::from_secs(20),
    )
    .await?;

    // The live tail: a second deployment's container logs its start while the page is open.
    b.goto(&format!("{dash}#/services/{service}/logs")).await?;
    b.wait_text("pre.log", "hello listening", Duration::from_secs(60))
        .await?;
    let before = b.c().find(Locator::Css("pre.log")).await?.text().await?;
    let seen = before.matches("hello listening").count();
    let v2 = repo.set_version("1.0.1")?;
    let second = platform
        .expect(
            201,
            "POST",
            &format!("/services/{service}/deployments"),
            &tenant.token,
            Some(json!({ "git_commit": v2 })),
        )
        .await?["id"]
        .as_str()
        .context("deployment id")?
        .to_owned();
    let d = platform
        .wait_deployment(&tenant, &second, BUILD_AND_DEPLOY)
        .await?;
    ensure!(d["state"] == "ready", "second deployment: {d}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = b.c().find(Locator::Css("pre.log")).await?.text().await?;
        if now.matches("hello listening").count() > seen && now.contains("version 1.0.1") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the new container's start never appeared in the live tail: {now}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    b.screenshot("logs").await?;

    // The service's own variables, one at a time: a plain one, a secret (masked), a removal.
    b.goto(&format!("{dash}#/services/{service}/variables"))
        .await?;
    b.fill_and_submit(&[("name", "GREETING"), ("value", "hi"), ("secret", "plain")])
        .await?;
    b.wait_text(".own-vars table", "GREETING", Duration::from_secs(20))
        .await?;
    b.fill_and_submit(&[
        ("name", "API_KEY"),
        ("value", "k3y-e2e"),
        ("secret", "secret"),
    ])
    .await?;
    let own = b
        .wait_text(".own-vars table", "API_KEY", Duration::from_secs(20))
        .await?;
    ensure!(!own.contains("k3y-e2e"), "a secret was shown: {own}");
    b.fill_and_submit(&[("name", "1bad"), ("value", "x"), ("secret", "plain")])
        .await?;
    b.wait_text(".own-vars form", "1bad", Duration::from_secs(20))
        .await
        .context("a bad name's error is not shown beside the form")?;
    b.c()
        .find(Locator::Css(".own-vars tr[data-var='GREETING'] button"))
        .await?
        .click()
        .await?;
    b.c().accept_alert().await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = b
            .c()
            .find(Locator::Css(".own-vars table"))
            .await?
            .text()
            .await?;
        if !t.contains("GREETING") && t.contains("API_KEY") {
            break;
        }
        ensure!(Instant::now() < deadline, "GREETING was not removed: {t}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let env = &platform
        .expect(
            200,
            "GET",
            &format!("/services/{service}"),
            &tenant.token,
            None,
        )
        .await?["env"];
    ensure!(
        env["API_KEY"] == json!({ "value": null, "secret": true }) && env.get("GREETING").is_none(),
        "the service's variables after the edits: {env}"
    );
    b.screenshot("variables").await?;

    // A token made in the team page works once copied, and stops working when revoked there.
    b.goto(&format!("{dash}#/team")).await?;
    b.fill_and_submit(&[("name", "ci-e2e"), ("role", "deployer")])
        .await?;
    let secret = b
        .wait_text("#new-token-secret", "", Duration::from_secs(20))
        .await?;
    ensure!(secret.len() > 20, "no secret shown: {secret:?}");
    platform
        .expect(200, "GET", "/projects", secret.trim(), None)
        .await
        .context("the new token does not work")?;
    b.c()
        .find(Locator::Css("tr[data-token='ci-e2e'] button"))
        .await?
        .click()
        .await?;
    b.c().accept_alert().await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while b
        .c()
        .find(Locator::Css("tr[data-token='ci-e2e']"))
        .await
        .is_ok()
    {
        ensure!(Instant::now() < deadline, "the revoked token stayed listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    platform
        .expect(401, "GET", "/projects", secret.trim(), None)
        .await
        .context("the revoked token still works")?;

    // Members: added in the team page, a role changed on the spot; the last owner stays one
    // and the refusal is shown beside the role.
    for (email, role) in [
        ("ada@e2e.example", "owner"),
        ("bob@e2e.example", "developer"),
    ] {
        b.fill_and_submit(&[("email", email), ("role", role)])
            .await?;
        b.wait_text("table.members", email, Duration::from_secs(20))
            .await?;
    }
    let role_of = |email: &str| format!("tr[data-member='{email}'] select[name='member-role']");
    b.c()
        .find(Locator::Css(&role_of("bob@e2e.example")))
        .await?
        .select_by_value("admin")
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let members = platform
            .expect(200, "GET", "/members", &tenant.token, None)
            .await?;
        if members["items"]
            .as_array()
            .context("members")?
            .iter()
            .any(|m| m["email"] == "bob@e2e.example" && m["role"] == "admin")
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "bob's new role never reached the API: {members}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.c()
        .find(Locator::Css(&role_of("ada@e2e.example")))
        .await?
        .select_by_value("viewer")
        .await?;
    b.wait_text(
        "tr[data-member='ada@e2e.example']",
        "last owner",
        Duration::from_secs(20),
    )
    .await
    .context("demoting the last owner is not refused beside the role")?;
    let kept = b
        .c()
        .execute(
            "return document.querySelector(\"tr[data-member='ada@e2e.example'] select\").value",
            vec![],
        )
        .await?;
    ensure!(
        kept == json!("owner"),
        "the refused role must go back to owner: {kept}"
    );
    b.screenshot("team").await?;

    // Roll back to the first deployment from the list.
    b.goto(&format!("{dash}#/services/{service}/deployments"))
        .await?;
    let row = b
        .c()
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(&format!("tr[data-id='{first}'] button")))
        .await?;
    row.click().await?;
    let rollback = b.wait_route("/deployments/").await?;
    ensure!(rollback != first && rollback != second, "no new deployment");
    b.wait_text("main .title .badge", "ready", BUILD_AND_DEPLOY)
        .await
        .context("the rollback never showed ready")?;
    platform
        .wait_for_https(&host, "version 1.0.0", Duration::from_secs(30))
        .await?;

    // A custom domain and the record to create for it.
    b.goto(&format!("{dash}#/services/{service}/domains"))
        .await?;
    b.fill_and_submit(&[("domain", "www.shop-e2e.example")])
        .await?;
    let records = b
        .wait_text(
            "table.list",
            "www.shop-e2e.example",
            Duration::from_secs(20),
        )
        .await?;
    ensure!(
        records.contains("CNAME") && records.contains(&host),
        "the domain row must show the CNAME to create, to {host}: {records}"
    );
    b.screenshot("domains").await?;

    // A managed cache's backups: one on demand, listed with its size and verification, then
    // restored after the dialog asks (a cancel starts nothing), its steps shown as they happen.
    b.goto(&format!("{dash}#/projects/{project}")).await?;
    b.fill_and_submit(&[("name", "cache"), ("kind", "cache"), ("engine", "redis")])
        .await?;
    let cache = b.wait_route("/services/").await?;
    b.wait_text("main h1", "cache", Duration::from_secs(20))
        .await?;
    b.fill_and_submit(&[("image", "")]).await?;
    b.wait_route("/deployments/").await?;
    b.wait_text("main .title .badge", "ready", BUILD_AND_DEPLOY)
        .await
        .context("the cache's deployment never showed ready")?;
    // Its volume, with the bytes the node agent reports in use there.
    b.goto(&format!("{dash}#/services/{cache}")).await?;
    let usage = b
        .wait_text(".volume .usage", "used", Duration::from_secs(20))
        .await
        .context("the cache's volume usage is not shown")?;
    let volumes = platform
        .expect(
            200,
            "GET",
            &format!("/services/{cache}/volumes"),
            &tenant.token,
            None,
        )
        .await?;
    let volume = &volumes["items"][0];
    ensure!(
        volume["used_bytes"].as_u64().is_some_and(|u| u > 0)
            && volume["mounted"] == true
            && volume["node"] == "compute-1"
            && usage.contains("compute-1"),
        "the volume's use as the node holds it: {volumes}; shown: {usage}"
    );
    b.screenshot("cache").await?;
    b.goto(&format!("{dash}#/services/{cache}/backups")).await?;
    b.c()
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::XPath("//button[text()='Back up now']"))
        .await?
        .click()
        .await?;
    // The list follows the backup without a reload until its verification restore is done.
    let listed = b
        .wait_text("table.backups", "verified", Duration::from_secs(120))
        .await
        .context("the backup never showed as verified")?;
    ensure!(
        listed.contains("completed") && listed.contains("manual") && listed.contains("B"),
        "the backup row must show its state, trigger and size: {listed}"
    );
    b.screenshot("backups").await?;
    let restore_button = "table.backups tr[data-backup] button.danger";
    b.c()
        .find(Locator::Css(restore_button))
        .await?
        .click()
        .await?;
    b.c()
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("dialog.confirm[open]"))
        .await?
        .find(Locator::XPath(".//button[text()='Cancel']"))
        .await?
        .click()
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        b.c().find(Locator::Css(".restore")).await.is_err(),
        "a cancelled restore must start nothing"
    );
    b.c()
        .find(Locator::Css(restore_button))
        .await?
        .click()
        .await?;
    let dialog = b
        .c()
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("dialog.confirm[open]"))
        .await?;
    ensure!(
        dialog.text().await?.contains("backed up first"),
        "the dialog must say the current data is kept first"
    );
    b.screenshot("restore-dialog").await?;
    b.c()
        .find(Locator::Css("#dialog-confirm"))
        .await?
        .click()
        .await?;
    b.wait_text(".restore", "restoring", Duration::from_secs(60))
        .await
        .context("the restore's steps were not shown")?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let state = b
            .c()
            .find(Locator::Css(".restore"))
            .await?
            .attr("data-state")
            .await?;
        match state.as_deref() {
            Some("completed") => break,
            Some("failed") => bail!(
                "the restore failed: {}",
                b.c().find(Locator::Css(".restore")).await?.text().await?
            ),
            _ => {}
        }
        ensure!(Instant::now() < deadline, "the restore never ended");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    b.wait_text("table.backups", "pre-restore", Duration::from_secs(20))
        .await
        .context("the data kept before the restore is not listed")?;
    b.screenshot("restore").await?;

    // Settings: a bad count is refused beside its field; resources saved as the API keeps
    // them; the service deleted after its name is typed in the dialog.
    b.goto(&format!("{dash}#/services/{cache}/settings"))
        .await?;
    b.fill_and_submit(&[("replicas", "2")]).await?;
    b.wait_text(".settings form", "volume", Duration::from_secs(20))
        .await
        .context("a refused replica count is not explained beside the form")?;
    b.fill_and_submit(&[("replicas", "1"), ("cpu", "0.25"), ("memory", "128")])
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = platform
            .expect(
                200,
                "GET",
                &format!("/services/{cache}"),
                &tenant.token,
                None,
            )
            .await?;
        if s["resources"] == json!({ "cpu_millis": 250, "memory_bytes": 128 << 20 }) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the settings never reached the API: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.screenshot("settings").await?;
    b.c()
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::XPath("//button[text()='Delete service…']"))
        .await?
        .click()
        .await?;
    let dialog = b
        .c()
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("dialog.confirm[open]"))
        .await?;
    let confirm = dialog.find(Locator::Css("#dialog-confirm")).await?;
    ensure!(
        !confirm.is_enabled().await?,
        "delete must wait for the name to be typed"
    );
    dialog
        .find(Locator::Css("input[name='typed']"))
        .await?
        .send_keys("cache")
        .await?;
    confirm.click().await?;
    b.wait_route("/projects/").await?;
    platform
        .expect(
            404,
            "GET",
            &format!("/services/{cache}"),
            &tenant.token,
            None,
        )
        .await
        .context("the deleted service is still there")?;

    // CPU, memory and network graphs drawn from the node agent's samples of the containers.
    b.goto(&format!("{dash}#/services/{service}/metrics"))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let points = b
            .c()
            .execute(
                "const c = document.getElementById('chart-cpu'); \
                 return c && c.querySelector('canvas') ? Number(c.dataset.points || 0) : 0",
                vec![],
            )
            .await?;
        if points.as_f64().unwrap_or(0.0) > 0.0 {
            break;
        }
        if Instant::now() > deadline {
            let api = platform
                .call(
                    "GET",
                    &format!("/services/{service}/metrics"),
                    &tenant.token,
                    None,
                )
                .await?;
            let page = b.c().find(Locator::Css("main")).await?.text().await?;
            bail!(
                "the CPU graph never got a sample of the running containers; the API: {api:?}; \
                 the page: {page}"
            );
        }
        // The tab redraws every 15 s; a reload of the route draws at once (looked at again
        // once it had the time to).
        b.c()
            .execute(
                "window.dispatchEvent(new HashChangeEvent('hashchange'))",
                vec![],
            )
            .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let usage = platform
        .expect(
            200,
            "GET",
            &format!("/services/{service}/metrics"),
            &tenant.token,
            None,
        )
        .await?;
    let points = usage["points"].as_array().context("points")?;
    ensure!(
        points
            .iter()
            .any(|p| p["memory_bytes"].as_u64().unwrap_or(0) > 0)
            && points
                .iter()
                .any(|p| p["cpu_cores"].as_f64().unwrap_or(0.0) > 0.0),
        "the app's containers used no CPU or memory: {usage}"
    );
    b.screenshot("metrics").await?;

    // Another organization's project is not there for this session.
    b.goto(&format!("{dash}#/projects/{foreign_project}"))
        .await?;
    b.wait_text("main h1", "Not found", Duration::from_secs(20))
        .await?;
    b.goto(&format!("{dash}#/projects/{project}")).await?;
    b.wait_text("main", "web", Duration::from_secs(20)).await?;
    b.wait_text("main table.list", &host, Duration::from_secs(20))
        .await
        .context("the project's service list does not show the app's address")?;
    b.screenshot("project").await?;
    Ok(())
}
