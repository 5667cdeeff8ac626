//! Pebble (the ACME test CA from `scripts/services`) for the certificate tests: a database of
//! the test's own for the shared store, the lock on Pebble's http-01 port, and TLS clients that
//! trust Pebble's current root.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use proxy::acme::AcmeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The port Pebble validates http-01 on (its `httpPort` in scripts/services).
pub const HTTP01_PORT: u16 = 5002;

pub const STORE_KEY: &str = "5a5b5c5d5e5f606162636465666768696a6b6c6d6e6f70717273747576777879";

pub fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn listener_ca() -> String {
    env(
        "PEBBLE_LISTENER_CA",
        "/var/lib/stackpad/services/pebble/config/listener-ca.pem",
    )
}

pub fn pebble() -> AcmeConfig {
    AcmeConfig {
        directory_url: env("PEBBLE_DIRECTORY", "https://127.0.0.1:14000/dir"),
        contact_email: Some("ops@stackpad.test".into()),
        ca_roots: Some(listener_ca().into()),
    }
}

fn admin_url() -> String {
    env(
        "DATABASE_URL",
        "postgres://stackpad:stackpad@127.0.0.1:5432/stackpad",
    )
}

/// A PostgreSQL database of the test's own, dropped when the guard goes (even after a failure).
pub struct Database {
    pub name: String,
    pub url: String,
}

impl Database {
    pub async fn create() -> anyhow::Result<Self> {
        use sqlx::Connection;
        let admin_url = admin_url();
        let name = stackpad_tests::unique_ident("acme_test");
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .map_err(|e| stackpad_tests::service_down("PostgreSQL", &admin_url, e))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        let (base, _) = admin_url
            .rsplit_once('/')
            .context("DATABASE_URL has no database")?;
        Ok(Self {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin_url = admin_url();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                use sqlx::Connection;
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                anyhow::Ok(())
            })
        })
        .join();
    }
}

/// Holds Pebble's http-01 port for one test at a time, across test binaries.
pub async fn lock_http01_port() -> anyhow::Result<std::fs::File> {
    let lock = std::fs::File::create("/tmp/stackpad-pebble-http01.lock")?;
    Ok(tokio::task::spawn_blocking(move || lock.lock().map(|()| lock)).await??)
}

/// Pebble's current root (it changes at every Pebble start).
pub async fn pebble_roots() -> anyhow::Result<rustls::RootCertStore> {
    let management = env("PEBBLE_MANAGEMENT", "https://127.0.0.1:15000");
    let ca = std::fs::read(listener_ca())
        .map_err(|e| stackpad_tests::service_down("Pebble", &listener_ca(), e))?;
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .build()?;
    let root_pem = http
        .get(format!("{management}/roots/0"))
        .send()
        .await
        .map_err(|e| stackpad_tests::service_down("Pebble's management API", &management, e))?
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
    addr: std::net::SocketAddr,
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
