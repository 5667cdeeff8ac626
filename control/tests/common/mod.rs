//! Shared by the control plane's integration tests (and the CLI's): a PostgreSQL database per
//! test (dropped even when the test fails), recording fakes of the three daemons, a running
//! control plane, and the log tables filled as their writers fill them.
#![allow(dead_code, reason = "each test binary uses a different part")]

pub mod fakes;
pub mod grpc_fakes;
pub mod log_rows;

use std::sync::Arc;
use std::time::Duration;

use control::config::Config;
use control::crypto::SecretBox;
use control::daemon::{self, Running};
use control::pipeline::driver::Clients;
use control::store::Store;
use serde_json::{Value, json};
use stackpad_tests::acme::ChallTestSrv;
use stackpad_tests::db::PostgresDb;
use stackpad_tests::{unique_ident, unique_name};

pub const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const ADMIN: &str = "admin-token-for-tests-0123456789";

/// The control plane's database in a test: a PostgreSQL database of the test's own.
pub async fn database() -> anyhow::Result<PostgresDb> {
    PostgresDb::create("control").await
}

/// A store on `db`, opened as the daemon opens it.
pub async fn store(db: &PostgresDb) -> anyhow::Result<Store> {
    Ok(Store::connect(db.url(), SecretBox::from_hex(KEY)?).await?)
}

/// Control's config on `db` with its proxy at `daemons` (the in-process gRPC fakes, served here
/// on loopback with `proxy_token`); returns it and the daemons' address.
pub async fn config_with_daemons(
    db: &PostgresDb,
    daemons: &grpc_fakes::Daemons,
    proxy_token: &str,
) -> anyhow::Result<(Config, String)> {
    let address = daemons.serve(proxy_token).await?;
    let mut config = config(db);
    config.proxy_address = address.clone();
    config.proxy_token = proxy_token.into();
    Ok((config, address))
}

pub fn config(db: &PostgresDb) -> Config {
    Config {
        database_url: db.url().to_owned(),
        encryption_key: KEY.into(),
        admin_token: ADMIN.into(),
        workers: 2,
        lease_ms: 1_000,
        heartbeat_interval_ms: 200,
        node_down_after_ms: 60_000,
        // The volumes' figures on `/metrics` (where a test serves it) follow within a moment.
        volume_metrics_interval_ms: 200,
        // The tests' git services build from local paths (fakes never read them): org-a stands
        // for the operator's demo organization.
        local_sources_organizations: vec!["org-a".into()],
        ..Config::default()
    }
}

/// A control plane on 127.0.0.1:0 with the given clients.
pub struct Harness {
    pub db: PostgresDb,
    pub running: Option<Running>,
    pub url: String,
    pub http: reqwest::Client,
}

impl Harness {
    pub async fn start(clients: Clients) -> anyhow::Result<Self> {
        let db = database().await?;
        Self::start_on(db, clients).await
    }

    pub async fn start_on(db: PostgresDb, clients: Clients) -> anyhow::Result<Self> {
        let config = config(&db);
        Self::start_with(db, &config, clients).await
    }

    /// With the platform's names under an apps domain of the test's own, resolved through
    /// pebble-challtestsrv's DNS (the custom domain tests).
    pub async fn start_for_domains(clients: Clients) -> anyhow::Result<Self> {
        let db = database().await?;
        let mut config = config(&db);
        config.apps_domain = format!("{}.stackpad.test", unique_name("apps"));
        config.dns_resolver = ChallTestSrv::default().dns;
        Self::start_with(db, &config, clients).await
    }

    /// With a config of the test's own (made from [`config`]).
    pub async fn start_with(
        db: PostgresDb,
        config: &Config,
        clients: Clients,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let running = daemon::start(config, listener, clients).await?;
        let url = format!("http://{}", running.address);
        Ok(Self {
            db,
            running: Some(running),
            url,
            http: reqwest::Client::new(),
        })
    }

