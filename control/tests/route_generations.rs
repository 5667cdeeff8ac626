//! Route generations end to end (#16, the race noted on #4): the control plane (real
//! PostgreSQL, its pipeline and teardown) pushing to the real `stackpad-proxy`. Every push takes
//! a fresh number from the one `route_generations` sequence before it reads the route, so a push
//! read before a newer deploy (a slow domain verifier's, a deploy that lost the race) is refused
//! by the proxy when it arrives late, and the route keeps the newer deploy's upstream; after a
//! teardown, such a push cannot bring the route back.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use async_trait::async_trait;
use common::{Harness, fakes::Fakes};
use control::clients::grpc::GrpcProxy;
use control::clients::*;
use control::domains::route::route_push;
use control::pipeline::driver::Clients;
use proto::proxy::v1 as pb;
use proto::proxy::v1::proxy_admin_client::ProxyAdminClient;
use serde_json::json;
use stackpad_tests::acme::{self, free_port};
use stackpad_tests::unique_name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const TOKEN: &str = "route-generations-admin-token-0123";

/// A node agent whose containers are whichever loopback backend the test names now.
struct LoopbackNode {
    backend: Arc<Mutex<SocketAddr>>,
}

#[async_trait]
impl NodeClient for LoopbackNode {
    async fn deploy(&self, _: &str, s: &ContainerSpec) -> Result<ContainerOutcome, ClientError> {
        Ok(ContainerOutcome::Healthy {
            container_id: format!("c-{}", s.workload.deployment_id),
            address: self.backend.lock().unwrap().to_string(),
        })
    }
    async fn remove_deployment(&self, _: &str, _: &str, _: u32) -> Result<(), ClientError> {
        Ok(())
    }
    async fn remove_volumes(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), ClientError> {
        Ok(())
    }
    async fn info(&self, _: &str) -> Result<NodeCapacity, ClientError> {
        Ok(NodeCapacity {
            cpu_millis_total: 4000,
            memory_bytes_total: 8 << 30,
        })
    }
}

/// An HTTP/1.1 server on loopback answering every request with `body`.
async fn backend(body: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}

/// `stackpad-proxy serve` on plain HTTP (no TLS, no ACME), killed and its files removed on drop.
struct PlainProxy {
    dir: std::path::PathBuf,
    http: SocketAddr,
    admin: SocketAddr,
    child: Child,
}

