//! The real `stackpad-proxy` with its shared certificate store and Pebble: a domain the
//! control plane allowed gets a certificate through http-01 answered on the proxy's own plain
//! listener and serves verified HTTPS; plain HTTP redirects; a flood of handshakes for names
//! nobody allowed is shown the default certificate and orders nothing; after a restart with the CA unreachable the stored
//! certificate still serves; an instance killed with SIGKILL in the middle of an order loses
//! its lease to the other instance, which finishes the domain.

mod common;

use std::time::{Duration, Instant};

use anyhow::ensure;
use common::pebble::{self, AcmeProxy, HTTP01_PORT, PostgresDb};
use common::{Backend, authed, free_port};
use proto::proxy::v1 as pb;
use proto::proxy::v1::proxy_admin_client::ProxyAdminClient;
use rustls::pki_types::pem::PemObject;
use sqlx::Connection;

/// `stackpad-proxy serve` (this crate's binary) with an `acme` section, on Pebble's port.
async fn start(db: &PostgresDb, directory_url: &str) -> anyhow::Result<AcmeProxy> {
    AcmeProxy::start(BINARY.as_ref(), db, directory_url).await
}

async fn start_as(
    db: &PostgresDb,
    directory_url: &str,
    http: u16,
    instance: &str,
    lease_ttl_secs: u64,
) -> anyhow::Result<AcmeProxy> {
    AcmeProxy::start_as(
        BINARY.as_ref(),
        db,
        directory_url,
        http,
        instance,
        lease_ttl_secs,
    )
    .await
}

const BINARY: &str = env!("CARGO_BIN_EXE_stackpad-proxy");

async fn admin(proxy: &AcmeProxy) -> anyhow::Result<ProxyAdminClient<tonic::transport::Channel>> {
    Ok(ProxyAdminClient::connect(format!("http://{}", proxy.admin)).await?)
}

/// Routes `domain` on `proxy` to `backend`.
async fn route_to(proxy: &AcmeProxy, domain: &str, backend: &Backend) -> anyhow::Result<()> {
    let mut admin = admin(proxy).await?;
    let route = pb::Route {
        route_id: "web".into(),
        hosts: vec![domain.to_owned()],
        service_id: "svc-web".into(),
        ..Default::default()
    };
    admin
        .upsert_route(authed(pb::UpsertRouteRequest { route: Some(route) }))
        .await?;
    let upstream = pb::Upstream {
        address: backend.addr.to_string(),
        deployment_id: "d1".into(),
        weight: 1,
    };
    admin
        .switch(authed(pb::SwitchRequest {
            service_id: "svc-web".into(),
            upstreams: vec![upstream],
            skip_health_wait: true,
            ..Default::default()
        }))
        .await?;
    Ok(())
}

/// Allows certificates for `domain` (what the control plane does for a service's hosts).
async fn allow(proxy: &AcmeProxy, domain: &str) -> anyhow::Result<()> {
    let allowed = pb::AllowedDomain {
        domain: domain.to_owned(),
        service_id: "svc-web".into(),
    };
    admin(proxy)
        .await?
        .put_allowed_domain(authed(pb::PutAllowedDomainRequest {
            domain: Some(allowed),
        }))
        .await?;
    Ok(())
}

async fn orders(db: &PostgresDb) -> anyhow::Result<Vec<String>> {
    let mut conn = sqlx::PgConnection::connect(db.url()).await?;
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT domain FROM stackpad_proxy.acme_events WHERE kind = 'ordered' ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await?;
    Ok(rows.into_iter().map(|(d,)| d).collect())
}

/// Completes a TLS handshake with `name` as SNI and returns the end-entity certificate the
/// proxy showed (DER), whatever it is.
async fn shown_certificate(address: std::net::SocketAddr, name: &str) -> anyhow::Result<Vec<u8>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let recorder = std::sync::Arc::new(Recorder::default());
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let socket = tokio::net::TcpStream::connect(address).await?;
    let server = rustls::pki_types::ServerName::try_from(name.to_owned())?;
    tokio::time::timeout(Duration::from_secs(5), connector.connect(server, socket)).await??;
    let shown = recorder.shown.lock().expect("recorder").take();
    shown.ok_or_else(|| anyhow::anyhow!("the handshake completed without a certificate"))
}

