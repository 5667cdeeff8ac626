//! The real tonic clients and the real `stackpad-control` binary, over loopback, against
//! in-process servers of the three daemons' `proto` APIs; includes kill -9 mid-deploy.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::grpc_fakes::Daemons;
use common::{ADMIN, Harness, KEY, phases};
use serde_json::json;

const PROXY_TOKEN: &str = "proxy-admin-token";

#[tokio::test]
async fn grpc_clients_drive_build_deploy_switch_and_stop_old() -> anyhow::Result<()> {
    let daemons = Daemons::default();
    let db = common::database().await?;
    let (config, address) = common::config_with_daemons(&db, &daemons, PROXY_TOKEN).await?;
    let h = Harness::start_on(db, control::daemon::grpc_clients(&config)).await?;
    h.register_node("b1", "build", &address).await;
    h.register_node("n1", "compute", &address).await;
    let (org, a) = h.org("org-a").await;
    let (_, service) = h
        .service(
            &a,
            json!({ "name": "web", "git": { "url": "file:///srv/app.git", "subdirectory": "app" },
            "health_check": { "path": "/healthz" }, "env": { "MODE": "prod" } }),
        )
        .await;
    let commit = "abcdef0123456789abcdef0123456789abcdef01";
    let d1 = h
        .deploy(&a, &service, json!({ "git_commit": commit }))
        .await;
    let v1 = h.wait_terminal(&a, &d1, Duration::from_secs(20)).await;
    assert_eq!(v1["state"], "ready", "{v1}");
    let rec = daemons.recorded();
    let build = &rec.builds[0];
    assert_eq!(build.build_id, d1);
    let source = build.source.clone().unwrap();
    assert_eq!(
        (
            source.url.as_str(),
            source.commit.as_str(),
            source.subdirectory.as_str()
        ),
        ("file:///srv/app.git", commit, "app")
    );
    assert_eq!(build.image, format!("127.0.0.1:5000/{org}/{service}"));
    let deploy = &rec.deploys[0];
    assert_eq!(
        deploy.image,
        format!("127.0.0.1:5000/{org}/{service}@sha256:0123")
    );
    assert_eq!(deploy.env.get("MODE").map(String::as_str), Some("prod"));
    let w = deploy.workload.clone().unwrap();
    assert_eq!(
        (
            w.deployment_id.as_str(),
            w.service_name.as_str(),
            w.organization_id.as_str()
        ),
        (d1.as_str(), "web", org.as_str())
    );
    assert!(matches!(
        deploy.health_check.as_ref().and_then(|h| h.probe.clone()),
        Some(proto::node::v1::health_check::Probe::Http(p)) if p.path == "/healthz" && p.port == 8080
    ));
    // Routed and certified: the platform subdomain only (custom domains join once verified).
    assert_eq!(rec.routes[0].hosts.len(), 1, "{:?}", rec.routes[0].hosts);
    assert_eq!(rec.allowed_domains, vec![rec.routes[0].hosts[0].clone()]);
    let switch = &rec.switches[0];
    assert_eq!(switch.upstreams[0].address, "127.0.0.1:8080");
    assert_eq!(switch.upstreams[0].deployment_id, d1);
    assert_eq!(rec.bad_auth, 0, "the proxy token is sent");

    let d2 = h
        .deploy(&a, &service, json!({ "git_commit": commit }))
        .await;
    assert_eq!(
        h.wait_terminal(&a, &d2, Duration::from_secs(20)).await["state"],
        "ready"
    );
    let rec = daemons.recorded();
    assert_eq!(
        rec.stops,
        [format!("sp-{d1}")],
        "the old container is stopped after the switch"
    );
    assert_eq!(rec.removes, [format!("sp-{d1}")]);

    let d3 = h
        .deploy(&a, &service, json!({ "image": "app:unhealthy" }))
        .await;
    let v3 = h.wait_terminal(&a, &d3, Duration::from_secs(20)).await;
    assert_eq!(v3["state"], "failed");
    assert!(
        v3["failure_reason"]
            .as_str()
            .unwrap()
            .contains("GET /healthz answered 500"),
        "{v3}"
    );
    assert_eq!(
        daemons.recorded().switches.len(),
        2,
        "a failed version is never switched to"
    );
    h.stop().await;
    Ok(())
}

