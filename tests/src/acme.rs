//! Pebble, pebble-challtestsrv and the real `stackpad-proxy` with ACME, for the certificate
//! tests of the proxy and the custom-domain tests of the control plane (feature `acme`): the
//! proxy on a certificate store in a [`PostgresDb`] of the test's own, the lock on Pebble's
//! http-01 port, TLS clients trusting Pebble's current root, challtestsrv's mock DNS records, and the
//! proxy binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::db::PostgresDb;
use crate::{service_down, unique_name, var};

/// The port Pebble validates http-01 on (its `httpPort` in scripts/services).
pub const HTTP01_PORT: u16 = 5002;

/// Key sealing the private keys in the proxy's certificate store.
pub const STORE_KEY: &str = "5a5b5c5d5e5f606162636465666768696a6b6c6d6e6f70717273747576777879";

/// The proxy's admin bearer token in these tests.
pub const ADMIN_TOKEN: &str = "test-token-0123456789abcdef";

pub fn listener_ca() -> String {
    var(
        "PEBBLE_LISTENER_CA",
        "/var/lib/stackpad/services/pebble/config/listener-ca.pem",
    )
}

pub fn directory_url() -> String {
    var("PEBBLE_DIRECTORY", "https://127.0.0.1:14000/dir")
}

/// Holds Pebble's http-01 port for one test at a time, across test binaries.
pub async fn lock_http01_port() -> anyhow::Result<std::fs::File> {
    let lock = std::fs::File::create("/tmp/stackpad-pebble-http01.lock")?;
    Ok(tokio::task::spawn_blocking(move || lock.lock().map(|()| lock)).await??)
}

/// Pebble's current root (it changes at every Pebble start).
pub async fn pebble_roots() -> anyhow::Result<rustls::RootCertStore> {
    let management = var("PEBBLE_MANAGEMENT", "https://127.0.0.1:15000");
    let ca = std::fs::read(listener_ca()).map_err(|e| service_down("Pebble", &listener_ca(), e))?;
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .build()?;
    let root_pem = http
        .get(format!("{management}/roots/0"))
        .send()
        .await
        .map_err(|e| service_down("Pebble's management API", &management, e))?
        .error_for_status()?
        .text()
        .await?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut root_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    Ok(roots)
}

/// A TLS client that verifies servers against Pebble's current root.
pub async fn pebble_client() -> anyhow::Result<tokio_rustls::TlsConnector> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(pebble_roots().await?)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// `GET /` over TLS to `addr` with SNI and Host `name`, verified by `connector`; the response.
pub async fn https_get(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> anyhow::Result<String> {
    let socket = tokio::net::TcpStream::connect(addr).await?;
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())?;
    let mut tls = tokio::time::timeout(
        Duration::from_secs(5),
        connector.connect(server_name, socket),
    )
    .await
    .context("TLS handshake timed out")??;
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut response))
        .await
        .context("HTTPS response timed out")??;
    Ok(response)
}

/// pebble-challtestsrv's mock DNS (the nameserver Pebble resolves through).
#[derive(Debug, Clone)]
pub struct ChallTestSrv {
    pub management_url: String,
    /// Its DNS listener, `ip:port`.
    pub dns: String,
    http: reqwest::Client,
}

impl Default for ChallTestSrv {
    fn default() -> Self {
        Self {
            management_url: var("CHALLTESTSRV_URL", "http://127.0.0.1:8055"),
            dns: var("CHALLTESTSRV_DNS", "127.0.0.1:8053"),
            http: reqwest::Client::new(),
        }
    }
}

impl ChallTestSrv {
    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.management_url.trim_end_matches('/'));
        self.http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| service_down("pebble-challtestsrv", &url, e))?
            .error_for_status()?;
        Ok(())
    }

    /// `host CNAME target`.
    pub async fn set_cname(&self, host: &str, target: &str) -> anyhow::Result<()> {
        self.post(
            "/set-cname",
            serde_json::json!({ "host": host, "target": target }),
        )
        .await
    }

    pub async fn clear_cname(&self, host: &str) -> anyhow::Result<()> {
        self.post("/clear-cname", serde_json::json!({ "host": host }))
            .await
    }

    /// `host A addresses` (replacing the default answer, 127.0.0.1, for that name).
    pub async fn set_a(&self, host: &str, addresses: &[&str]) -> anyhow::Result<()> {
        self.post(
            "/add-a",
            serde_json::json!({ "host": host, "addresses": addresses }),
        )
        .await
    }

    pub async fn clear_a(&self, host: &str) -> anyhow::Result<()> {
        self.post("/clear-a", serde_json::json!({ "host": host }))
            .await
    }
}