/// A certificate verifier that accepts what it is shown and keeps it (signatures are still
/// checked, so the server does hold the key).
#[derive(Debug, Default)]
struct Recorder {
    shown: std::sync::Mutex<Option<Vec<u8>>>,
}

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.shown.lock().expect("recorder") = Some(end_entity.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test]
async fn allowed_domains_get_certificates_and_nothing_else_is_ordered() -> anyhow::Result<()> {
    let _port = pebble::lock_http01_port().await?;
    let db = PostgresDb::create("acme_test").await?;
    let mut proxy = start(&db, &pebble::pebble().directory_url).await?;
    let backend = Backend::start("app-v1").await;
    let domain = format!("{}.apps.stackpad.test", stackpad_tests::unique_name("web"));

    route_to(&proxy, &domain, &backend).await?;
    allow(&proxy, &domain).await?;

    let response = proxy
        .wait_for_https(&domain, Duration::from_secs(60))
        .await?;
    ensure!(
        response.starts_with("HTTP/1.1 200") && response.contains("app-v1"),
        "{response}"
    );

    // Plain HTTP for a route that does not allow it: a redirect, the backend sees nothing more.
    let seen = backend.requests();
    let plain = common::raw(
        format!("127.0.0.1:{HTTP01_PORT}").parse()?,
        format!("GET /a?b=1 HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(3),
    )
    .await?;
    ensure!(plain.starts_with("HTTP/1.1 308"), "{plain}");
    ensure!(
        plain
            .to_ascii_lowercase()
            .contains(&format!("location: https://{domain}/a?b=1")),
        "{plain}"
    );
    ensure!(backend.requests() == seen);

    // A flood of handshakes for names nobody allowed: every handshake completes and is shown
    // the default certificate (a client that records what it was shown, instead of one that
    // fails on anything), and none leads to an order.
    let default = rustls::pki_types::CertificateDer::from_pem_file(proxy.dir.join("default.pem"))?;
    for i in 0..200 {
        let name = format!("random{i}-{}.attacker.test", i * 7919);
        let shown = shown_certificate(proxy.https, &name)
            .await
            .map_err(|e| anyhow::anyhow!("handshake for {name}: {e:#}"))?;
        ensure!(
            shown == default.as_ref(),
            "{name} was shown a certificate other than the default"
        );
    }
    let mut conn = sqlx::PgConnection::connect(db.url()).await?;
    let (allowed,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM stackpad_proxy.allowed_domains WHERE domain LIKE '%.attacker.test'",
    )
    .fetch_one(&mut conn)
    .await?;
    ensure!(allowed == 0, "handshakes allowed {allowed} names");
    // Waiting on the store, not a sleep: a name allowed after the flood is ordered by a later
    // pass, which would also have ordered any name a handshake had put in the way.
    let marker = format!(
        "{}.apps.stackpad.test",
        stackpad_tests::unique_name("marker")
    );
    allow(&proxy, &marker).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let ordered = loop {
        let ordered = orders(&db).await?;
        if ordered.contains(&marker) || Instant::now() > deadline {
            break ordered;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        ordered == vec![domain.clone(), marker.clone()],
        "orders placed: {ordered:?}"
    );

    // Restart with the CA unreachable: the stored certificate serves anyway.
    proxy.kill();
    proxy.spawn(&db, "https://127.0.0.1:9/dir").await?;
    let response = proxy
        .wait_for_https(&domain, Duration::from_secs(20))
        .await?;
    ensure!(response.contains("app-v1"), "{response}");
    Ok(())
}

#[tokio::test]
async fn certificate_admin_calls_refuse_bad_input_by_name() -> anyhow::Result<()> {
    let _port = pebble::lock_http01_port().await?;
    let db = PostgresDb::create("acme_test").await?;
    let proxy = start(&db, "").await?;
    let mut admin = admin(&proxy).await?;
    // The store connects in the background: allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = admin
            .list_allowed_domains(authed(pb::ListAllowedDomainsRequest {}))
            .await;
        if listed.is_ok() || Instant::now() > deadline {
            listed?;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bad = pb::AllowedDomain {
        domain: "not a domain!".into(),
        service_id: String::new(),
    };
    let error = admin
        .put_allowed_domain(authed(pb::PutAllowedDomainRequest { domain: Some(bad) }))
        .await
        .expect_err("a bad domain was accepted");
    ensure!(
        error.code() == tonic::Code::InvalidArgument && error.message().contains("not a domain"),
        "{error:?}"
    );
    let error = admin
        .put_certificate(authed(pb::PutCertificateRequest {
            domain: "a.example.com".into(),
            certificate_chain_pem: "garbage".into(),
            private_key_pem: "garbage".into(),
        }))
        .await
        .expect_err("a garbage certificate was accepted");
    ensure!(
        error.code() == tonic::Code::InvalidArgument && error.message().contains("a.example.com"),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_other_instance_finishes_a_domain_whose_lease_holder_was_killed() -> anyhow::Result<()>
{
    let _port = pebble::lock_http01_port().await?;
    let db = PostgresDb::create("acme_test").await?;
    let directory = pebble::pebble().directory_url;
    let domain = format!(
        "{}.apps.stackpad.test",
        stackpad_tests::unique_name("crash")
    );

    // Pebble validates http-01 on its port; while instance A orders, a listener there takes the
    // validation connection and never answers, so A's order is still in flight when it dies.
    let stall = tokio::net::TcpListener::bind(("127.0.0.1", HTTP01_PORT)).await?;
    let stalled = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = stall.accept().await {
            held.push(socket);
        }
    });
    let mut a = start_as(&db, &directory, free_port(), "proxy-a", 4).await?;
    allow(&a, &domain).await?;

    let mut conn = sqlx::PgConnection::connect(db.url()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (holder, challenges): (Option<String>, i64) = sqlx::query_as(
            "SELECT (SELECT holder FROM stackpad_proxy.order_leases WHERE domain = $1), \
                    (SELECT count(*) FROM stackpad_proxy.http01_challenges)",
        )
        .bind(&domain)
        .fetch_one(&mut conn)
        .await?;
        if holder.as_deref() == Some("proxy-a") && challenges > 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "instance A never got to the middle of an order (lease holder {holder:?}, \
             {challenges} challenges)\nlog:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kill(); // SIGKILL: no release of the lease, no failure recorded
    let (stored,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM stackpad_proxy.certificates WHERE domain = $1")
            .bind(&domain)
            .fetch_one(&mut conn)
            .await?;
    ensure!(stored == 0, "A finished its order before it was killed");
    stalled.abort();
    let _ = stalled.await;

    // Instance B on Pebble's port: once A's lease expires it orders the domain and serves it.
    let killed_at = Instant::now();
    let b = start_as(&db, &directory, HTTP01_PORT, "proxy-b", 4).await?;
    let backend = Backend::start("app-after-crash").await;
    route_to(&b, &domain, &backend).await?;
    let response = b.wait_for_https(&domain, Duration::from_secs(90)).await?;
    ensure!(response.contains("app-after-crash"), "{response}");
    let took = killed_at.elapsed();

    let ordered = orders(&db).await?;
    ensure!(
        ordered == vec![domain.clone(), domain.clone()],
        "orders placed (A's unfinished one, then B's): {ordered:?}"
    );
    let (issued,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM stackpad_proxy.acme_events WHERE kind = 'issued' AND domain = $1",
    )
    .bind(&domain)
    .fetch_one(&mut conn)
    .await?;
    ensure!(issued == 1, "{issued} certificates issued");
    let metrics = reqwest::get(format!("http://{}/metrics", b.admin))
        .await?
        .text()
        .await?;
    for line in [
        "stackpad_proxy_acme_orders_started_total 1",
        "stackpad_proxy_acme_orders_completed_total{result=\"issued\"} 1",
        "stackpad_proxy_certificates{state=\"valid\"} 1",
    ] {
        ensure!(
            metrics.contains(line),
            "B's /metrics lacks {line:?}:\n{metrics}"
        );
    }
    eprintln!("taken over and served {took:?} after the kill");
    Ok(())
}