/// The `stackpad-control` binary as a child process, killed (SIGKILL) on drop.
struct Control {
    child: Child,
    url: String,
}

impl Control {
    fn start(config: &std::path::Path) -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stackpad-control"))
            .arg("--config")
            .arg(config)
            // The config file names the test's own database: the environment of
            // `scripts/services env` (DATABASE_URL, ...) must not override it.
            .env_remove("DATABASE_URL")
            .env_remove("STACKPAD_ENCRYPTION_KEY")
            .env_remove("STACKPAD_ADMIN_TOKEN")
            .env_remove("STACKPAD_LISTEN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("stackpad-control listening on ")
            .ok_or_else(|| {
                anyhow::anyhow!("unexpected first line from stackpad-control: {line:?}")
            })?
            .to_owned();
        Ok(Self { child, url })
    }

    fn kill_9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.kill_9();
    }
}

#[tokio::test]
async fn kill_9_mid_deploy_then_restart_finishes_the_deployment() -> anyhow::Result<()> {
    let daemons = Daemons::default();
    *daemons.first_deploy_delay.lock().unwrap() = Duration::from_secs(30);
    let address = daemons.serve(PROXY_TOKEN).await?;
    let db = common::database().await?;
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("control.toml");
    std::fs::write(
        &config_path,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{}\"\nencryption_key = \"{KEY}\"\nadmin_token = \"{ADMIN}\"\n\
             proxy_address = \"{address}\"\nproxy_token = \"{PROXY_TOKEN}\"\nlease_ms = 1000\nworkers = 2\n\
             [[nodes]]\nname = \"n1\"\nrole = \"compute\"\naddress = \"{address}\"\n",
            db.url()
        ),
    )?;
    let http = reqwest::Client::new();
    let mut control = Control::start(&config_path)?;
    let call = |url: String, token: &str, body: Option<serde_json::Value>| {
        let req = match body {
            Some(b) => http.post(url).json(&b),
            None => http.get(url),
        };
        req.bearer_auth(token.to_owned()).send()
    };
    let org: serde_json::Value = call(
        format!("{}/organizations", control.url),
        ADMIN,
        Some(json!({ "name": "acme" })),
    )
    .await?
    .json()
    .await?;
    let token = org["token"]["secret"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("POST /organizations answered {org}"))?
        .to_owned();
    let p: serde_json::Value = call(
        format!("{}/projects", control.url),
        &token,
        Some(json!({ "name": "shop" })),
    )
    .await?
    .json()
    .await?;
    let s: serde_json::Value = call(
        format!(
            "{}/projects/{}/services",
            control.url,
            p["id"].as_str().unwrap()
        ),
        &token,
        Some(json!({ "name": "web", "image": "shop:v1" })),
    )
    .await?
    .json()
    .await?;
    let service = s["id"].as_str().unwrap();
    let d: serde_json::Value = call(
        format!("{}/services/{service}/deployments", control.url),
        &token,
        Some(json!({})),
    )
    .await?
    .json()
    .await?;
    let id = d["id"].as_str().unwrap().to_owned();

    // Wait until the node is asked to start the container (the call hangs), then kill -9.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while daemons.recorded().deploys.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deploy never reached the node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    control.kill_9();

    let control = Control::start(&config_path)?;
    let started = tokio::time::Instant::now();
    let v = loop {
        let v: serde_json::Value = call(format!("{}/deployments/{id}", control.url), &token, None)
            .await?
            .json()
            .await?;
        if matches!(v["state"].as_str(), Some("ready" | "failed")) {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "deployment hangs after restart: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(v["state"], "ready", "{v}");
    assert_eq!(
        phases(&v),
        ["queued", "starting", "switching", "stopping_old", "ready"]
    );
    assert_eq!(v["attempts"], 2);
    let rec = daemons.recorded();
    assert_eq!(
        rec.deploys.len(),
        2,
        "the restarted control plane asked again, for the same deployment"
    );
    assert!(
        rec.deploys
            .iter()
            .all(|d| d.workload.as_ref().unwrap().deployment_id == id)
    );
    assert_eq!(rec.switches.len(), 1);
    drop(control);
    Ok(())
}
