//! The Docker Engine API calls buildd needs where BuildKit is dockerd's embedded one: its
//! `moby` exporter stores the image in dockerd, so the push to the registry is dockerd's
//! `POST /images/{name}/push`, whose stream carries the pushed manifest digest.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

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

/// dockerd's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    pub socket: PathBuf,
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
        }
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
            // The registry is anonymous on the node's network; an empty auth config.
            .header("X-Registry-Auth", "e30=")
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
