//! `stackpad-node join`: a new node joins the platform with a one-time token. It makes its key
//! and CSR here (the key never leaves the node), asks control's `POST /nodes/join`, and writes
//! the certificate control issued (naming the node id and role), the key and the platform CA
//! where the `[tls]` table of `node.toml` (or buildd's `[tls]`, the proxy's `admin_tls`) points.
//! Joining again with a new token renews the files; a running daemon picks them up without a
//! restart.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::{Value, json};

/// `stackpad-node join --control URL --token T --name N --address https://host:port`.
#[derive(Debug, Parser)]
#[command(
    name = "stackpad-node join",
    about = "Join the platform with a one-time token"
)]
pub struct JoinArgs {
    /// Control's API, e.g. `http://10.90.0.1:7000`.
    #[arg(long)]
    pub control: String,
    /// The one-time join token (`stackpad-control`'s `POST /nodes/join-tokens`).
    #[arg(long, env = "STACKPAD_JOIN_TOKEN")]
    pub token: String,
    /// This node's name.
    #[arg(long)]
    pub name: String,
    /// Where control reaches this node's daemon: `https://host:port`.
    #[arg(long)]
    pub address: String,
    /// Where node.key, node.crt and ca.crt are written.
    #[arg(long, default_value = "/etc/stackpad/tls")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub cpu_millis: u32,
    #[arg(long, default_value_t = 0)]
    pub memory_bytes: u64,
    /// The subnet this node's containers get addresses from (compute nodes).
    #[arg(long)]
    pub container_subnet: Option<String>,
    /// This node's WireGuard public key and `host:port` endpoint.
    #[arg(long)]
    pub wireguard_public_key: Option<String>,
    #[arg(long)]
    pub wireguard_endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{0}")]
    Key(String),
    #[error("control at {url}: {message}")]
    Control { url: String, message: String },
    #[error("control refused the join ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The files written and what control said about the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub files: pki::TlsFiles,
    pub identity: String,
    /// Control's whole answer (node row, WireGuard peers).
    pub answer: Value,
}

