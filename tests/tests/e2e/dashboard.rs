//! The dashboard (#18) in a real browser against the real platform: headless Chromium from
//! Debian driven over WebDriver (chromedriver, fantoccini), one signed-in session through the
//! whole scenario. A user signs in with a token, creates a project, a managed cache (deployed
//! while the app builds) and a git service with what `stackpad services create` takes besides
//! its source (resources, health check, variables, a secret), deploys it and watches the
//! timeline reach `ready` without a reload, opens the app at the URL the page shows, sees a
//! new container's log line arrive in the live tail and filters the log and the requests,
//! edits the service's own variables (a secret stays masked), creates a token on the team page
//! (its secret works) and revokes it (it stops working), adds members and changes a role (the
//! last owner cannot be demoted: the refusal shows beside it), cancels a deployment while it
//! builds, rolls back, adds a domain and reads the DNS record to create; the cache's volume
//! use is shown as its node reports it, it is backed up on demand (listed as verified) and
//! restored after the dialog asks, its steps shown live, its settings changed (a refusal
//! beside the field) and it is deleted once its name is typed; the app's health check is
//! changed, its webhook gets a given secret and a signed push to another branch is listed as
//! ignored; an environment is created with a variable, previews are turned on and the project
//! webhook's secret is replaced; the CPU, memory and network graphs are drawn; a page of
//! another organization is "Not found". Screenshots of the main pages at 375 and 1440 px wide,
//! light and (through Chromium's emulation of `prefers-color-scheme`) dark, are saved under the
//! target directory (`tmp/dashboard-screenshots/`) to be looked at. Each step's time is printed.
//!
//! The browser reaches only loopback: the API's address is an IP, the platform's host names
//! are mapped to 127.0.0.1 and every other name fails to resolve; its background services
//! (updates, sync, safe browsing) are off.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::harness::{AppRepo, Platform, Tenant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const BUILD_AND_DEPLOY: Duration = Duration::from_secs(300);
/// The form that replaces a webhook's secret (a variables form names a field `secret` too).
const ROTATION: &str = "//div[contains(@class, 'rotation')]/form";

/// A chromedriver with one headless Chromium session; both end on drop.
struct Browser {
    client: Option<Client>,
    started: Instant,
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
            started: Instant::now(),
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

    /// Fills the form holding the first field (by input name) and submits it.
    async fn fill_and_submit(&self, fields: &[(&str, &str)]) -> anyhow::Result<()> {
        let (first, _) = fields[0];
        self.fill_and_submit_in(&format!("//form[.//*[@name='{first}']]"), fields)
            .await
    }

    /// Fills the form `xpath` finds (its folded groups opened first) and submits it.
    async fn fill_and_submit_in(&self, xpath: &str, fields: &[(&str, &str)]) -> anyhow::Result<()> {
        let form = self
            .c()
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::XPath(xpath))
            .await?;
        self.c()
            .execute(
                "arguments[0].querySelectorAll('details').forEach((d) => (d.open = true))",
                vec![serde_json::to_value(&form)?],
            )
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