impl PlainProxy {
    async fn start(binary: &Path) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique_name("generations-proxy"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("token"), TOKEN)?;
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let d = |f: &str| dir.join(f).display().to_string();
        let log = std::fs::File::create(dir.join("proxy.log"))?;
        let child = Command::new(binary)
            .args([
                "serve",
                "--http",
                &http.to_string(),
                "--admin",
                &admin.to_string(),
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
            ])
            .args(["--threads", "1", "--no-access-log"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let mut proxy = Self {
            dir,
            http,
            admin,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = proxy.child.try_wait()? {
                bail!("stackpad-proxy exited ({status}); log:\n{}", proxy.log());
            }
            let up = tokio::net::TcpStream::connect(http).await.is_ok()
                && tokio::net::TcpStream::connect(admin).await.is_ok();
            if up {
                return Ok(proxy);
            }
            if Instant::now() > deadline {
                bail!(
                    "stackpad-proxy did not listen in 10 s; log:\n{}",
                    proxy.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    /// One request for `host`: the body of the answer.
    async fn get(&self, host: &str) -> anyhow::Result<String> {
        let mut socket = tokio::net::TcpStream::connect(self.http).await?;
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        socket.read_to_string(&mut response).await?;
        ensure!(response.starts_with("HTTP/1.1 200"), "{response}");
        Ok(response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default())
    }

    async fn routes(&self) -> anyhow::Result<pb::ListRoutesResponse> {
        let mut admin = ProxyAdminClient::connect(format!("http://{}", self.admin)).await?;
        let mut req = tonic::Request::new(pb::ListRoutesRequest {});
        req.metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse()?);
        Ok(admin.list_routes(req).await?.into_inner())
    }
}

impl Drop for PlainProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_push_read_before_a_newer_deploy_is_refused_and_cannot_undo_a_teardown()
-> anyhow::Result<()> {
    let binary = acme::proxy_binary()?;
    let proxy = PlainProxy::start(&binary).await?;
    let first = backend("first deploy").await?;
    let second = backend("second deploy").await?;

    let db = common::database().await?;
    let mut config = common::config(&db);
    config.apps_domain = format!("{}.stackpad.test", unique_name("apps"));
    config.proxy_address = format!("http://{}", proxy.admin);
    config.proxy_token = TOKEN.into();
    let serving = Arc::new(Mutex::new(first));
    let grpc = Arc::new(GrpcProxy::new(&config.proxy_address, &config.proxy_token));
    let fakes = Fakes::new();
    let clients = Clients {
        builder: Arc::new(fakes.builder.clone()),
        node: Arc::new(LoopbackNode {
            backend: serving.clone(),
        }),
        proxy: Some(grpc.clone()),
    };
    let h = Harness::start_with(db, &config, clients).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (org, token) = h.org("org-generations").await;
    let (_, service) = h
        .service(&token, json!({ "name": "web", "image": "app:1" }))
        .await;
    let deployment = h.deploy(&token, &service, json!({})).await;
    let d = h
        .wait_terminal(&token, &deployment, Duration::from_secs(30))
        .await;
    ensure!(d["state"] == "ready", "{d}");
    let (_, s) = h
        .call("GET", &format!("/services/{service}"), &token, None)
        .await;
    let host = s["hosts"][0]
        .as_str()
        .context("no platform host")?
        .to_owned();
    ensure!(proxy.get(&host).await? == "first deploy");

    // A push read now (what the domain verifier does) that stays on its way...
    let store = h.store();
    let (org, service_id) = (Uuid::parse_str(&org)?, Uuid::parse_str(&service)?);
    let row = store.service(org, service_id).await?;
    let stale = route_push(&store, org, &row, &config.apps_domain).await?;
    ensure!(stale.generation > 0, "{stale:?}");

    // ...while a newer deploy goes through.
    *serving.lock().unwrap() = second;
    let deployment = h.deploy(&token, &service, json!({})).await;
    let d = h
        .wait_terminal(&token, &deployment, Duration::from_secs(30))
        .await;
    ensure!(d["state"] == "ready", "{d}");
    ensure!(proxy.get(&host).await? == "second deploy");
    let held = proxy.routes().await?;
    let route_generation = held.routes[0].generation;
    let switch_generation = held.services[0].route_generation;
    ensure!(
        route_generation > stale.generation && switch_generation > stale.generation,
        "the newer deploy's pushes carry older generations than a push read before it: {held:?}"
    );

    // The late push arrives: the proxy keeps the newer route...
    grpc.upsert_route(&stale).await?;
    let after = proxy.routes().await?;
    ensure!(after.routes[0].generation == route_generation, "{after:?}");
    // ...and a switch of that age (a deploy that lost the race) is refused, naming why, with
    // traffic still on the newer deploy.
    let outcome = grpc
        .switch(&SwitchSpec {
            service_id: service.clone(),
            deployment_id: "lost-the-race".into(),
            addresses: vec![first.to_string()],
            health_path: None,
            health_interval_ms: 100,
            drain_deadline_ms: 1_000,
            health_timeout_ms: 5_000,
            route_generation: stale.generation,
        })
        .await?;
    let SwitchOutcome::Refused { reason } = outcome else {
        bail!("a switch older than the newest applied went through");
    };
    ensure!(reason.contains("superseded"), "{reason}");
    ensure!(proxy.get(&host).await? == "second deploy");
    ensure!(proxy.routes().await?.services[0].route_generation == switch_generation);

    // Deleted: the teardown's removal carries its generation, so the late push cannot bring the
    // route back.
    let (status, v) = h
        .call("DELETE", &format!("/services/{service}"), &token, None)
        .await;
    ensure!((200..300).contains(&status), "{status} {v}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !proxy.routes().await?.routes.is_empty() {
        ensure!(
            Instant::now() < deadline,
            "the route is still at the proxy 15 s after its service was deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    grpc.upsert_route(&stale).await?;
    let after = proxy.routes().await?;
    ensure!(
        after.routes.is_empty(),
        "a late push brought back a deleted route: {after:?}"
    );
    Ok(())
}
