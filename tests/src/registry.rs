//! Deleting what a test pushed to the platform registry (`STACKPAD_REGISTRY`, default
//! 127.0.0.1:5000; scripts/services starts it with `storage.delete.enabled`).
//!
//! A repository is emptied by deleting its manifests by digest: `HEAD /v2/<name>/manifests/<tag>`
//! with every manifest media type in `Accept` gives the digest, `DELETE
//! /v2/<name>/manifests/<digest>` removes it with every tag naming it (and an index's child
//! manifests after it). The blobs are the registry's garbage collector's (`docker-registry
//! garbage-collect`), and distribution 2.8 keeps listing an emptied repository in `_catalog`
//! with no tags.

use std::sync::Mutex;

use anyhow::{Context, bail};
use reqwest::StatusCode;

use crate::{Services, on_own_thread, service_down};

/// Every manifest type a pushed image may have, for `Accept`.
const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The registry's API on `address` (`host:port`, plain HTTP as on loopback).
#[derive(Debug, Clone)]
pub struct Registry {
    address: String,
    http: reqwest::Client,
}

impl Registry {
    pub fn new(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// The platform registry (`STACKPAD_REGISTRY`).
    pub fn platform() -> Self {
        Self::new(&Services::from_env().registry)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/v2/{path}", self.address)
    }

    /// Tags of `repository`; none when it is unknown or emptied.
    pub async fn tags(&self, repository: &str) -> anyhow::Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let url = self.url(&format!("{repository}/tags/list"));
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| service_down("the registry", &self.address, e))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let tags: Tags = response
            .error_for_status()
            .with_context(|| format!("GET {url}"))?
            .json()
            .await?;
        Ok(tags.tags.unwrap_or_default())
    }

    /// Repositories whose name starts with `prefix` (pages of `_catalog` followed to the end).
    pub async fn repositories(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            repositories: Vec<String>,
        }
        let mut found = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let url = self.url("_catalog");
            let mut query = vec![("n", "1000".to_owned())];
            query.extend(last.take().map(|last| ("last", last)));
            let response = self
                .http
                .get(&url)
                .query(&query)
                .send()
                .await
                .map_err(|e| service_down("the registry", &self.address, e))?
                .error_for_status()
                .with_context(|| format!("GET {url}"))?;
            let more = response.headers().contains_key(reqwest::header::LINK);
            let page: Catalog = response.json().await?;
            last = page.repositories.last().cloned();
            found.extend(
                page.repositories
                    .into_iter()
                    .filter(|r| r.starts_with(prefix)),
            );
            if !more || last.is_none() {
                return Ok(found);
            }
        }
    }

    /// Deletes every tagged manifest of `repository` (and an index's children); how many
    /// manifests went. An unknown or already empty repository deletes nothing.
    pub async fn delete_repository(&self, repository: &str) -> anyhow::Result<usize> {
        let mut deleted = 0;
        for tag in self.tags(repository).await? {
            let Some((digest, media_type)) = self.manifest_digest(repository, &tag).await? else {
                // Deleted with an earlier tag naming the same manifest.
                continue;
            };
            let children = if media_type.contains("index") || media_type.contains("list") {
                self.children(repository, &digest).await?
            } else {
                Vec::new()
            };
            for digest in std::iter::once(digest).chain(children) {
                deleted += usize::from(self.delete_manifest(repository, &digest).await?);
            }
        }
        Ok(deleted)
    }

    /// Empties every repository whose name starts with `prefix` (e.g. `<organization id>/`);
    /// how many manifests went.
    pub async fn delete_repositories(&self, prefix: &str) -> anyhow::Result<usize> {
        let mut deleted = 0;
        for repository in self.repositories(prefix).await? {
            deleted += self.delete_repository(&repository).await?;
        }
        Ok(deleted)
    }

    /// The digest and media type of `reference`'s manifest; `None` when there is none.
    async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> anyhow::Result<Option<(String, String)>> {
        let url = self.url(&format!("{repository}/manifests/{reference}"));
        let response = self
            .http
            .head(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_TYPES.join(", "))
            .send()
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = response
            .error_for_status()
            .with_context(|| format!("HEAD {url}"))?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let digest = header("docker-content-digest")
            .with_context(|| format!("HEAD {url}: no Docker-Content-Digest"))?;
        Ok(Some((digest, header("content-type").unwrap_or_default())))
    }

    /// The manifests an index or manifest list names.
    async fn children(&self, repository: &str, digest: &str) -> anyhow::Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(default)]
            manifests: Vec<Child>,
        }
        #[derive(serde::Deserialize)]
        struct Child {
            digest: String,
        }
        let url = self.url(&format!("{repository}/manifests/{digest}"));
        let index: Index = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_TYPES.join(", "))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("GET {url}"))?
            .json()
            .await?;
        Ok(index.manifests.into_iter().map(|c| c.digest).collect())
    }

    /// `DELETE /v2/<repository>/manifests/<digest>`: whether it was there.
    async fn delete_manifest(&self, repository: &str, digest: &str) -> anyhow::Result<bool> {
        let url = self.url(&format!("{repository}/manifests/{digest}"));
        let response = self.http.delete(&url).send().await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(false),
            StatusCode::METHOD_NOT_ALLOWED => bail!(
                "DELETE {url}: the registry refuses deletes (storage.delete.enabled is off; \
                 scripts/services writes it on)"
            ),
            _ => {
                response
                    .error_for_status()
                    .with_context(|| format!("DELETE {url}"))?;
                Ok(true)
            }
        }
    }

    /// Puts the image `from:from_tag` (one platform's manifest, as scripts/base-images pushes
    /// them) under `to:to_tag` too: its blobs are mounted across repositories (nothing is
    /// uploaded), then its manifest is put byte for byte, so the copy has the same digest, which
    /// is returned. A test tracks `to` in a `PushedImages` to have it deleted.
    pub async fn copy(
        &self,
        from: &str,
        from_tag: &str,
        to: &str,
        to_tag: &str,
    ) -> anyhow::Result<String> {
        #[derive(serde::Deserialize)]
        struct Blob {
            digest: String,
        }
        #[derive(serde::Deserialize)]
        struct Manifest {
            config: Blob,
            layers: Vec<Blob>,
        }
        let url = self.url(&format!("{from}/manifests/{from_tag}"));
        let response = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_TYPES.join(", "))
            .send()
            .await
            .map_err(|e| service_down("the registry", &self.address, e))?
            .error_for_status()
            .with_context(|| format!("GET {url} (the base images: scripts/base-images)"))?;
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("{from}:{from_tag} is not a single-platform manifest"))?;
        for blob in manifest.layers.iter().chain([&manifest.config]) {
            let mount = self.url(&format!(
                "{to}/blobs/uploads/?mount={}&from={from}",
                blob.digest
            ));
            let mounted = self.http.post(&mount).send().await?;
            if mounted.status() != StatusCode::CREATED {
                bail!("POST {mount}: {} (blob not mounted)", mounted.status());
            }
        }
        let put = self.url(&format!("{to}/manifests/{to_tag}"));
        let response = self
            .http
            .put(&put)
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .body(bytes)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("PUT {put}"))?;
        response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .with_context(|| format!("PUT {put}: no Docker-Content-Digest"))
    }

    /// The repository of `image` in this registry: `<address>/<repository>[:tag][@digest]` or a
    /// bare repository.
    pub fn repository_of<'a>(&self, image: &'a str) -> &'a str {
        let image = image
            .strip_prefix(self.address.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(image);
        let image = image.split_once('@').map_or(image, |(name, _)| name);
        match image.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => name,
            _ => image,
        }
    }
}

