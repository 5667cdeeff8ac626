//! Custom domains end to end, against real services: the control plane (real PostgreSQL,
//! resolving through pebble-challtestsrv's DNS), the real `stackpad-proxy` with ACME against
//! real Pebble, and a real HTTP backend. No record -> verification fails naming the record
//! expected; the CNAME added in challtestsrv -> verified -> the proxy is allowed the domain,
//! Pebble issues its certificate, HTTPS with the domain's SNI verifies and reaches the backend;
//! the record removed -> the periodic re-check fails naming the record seen and the one
//! expected, and the proxy no longer routes the domain nor may order for it.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use async_trait::async_trait;
use common::{Harness, fakes::Fakes};
use control::clients::grpc::GrpcProxy;
use control::clients::*;
use control::pipeline::driver::Clients;
use proto::proxy::v1 as pb;
use proto::proxy::v1::proxy_admin_client::ProxyAdminClient;
use serde_json::{Value, json};
use stackpad_tests::acme::{self, AcmeProxy, ChallTestSrv, CnameGuard};
use stackpad_tests::db::PostgresDb;
use stackpad_tests::unique_name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A node agent whose every container is the test's backend on loopback.
struct LoopbackNode {
    backend: SocketAddr,
}

#[async_trait]
impl NodeClient for LoopbackNode {
    async fn deploy(&self, _: &str, s: &ContainerSpec) -> Result<ContainerOutcome, ClientError> {
        Ok(ContainerOutcome::Healthy {
            container_id: format!("c-{}", s.workload.deployment_id),
            address: self.backend.to_string(),
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
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}

async fn allowed_domains(proxy: &AcmeProxy) -> anyhow::Result<Vec<String>> {
    let mut admin = ProxyAdminClient::connect(format!("http://{}", proxy.admin)).await?;
    let mut req = tonic::Request::new(pb::ListAllowedDomainsRequest {});
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", acme::ADMIN_TOKEN).parse()?,
    );
    let listed = admin.list_allowed_domains(req).await?.into_inner();
    Ok(listed.domains.into_iter().map(|d| d.domain).collect())
}

fn message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_custom_domain_is_verified_served_over_https_and_revoked_when_its_record_goes()
-> anyhow::Result<()> {
    let binary = acme::proxy_binary()?;
    let _port = acme::lock_http01_port().await?;
    let certs_db = PostgresDb::create("acme_test").await?;
    let proxy = AcmeProxy::start(&binary, &certs_db, &acme::directory_url()).await?;
    let app = backend("hello from the custom domain").await?;
    let dns = ChallTestSrv::default();

    let db = common::database().await?;
    let mut config = common::config(&db);
    config.apps_domain = format!("{}.stackpad.test", unique_name("apps"));
    config.proxy_address = format!("http://{}", proxy.admin);
    config.proxy_token = acme::ADMIN_TOKEN.into();
    config.dns_resolver = dns.dns.clone();
    config.domain_check_interval_ms = 300;
    let fakes = Fakes::new();
    let clients = Clients {
        builder: Arc::new(fakes.builder.clone()),
        node: Arc::new(LoopbackNode { backend: app }),
        proxy: Some(Arc::new(GrpcProxy::new(
            &config.proxy_address,
            &config.proxy_token,
        ))),
    };
    let h = Harness::start_with(db, &config, clients).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, token) = h.org("org-domains").await;
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
    let platform_host = s["hosts"][0]
        .as_str()
        .context("no platform host")?
        .to_owned();

    // Added: the answer says which record to create.
    let domain = format!("{}.custom-domains.test", unique_name("shop"));
    let _cleanup = CnameGuard {
        host: domain.clone(),
    };
    let domains = format!("/services/{service}/domains");
    let (status, added) = h
        .call("POST", &domains, &token, Some(json!({ "domain": domain })))
        .await;
    ensure!(status == 201, "{status} {added}");
    ensure!(added["status"] == "pending", "{added}");
    ensure!(
        added["records"][0] == json!({ "type": "CNAME", "name": domain, "value": platform_host }),
        "{added}"
    );
    let expected = format!("expected `{domain} CNAME {platform_host}`");

    // No record yet (challtestsrv answers its default address for any name): refused, naming
    // the record expected and the one seen; the proxy may not order for it.
    let verify = format!("{domains}/{domain}/verify");
    let (status, refused) = h.call("POST", &verify, &token, None).await;
    ensure!(status == 422, "{status} {refused}");
    let text = message(&refused);
    ensure!(text.contains(&expected), "{text}");
    ensure!(
        text.contains(&format!("found `{domain} A 127.0.0.1`")),
        "{text}"
    );
    ensure!(!allowed_domains(&proxy).await?.contains(&domain));

    // A CNAME elsewhere: refused, naming it.
    dns.set_cname(&domain, "elsewhere.example.net").await?;
    let (status, refused) = h.call("POST", &verify, &token, None).await;
    ensure!(status == 422, "{status} {refused}");
    let text = message(&refused);
    ensure!(
        text.contains(&format!("found `{domain} CNAME elsewhere.example.net`"))
            && text.contains(&expected),
        "{text}"
    );

    // The right CNAME: verified, routed, allowed, certified by Pebble, served over HTTPS.
    dns.set_cname(&domain, &platform_host).await?;
    let (status, verified) = h.call("POST", &verify, &token, None).await;
    ensure!(status == 200, "{status} {verified}");
    ensure!(verified["status"] == "verified", "{verified}");
    ensure!(
        verified["last_seen"] == format!("{domain} CNAME {platform_host}"),
        "{verified}"
    );
    ensure!(allowed_domains(&proxy).await?.contains(&domain));
    let response = proxy
        .wait_for_https(&domain, Duration::from_secs(90))
        .await?;
    ensure!(
        response.starts_with("HTTP/1.1 200") && response.contains("hello from the custom domain"),
        "{response}"
    );

    // The record removed: the periodic re-check fails it, naming what it saw and expected,
    // and revokes routing and the permission to order.
    dns.clear_cname(&domain).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let failed = loop {
        let (_, listed) = h.call("GET", &domains, &token, None).await;
        let d = listed["items"][0].clone();
        if d["status"] == "failed" {
            break d;
        }
        ensure!(Instant::now() < deadline, "still {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = failed["last_error"].as_str().unwrap_or_default();
    ensure!(
        error.contains(&expected) && error.contains(&format!("found `{domain} A 127.0.0.1`")),
        "{failed}"
    );
    ensure!(
        failed["last_seen"] == format!("{domain} A 127.0.0.1"),
        "{failed}"
    );
    // The status is recorded first (the route is built from the store), then the proxy is
    // told: give that call a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while allowed_domains(&proxy).await?.contains(&domain) {
        ensure!(
            Instant::now() < deadline,
            "{domain} is still allowed at the proxy 10 s after it failed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connector = acme::pebble_client().await?;
    let after = acme::https_get(&connector, proxy.https, &domain).await;
    ensure!(
        !matches!(&after, Ok(r) if r.contains("hello from the custom domain")),
        "the revoked domain still reaches the backend: {after:?}"
    );
    // The platform host still serves.
    let platform = proxy
        .wait_for_https(&platform_host, Duration::from_secs(90))
        .await?;
    ensure!(
        platform.contains("hello from the custom domain"),
        "{platform}"
    );
    h.stop().await;
    Ok(())
}
