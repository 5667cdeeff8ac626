//! The node agent's gRPC over mTLS (#15), on real sockets with real certificates: only
//! `stackpad-control`'s certificate of the platform CA gets in; plain text, another CA's
//! certificate and a certificate of another role are refused; renewed files are used without a
//! restart.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::api::NodeRole;
use common::TestNode;
use pki::{CertificateAuthority, Material, PeerIdentity};
use proto::node::v1 as pb;
use proto::node::v1::node_agent_client::NodeAgentClient;

const DAY: Duration = Duration::from_secs(86_400);

/// Writes the node's certificate, key and CA where its `[tls]` files point.
fn write_node_files(
    ca: &CertificateAuthority,
    node: &PeerIdentity,
    files: &pki::TlsFiles,
) -> anyhow::Result<()> {
    let issued = ca.issue(node, DAY)?;
    std::fs::write(&files.key, issued.key_pem)?;
    std::fs::write(&files.cert, issued.cert_pem)?;
    std::fs::write(&files.ca, ca.cert_pem())?;
    Ok(())
}

/// A client holding a certificate of `ca` for `identity`, trusting `trusted_ca`; the identity
/// of each server it reached is recorded.
fn client(
    ca: &CertificateAuthority,
    identity: &PeerIdentity,
    trusted_ca: &CertificateAuthority,
    seen: Arc<Mutex<Vec<PeerIdentity>>>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let issued = ca.issue(identity, DAY)?;
    let material = Material::from_pem(&issued.cert_pem, &issued.key_pem, trusted_ca.cert_pem())?;
    Ok(pki::client_config(
        material,
        Arc::new(move |peer: &PeerIdentity| {
            seen.lock().unwrap().push(*peer);
            Ok(())
        }),
    ))
}

async fn node_info(
    address: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<pb::NodeInfoResponse, String> {
    let tls = tls.map(|c| Arc::new(c) as Arc<dyn pki::ClientConfigSource>);
    let channel = pki::channel(address, tls, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    NodeAgentClient::new(channel)
        .node_info(pb::NodeInfoRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

fn files_in(dir: &Path) -> pki::TlsFiles {
    pki::TlsFiles {
        cert: dir.join("node.crt"),
        key: dir.join("node.key"),
        ca: dir.join("ca.crt"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_accepts_only_control_of_the_platform_ca_and_reloads_its_files()
-> anyhow::Result<()> {
    let mut node = TestNode::start("tls").await?;
    let ca = CertificateAuthority::generate("platform")?;
    let other_ca = CertificateAuthority::generate("someone else")?;
    let node_id = PeerIdentity::Node {
        id: uuid::Uuid::new_v4(),
        role: NodeRole::Compute,
    };
    let files = files_in(node.dirs.path());
    write_node_files(&ca, &node_id, &files)?;
    node.config.tls = Some(files.clone());
    node.restart_agent().await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (grpc_addr, _, server) = runtime::daemon::serve(node.agent.clone(), async {
        let _ = stop_rx.await;
    })
    .await?;
    let https = format!("https://{grpc_addr}");
    let seen = Arc::new(Mutex::new(Vec::new()));

    // Control with a certificate of the platform CA: served, and the server proved its identity.
    let control = client(&ca, &PeerIdentity::Control, &ca, seen.clone())?;
    let info = node_info(&https, Some(control.clone()))
        .await
        .map_err(anyhow::Error::msg)?;
    assert!(info.cpu_millis_total > 0, "{info:?}");
    assert_eq!(seen.lock().unwrap().last(), Some(&node_id));

    // Plain-text gRPC to the TLS listener: refused.
    let plain = node_info(&format!("http://{grpc_addr}"), None).await;
    assert!(plain.is_err(), "plain text was served: {plain:?}");

    // A control certificate of another CA: refused.
    let foreign = client(&other_ca, &PeerIdentity::Control, &ca, seen.clone())?;
    let refused = node_info(&https, Some(foreign)).await;
    assert!(
        refused.is_err(),
        "another CA's certificate was served: {refused:?}"
    );

    // A certificate of the platform CA but of another role (a compute node, not control).
    let peer = PeerIdentity::Node {
        id: uuid::Uuid::new_v4(),
        role: NodeRole::Compute,
    };
    let wrong_role = client(&ca, &peer, &ca, seen.clone())?;
    let refused = node_info(&https, Some(wrong_role)).await;
    assert!(
        refused.is_err(),
        "a compute node's certificate was served: {refused:?}"
    );

    // A server that is not the node control meant: control refuses it.
    let expecting_other = {
        let issued = ca.issue(&PeerIdentity::Control, DAY)?;
        let material = Material::from_pem(&issued.cert_pem, &issued.key_pem, ca.cert_pem())?;
        let want = uuid::Uuid::new_v4();
        pki::client_config(
            material,
            Arc::new(move |peer: &PeerIdentity| match peer {
                PeerIdentity::Node { id, .. } if *id == want => Ok(()),
                other => Err(format!("{other} is not node {want}")),
            }),
        )
    };
    let refused = node_info(&https, Some(expecting_other)).await;
    assert!(
        refused.is_err(),
        "control accepted the wrong node: {refused:?}"
    );

    // Rotation without restart: new files from a new CA. The old CA's control is now refused,
    // the new one's served, and the server shows its new certificate.
    let new_ca = CertificateAuthority::generate("platform, renewed")?;
    let new_id = PeerIdentity::Node {
        id: uuid::Uuid::new_v4(),
        role: NodeRole::Compute,
    };
    write_node_files(&new_ca, &new_id, &files)?;
    let new_control = client(&new_ca, &PeerIdentity::Control, &new_ca, seen.clone())?;
    node_info(&https, Some(new_control))
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(seen.lock().unwrap().last(), Some(&new_id));
    let stale = node_info(&https, Some(control)).await;
    assert!(
        stale.is_err(),
        "the old CA's certificate still served: {stale:?}"
    );

    // Half-written files keep the last good material.
    std::fs::write(&files.cert, "garbage")?;
    let new_control = client(&new_ca, &PeerIdentity::Control, &new_ca, seen.clone())?;
    node_info(&https, Some(new_control))
        .await
        .map_err(anyhow::Error::msg)?;

    let _ = stop_tx.send(());
    server.await?;
    Ok(())
}

#[test]
fn listening_off_loopback_without_tls_is_refused_naming_the_key() {
    let config = runtime::config::NodeConfig {
        listen: "0.0.0.0:7070".parse().unwrap(),
        ..Default::default()
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("tls") && err.contains("0.0.0.0:7070"), "{err}");
}