    /// Answers the open confirmation dialog yes (typing `typed` first when it asks).
    async fn confirm(&self, typed: Option<&str>) -> anyhow::Result<()> {
        let dialog = self
            .c()
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("dialog.confirm[open]"))
            .await?;
        if let Some(typed) = typed {
            dialog
                .find(Locator::Css("input[name='typed']"))
                .await?
                .send_keys(typed)
                .await?;
        }
        dialog
            .find(Locator::Css("#dialog-confirm"))
            .await?
            .click()
            .await?;
        Ok(())
    }

    /// Reaches `css` from the top of the page with the Tab key alone (at most 80 presses) and
    /// presses Enter on it: the action is keyboard reachable.
    async fn keyboard_to(&self, css: &str) -> anyhow::Result<()> {
        self.c()
            .execute("document.querySelector('.skip').focus()", vec![])
            .await?;
        let mut path = vec![];
        for _ in 0..80 {
            let active = self.c().active_element().await?;
            active.send_keys("\u{E004}").await?; // Tab
            let (hit, what) = {
                let v = self
                    .c()
                    .execute(
                        "const e = document.activeElement; \
                         return [e.matches(arguments[0]), e.tagName + ' ' + (e.textContent || '').trim().slice(0, 20)]",
                        vec![json!(css)],
                    )
                    .await?;
                (
                    v[0] == json!(true),
                    v[1].as_str().unwrap_or_default().to_owned(),
                )
            };
            if hit {
                self.c()
                    .active_element()
                    .await?
                    .send_keys("\u{E007}") // Enter
                    .await?;
                return Ok(());
            }
            path.push(what);
        }
        bail!("{css} is not reached with the Tab key; focus went through {path:?}")
    }

    /// Waits until the deployment page's badge says `want`; fails at once, with the page's
    /// failure reason, when it ends otherwise.
    async fn wait_badge(&self, want: &str, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let state = match self.c().find(Locator::Css("main .title .badge")).await {
                Ok(el) => el.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if state == want {
                return Ok(());
            }
            if ["ready", "failed", "cancelled", "superseded"].contains(&state.as_str()) {
                let why = match self.c().find(Locator::Css("pre.failure")).await {
                    Ok(el) => el.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                bail!("the deployment ended {state}, not {want}: {why}");
            }
            ensure!(
                Instant::now() < deadline,
                "the deployment page never showed {want} within {within:?}; last: {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Redraws the current page (the router's own redraw, as after a form).
    async fn redraw(&self) -> anyhow::Result<()> {
        self.c()
            .execute(
                "window.dispatchEvent(new HashChangeEvent('hashchange'))",
                vec![],
            )
            .await?;
        Ok(())
    }

    /// Prints how long the scenario has run, after `what`.
    fn step(&self, what: &str) {
        eprintln!(
            "dashboard: {what} at {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Emulates the system's colour scheme (`prefers-color-scheme`) for every page after.
    async fn color_scheme(&self, dark: bool) -> anyhow::Result<()> {
        let scheme = if dark { "dark" } else { "light" };
        self.c()
            .issue_cmd(Cdp {
                cmd: "Emulation.setEmulatedMedia",
                params: json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
            })
            .await
            .with_context(|| format!("emulating prefers-color-scheme: {scheme}"))?;
        let matches = self
            .c()
            .execute(
                &format!("return matchMedia('(prefers-color-scheme: {scheme})').matches"),
                vec![],
            )
            .await?;
        ensure!(
            matches == json!(true),
            "the page does not see the {scheme} scheme"
        );
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

    /// Saves the page at 1440 and 375 px wide, in the light scheme and, with `dark`, also in
    /// the dark one: `<name>-<width>.png`, `<name>-dark-<width>.png`.
    async fn screenshot(&self, name: &str, dark: bool) -> anyhow::Result<()> {
        self.step(name);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
        std::fs::create_dir_all(&dir)?;
        let schemes: &[bool] = if dark { &[false, true] } else { &[false] };
        for &scheme in schemes {
            if scheme {
                self.color_scheme(true).await?;
            }
            for (width, height) in [(1440, 1000), (375, 812)] {
                self.c().set_window_size(width, height).await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let png = self.c().screenshot().await?;
                let file = if scheme {
                    format!("{name}-dark-{width}.png")
                } else {
                    format!("{name}-{width}.png")
                };
                std::fs::write(dir.join(file), png)?;
            }
            if scheme {
                self.color_scheme(false).await?;
            }
        }
        self.c().set_window_size(1440, 1000).await?;
        Ok(())
    }
}

/// A Chrome DevTools command through chromedriver (`/session/{id}/goog/cdp/execute`).
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &reqwest::Url,
        session_id: Option<&str>,
    ) -> Result<reqwest::Url, <reqwest::Url as std::str::FromStr>::Err> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (reqwest::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (reqwest::Method::POST, Some(body.to_string()))
    }
}

/// `GET path` until `done` holds for the answer; fails after `within` with the last answer.
async fn api_until(
    platform: &Platform,
    tenant: &Tenant,
    path: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + within;
    loop {
        let v = platform
            .expect(200, "GET", path, &tenant.token, None)
            .await?;
        if done(&v) {
            return Ok(v);
        }
        ensure!(
            Instant::now() < deadline,
            "GET {path} never as expected: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A GitHub push of `commit` to `git_ref`, signed with `secret`, to the service's webhook.
async fn signed_push(
    platform: &Platform,
    service: &str,
    secret: &str,
    git_ref: &str,
    commit: &str,
) -> anyhow::Result<u16> {
    let body = json!({ "ref": git_ref, "after": commit }).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let r = reqwest::Client::new()
        .post(format!("{}/webhooks/github/{service}", platform.api))
        .header("x-github-event", "push")
        .header("x-github-delivery", uuid::Uuid::new_v4().to_string())
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    Ok(r.status().as_u16())
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
    let service_json = |id: &str| format!("/services/{id}");

    // Sign in with the organization's token: without a session the page is the sign-in form.
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

    // A project, then a managed cache deployed at once (no build: it runs while the app builds).
    b.fill_and_submit(&[("name", "shop")]).await?;
    let project = b.wait_route("/projects/").await?;
    b.wait_text("main h1", "shop", Duration::from_secs(20))
        .await?;
    b.screenshot("project-empty", false).await?;
    b.fill_and_submit(&[("name", "cache"), ("kind", "cache"), ("engine", "redis")])
        .await?;
    let cache = b.wait_route("/services/").await?;
    b.wait_text("main h1", "cache", Duration::from_secs(20))
        .await?;
    b.fill_and_submit(&[("image", "")]).await?;
    let cache_deployment = b.wait_route("/deployments/").await?;

    // A git service with what `stackpad services create` takes besides its source, from the
    // form's folded groups.
    b.goto(&format!("{dash}#/projects/{project}")).await?;
    b.fill_and_submit(&[
        ("name", "web"),
        ("kind", "web"),
        ("git", &repo.url()),
        ("port", "3000"),
        // A quarter core each: two replicas and a rolling deploy's new pair fit on the 2-core
        // machine beside the cache.
        ("cpu", "0.25"),
        ("memory", "256"),
        ("health_path", "/healthz"),
        ("health_interval", "1000"),
        ("health_deadline", "90000"),
        ("env", "GREETING=hello"),
        ("secrets", "SESSION_KEY=s3ss10n-e2e"),
    ])
    .await?;
    let service = b.wait_route("/services/").await?;
    b.wait_text("main h1", "web", Duration::from_secs(20))
        .await?;
    let created = platform
        .expect(200, "GET", &service_json(&service), &tenant.token, None)
        .await?;
    let health = &created["health_check"];
    ensure!(
        created["resources"] == json!({ "cpu_millis": 250, "memory_bytes": 256 << 20 })
            && health["path"] == "/healthz"
            && health["interval_ms"] == 1000
            && health["deadline_ms"] == 90000
            && created["env"]["GREETING"]["value"] == "hello"
            && created["env"]["SESSION_KEY"] == json!({ "value": null, "secret": true }),
        "the service as created from the form: {created}"
    );
    b.step("services created");

    // Deploy main and watch it, without a reload, reach ready.
    b.fill_and_submit(&[("git_ref", "main")]).await?;
    let first = b.wait_route("/deployments/").await?;
    b.c().execute("window.__noReload = true", vec![]).await?;
    b.wait_badge("ready", BUILD_AND_DEPLOY)
        .await
        .context("the first deployment")?;
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
    b.screenshot("deployment-ready", true).await?;

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
    b.screenshot("service", true).await?;
    b.goto(&format!("https://{host}:{}/", platform.https.port()))
        .await?;
    b.wait_text(
        "body",
        "Hello from Stackpad! version 1.0.0",
        Duration::from_secs(20),
    )
    .await?;

    // The cache, deployed meanwhile: its volume with the bytes the node agent reports in use,
    // then a backup on demand, left to run (and be verified) while the app's steps go on.
    let d = platform
        .wait_deployment(&tenant, &cache_deployment, BUILD_AND_DEPLOY)
        .await?;
    ensure!(d["state"] == "ready", "the cache's deployment: {d}");
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
    b.screenshot("cache", false).await?;
    b.goto(&format!("{dash}#/services/{cache}/backups")).await?;
    b.c()
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::XPath("//button[text()='Back up now']"))
        .await?;
    b.keyboard_to(".backups .title button").await?;
    b.wait_text("table.backups", "manual", Duration::from_secs(20))
        .await?;

    // The live tail: a second replica's container logs its start while the page is open.
    b.goto(&format!("{dash}#/services/{service}/logs")).await?;
    b.wait_text("pre.log", "hello listening", Duration::from_secs(60))
        .await?;
    let before = b.c().find(Locator::Css("pre.log")).await?.text().await?;
    let seen = before.matches("hello listening").count();
    platform
        .expect(
            200,
            "PATCH",
            &service_json(&service),
            &tenant.token,
            Some(json!({ "replicas": 2 })),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = b.c().find(Locator::Css("pre.log")).await?.text().await?;
        if now.matches("hello listening").count() > seen {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "a new container's start never appeared in the live tail: {now}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The scale's deployment ends ready and serves (what comes next deploys after it).
    api_until(
        platform,
        &tenant,
        &format!("/services/{service}/deployments?limit=1"),
        BUILD_AND_DEPLOY,
        |p| p["items"][0]["state"] == "ready" && p["items"][0]["id"] != first.as_str(),
    )
    .await
    .context("the second replica's deployment never ended ready")?;
    // The filters: the start line is stdout, so stderr alone leaves it out; the text finds it.
    b.fill_and_submit(&[("stream", "stderr")]).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pane = b.c().find(Locator::Css("pre.log")).await?.text().await?;
        if !pane.contains("hello listening") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "stderr only still shows stdout lines: {pane}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.fill_and_submit(&[("stream", ""), ("q", "listening")])
        .await?;
    b.wait_text("pre.log", "hello listening", Duration::from_secs(20))
        .await?;
    // The requests the browser and the test made, through the proxy's access log.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        b.fill_and_submit(&[("status", "2xx")]).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = b
            .c()
            .find(Locator::Css("table.requests"))
            .await?
            .text()
            .await?;
        if t.contains("GET") && t.contains("200") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the app's requests never showed in the access log: {t}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    b.screenshot("logs", true).await?;

    // The service's own variables, one at a time: a plain one, a secret (masked), a removal.
    b.goto(&format!("{dash}#/services/{service}/variables"))
        .await?;
    b.fill_and_submit(&[("name", "MODE"), ("value", "e2e"), ("secret", "plain")])
        .await?;
    b.wait_text(".own-vars table", "MODE", Duration::from_secs(20))
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
    ensure!(
        !own.contains("k3y-e2e") && !own.contains("s3ss10n-e2e"),
        "a secret was shown: {own}"
    );
    b.fill_and_submit(&[("name", "1bad"), ("value", "x"), ("secret", "plain")])
        .await?;
    b.wait_text(".own-vars form", "1bad", Duration::from_secs(20))
        .await
        .context("a bad name's error is not shown beside the form")?;
    b.c()
        .find(Locator::Css(".own-vars tr[data-var='MODE'] button"))
        .await?
        .click()
        .await?;
    b.c().accept_alert().await?;
    let vars = api_until(
        platform,
        &tenant,
        &service_json(&service),
        Duration::from_secs(20),
        |s| s["env"].get("MODE").is_none(),
    )
    .await?;
    ensure!(
        vars["env"]["API_KEY"] == json!({ "value": null, "secret": true })
            && vars["env"]["GREETING"]["value"] == "hello",
        "the service's variables after the edits: {}",
        vars["env"]
    );
    b.screenshot("variables", false).await?;

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
    api_until(
        platform,
        &tenant,
        "/members",
        Duration::from_secs(20),
        |m| {
            m["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|m| m["email"] == "bob@e2e.example" && m["role"] == "admin")
            })
        },
    )
    .await
    .context("bob's new role never reached the API")?;
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
    b.screenshot("team", true).await?;

    // A deployment of a commit from the form, cancelled from its page while it is on its way.
    let v2 = repo.set_version("1.0.1")?;
    b.goto(&format!("{dash}#/services/{service}/deployments"))
        .await?;
    b.fill_and_submit(&[("git_ref", &v2)]).await?;
    let cancelled = b.wait_route("/deployments/").await?;
    b.c()
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::XPath("//button[text()='Cancel']"))
        .await?
        .click()
        .await?;
    b.c().accept_alert().await?;
    b.wait_badge("cancelled", Duration::from_secs(60))
        .await
        .context("the deployment cancelled from its page")?;
    let d = platform
        .expect(
            200,
            "GET",
            &format!("/deployments/{cancelled}"),
            &tenant.token,
            None,
        )
        .await?;
    ensure!(
        d["state"] == "cancelled" && d["git_commit"] == v2.as_str(),
        "the deployment cancelled from the page: {d}"
    );

    // Roll back to the first deployment from the list.
    b.goto(&format!("{dash}#/services/{service}/deployments"))
        .await?;
    let roll_back = format!("tr[data-id='{first}'] button");
    b.c()
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(&roll_back))
        .await?;
    b.keyboard_to(&roll_back).await?;
    let rollback = b.wait_route("/deployments/").await?;
    ensure!(
        rollback != first && rollback != cancelled,
        "no new deployment"
    );
    b.wait_badge("ready", BUILD_AND_DEPLOY)
        .await
        .context("the rollback")?;
    let s = platform
        .expect(200, "GET", &service_json(&service), &tenant.token, None)
        .await?;
    ensure!(
        s["current_deployment_id"] == rollback.as_str(),
        "the rollback does not serve: {s}"
    );
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
    b.screenshot("domains", false).await?;

    // The app's settings: the health check's interval; the webhook given a secret, and a
    // signed push to a branch no environment deploys listed as ignored.
    b.goto(&format!("{dash}#/services/{service}/settings"))
        .await?;
    b.fill_and_submit(&[("health_interval", "1500")]).await?;
    api_until(
        platform,
        &tenant,
        &service_json(&service),
        Duration::from_secs(20),
        |s| s["health_check"]["interval_ms"] == 1500 && s["health_check"]["path"] == "/healthz",
    )
    .await
    .context("the health check's interval never reached the API")?;
    let hook_secret = "e2e webhook secret: 7c1f0a92d4b8e6 35";
    b.fill_and_submit_in(ROTATION, &[("secret", hook_secret)])
        .await?;
    b.confirm(None).await?;
    b.wait_text("#new-webhook-secret", hook_secret, Duration::from_secs(20))
        .await?;
    let status = signed_push(platform, &service, hook_secret, "refs/heads/elsewhere", &v2).await?;
    ensure!(
        status < 300,
        "a push signed with the secret set in the page was refused: {status}"
    );
    b.redraw().await?;
    b.wait_text("table.deliveries", "ignored", Duration::from_secs(20))
        .await
        .context("the ignored push is not listed under the service's deliveries")?;
    b.screenshot("service-settings", false).await?;

    // The cache's backup, verified by now (or soon): restored after the dialog asks (a cancel
    // starts nothing), its steps shown as they happen.
    b.goto(&format!("{dash}#/services/{cache}/backups")).await?;
    let listed = b
        .wait_text("table.backups", "verified", Duration::from_secs(120))
        .await
        .context("the backup never showed as verified")?;
    ensure!(
        listed.contains("completed") && listed.contains("manual") && listed.contains("B"),
        "the backup row must show its state, trigger and size: {listed}"
    );
    b.screenshot("backups", true).await?;
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
    b.screenshot("restore-dialog", false).await?;
    b.confirm(None).await?;
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
    b.screenshot("restore", false).await?;

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
    api_until(
        platform,
        &tenant,
        &service_json(&cache),
        Duration::from_secs(20),
        |s| s["resources"] == json!({ "cpu_millis": 250, "memory_bytes": 128 << 20 }),
    )
    .await
    .context("the settings never reached the API")?;
    b.screenshot("settings", true).await?;
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
    ensure!(
        !dialog
            .find(Locator::Css("#dialog-confirm"))
            .await?
            .is_enabled()
            .await?,
        "delete must wait for the name to be typed"
    );
    b.confirm(Some("cache")).await?;
    b.wait_route("/projects/").await?;
    platform
        .expect(404, "GET", &service_json(&cache), &tenant.token, None)
        .await
        .context("the deleted service is still there")?;

    // The project: an environment made with a variable, previews turned on, the project
    // webhook's secret replaced (a generated one, shown once).
    b.wait_text("main h1", "shop", Duration::from_secs(20))
        .await?;
    b.fill_and_submit_in(
        "//form[.//*[@name='from']]",
        &[
            ("name", "staging"),
            ("branch", "develop"),
            ("env", "MODE=staging"),
        ],
    )
    .await?;
    b.wait_text(".env-vars", "staging", Duration::from_secs(20))
        .await?;
    let envs = platform
        .expect(
            200,
            "GET",
            &format!("/projects/{project}/environments"),
            &tenant.token,
            None,
        )
        .await?;
    let items = envs["items"].as_array().context("environments")?;
    let staging = items
        .iter()
        .find(|e| e["name"] == "staging")
        .with_context(|| format!("no staging: {envs}"))?;
    let production = items
        .iter()
        .find(|e| e["name"] == "production")
        .with_context(|| format!("no production: {envs}"))?;
    let staging_env = platform
        .expect(
            200,
            "GET",
            &format!(
                "/environments/{}",
                staging["id"].as_str().unwrap_or_default()
            ),
            &tenant.token,
            None,
        )
        .await?;
    ensure!(
        staging_env["branch"] == "develop" && staging_env["env"]["MODE"]["value"] == "staging",
        "the environment as created from the form: {staging_env}"
    );
    b.fill_and_submit(&[("template", "production"), ("max_previews", "2")])
        .await?;
    b.wait_text(".previews-state", "On:", Duration::from_secs(20))
        .await?;
    let previews = platform
        .expect(
            200,
            "GET",
            &format!("/projects/{project}/previews"),
            &tenant.token,
            None,
        )
        .await?;
    ensure!(
        previews["enabled"] == true
            && previews["max_previews"] == 2
            && previews["template_id"] == production["id"],
        "the previews as turned on from the page: {previews}"
    );
    b.fill_and_submit_in(ROTATION, &[("secret", "")]).await?;
    b.confirm(None).await?;
    let generated = b
        .wait_text("#new-webhook-secret", "", Duration::from_secs(20))
        .await?;
    ensure!(
        generated.trim().len() >= 32,
        "no project webhook secret shown: {generated:?}"
    );
    b.screenshot("project-settings", true).await?;

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
        // The tab redraws every 15 s; a redraw of the route draws at once.
        b.redraw().await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
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
    b.screenshot("metrics", true).await?;

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
    b.screenshot("project", true).await?;
    Ok(())
}
