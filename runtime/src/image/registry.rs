//! A registry client (OCI distribution API v2): manifests and blobs, with basic or bearer auth.
//! Plain HTTP only for loopback registries and hosts configured `insecure`.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;

use super::reference::ImageRef;
use crate::config::RegistryConfig;
use crate::error::{Result, RuntimeError};

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Talks to the registries named in image references.
#[derive(Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    registries: Vec<RegistryConfig>,
    /// Bearer tokens obtained from a registry's token service, per registry and scope.
    tokens: Mutex<HashMap<String, String>>,
}

/// A manifest or index as fetched: its media type, digest and raw bytes.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl RegistryClient {
    pub fn new(registries: Vec<RegistryConfig>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| RuntimeError::Registry {
                registry: "-".into(),
                reason: format!("http client: {e}"),
            })?;
        Ok(Self {
            http,
            registries,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn config(&self, registry: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.host == registry)
    }

    fn base_url(&self, image: &ImageRef) -> String {
        let host = image.host();
        let loopback = host == "localhost"
            || host == "[::1]"
            || host
                .parse::<std::net::Ipv4Addr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false);
        let insecure = loopback || self.config(&image.registry).is_some_and(|c| c.insecure);
        let scheme = if insecure { "http" } else { "https" };
        format!("{scheme}://{}", image.registry)
    }

    fn err(image: &ImageRef, reason: impl Into<String>) -> RuntimeError {
        RuntimeError::Registry {
            registry: image.registry.clone(),
            reason: reason.into(),
        }
    }

    /// GET with the registry's credentials; answers a bearer challenge once.
    async fn get(&self, image: &ImageRef, path: &str, accept: &str) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.base_url(image));
        let scope = format!("repository:{}:pull", image.repository);
        let token_key = format!("{}|{scope}", image.registry);
        let cfg = self.config(&image.registry);
        for attempt in 0..2 {
            let mut req = self.http.get(&url).header("Accept", accept);
            let cached = self
                .tokens
                .lock()
                .expect("token lock")
                .get(&token_key)
                .cloned();
            if let Some(t) = cached.or_else(|| cfg.and_then(|c| c.token.clone())) {
                req = req.bearer_auth(t);
            } else if let Some(c) = cfg.filter(|c| c.username.is_some()) {
                req = req.basic_auth(c.username.clone().unwrap_or_default(), c.password.clone());
            }
            let resp = req
                .send()
                .await
                .map_err(|e| Self::err(image, format!("GET {url}: {e}")))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                if let Some(params) = challenge.strip_prefix("Bearer ") {
                    let token = self.fetch_token(image, params, &scope).await?;
                    self.tokens
                        .lock()
                        .expect("token lock")
                        .insert(token_key.clone(), token);
                    continue;
                }
                return Err(Self::err(
                    image,
                    format!("GET {url}: unauthorized (check registries credentials)"),
                ));
            }
            return Ok(resp);
        }
        Err(Self::err(
            image,
            format!("GET {url}: unauthorized after token exchange"),
        ))
    }

    async fn fetch_token(&self, image: &ImageRef, params: &str, scope: &str) -> Result<String> {
        let mut realm = None;
        let mut service = None;
        for part in params.split(',') {
            if let Some((k, v)) = part.trim().split_once('=') {
                let v = v.trim_matches('"').to_owned();
                match k {
                    "realm" => realm = Some(v),
                    "service" => service = Some(v),
                    _ => {}
                }
            }
        }
        let realm = realm.ok_or_else(|| Self::err(image, "bearer challenge without realm"))?;
        let mut req = self.http.get(&realm).query(&[("scope", scope)]);
        if let Some(s) = service {
            req = req.query(&[("service", s)]);
        }
        if let Some(c) = self
            .config(&image.registry)
            .filter(|c| c.username.is_some())
        {
            req = req.basic_auth(c.username.clone().unwrap_or_default(), c.password.clone());
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Self::err(image, format!("token {realm}: {e}")))?;
        if !resp.status().is_success() {
            return Err(Self::err(
                image,
                format!("token {realm}: {}", resp.status()),
            ));
        }
        let t: Token = resp
            .json()
            .await
            .map_err(|e| Self::err(image, format!("token {realm}: {e}")))?;
        t.token
            .or(t.access_token)
            .ok_or_else(|| Self::err(image, format!("token {realm}: no token in answer")))
    }

    /// Fetches a manifest or index by tag or digest and checks its digest.
    pub async fn manifest(&self, image: &ImageRef, reference: &str) -> Result<FetchedManifest> {
        let accept = [
            MT_OCI_INDEX,
            MT_OCI_MANIFEST,
            MT_DOCKER_LIST,
            MT_DOCKER_MANIFEST,
        ]
        .join(", ");
        let path = format!("/v2/{}/manifests/{reference}", image.repository);
        let resp = self.get(image, &path, &accept).await?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(RuntimeError::Image {
                reference: image.canonical(),
                reason: format!(
                    "not found in registry {} (manifest {reference})",
                    image.registry
                ),
            });
        }
        if !status.is_success() {
            return Err(Self::err(image, format!("GET {path}: {status}")));
        }
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Self::err(image, format!("GET {path}: {e}")))?
            .to_vec();
        let digest = super::sha256_digest(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(Self::err(
                image,
                format!("manifest {reference} has digest {digest}"),
            ));
        }
        Ok(FetchedManifest {
            media_type,
            digest,
            bytes,
        })
    }

    /// Starts a blob download; the caller streams the body.
    pub async fn blob(&self, image: &ImageRef, digest: &str) -> Result<reqwest::Response> {
        let path = format!("/v2/{}/blobs/{digest}", image.repository);
        let resp = self.get(image, &path, "*/*").await?;
        if !resp.status().is_success() {
            return Err(Self::err(image, format!("GET {path}: {}", resp.status())));
        }
        Ok(resp)
    }
}
