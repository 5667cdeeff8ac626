//! The tenant boundary (#13) through the real daemons: a real `stackpad-control` (own database)
//! with a real `stackpad-buildd` as its build node, driven over HTTP as a tenant with an ordinary
//! organization token would. Every vector is refused with a 4xx naming the field, nothing is
//! stored, no injected command ran (a canary file it would create does not exist) and no
//! connection reached a listener the test owns on loopback, even when a name resolved to a
//! public-looking address at create time and to loopback at fetch time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use stackpad_tests::acme::{ARecordGuard, ChallTestSrv, cargo_binary, free_port};
use stackpad_tests::daemon::Daemon;
use stackpad_tests::db::PostgresDb;
use stackpad_tests::rest::Rest;
use stackpad_tests::unique_name;

/// A loopback listener owned by the test that counts every connection it gets.
struct Tripwire {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Tripwire {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((_socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        Ok(Self { addr, hits })
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// stackpad-control + stackpad-buildd, each in a directory and on ports of the test's own.
struct Platform {
    rest: Rest,
    admin_token: String,
    buildd_addr: String,
    _control: Daemon,
    _buildd: Daemon,
    _db: PostgresDb,
    _dir: tempfile::TempDir,
}

impl Platform {
    async fn start() -> anyhow::Result<Self> {
        let control_bin = cargo_binary("stackpad-control", "stackpad-control")?;
        let buildd_bin = cargo_binary("stackpad-buildd", "stackpad-buildd")?;
        let dir = tempfile::Builder::new()
            .prefix("tenant-boundary-")
            .tempdir()?;
        let db = PostgresDb::create("tenant_boundary").await?;
        let dns = ChallTestSrv::default().dns;

        let buildd_addr = format!("127.0.0.1:{}", free_port());
        let buildd_toml = format!(
            "listen = \"{buildd_addr}\"\nmetrics_listen = \"127.0.0.1:{}\"\n\
             work_dir = \"{}\"\ndns_resolver = \"{dns}\"\n",
            free_port(),
            dir.path().join("buildd-work").display(),
        );
        std::fs::write(dir.path().join("buildd.toml"), buildd_toml)?;
        let mut buildd = Daemon::spawn(
            "stackpad-buildd",
            &buildd_bin,
            &["--config", "buildd.toml"],
            dir.path(),
        )?;
        buildd
            .wait_for_tcp(&buildd_addr, Duration::from_secs(20))
            .await?;

        let api_addr = format!("127.0.0.1:{}", free_port());
        let admin_token = unique_name("operator-token");
        let key: String = (0..64)
            .map(|i| char::from(b"0123456789abcdef"[(i * 7 + 3) % 16]))
            .collect();
        // 192.0.2.0/24 (documentation) is opened for control only, so a name can pass the
        // create-time check without any public address being involved; buildd keeps the default
        // policy and must refuse at fetch time.
        let control_toml = format!(
            "listen = \"{api_addr}\"\ndatabase_url = \"{}\"\nencryption_key = \"{key}\"\n\
             admin_token = \"{admin_token}\"\nproxy_address = \"\"\napps_domain = \"tenant.localhost\"\n\
             dns_resolver = \"{dns}\"\negress_allow = [\"192.0.2.0/24\"]\n\
             heartbeat_interval_ms = 200\nnode_down_after_ms = 5000\nbuild_timeout_s = 60\n\
             [[nodes]]\nname = \"build-1\"\nrole = \"build\"\naddress = \"http://{buildd_addr}\"\n",
            db.url()
        );
        std::fs::write(dir.path().join("control.toml"), control_toml)?;
        let mut control = Daemon::spawn(
            "stackpad-control",
            &control_bin,
            &["--config", "control.toml"],
            dir.path(),
        )?;
        control
            .wait_for_tcp(&api_addr, Duration::from_secs(30))
            .await?;
        Ok(Self {
            rest: Rest::new(&format!("http://{api_addr}")),
            admin_token,
            buildd_addr,
            _control: control,
            _buildd: buildd,
            _db: db,
            _dir: dir,
        })
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        self.rest.call(method, path, token, body).await
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Value)> {
        self.rest.raw(method, path, token, body).await
    }

    /// An organization of its own and its first (owner) token.
    async fn organization(&self, name: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .call(
                "POST",
                "/organizations",
                &self.admin_token,
                Some(json!({ "name": name })),
            )
            .await?;
        if status != 201 {
            bail!("creating organization {name}: {status} {body}");
        }
        body["token"]["secret"]
            .as_str()
            .map(str::to_owned)
            .context("no token secret in the answer")
    }
}

/// The answer is the JSON error shape with `status` and the named `field`.
fn assert_refused(what: &str, (status, body): &(u16, Value), want_status: u16, field: &str) {
    assert_eq!(*status, want_status, "{what}: {body}");
    assert_eq!(
        body["error"]["status"],
        json!(want_status),
        "{what}: {body}"
    );
    assert_eq!(body["error"]["field"], json!(field), "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.len() < 1000,
        "{what}: the message echoes too much ({} bytes)",
        message.len()
    );
}

fn canary_path(dir: &std::path::Path) -> PathBuf {
    dir.join("canary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_reach_a_shell_option_a_host_file_or_a_private_address()
-> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let trip = Tripwire::start().await?;
    let canary_dir = tempfile::Builder::new()
        .prefix("tenant-canary-")
        .tempdir()?;
    let canary = canary_path(canary_dir.path());
    let token = platform.organization(&unique_name("tenant")).await?;

    let (status, project) = platform
        .call("POST", "/projects", &token, Some(json!({ "name": "shop" })))
        .await?;
    assert_eq!(status, 201, "{project}");
    let project_id = project["id"].as_str().context("project id")?.to_owned();
    let services = format!("/projects/{project_id}/services");
    let git_service = |url: &str| json!({ "name": "web", "git": { "url": url }, "port": 8080 });

    // Sources: host files, plain http, other schemes, private and loopback addresses.
    let port = trip.addr.port();
    let loopback_name = format!("{}.tenant.stackpad.test", unique_name("loop"));
    for url in [
        "file:///var/lib/stackpad/platform/demo/hello".to_owned(),
        "/var/lib/stackpad/platform/demo/hello".to_owned(),
        format!("file://{}", canary_dir.path().display()),
        format!("http://127.0.0.1:{port}/repo.git"),
        format!("https://127.0.0.1:{port}/repo.git"),
        format!("https://[::1]:{port}/repo.git"),
        "https://10.0.0.1/repo.git".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://[::ffff:169.254.169.254]/x".to_owned(),
        format!("https://{loopback_name}:{port}/repo.git"),
        format!("ext::sh -c touch% {}", canary.display()),
        format!("--upload-pack=touch {}", canary.display()),
    ] {
        let answer = platform
            .call("POST", &services, &token, Some(git_service(&url)))
            .await?;
        assert_refused(&format!("source {url}"), &answer, 422, "git.url");
    }

    // Every other field that reaches a command line, a host path or the proxy's health request.
    let cases = [
        (
            json!({ "name": "web", "image": "--help", "port": 8080 }),
            "image",
        ),
        // Another organization's build in the platform registry, and registries on private
        // or metadata addresses the compute node would be made to call.
        (
            json!({ "name": "web", "image": format!("127.0.0.1:5000/{}/web:1", uuid::Uuid::new_v4()), "port": 8080 }),
            "image",
        ),
        (
            json!({ "name": "web", "image": "10.0.0.1:5000/a/b:1", "port": 8080 }),
            "image",
        ),
        (
            json!({ "name": "web", "image": "169.254.169.254:80/a/b:1", "port": 8080 }),
            "image",
        ),
        (
            json!({ "name": "web", "git": { "url": "https://git.example.com/a/b.git", "subdirectory": "../../etc" }, "port": 8080 }),
            "git.subdirectory",
        ),
        (
            json!({ "name": "web", "image": "app:1", "port": 8080, "health_check": { "path": "/h\r\nHost: evil" } }),
            "health_check.path",
        ),
        (
            json!({ "name": "web", "image": "app:1", "port": 8080, "resources": { "cpu_millis": 4e9 } }),
            "resources.cpu_millis",
        ),
        (
            json!({ "name": "web", "image": "app:1", "port": 8080, "resources": { "memory_bytes": 1 } }),
            "resources.memory_bytes",
        ),
        (
            json!({ "name": "web\u{0}x", "image": "app:1", "port": 8080 }),
            "name",
        ),
        (
            json!({ "name": "web", "image": "app:1", "port": 8080, "build": { "timeout_seconds": 100_000_000 } }),
            "build.timeout_seconds",
        ),
    ];
    for (body, field) in cases {
        let answer = platform
            .call("POST", &services, &token, Some(body.clone()))
            .await?;
        assert_refused(&format!("{body}"), &answer, 422, field);
    }
    let huge_name = "x".repeat(1_000_000);
    let answer = platform
        .call(
            "POST",
            &services,
            &token,
            Some(json!({ "name": huge_name, "image": "app:1" })),
        )
        .await?;
    assert_refused("a 1 MB name", &answer, 422, "name");
    let (status, body) = platform
        .raw("POST", &services, &token, vec![b' '; 20 << 20])
        .await?;
    assert_eq!(status, 413, "a 20 MiB body: {body}");
    assert_eq!(body["error"]["status"], json!(413), "{body}");
    let (status, body) = platform
        .call("GET", "/services/not-a-uuid", &token, None)
        .await?;
    assert!(
        status == 400 || status == 422,
        "a bad path value: {status} {body}"
    );
    assert_eq!(body["error"]["field"], json!("id"), "{body}");

    // Roles: a read-only token reads and changes nothing; a deployer deploys but mints no token.
    let mint = |role: &str| json!({ "name": format!("{role}-token"), "role": role });
    let (status, read_only) = platform
        .call("POST", "/tokens", &token, Some(mint("read_only")))
        .await?;
    assert_eq!(status, 201, "{read_only}");
    let read_only = read_only["secret"]
        .as_str()
        .context("read-only secret")?
        .to_owned();
    let (status, deployer) = platform
        .call("POST", "/tokens", &token, Some(mint("deployer")))
        .await?;
    assert_eq!(status, 201, "{deployer}");
    let deployer = deployer["secret"]
        .as_str()
        .context("deployer secret")?
        .to_owned();
    let (status, _) = platform.call("GET", &services, &read_only, None).await?;
    assert_eq!(status, 200, "a read-only token reads");
    let image_service = json!({ "name": "web", "image": "app:1", "port": 8080 });
    let (status, body) = platform
        .call("POST", &services, &read_only, Some(image_service.clone()))
        .await?;
    assert_eq!(status, 403, "a read-only token created a service: {body}");
    let (status, body) = platform
        .call("POST", "/tokens", &deployer, Some(mint("owner")))
        .await?;
    assert_eq!(status, 403, "a deployer minted a token: {body}");
    let (status, body) = platform
        .call(
            "POST",
            "/members",
            &deployer,
            Some(json!({ "email": "eve@example.com", "role": "owner" })),
        )
        .await?;
    assert_eq!(status, 403, "a deployer added an owner: {body}");

    // Nothing of the above was stored.
    let (status, listed) = platform.call("GET", &services, &token, None).await?;
    assert_eq!(status, 200, "{listed}");
    let count = listed["items"]
        .as_array()
        .or(listed.as_array())
        .map_or(0, Vec::len);
    assert_eq!(count, 0, "refused services were stored: {listed}");

    // A service whose host passes the create-time check (it resolves to 192.0.2.10, opened for
    // control only) and resolves to the test's loopback listener by the time buildd fetches.
    let rebind = format!("{}.tenant.stackpad.test", unique_name("rebind"));
    let record = ARecordGuard::set(&rebind, &["192.0.2.10"]).await?;
    // Webhook secrets anyone could guess.
    for secret in ["", "short"] {
        let mut body = git_service(&format!("https://{rebind}:{port}/shop.git"));
        body["webhook_secret"] = json!(secret);
        let answer = platform.call("POST", &services, &token, Some(body)).await?;
        assert_refused(
            &format!("webhook secret {secret:?}"),
            &answer,
            422,
            "webhook_secret",
        );
    }

    let (status, service) = platform
        .call(
            "POST",
            &services,
            &token,
            Some(git_service(&format!("https://{rebind}:{port}/shop.git"))),
        )
        .await?;
    assert_eq!(status, 201, "{service}");
    let service_id = service["id"].as_str().context("service id")?.to_owned();
    let deployments = format!("/services/{service_id}/deployments");

    // Refs and commits that would be options, climb, or are abbreviations.
    for (body, field) in [
        (
            json!({ "git_ref": format!("--upload-pack=touch {}", canary.display()) }),
            "git_ref",
        ),
        (json!({ "git_ref": "-x" }), "git_ref"),
        (json!({ "git_ref": "main..HEAD" }), "git_ref"),
        (json!({ "git_ref": "main\nx" }), "git_ref"),
        (json!({ "git_commit": "abc1234" }), "git_commit"),
        (json!({ "git_commit": "--all" }), "git_commit"),
    ] {
        let answer = platform
            .call("POST", &deployments, &token, Some(body.clone()))
            .await?;
        assert_refused(&format!("{body}"), &answer, 422, field);
    }
    let answer = platform
        .call(
            "POST",
            &format!("/projects/{project_id}/environments"),
            &token,
            Some(json!({ "name": "staging", "branch": "--upload-pack=x" })),
        )
        .await?;
    assert_refused("an option-looking branch", &answer, 422, "branch");

    // Rebind: the name now answers the loopback listener's address.
    drop(record);
    let _record = ARecordGuard::set(&rebind, &["127.0.0.1"]).await?;
    let (status, deployment) = platform
        .call(
            "POST",
            &deployments,
            &token,
            Some(json!({ "git_ref": "main" })),
        )
        .await?;
    assert_eq!(status, 201, "{deployment}");
    let id = deployment["id"].as_str().context("deployment id")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let (_, d) = platform
            .call("GET", &format!("/deployments/{id}"), &token, None)
            .await?;
        match d["state"].as_str() {
            Some("failed") => break d,
            Some("ready") => bail!("a deployment from a loopback host became ready: {d}"),
            _ if Instant::now() > deadline => bail!("the deployment did not fail within 60 s: {d}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let reason = failed["failure_reason"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        reason.contains("refused") && reason.contains("loopback"),
        "the reason says what was refused: {failed}"
    );
    for leak in [
        "connection refused",
        "connect to",
        "couldn't connect",
        "timed out",
        "port",
    ] {
        assert!(
            !reason.contains(leak),
            "the reason tells what was found on the network ({leak:?}): {failed}"
        );
    }

    assert!(
        !canary.exists(),
        "an injected command ran: {} exists",
        canary.display()
    );
    assert_eq!(
        trip.hits(),
        0,
        "a connection reached the test's loopback listener"
    );
    let _ = &platform.buildd_addr;
    Ok(())
}
