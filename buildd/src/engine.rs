//! The Docker Engine API calls buildd needs where BuildKit is dockerd's embedded one: its
//! `moby` exporter stores the image in dockerd, so the push to the registry is dockerd's
//! `POST /images/{name}/push`, whose stream carries the pushed manifest digest.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::config::RegistryAuth;

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot reach dockerd at {socket}: {detail}")]
    Connect { socket: PathBuf, detail: String },
    #[error("push of {image} failed: {detail}")]
    Failed { image: String, detail: String },
    #[error("push of {image} finished without a digest")]
    NoDigest { image: String },
}

/// dockerd's socket, and the registry's credentials when it is not anonymous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    pub socket: PathBuf,
    pub auth: Option<RegistryAuth>,
}

/// Splits `registry/repo:tag` into (`registry/repo`, `tag`).
fn split_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Engine {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Self {
            socket: socket.as_ref().to_path_buf(),
            auth: None,
        }
    }

    /// The same engine pushing with `auth` (none = anonymously).
    pub fn with_auth(mut self, auth: Option<RegistryAuth>) -> Self {
        self.auth = auth;
        self
    }

    /// dockerd's `X-Registry-Auth`: base64url of the auth config JSON (`{}` when anonymous).
    fn registry_auth_header(&self) -> String {
        let json = match &self.auth {
            Some(a) => serde_json::json!({
                "username": a.username,
                "password": a.password,
                "serveraddress": a.host,
            }),
            None => serde_json::json!({}),
        };
        base64url(json.to_string().as_bytes())
    }

    async fn request(&self, method: &str, path: &str) -> Result<(u16, Bytes), String> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "docker")
            .header("X-Registry-Auth", self.registry_auth_header())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }

    /// Pushes `image` (`registry/repo:tag`, already in dockerd) and returns its manifest digest.
    pub async fn push(&self, image: &str) -> Result<String, PushError> {
        let (repo, tag) = split_tag(image);
        let path = format!(
            "/v1.41/images/{}/push?tag={}",
            percent_encode(repo),
            percent_encode(tag)
        );
        let (status, body) =
            self.request("POST", &path)
                .await
                .map_err(|detail| PushError::Connect {
                    socket: self.socket.clone(),
                    detail,
                })?;
        if status != 200 {
            return Err(PushError::Failed {
                image: image.to_owned(),
                detail: format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()),
            });
        }
        push_digest(image, &body)
    }

    /// Removes a local image name (the layers stay in BuildKit's cache).
    pub async fn remove_image(&self, image: &str) -> Result<(), String> {
        let path = format!("/v1.41/images/{}?noprune=1", percent_encode(image));
        let (status, body) = self.request("DELETE", &path).await?;
        match status {
            200 | 404 => Ok(()),
            _ => Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )),
        }
    }
}

/// RFC 4648 base64 with the URL-safe alphabet and padding (what Go's `base64.URLEncoding`,
/// which dockerd decodes `X-Registry-Auth` with, writes).
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads the push stream (JSON lines): an `error` line fails, the `aux.Digest` is the result.
fn push_digest(image: &str, body: &[u8]) -> Result<String, PushError> {
    let mut digest = None;
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(err) = msg.get("error").and_then(|e| e.as_str()) {
            return Err(PushError::Failed {
                image: image.to_owned(),
                detail: err.to_owned(),
            });
        }
        if let Some(d) = msg.pointer("/aux/Digest").and_then(|d| d.as_str()) {
            digest = Some(d.to_owned());
        }
    }
    digest.ok_or_else(|| PushError::NoDigest {
        image: image.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_auth_is_base64url_json_and_empty_when_anonymous() {
        assert_eq!(base64url(b"{}"), "e30=");
        assert_eq!(base64url(b"\xfb\xff"), "-_8=");
        assert_eq!(base64url(b"abc"), "YWJj");
        assert_eq!(base64url(b"a"), "YQ==");
        let anonymous = Engine::new("/x");
        assert_eq!(anonymous.registry_auth_header(), "e30=");
        let auth = Engine::new("/x").with_auth(Some(RegistryAuth {
            host: "127.0.0.1:5000".into(),
            username: "node-build-1".into(),
            password: "p".into(),
        }));
        let header = auth.registry_auth_header();
        assert!(!header.contains('+') && !header.contains('/'));
        assert!(header.starts_with("ey"), "{header}");
    }

    #[test]
    fn digest_and_errors_from_the_push_stream() {
        let ok = br#"{"status":"Pushing"}
{"status":"t: digest: sha256:abc size: 1"}
{"progressDetail":{},"aux":{"Tag":"t","Digest":"sha256:abc","Size":1}}
"#;
        assert_eq!(push_digest("r/x:t", ok).unwrap(), "sha256:abc");
        let bad = br#"{"errorDetail":{"message":"denied"},"error":"denied"}"#;
        assert!(
            matches!(push_digest("r/x:t", bad), Err(PushError::Failed { detail, .. }) if detail == "denied")
        );
        assert!(matches!(
            push_digest("r/x:t", b""),
            Err(PushError::NoDigest { .. })
        ));
    }

    #[test]
    fn tags_split_after_the_registry_port() {
        assert_eq!(
            split_tag("127.0.0.1:5000/a/b:c1"),
            ("127.0.0.1:5000/a/b", "c1")
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b", "latest")
        );
    }
}