/// What a test pushed to the registry, emptied when the guard goes (also when the test fails):
/// each repository tracked by name, and every repository under each tracked prefix.
#[derive(Debug)]
pub struct PushedImages {
    registry: Registry,
    repositories: Mutex<Vec<String>>,
    prefixes: Mutex<Vec<String>>,
}

impl PushedImages {
    /// Tracks nothing yet, on the platform registry.
    pub fn new() -> Self {
        Self::on(Registry::platform())
    }

    pub fn on(registry: Registry) -> Self {
        Self {
            registry,
            repositories: Mutex::new(Vec::new()),
            prefixes: Mutex::new(Vec::new()),
        }
    }

    /// Empties `image`'s repository at the end (`<registry>/<repository>[:tag]` or a bare
    /// repository name).
    pub fn track(&self, image: &str) {
        let repository = self.registry.repository_of(image).to_owned();
        let mut repositories = self.repositories.lock().unwrap_or_else(|e| e.into_inner());
        if !repositories.contains(&repository) {
            repositories.push(repository);
        }
    }

    /// Empties every repository whose name starts with `prefix` at the end (e.g.
    /// `<organization id>/` for everything a test organization's builds pushed).
    pub fn track_prefix(&self, prefix: &str) {
        self.prefixes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(prefix.to_owned());
    }
}

impl Default for PushedImages {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PushedImages {
    fn drop(&mut self) {
        // A client of its own: the test's runtime, which holds the pooled connections, may be
        // gone or blocked.
        let address = self.registry.address.clone();
        let repositories = std::mem::take(
            self.repositories
                .get_mut()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let prefixes = std::mem::take(self.prefixes.get_mut().unwrap_or_else(|e| e.into_inner()));
        if repositories.is_empty() && prefixes.is_empty() {
            return;
        }
        on_own_thread("deleting the images the test pushed", async move {
            let registry = Registry::new(&address);
            for repository in &repositories {
                registry.delete_repository(repository).await?;
            }
            for prefix in &prefixes {
                registry.delete_repositories(prefix).await?;
            }
            Ok(())
        });
    }
}