/// Clears `host`'s CNAME from challtestsrv when dropped, however the test ends.
#[derive(Debug)]
pub struct CnameGuard {
    pub host: String,
}

impl Drop for CnameGuard {
    fn drop(&mut self) {
        let host = self.host.clone();
        on_own_runtime(async move { ChallTestSrv::default().clear_cname(&host).await });
    }
}

/// `host A addresses` in challtestsrv, cleared when dropped, however the test ends.
#[derive(Debug)]
pub struct ARecordGuard {
    pub host: String,
}

impl ARecordGuard {
    pub async fn set(host: &str, addresses: &[&str]) -> anyhow::Result<Self> {
        ChallTestSrv::default().set_a(host, addresses).await?;
        Ok(Self {
            host: host.to_owned(),
        })
    }
}

impl Drop for ARecordGuard {
    fn drop(&mut self) {
        let host = self.host.clone();
        on_own_runtime(async move { ChallTestSrv::default().clear_a(&host).await });
    }
}

/// Runs `work` to its end on a runtime and thread of its own: a guard's drop may be blocking
/// the test's runtime, and the test's clients are bound to it.
fn on_own_runtime(work: impl Future<Output = anyhow::Result<()>> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(work)
    })
    .join();
}

/// A free loopback port (bound and released; the daemon binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("binding a free loopback port")
        .local_addr()
        .expect("local address")
        .port()
}

/// `stackpad-proxy serve` with an `acme` section, killed on drop.
#[derive(Debug)]
pub struct AcmeProxy {
    binary: PathBuf,
    pub dir: PathBuf,
    /// The plain listener's port: Pebble's http-01 port unless the test says otherwise.
    pub http: u16,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    /// This instance's name in order leases and how long its leases last.
    pub instance: String,
    pub lease_ttl_secs: u64,
    child: Option<Child>,
}

impl AcmeProxy {
    /// On Pebble's http-01 port (hold [`lock_http01_port`]).
    pub async fn start(
        binary: &Path,
        db: &PostgresDb,
        directory_url: &str,
    ) -> anyhow::Result<Self> {
        Self::start_as(binary, db, directory_url, HTTP01_PORT, "", 30).await
    }

