//! TLS session resumption on the public listener: tickets sealed with keys shared through the
//! certificate store (PostgreSQL) resume across two real proxy processes; a ticket whose key was
//! rotated out gets a full handshake, which still succeeds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
mod common;

use common::pebble::{AcmeProxy, PostgresDb, STORE_KEY};
use proxy::acme::seal::Sealer;
use proxy::acme::{CertStore, StoredCertificate};
use proxy::certs::{CertificateTable, certified_key_from_pem};
use proxy::tickets::{TicketKeys, TicketSettings};
use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAME: &str = "resume.test";

/// A self-signed certificate for [`NAME`] (chain, key, DER).
fn certificate() -> anyhow::Result<(String, String, rustls::pki_types::CertificateDer<'static>)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec![NAME.into()])?.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem(), cert.der().clone()))
}

/// A client trusting `root` with a session cache of its own (rustls' default).
fn client(
    root: &rustls::pki_types::CertificateDer<'static>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone())?;
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// One TLS connection to `addr` writing `request` and reading to the end (which takes in the
/// server's tickets); how the handshake went.
async fn connect(
    client: &Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    request: &[u8],
) -> anyhow::Result<HandshakeKind> {
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(client));
    let socket = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(NAME)?;
    let mut tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, socket))
        .await
        .context("handshake timed out")??;
    let kind = tls
        .get_ref()
        .1
        .handshake_kind()
        .context("no handshake kind")?;
    tls.write_all(request).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer))
        .await
        .context("answer timed out")??;
    ensure!(!answer.is_empty(), "empty answer");
    Ok(kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_from_one_proxy_resumes_on_another_sharing_the_store() -> anyhow::Result<()> {
    let (chain_pem, key_pem, root) = certificate()?;
    let db = PostgresDb::create("tickets_test").await?;
    let store = CertStore::connect(db.url(), Sealer::from_hex(STORE_KEY)?).await?;
    store
        .put_certificate(&StoredCertificate {
            domain: NAME.into(),
            validity: proxy::acme::validity::chain_validity(&chain_pem)?,
            chain_pem,
            key_pem,
        })
        .await?;
    let binary = std::path::PathBuf::from(env!("CARGO_BIN_EXE_stackpad-proxy"));
    let port = common::free_port;
    // Store only (no CA): both serve the stored certificate and share the ticket keys.
    let a = AcmeProxy::start_as(&binary, &db, "", port(), "a", 30).await?;
    let b = AcmeProxy::start_as(&binary, &db, "", port(), "b", 30).await?;
    let request = format!("GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n");
    // The first connections may come before an instance loaded the stored certificate (it
    // serves its default one meanwhile) or its keys: retry a little.
    let deadline = Instant::now() + Duration::from_secs(15);
    let client = loop {
        // A fresh client each attempt, so the first handshake at a is a full one.
        let client = client(&root)?;
        let attempt = async {
            let first = connect(&client, a.https, request.as_bytes()).await?;
            let second = connect(&client, b.https, request.as_bytes()).await?;
            anyhow::Ok((first, second))
        };
        let outcome = attempt.await;
        if let Ok((HandshakeKind::Full, HandshakeKind::Resumed)) = outcome {
            break client;
        }
        if Instant::now() > deadline {
            bail!(
                "no resumption across instances: {outcome:?}; logs:\n{}\n{}",
                a.log(),
                b.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // And back: b's ticket resumes on a.
    ensure!(connect(&client, a.https, request.as_bytes()).await? == HandshakeKind::Resumed);
    Ok(())
}

#[tokio::test]
async fn a_ticket_whose_key_was_rotated_out_gets_a_full_handshake() -> anyhow::Result<()> {
    let (chain_pem, key_pem, root) = certificate()?;
    let client = client(&root)?;
    let db = PostgresDb::create("tickets_test").await?;
    let store = CertStore::connect(db.url(), Sealer::from_hex(STORE_KEY)?).await?;
    let settings = TicketSettings {
        rotate: Duration::from_secs(1),
        lifetime: Duration::from_secs(1),
    };
    let keys = Arc::new(TicketKeys::default());
    keys.refresh(&store, &settings).await?;
    ensure!(keys.len() == 1);
    let table = Arc::new(CertificateTable::default());
    table.set_default(Arc::new(certified_key_from_pem(&chain_pem, &key_pem)?));
    let config = proxy::public_tls::server_config(table, Some((Arc::clone(&keys), settings)))?;
    ensure!(config.max_early_data_size == 0, "0-RTT must stay off");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut tls = acceptor.accept(socket).await?;
                let mut line = [0u8; 5];
                tls.read_exact(&mut line).await?;
                tls.write_all(b"hello").await?;
                tls.shutdown().await?;
                anyhow::Ok(())
            });
        }
    });

    ensure!(connect(&client, addr, b"hello").await? == HandshakeKind::Full);
    ensure!(connect(&client, addr, b"hello").await? == HandshakeKind::Resumed);
    // Past rotation + refresh + lifetime the key is deleted from the store at the next refresh
    // and a new one made: the client's ticket no longer opens.
    tokio::time::sleep(settings.keep() + Duration::from_millis(500)).await;
    keys.refresh(&store, &settings).await?;
    ensure!(keys.len() == 1, "{} keys", keys.len());
    ensure!(connect(&client, addr, b"hello").await? == HandshakeKind::Full);
    ensure!(connect(&client, addr, b"hello").await? == HandshakeKind::Resumed);
    server.abort();
    Ok(())
}
