//! Pebble (the ACME test CA from `scripts/services`) for the certificate tests: the shared
//! helpers of `stackpad_tests::acme` (a `PostgresDb` of the test's own for the shared store, the
//! lock on Pebble's http-01 port, TLS clients trusting Pebble's current root, the proxy with
//! ACME) and the proxy's own ACME settings for Pebble.

#![allow(unused_imports, reason = "each test binary uses a different subset")]

use std::sync::Arc;

use anyhow::{Context, ensure};
use proxy::acme::{AcmeConfig, StoredCertificate};
pub use stackpad_tests::acme::{
    AcmeProxy, HTTP01_PORT, STORE_KEY, https_get, listener_ca, lock_http01_port, pebble_client,
    pebble_roots,
};
pub use stackpad_tests::db::PostgresDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn pebble() -> AcmeConfig {
    AcmeConfig {
        directory_url: stackpad_tests::acme::directory_url(),
        contact_email: Some("ops@stackpad.test".into()),
        ca_roots: Some(listener_ca().into()),
    }
}

/// A TLS handshake with `certificate` served for `sni`, verified against `roots`.
pub async fn handshake_verifies(
    roots: rustls::RootCertStore,
    certificate: &StoredCertificate,
    sni: &str,
) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let chain = rustls_pemfile::certs(&mut certificate.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key =
        rustls_pemfile::private_key(&mut certificate.key_pem.as_bytes())?.context("no key")?;
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    let client_config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await?;
        let mut tls = acceptor.accept(socket).await?;
        tls.write_all(b"hello over verified TLS").await?;
        tls.shutdown().await?;
        anyhow::Ok(())
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let socket = tokio::net::TcpStream::connect(address).await?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned())?;
    let mut tls = connector
        .connect(name, socket)
        .await
        .context("TLS handshake against Pebble's root")?;
    let mut text = String::new();
    tls.read_to_string(&mut text).await?;
    ensure!(text == "hello over verified TLS");
    server.await??;
    Ok(())
}
