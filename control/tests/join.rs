//! Nodes joining with one-time tokens and control reaching them over mTLS (#15), against
//! PostgreSQL and real sockets with real certificates.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ::api::NodeRole;
use common::grpc_fakes::Daemons;
use common::{ADMIN, Harness};
use control::clients::NodeClient;
use control::clients::grpc::GrpcNode;
use control::clients::tls::PlatformTls;
use pki::{CertificateAuthority, Material, PeerIdentity};
use serde_json::{Value, json};

/// A node's key and the join request for it.
fn join_body(token: &str, name: &str, address: &str) -> anyhow::Result<(String, Value)> {
    let (key, csr) = pki::new_key_and_csr()?;
    Ok((
        key,
        json!({
            "token": token, "name": name, "address": address, "csr": csr,
            "cpu_millis": 2000, "memory_bytes": 1u64 << 30,
            "container_subnet": "10.201.0.0/16",
            "wireguard_public_key": format!("{name}-public-key"),
            "wireguard_endpoint": "127.0.0.1:51820"
        }),
    ))
}

async fn join_token(h: &Harness, role: &str) -> String {
    let (status, v) = h
        .call(
            "POST",
            "/nodes/join-tokens",
            ADMIN,
            Some(json!({ "role": role, "ttl_seconds": 600 })),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

fn cert_identity(pem: &str) -> PeerIdentity {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    PeerIdentity::from_cert_der(&der).unwrap()
}

#[tokio::test]
async fn a_join_token_admits_one_node_once_before_it_expires() -> anyhow::Result<()> {
    let fakes = common::fakes::Fakes::default();
    let h = Harness::start(common::fake_clients(&fakes)).await?;

    let (status, v) = h
        .call(
            "POST",
            "/nodes/join-tokens",
            "",
            Some(json!({ "role": "compute" })),
        )
        .await;
    assert_eq!(status, 401, "a join token without the operator token: {v}");
    let (status, v) = h
        .call(
            "POST",
            "/nodes/join-tokens",
            ADMIN,
            Some(json!({ "role": "gpu" })),
        )
        .await;
    assert_eq!(status, 422, "{v}");

    let token = join_token(&h, "compute").await;
    let (_, body) = join_body("spjoin_0123", "n-join", "https://127.0.0.1:7070")?;
    let (status, v) = h.call("POST", "/nodes/join", "", Some(body)).await;
    assert_eq!(status, 403, "a wrong token: {v}");
    assert!(v.to_string().contains("not valid"), "{v}");

    let (_, body) = join_body(&token, "n-join", "https://127.0.0.1:7070")?;
    let (status, v) = h.call("POST", "/nodes/join", "", Some(body.clone())).await;
    assert_eq!(status, 201, "{v}");
    let id: uuid::Uuid = v["node"]["id"].as_str().unwrap().parse()?;
    assert_eq!(v["node"]["role"], "compute");
    assert_eq!(
        cert_identity(v["certificate"].as_str().unwrap()),
        PeerIdentity::Node {
            id,
            role: NodeRole::Compute
        }
    );
    let ca = h.store().platform_ca().await?;
    assert_eq!(v["ca_certificate"], ca.cert_pem());
    let (subnet, wg): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT container_subnet, wireguard_public_key FROM nodes WHERE id = $1")
            .bind(id)
            .fetch_one(&h.store().pool)
            .await?;
    assert_eq!(subnet.as_deref(), Some("10.201.0.0/16"));
    assert_eq!(wg.as_deref(), Some("n-join-public-key"));

    let (status, v) = h.call("POST", "/nodes/join", "", Some(body)).await;
    assert_eq!(status, 403, "a reused token: {v}");
    assert!(v.to_string().contains("already used"), "{v}");

    let late = join_token(&h, "build").await;
    sqlx::query(
        "UPDATE join_tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL",
    )
    .execute(&h.store().pool)
    .await?;
    let (_, body) = join_body(&late, "b-late", "https://127.0.0.1:7071")?;
    let (status, v) = h.call("POST", "/nodes/join", "", Some(body)).await;
    assert_eq!(status, 403, "an expired token: {v}");
    assert!(v.to_string().contains("expired"), "{v}");

    // A second node sees the first as its WireGuard peer; nothing was registered by refusals.
    let next = join_token(&h, "build").await;
    let (_, body) = join_body(&next, "b-join", "https://127.0.0.1:7072")?;
    let (status, v) = h.call("POST", "/nodes/join", "", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["wireguard_peers"][0]["name"], "n-join", "{v}");
    assert_eq!(v["wireguard_peers"][0]["container_subnet"], "10.201.0.0/16");
    let (_, list) = h.call("GET", "/nodes", ADMIN, None).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b-join", "n-join"]);
    h.stop().await;
    Ok(())
}

/// Joins a compute node listening on a port of its own; returns its address, key, certificate
/// and CA certificate.
async fn join_listening_node(
    h: &Harness,
    name: &str,
) -> anyhow::Result<(tokio::net::TcpListener, String, String, String, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("https://{}", listener.local_addr()?);
    let token = join_token(h, "compute").await;
    let (key, body) = join_body(&token, name, &address)?;
    let (status, v) = h.call("POST", "/nodes/join", "", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    Ok((
        listener,
        address,
        key,
        v["certificate"].as_str().unwrap().to_owned(),
        v["ca_certificate"].as_str().unwrap().to_owned(),
    ))
}

fn node_tls(cert: &str, key: &str, ca: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    Ok(pki::server_config(
        Material::from_pem(cert, key, ca)?,
        pki::Accept::control(),
    ))
}

#[tokio::test]
async fn control_reaches_joined_nodes_over_mtls_and_checks_which_node_answers() -> anyhow::Result<()>
{
    let fakes = common::fakes::Fakes::default();
    let h = Harness::start(common::fake_clients(&fakes)).await?;
    let daemons = Daemons::default();
    let control = GrpcNode::with_tls(Some(PlatformTls::new(h.store())));

    // The joined node, serving with the certificate it was issued: control gets in.
    let (listener, a, key, cert, ca) = join_listening_node(&h, "n-a").await?;
    daemons.serve_on(listener, "t", Some(node_tls(&cert, &key, &ca)?));
    let info = control.info(&a).await?;
    assert!(info.cpu_millis_total > 0, "{info:?}");
    // Plain text to the same daemon: refused.
    let plain = GrpcNode::default()
        .info(&a.replace("https://", "http://"))
        .await;
    assert!(plain.is_err(), "plain text was served: {plain:?}");

    // Node b's address answered with node a's certificate (valid, same CA, another node):
    // control refuses it.
    let (listener, b, _, _, _) = join_listening_node(&h, "n-b").await?;
    daemons.serve_on(listener, "t", Some(node_tls(&cert, &key, &ca)?));
    let impostor = control.info(&b).await;
    assert!(
        impostor.is_err(),
        "control accepted node a at node b's address: {impostor:?}"
    );

    // Node c's address answered with a certificate naming node c, from another CA: refused.
    let (listener, c, _, _, _) = join_listening_node(&h, "n-c").await?;
    let c_id = h.store().node_by_address(&c).await?.unwrap().id;
    let other = CertificateAuthority::generate("not the platform")?;
    let forged = other.issue(
        &PeerIdentity::Node {
            id: c_id,
            role: NodeRole::Compute,
        },
        Duration::from_secs(3600),
    )?;
    daemons.serve_on(
        listener,
        "t",
        Some(node_tls(
            &forged.cert_pem,
            &forged.key_pem,
            other.cert_pem(),
        )?),
    );
    let forged = control.info(&c).await;
    assert!(
        forged.is_err(),
        "control accepted another CA's certificate: {forged:?}"
    );

    // An address no node is registered at: control does not even try.
    let unknown = control.info("https://127.0.0.1:9").await;
    assert!(unknown.is_err(), "{unknown:?}");
    h.stop().await;
    Ok(())
}

/// A database whose platform CA was sealed with another `encryption_key` stops control's start
/// with a message saying what happened and what the operator can do, and the CA is kept.
#[tokio::test]
async fn a_ca_sealed_with_another_key_stops_the_start_with_the_way_out() -> anyhow::Result<()> {
    let db = common::database().await?;
    let config = common::config(&db);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let fakes = common::fakes::Fakes::default();
    control::daemon::start(&config, listener, common::fake_clients(&fakes))
        .await?
        .shutdown()
        .await;

    let mut other_key = config.clone();
    other_key.encryption_key = "ab".repeat(32);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let Err(refused) =
        control::daemon::start(&other_key, listener, common::fake_clients(&fakes)).await
    else {
        panic!("control started with a CA it cannot open");
    };
    let message = refused.to_string();
    for words in [
        "platform CA",
        "another key",
        "encryption_key",
        "DELETE FROM platform_ca",
    ] {
        assert!(message.contains(words), "{message:?} lacks {words:?}");
    }
    let pool = sqlx::PgPool::connect(db.url()).await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM platform_ca")
        .fetch_one(&pool)
        .await?;
    assert_eq!(rows, 1, "the stored CA must be kept");
    Ok(())
}