/// Joins and writes the files.
pub async fn join(args: &JoinArgs) -> Result<Joined, JoinError> {
    let (key, csr) = pki::new_key_and_csr().map_err(|e| JoinError::Key(e.to_string()))?;
    let url = format!("{}/nodes/join", args.control.trim_end_matches('/'));
    let control = |message: String| JoinError::Control {
        url: url.clone(),
        message,
    };
    let response = reqwest::Client::new()
        .post(&url)
        .json(&json!({
            "token": args.token, "name": args.name, "address": args.address, "csr": csr,
            "cpu_millis": args.cpu_millis, "memory_bytes": args.memory_bytes,
            "container_subnet": args.container_subnet,
            "wireguard_public_key": args.wireguard_public_key,
            "wireguard_endpoint": args.wireguard_endpoint,
        }))
        .send()
        .await
        .map_err(|e| control(e.to_string()))?;
    let status = response.status().as_u16();
    let answer: Value = response.json().await.map_err(|e| control(e.to_string()))?;
    if status != 201 {
        return Err(JoinError::Refused {
            status,
            message: answer["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| answer.to_string()),
        });
    }
    write_files(&args.dir, &key, &answer)
}

/// Writes the key (mode 0600), certificate and CA from control's answer into `dir`. Each file
/// is written beside and renamed over the old one, so a daemon never reads half a file.
pub fn write_files(dir: &Path, key_pem: &str, answer: &Value) -> Result<Joined, JoinError> {
    use std::os::unix::fs::PermissionsExt;
    let field = |name: &str| {
        answer[name].as_str().ok_or_else(|| JoinError::Control {
            url: "/nodes/join".into(),
            message: format!("answer has no {name}"),
        })
    };
    let (cert, ca) = (field("certificate")?, field("ca_certificate")?);
    let write = |name: &str, text: &str, mode: u32| -> Result<PathBuf, JoinError> {
        let path = dir.join(name);
        let err = |source| JoinError::Write {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = dir.join(format!(".{name}.new"));
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        Ok(path)
    };
    let files = pki::TlsFiles {
        key: write("node.key", key_pem, 0o600)?,
        ca: write("ca.crt", ca, 0o644)?,
        cert: write("node.crt", cert, 0o644)?,
    };
    Ok(Joined {
        files,
        identity: answer["identity"].as_str().unwrap_or_default().to_owned(),
        answer: answer.clone(),
    })
}

/// The `wg set` / `ip route` lines that make this node a peer of every node control named in
/// its answer (`wireguard_peers`): each peer's WireGuard address (the host of its agent's
/// address) and container subnet are routed through `interface`. Printed by `stackpad-node join`
/// for the operator (kernel WireGuard on a real server; `scripts/cluster` does the same for
/// its namespaces). A peer without a key or endpoint is named in a comment instead.
pub fn wireguard_lines(answer: &Value, interface: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for peer in answer["wireguard_peers"].as_array().into_iter().flatten() {
        let name = peer["name"].as_str().unwrap_or("?");
        let (Some(key), Some(endpoint)) = (peer["public_key"].as_str(), peer["endpoint"].as_str())
        else {
            lines.push(format!("# {name}: no WireGuard key or endpoint registered"));
            continue;
        };
        let host = peer["address"].as_str().and_then(address_host);
        let subnet = peer["container_subnet"].as_str();
        let allowed: Vec<String> = host
            .iter()
            .map(|h| format!("{h}/32"))
            .chain(subnet.map(str::to_owned))
            .collect();
        lines.push(format!(
            "wg set {interface} peer {key} endpoint {endpoint} allowed-ips {}",
            allowed.join(",")
        ));
        for cidr in &allowed {
            lines.push(format!("ip route replace {cidr} dev {interface}"));
        }
    }
    lines
}

/// The host of an agent address `https://host:port[/]` (an IPv6 host in brackets comes out
/// without them), if it is an IP address: only addresses can be routed.
fn address_host(address: &str) -> Option<String> {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_becomes_files_the_daemon_loads() {
        let ca = pki::CertificateAuthority::generate("test").unwrap();
        let (key, csr) = pki::new_key_and_csr().unwrap();
        let identity = pki::PeerIdentity::Node {
            id: uuid::Uuid::new_v4(),
            role: "compute".parse().unwrap(),
        };
        let cert = ca
            .sign_csr(
                &pki::Csr::from_pem(&csr).unwrap(),
                &identity,
                std::time::Duration::from_secs(60),
            )
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let answer = json!({ "certificate": cert, "ca_certificate": ca.cert_pem(), "identity": identity.uri() });
        let joined = write_files(&dir.path().join("tls"), &key, &answer).unwrap();
        let material = pki::Material::from_files(&joined.files).unwrap();
        assert_eq!(material.identity(), identity);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&joined.files.key).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(write_files(dir.path(), &key, &json!({})).is_err());
    }

    #[test]
    fn every_peer_becomes_a_wireguard_peer_with_its_routes() {
        let answer = json!({ "wireguard_peers": [
            { "name": "c1", "public_key": "K1=", "endpoint": "203.0.113.5:51820",
              "address": "https://10.77.0.3:7100", "container_subnet": "10.96.32.0/20" },
            { "name": "b1", "public_key": "K2=", "endpoint": "203.0.113.6:51820",
              "address": "https://10.77.0.2:7100", "container_subnet": null },
            { "name": "old", "public_key": "K3=", "endpoint": null, "address": "https://10.77.0.9:7100" },
        ]});
        assert_eq!(
            wireguard_lines(&answer, "wg0"),
            [
                "wg set wg0 peer K1= endpoint 203.0.113.5:51820 allowed-ips 10.77.0.3/32,10.96.32.0/20",
                "ip route replace 10.77.0.3/32 dev wg0",
                "ip route replace 10.96.32.0/20 dev wg0",
                "wg set wg0 peer K2= endpoint 203.0.113.6:51820 allowed-ips 10.77.0.2/32",
                "ip route replace 10.77.0.2/32 dev wg0",
                "# old: no WireGuard key or endpoint registered",
            ]
        );
        assert!(wireguard_lines(&json!({}), "wg0").is_empty());
        assert_eq!(
            address_host("https://[fd00::3]:7100").as_deref(),
            Some("fd00::3")
        );
        assert_eq!(address_host("https://node.example:7100"), None);
    }
}
