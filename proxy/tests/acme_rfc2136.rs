//! dns-01 by RFC 2136 dynamic update with TSIG against the real Knot DNS of `scripts/services`
//! (authoritative for `$KNOT_ZONE` on `$KNOT_DNS`), and a wildcard certificate from a Pebble of
//! the test's own that resolves through that Knot only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
mod common;

use common::pebble::{self, PostgresDb, STORE_KEY, env, listener_ca};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use proxy::acme::rfc2136::{KeyAlgorithm, Rfc2136, Rfc2136Settings};
use proxy::acme::seal::Sealer;
use proxy::acme::{AcmeConfig, CertStore, Issuer};
use std::str::FromStr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn knot_dns() -> String {
    env("KNOT_DNS", "127.0.0.1:8054")
}

fn knot_zone() -> String {
    env("KNOT_ZONE", "rfc2136.stackpad.test")
}

/// The provider for scripts/services' Knot, with its TSIG key.
fn knot_settings() -> anyhow::Result<Rfc2136Settings> {
    let key_file = PathBuf::from(env(
        "KNOT_KEY_FILE",
        "/var/lib/stackpad/services/knot/config/tsig.secret",
    ));
    ensure!(
        key_file.exists(),
        "Knot's TSIG key {} is missing: start Knot with `scripts/services up`",
        key_file.display()
    );
    Ok(Rfc2136Settings {
        server: knot_dns(),
        key_name: env("KNOT_KEY_NAME", "stackpad-acme"),
        key_algorithm: KeyAlgorithm::HmacSha256,
        key_secret_file: Some(key_file),
        ..Default::default()
    })
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// The TXT values Knot serves at `name` (a plain query over TCP).
async fn txt_values(name: &str) -> anyhow::Result<Vec<String>> {
    let mut query = Message::new();
    query
        .set_id(7)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(Name::from_str(name)?, RecordType::TXT));
    let bytes = query.to_vec()?;
    let address = knot_dns();
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "Knot DNS is not reachable at {address}: {e}; run `scripts/services up`"
            )
        })?;
    socket
        .write_all(&u16::try_from(bytes.len())?.to_be_bytes())
        .await?;
    socket.write_all(&bytes).await?;
    let length = socket.read_u16().await?;
    let mut answer = vec![0; usize::from(length)];
    socket.read_exact(&mut answer).await?;
    let answer = Message::from_vec(&answer)?;
    Ok(answer
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::TXT(txt) => Some(
                txt.txt_data()
                    .iter()
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

#[tokio::test]
async fn updates_add_and_remove_one_value_each_and_a_wrong_key_is_refused() -> anyhow::Result<()> {
    let name = format!("_acme-challenge.{}.{}.", unique("txt"), knot_zone());
    // The zone is found from the server's SOA (no `zone` configured).
    let provider = Rfc2136::new(&knot_settings()?)?;
    provider.add_txt(&name, "first").await?;
    provider.add_txt(&name, "second").await?;
    let mut values = txt_values(&name).await?;
    values.sort();
    ensure!(values == ["first", "second"], "{values:?}");
    provider.delete_txt(&name, "first").await?;
    ensure!(txt_values(&name).await? == ["second"]);
    provider.delete_txt(&name, "second").await?;
    ensure!(txt_values(&name).await?.is_empty());

    // A key the server does not know, and a name outside its zones, with the server's reason.
    let wrong = Rfc2136::new(&Rfc2136Settings {
        key_secret_file: None,
        key_secret: "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC0wMTIzNDU2Nzg=".into(),
        zone: knot_zone(),
        ..knot_settings()?
    })?;
    let error = wrong.add_txt(&name, "x").await.unwrap_err().to_string();
    ensure!(
        error.contains("refused") && error.contains("TSIG key was not accepted"),
        "{error}"
    );
    ensure!(txt_values(&name).await?.is_empty());
    let error = provider
        .add_txt("_acme-challenge.elsewhere.example.", "x")
        .await
        .unwrap_err()
        .to_string();
    ensure!(
        error.contains("names no zone") || error.contains("refused"),
        "{error}"
    );
    Ok(())
}

/// A Pebble of the test's own whose DNS is Knot, killed on drop.
struct OwnPebble {
    child: Child,
    dir: PathBuf,
    listen: SocketAddr,
    management: SocketAddr,
}

impl Drop for OwnPebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl OwnPebble {
    async fn start() -> anyhow::Result<Self> {
        let listen = free_addr()?;
        let management = free_addr()?;
        let dir = std::env::temp_dir().join(unique("pebble-rfc2136"));
        std::fs::create_dir_all(&dir)?;
        // Pebble's listener certificate from scripts/services (its CA is PEBBLE_LISTENER_CA).
        let ca = PathBuf::from(listener_ca());
        let config_dir = ca.parent().context("listener CA path")?;
        let config = serde_json::json!({ "pebble": {
            "listenAddress": listen.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": config_dir.join("listener.pem"),
            "privateKey": config_dir.join("listener.key"),
            "httpPort": 5002,
            "tlsPort": 5001,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = dir.join("pebble-config.json");
        std::fs::write(&config_path, serde_json::to_vec(&config)?)?;
        let log = std::fs::File::create(dir.join("pebble.log"))?;
        let child = Command::new("/usr/bin/pebble")
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(knot_dns())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting /usr/bin/pebble (installed by scripts/services)")?;
        let pebble = Self {
            child,
            dir,
            listen,
            management,
        };
        let http = pebble.client()?;
        let started = Instant::now();
        while http
            .get(format!("https://{}/dir", pebble.listen))
            .send()
            .await
            .is_err()
        {
            if started.elapsed() > Duration::from_secs(15) {
                bail!("our Pebble did not answer: {}", pebble.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(pebble)
    }

    fn client(&self) -> anyhow::Result<reqwest::Client> {
        let ca = std::fs::read(listener_ca())?;
        Ok(reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .build()?)
    }

    fn config(&self) -> AcmeConfig {
        AcmeConfig {
            directory_url: format!("https://{}/dir", self.listen),
            contact_email: Some("ops@stackpad.test".into()),
            ca_roots: Some(listener_ca().into()),
        }
    }

    async fn roots(&self) -> anyhow::Result<rustls::RootCertStore> {
        let pem = self
            .client()?
            .get(format!("https://{}/roots/0", self.management))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
            roots.add(cert?)?;
        }
        Ok(roots)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

#[tokio::test]
async fn wildcard_certificate_through_rfc2136_and_knot() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = Arc::new(Rfc2136::new(&knot_settings()?)?);
    let pebble = OwnPebble::start().await?;
    let db = PostgresDb::create("acme_test").await?;
    let store = CertStore::connect(db.url(), Sealer::from_hex(STORE_KEY)?).await?;
    let issuer = Issuer::connect(&pebble.config(), store, Some(provider)).await?;
    let base = format!("{}.{}", unique("wild"), knot_zone());
    let wildcard = format!("*.{base}");
    let certificate = issuer
        .issue(&wildcard)
        .await
        .with_context(|| format!("issuing {wildcard}; our Pebble's log:\n{}", pebble.log()))?;
    pebble::handshake_verifies(
        pebble.roots().await?,
        &certificate,
        &format!("anything.{base}"),
    )
    .await?;
    // The challenge record is gone once the order is over.
    let challenge = format!("_acme-challenge.{base}.");
    ensure!(
        txt_values(&challenge).await?.is_empty(),
        "{challenge} left behind"
    );
    Ok(())
}