    pub async fn start_as(
        binary: &Path,
        db: &PostgresDb,
        directory_url: &str,
        http: u16,
        instance: &str,
        lease_ttl_secs: u64,
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique_name("acme-proxy"));
        std::fs::create_dir_all(&dir)?;
        let mut proxy = Self {
            binary: binary.to_owned(),
            http,
            https: format!("127.0.0.1:{}", free_port()).parse()?,
            admin: format!("127.0.0.1:{}", free_port()).parse()?,
            instance: instance.to_owned(),
            lease_ttl_secs,
            child: None,
            dir,
        };
        proxy.spawn(db, directory_url).await?;
        Ok(proxy)
    }

    /// Starts the process (again, after [`AcmeProxy::kill`]) with the same ports and files.
    pub async fn spawn(&mut self, db: &PostgresDb, directory_url: &str) -> anyhow::Result<()> {
        let d = |f: &str| self.dir.join(f).display().to_string();
        std::fs::write(self.dir.join("token"), ADMIN_TOKEN)?;
        let key = rcgen::KeyPair::generate()?;
        let default =
            rcgen::CertificateParams::new(vec!["default.invalid".into()])?.self_signed(&key)?;
        std::fs::write(self.dir.join("default.pem"), default.pem())?;
        std::fs::write(self.dir.join("default.key"), key.serialize_pem())?;
        let config = serde_json::json!({
            "http_listen": format!("127.0.0.1:{}", self.http),
            "tls_listen": self.https.to_string(),
            "tls_cert_file": d("default.pem"),
            "tls_key_file": d("default.key"),
            "admin_listen": self.admin.to_string(),
            "admin_token_file": d("token"),
            "state_file": d("state.json"),
            "pid_file": d("pid"),
            "upgrade_sock": d("upgrade.sock"),
            "threads": 2,
            "acme": {
                "database_url": db.url(),
                "store_key": STORE_KEY,
                "directory_url": directory_url,
                "ca_roots_file": listener_ca(),
                "interval_secs": 1,
                "instance": self.instance,
                "lease_ttl_secs": self.lease_ttl_secs,
            }
        });
        std::fs::write(
            self.dir.join("proxy.json"),
            serde_json::to_vec_pretty(&config)?,
        )?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("proxy.log"))?;
        // The previous holder of Pebble's port may still be closing it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new(&self.binary)
                .args(["serve", "--config", &d("proxy.json")])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log.try_clone()?)
                .spawn()
                .with_context(|| format!("spawning {}", self.binary.display()))?;
            let ready = Instant::now() + Duration::from_secs(10);
            while Instant::now() < ready {
                if child.try_wait()?.is_some() {
                    break;
                }
                let http = tokio::net::TcpStream::connect(("127.0.0.1", self.http))
                    .await
                    .is_ok();
                let admin = tokio::net::TcpStream::connect(self.admin).await.is_ok();
                if http && admin {
                    self.child = Some(child);
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
            if Instant::now() > deadline {
                bail!("stackpad-proxy did not start; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Polls until HTTPS for `name` verifies against Pebble's root and answers.
    pub async fn wait_for_https(&self, name: &str, within: Duration) -> anyhow::Result<String> {
        let connector = pebble_client().await?;
        let deadline = Instant::now() + within;
        loop {
            match https_get(&connector, self.https, name).await {
                Ok(response) => return Ok(response),
                Err(error) if Instant::now() > deadline => {
                    bail!(
                        "no verified HTTPS for {name} after {within:?}: {error:#}\nproxy log:\n{}",
                        self.log()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Drop for AcmeProxy {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `stackpad-proxy` binary for tests outside the proxy crate (which get theirs from
/// `CARGO_BIN_EXE_stackpad-proxy`): built (or found up to date) by `cargo build`.
pub fn proxy_binary() -> anyhow::Result<PathBuf> {
    cargo_binary("stackpad-proxy", "stackpad-proxy")
}

/// Builds `bin` of workspace package `package` with the cargo running the tests; its path.
pub fn cargo_binary(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    Ok(cargo_binaries(&[(package, bin)])?.remove(0))
}

/// The executables of several `(package, bin)` of the workspace, in order.
///
/// `scripts/test` builds every test and binary in one `cargo test --no-run` and names the
/// directory in `STACKPAD_TEST_BINARIES`: they are taken from there. Otherwise they are built
/// here by one `cargo build --workspace --bins`, whatever was asked: one feature resolution for
/// every caller, so the next call (another test binary, another set) finds them fresh. Building
/// only the packages asked would resolve dependency features per set and rebuild them each time.
pub fn cargo_binaries(wanted: &[(&str, &str)]) -> anyhow::Result<Vec<PathBuf>> {
    if let Some(dir) = std::env::var_os("STACKPAD_TEST_BINARIES") {
        return wanted
            .iter()
            .map(|(package, bin)| {
                let path = PathBuf::from(&dir).join(bin);
                anyhow::ensure!(
                    path.is_file(),
                    "{} is missing: STACKPAD_TEST_BINARIES names where `cargo test --no-run` put \
                     the binaries of package {package}; unset it to have them built here",
                    path.display()
                );
                Ok(path)
            })
            .collect();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(&cargo);
    command.args([
        "build",
        "--quiet",
        "--message-format=json",
        "--workspace",
        "--bins",
    ]);
    let output = command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cargo} build --workspace --bins"))?;
    if !output.status.success() {
        bail!("cargo build --workspace --bins (for {wanted:?}) failed");
    }
    let mut found = vec![None; wanted.len()];
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(path) = message["executable"].as_str() else {
            continue;
        };
        for (i, (_, bin)) in wanted.iter().enumerate() {
            if message["target"]["name"] == *bin {
                found[i] = Some(PathBuf::from(path));
            }
        }
    }
    found
        .into_iter()
        .zip(wanted)
        .map(|(path, (package, bin))| {
            path.with_context(|| format!("cargo build -p {package} named no executable {bin}"))
        })
        .collect()
}
