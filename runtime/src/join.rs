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
}
