//! Helpers for the proxy's black-box tests: real backends, the real `stackpad-proxy` binary as
//! a subprocess on free loopback ports, the admin client, raw-socket requests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod backend;
pub mod pebble;
pub mod raw_backend;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use proto::proxy::v1 as pb;
use proto::proxy::v1::proxy_admin_client::ProxyAdminClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use backend::Backend;

/// The admin token of every proxy these tests start (the ACME ones too).
pub const TOKEN: &str = stackpad_tests::acme::ADMIN_TOKEN;

/// A free loopback port (bound and released; the proxy binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `stackpad-proxy serve`, killed and cleaned up on drop.
#[derive(Debug)]
pub struct ProxyProcess {
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
}

impl ProxyProcess {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(stackpad_tests::unique_name("proxy-test"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("token"), TOKEN)?;
        let mut p = Self {
            http: format!("127.0.0.1:{}", free_port()).parse()?,
            admin: format!("127.0.0.1:{}", free_port()).parse()?,
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        p.spawn(true).await?;
        Ok(p)
    }

    fn spawn_child(&self, upgrade: bool) -> anyhow::Result<Child> {
        let d = |f: &str| self.dir.join(f).display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("proxy.log"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_stackpad-proxy"))
            .args([
                "serve",
                "--http",
                &self.http.to_string(),
                "--admin",
                &self.admin.to_string(),
            ])
            .args([
                "--token-file",
                &d("token"),
                "--state-file",
                &d("state.json"),
            ])
            .args([
                "--pid-file",
                &d("pid"),
                "--upgrade-sock",
                &d("upgrade.sock"),
                "--threads",
                "2",
            ])
            .args(&self.extra)
            .args(upgrade.then_some("--upgrade"))
            .env("STACKPAD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning stackpad-proxy")?;
        Ok(child)
    }

    /// Starts the process and waits for both listeners. A port picked free can be taken before
    /// the proxy binds it (another test's listener, or an outgoing connection given it as its
    /// source port, even the readiness probe's own connection to itself): on a fresh start the
    /// proxy gets new ports; on a restart, which keeps its ports, it tries again for up to 5 s
    /// (such a connection is short-lived).
    async fn spawn(&mut self, fresh: bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log_len = self.log().len();
            self.child = Some(self.spawn_child(false)?);
            let err = match self.wait_ready().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let taken = self.log()[log_len..].contains("Address already in use");
            if !taken || Instant::now() > deadline {
                return Err(err);
            }
            if fresh {
                self.http = format!("127.0.0.1:{}", free_port()).parse()?;
                self.admin = format!("127.0.0.1:{}", free_port()).parse()?;
            }
            tracing_free_log(&format!("a port was taken, starting again: {err:#}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Pingora's graceful upgrade: a new process started with `--upgrade` takes the listening
    /// sockets from the old one (SIGQUIT), which then finishes its connections and exits.
    /// Returns when the new process is ready; `Upgraded` tells when the old one was signalled
    /// and when it exited.
    pub async fn graceful_upgrade(&mut self) -> anyhow::Result<Upgraded> {
        let old = self.child.take().context("no running proxy")?;
        let sock = self.dir.join("upgrade.sock");
        let _ = std::fs::remove_file(&sock);
        self.child = Some(self.spawn_child(true)?);
        // The old process hands its sockets over only to a listening upgrade socket: wait for
        // the kernel to list it as listening (a connect would be taken for the hand-over).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !unix_listening(&sock)? {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the new process never listened on {}",
                sock.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (signalled, exited, status) = signal_and_wait(old, "-QUIT").await?;
        tracing_free_log(&format!("old proxy exited with {status}"));
        anyhow::ensure!(status.success(), "the old proxy exited with {status}");
        self.wait_ready().await?;
        Ok(Upgraded { signalled, exited })
    }

    /// Graceful shutdown (SIGTERM); returns when the process has exited, with when it was
    /// signalled and when it exited.
    pub async fn terminate(&mut self) -> anyhow::Result<Upgraded> {
        let child = self.child.take().context("no running proxy")?;
        let (signalled, exited, status) = signal_and_wait(child, "-TERM").await?;
        anyhow::ensure!(status.success(), "the proxy exited with {status}");
        Ok(Upgraded { signalled, exited })
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let http = tokio::net::TcpStream::connect(self.http).await.is_ok();
            let admin = tokio::net::TcpStream::connect(self.admin).await.is_ok();
            if http && admin {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!("stackpad-proxy exited with {status}; log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "stackpad-proxy did not listen on {} and {} within 20 s; log:\n{}",
                    self.http,
                    self.admin,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the process and starts a new one with the same ports and state file.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn(false).await
    }

    pub async fn admin(&self) -> anyhow::Result<Admin> {
        let client = ProxyAdminClient::connect(format!("http://{}", self.admin)).await?;
        Ok(Admin { client })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

/// When a process was told to stop and when it had exited.
#[derive(Debug, Clone, Copy)]
pub struct Upgraded {
    pub signalled: Instant,
    pub exited: Instant,
}

async fn signal_and_wait(
    mut child: Child,
    signal: &str,
) -> anyhow::Result<(Instant, Instant, std::process::ExitStatus)> {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()?;
    let signalled = Instant::now();
    if !status.success() {
        let _ = child.kill();
        let _ = child.wait();
        bail!("kill {signal} failed");
    }
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    Ok((signalled, Instant::now(), status))
}

fn tracing_free_log(msg: &str) {
    eprintln!("{msg}");
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The admin API with the token.
#[derive(Debug, Clone)]
pub struct Admin {
    pub client: ProxyAdminClient<tonic::transport::Channel>,
}

pub fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    req
}

pub fn upstream(b: &Backend) -> pb::Upstream {
    pb::Upstream {
        address: b.addr.to_string(),
        deployment_id: b.name.clone(),
        weight: 1,
    }
}

/// Checks every 20 ms, 2 passes to become healthy, 2 failures to be ejected.
pub fn fast_health() -> pb::HealthCheck {
    pb::HealthCheck {
        path: "/health".into(),
        interval_ms: 20,
        timeout_ms: 500,
        healthy_threshold: 2,
        unhealthy_threshold: 2,
    }
}

impl Admin {
    pub async fn route(
        &mut self,
        id: &str,
        hosts: &[&str],
        prefix: &str,
        service: &str,
    ) -> anyhow::Result<()> {
        let route = pb::Route {
            route_id: id.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            path_prefix: prefix.into(),
            service_id: service.into(),
            max_body_bytes: 0,
            allow_plain_http: true,
            ..Default::default()
        };
        self.client
            .upsert_route(authed(pb::UpsertRouteRequest { route: Some(route) }))
            .await?;
        Ok(())
    }

    pub async fn switch(
        &mut self,
        service: &str,
        to: &[&Backend],
        drain_ms: u32,
    ) -> Result<pb::SwitchResponse, tonic::Status> {
        let req = pb::SwitchRequest {
            service_id: service.into(),
            upstreams: to.iter().map(|b| upstream(b)).collect(),
            drain_deadline_ms: drain_ms,
            skip_health_wait: false,
            health_timeout_ms: 5_000,
            health_check: Some(fast_health()),
            load_balancing: 0,
            route_generation: 0,
        };
        self.client
            .switch(authed(req))
            .await
            .map(|r| r.into_inner())
    }
}

/// Sends raw bytes on a fresh connection and returns everything read until the proxy closes
/// the connection or `wait` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// One GET with a Host header; returns (status, body).
pub async fn get(proxy: &ProxyProcess, host: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let resp = raw(proxy.http, req.as_bytes(), Duration::from_secs(5)).await?;
    let status = resp
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {resp:?}"))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Whether a Unix socket bound at `path` is listening (`__SO_ACCEPTCON` in /proc/net/unix).
fn unix_listening(path: &Path) -> anyhow::Result<bool> {
    const ACCEPTCON: u32 = 0x0001_0000;
    let table = std::fs::read_to_string("/proc/net/unix")?;
    let path = path.to_string_lossy();
    Ok(table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8
            && fields[7] == path
            && u32::from_str_radix(fields[3], 16).is_ok_and(|flags| flags & ACCEPTCON != 0)
    }))
}