    pub fn store(&self) -> Store {
        self.running.as_ref().unwrap().store.clone()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        stackpad_tests::rest::Rest::with_client(&self.url, self.http.clone())
            .call(method, path, token, body)
            .await
            .expect("request to the control plane")
    }

    /// Creates an organization; returns (id, token).
    pub async fn org(&self, name: &str) -> (String, String) {
        let (status, v) = self
            .call(
                "POST",
                "/organizations",
                ADMIN,
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        (
            v["organization"]["id"].as_str().unwrap().to_owned(),
            v["token"]["secret"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn register_node(&self, name: &str, role: &str, address: &str) -> String {
        let (status, v) = self
            .call(
                "POST",
                "/nodes",
                ADMIN,
                Some(json!({ "name": name, "role": role, "address": address, "cpu_millis": 4000, "memory_bytes": 8u64 << 30 })),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    /// Project + service; returns (project id, service id).
    pub async fn service(&self, token: &str, body: Value) -> (String, String) {
        let project = unique_ident("p").replace('_', "-");
        let (status, p) = self
            .call("POST", "/projects", token, Some(json!({ "name": project })))
            .await;
        assert_eq!(status, 201, "{p}");
        let pid = p["id"].as_str().unwrap().to_owned();
        let (status, s) = self
            .call(
                "POST",
                &format!("/projects/{pid}/services"),
                token,
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{s}");
        (pid, s["id"].as_str().unwrap().to_owned())
    }

    /// Polls a deployment until it reaches a terminal state (or fails the test after `limit`).
    pub async fn wait_terminal(&self, token: &str, id: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (status, d) = self
                .call("GET", &format!("/deployments/{id}"), token, None)
                .await;
            assert_eq!(status, 200, "{d}");
            if matches!(
                d["state"].as_str(),
                Some("ready" | "failed" | "cancelled" | "superseded")
            ) {
                return d;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "deployment {id} still {d}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn deploy(&self, token: &str, service: &str, body: Value) -> String {
        let (status, d) = self
            .call(
                "POST",
                &format!("/services/{service}/deployments"),
                token,
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{d}");
        d["id"].as_str().unwrap().to_owned()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

pub fn phases(d: &Value) -> Vec<String> {
    d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["phase"].as_str().unwrap().to_owned())
        .collect()
}

pub fn fake_clients(f: &fakes::Fakes) -> Clients {
    Clients {
        builder: Arc::new(f.builder.clone()),
        node: Arc::new(f.node.clone()),
        proxy: Some(Arc::new(f.proxy.clone())),
    }
}

/// A bucket of the test's own on the S3 server `scripts/services` runs (moto, at
/// `STACKPAD_S3_ENDPOINT`), and backup settings that store under `s3://<bucket>/backups` there.
pub struct S3Bucket {
    pub endpoint: String,
    pub name: String,
    pub settings: control::backups::BackupSettings,
}

/// Makes a bucket named after `prefix` (unique per call); fails saying what is missing when the
/// S3 server is not set up.
pub async fn s3_bucket(prefix: &str) -> anyhow::Result<S3Bucket> {
    let endpoint = std::env::var("STACKPAD_S3_ENDPOINT").map_err(|_| {
        anyhow::anyhow!(
            "STACKPAD_S3_ENDPOINT is not set: run `eval \"$(scripts/services env)\"` (scripts/services up starts the S3 server)"
        )
    })?;
    let name = unique_name(prefix).to_lowercase().replace('_', "-");
    let made = reqwest::Client::new()
        .put(format!("{endpoint}/{name}"))
        .send()
        .await?;
    anyhow::ensure!(
        made.status().is_success(),
        "create bucket {name}: {}",
        made.status()
    );
    let settings = control::backups::BackupSettings {
        store: format!("s3://{name}/backups"),
        s3_endpoint: endpoint.clone(),
        s3_access_key_id: "stackpad".into(),
        s3_secret_access_key: "stackpad-secret".into(),
        interval_ms: 0,
        ..control::backups::BackupSettings::default()
    };
    Ok(S3Bucket {
        endpoint,
        name,
        settings,
    })
}
