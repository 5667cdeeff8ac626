//! Pulling an image into containerd without the Transfer service (containerd 1.6): manifest
//! and blobs from the registry into Content under a lease, the Image record, and each layer
//! unpacked with Diff onto the snapshotter, named by its chain id. Work already done (blobs in
//! Content, chain-id snapshots) is skipped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::{
    CreateImageRequest, GetImageRequest, Image, InfoRequest, ReadContentRequest,
    UpdateImageRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor as CdDescriptor;
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::manifest::{self, Descriptor, Document, ImageConfig};
use super::reference::ImageRef;
use super::registry::RegistryClient;
use super::unpack::{self, LayerUnpack, Snapshots, nanos};
use crate::containerd::Containerd;
use crate::error::{Result, RuntimeError};

/// An image ready to run: its manifest digest, config and top-layer chain id.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub name: String,
    pub digest: String,
    /// Digest of the config blob (it carries the labels that keep snapshots referenced).
    pub config_digest: String,
    /// The layers, bottom first (their blobs stay in Content while the image exists).
    pub layers: Vec<Descriptor>,
    pub config: ImageConfig,
    pub chain_id: String,
    /// Whether anything had to be downloaded or unpacked.
    pub fetched: bool,
}

/// Pulls images into containerd and remembers the configs of those it has seen.
#[derive(Debug)]
pub struct ImageStore {
    containerd: Containerd,
    registry: RegistryClient,
    snapshots: Snapshots,
    /// Manifest digest -> image (configs never change for a digest).
    known: Mutex<HashMap<String, PulledImage>>,
}

impl ImageStore {
    pub fn new(containerd: Containerd, registry: RegistryClient, snapshotter: &str) -> Self {
        Self {
            snapshots: Snapshots::new(containerd.clone(), snapshotter),
            containerd,
            registry,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Makes `reference` runnable on this node: resolves it to a linux/amd64 manifest and
    /// fetches and unpacks whatever is missing.
    pub async fn pull(&self, reference: &str) -> Result<PulledImage> {
        let image = ImageRef::parse(reference)?;
        let name = image.canonical();
        // A digest names its content for good: when everything is here, the registry is not
        // needed (deploys of pinned images survive a registry outage).
        if let Some(local) = self.local(&image).await? {
            return Ok(local);
        }
        let (manifest_bytes, manifest_digest, manifest_mt, m) = self.resolve(&image).await?;
        let cached = self
            .known
            .lock()
            .expect("image cache")
            .get(&manifest_digest)
            .filter(|k| k.name == name)
            .cloned();
        // Trust the cache only while the unpacked layers are still there.
        if let Some(known) = cached
            && self.snapshots.exists(&known.chain_id).await?
        {
            return Ok(PulledImage {
                fetched: false,
                ..known
            });
        }
        let config_bytes = match self.read_content(&m.config.digest).await? {
            Some(b) => b,
            None => self.fetch_small(&image, &m.config.digest).await?,
        };
        let config = manifest::parse_config(&name, &config_bytes, m.layers.len())?;
        let chains = super::chain_ids(&config.diff_ids);
        let top = chains.last().cloned().expect("manifest has layers");

        let lease = unpack::create_lease(&self.containerd, "pull").await?;
        let outcome = self
            .store(
                &image,
                &lease,
                &m,
                &config,
                &chains,
                &manifest_bytes,
                &manifest_digest,
                &manifest_mt,
                &config_bytes,
            )
            .await;
        unpack::delete_lease(&self.containerd, &lease).await;
        let fetched = outcome?;
        let pulled = PulledImage {
            name,
            digest: manifest_digest.clone(),
            config_digest: m.config.digest.clone(),
            layers: m.layers.clone(),
            config,
            chain_id: top,
            fetched,
        };
        self.known
            .lock()
            .expect("image cache")
            .insert(manifest_digest, pulled.clone());
        Ok(pulled)
    }

    /// A digest-pinned image that is complete in containerd (record, manifest, config, unpacked
    /// layers), without asking the registry. `None` when anything is missing.
    async fn local(&self, image: &ImageRef) -> Result<Option<PulledImage>> {
        let Some(digest) = image.digest.as_deref() else {
            return Ok(None);
        };
        let name = image.canonical();
        let cached = self
            .known
            .lock()
            .expect("image cache")
            .get(digest)
            .filter(|k| k.name == name)
            .cloned();
        if let Some(known) = cached
            && self.snapshots.exists(&known.chain_id).await?
        {
            return Ok(Some(PulledImage {
                fetched: false,
                ..known
            }));
        }
        let Some(manifest_bytes) = self.read_content(digest).await? else {
            return Ok(None);
        };
        let Ok(Document::Manifest(m)) = manifest::parse_document(&name, "", &manifest_bytes) else {
            return Ok(None);
        };
        let Some(config_bytes) = self.read_content(&m.config.digest).await? else {
            return Ok(None);
        };
        let config = manifest::parse_config(&name, &config_bytes, m.layers.len())?;
        let Some(top) = super::chain_ids(&config.diff_ids).last().cloned() else {
            return Ok(None);
        };
        if !self.snapshots.exists(&top).await? {
            return Ok(None);
        }
        let record = self
            .containerd
            .images()
            .get(self.containerd.req(GetImageRequest { name: name.clone() }))
            .await;
        match record {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(RuntimeError::containerd("Images.Get", &name, s)),
        }
        let pulled = PulledImage {
            name,
            digest: digest.to_owned(),
            config_digest: m.config.digest.clone(),
            layers: m.layers.clone(),
            config,
            chain_id: top,
            fetched: false,
        };
        self.known
            .lock()
            .expect("image cache")
            .insert(digest.to_owned(), pulled.clone());
        Ok(Some(pulled))
    }

    /// Fetches the manifest (through an index if there is one) for linux/amd64.
    async fn resolve(
        &self,
        image: &ImageRef,
    ) -> Result<(Vec<u8>, String, String, manifest::Manifest)> {
        let name = image.canonical();
        let mut fetched = self
            .registry
            .manifest(image, image.manifest_reference())
            .await?;
        for _ in 0..2 {
            match manifest::parse_document(&name, &fetched.media_type, &fetched.bytes)? {
                Document::Manifest(m) => {
                    let mt = if fetched.media_type.is_empty() {
                        super::registry::MT_OCI_MANIFEST.to_owned()
                    } else {
                        fetched.media_type.clone()
                    };
                    return Ok((fetched.bytes, fetched.digest, mt, m));
                }
                Document::Index(d) => {
                    fetched = self.registry.manifest(image, &d.digest).await?;
                }
            }
        }
        Err(RuntimeError::Image {
            reference: name,
            reason: "index nested in index".into(),
        })
    }

    #[allow(clippy::too_many_arguments, reason = "one pull's parts, called once")]
    async fn store(
        &self,
        image: &ImageRef,
        lease: &str,
        m: &manifest::Manifest,
        config: &ImageConfig,
        chains: &[String],
        manifest_bytes: &[u8],
        manifest_digest: &str,
        manifest_mt: &str,
        config_bytes: &[u8],
    ) -> Result<bool> {
        let mut fetched = false;
        let top = chains.last().expect("layers");
        let snapshot_ready = self.snapshots.exists(top).await?;
        if !snapshot_ready {
            for (i, layer) in m.layers.iter().enumerate() {
                if self.snapshots.exists(&chains[i]).await? {
                    continue;
                }
                fetched = true;
                if self.read_info(&layer.digest).await?.is_none() {
                    let mut labels = HashMap::new();
                    labels.insert(
                        "containerd.io/uncompressed".into(),
                        config.diff_ids[i].clone(),
                    );
                    self.write_blob(image, lease, layer, labels).await?;
                }
                let parent = if i == 0 {
                    String::new()
                } else {
                    chains[i - 1].clone()
                };
                let u = LayerUnpack {
                    layer,
                    diff_id: &config.diff_ids[i],
                    parent: &parent,
                    work: format!("extract-{}-{}", nanos(), chains[i]),
                    key: &chains[i],
                };
                self.snapshots.unpack(lease, u, None).await?;
            }
        }
        // Config and manifest, with the labels that keep layers and snapshots referenced.
        if self.read_info(&m.config.digest).await?.is_none() {
            let mut labels = HashMap::new();
            labels.insert(
                format!(
                    "containerd.io/gc.ref.snapshot.{}",
                    self.snapshots.snapshotter()
                ),
                top.clone(),
            );
            self.write_bytes(lease, &m.config.digest, config_bytes, labels)
                .await?;
            fetched = true;
        }
        if self.read_info(manifest_digest).await?.is_none() {
            let mut labels = HashMap::new();
            labels.insert(
                "containerd.io/gc.ref.content.config".into(),
                m.config.digest.clone(),
            );
            for (i, l) in m.layers.iter().enumerate() {
                labels.insert(
                    format!("containerd.io/gc.ref.content.l.{i}"),
                    l.digest.clone(),
                );
            }
            self.write_bytes(lease, manifest_digest, manifest_bytes, labels)
                .await?;
            fetched = true;
        }
        let record = Image {
            name: image.canonical(),
            labels: HashMap::new(),
            target: Some(CdDescriptor {
                media_type: manifest_mt.to_owned(),
                digest: manifest_digest.to_owned(),
                size: manifest_bytes.len() as i64,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let created = self
            .containerd
            .images()
            .create(self.containerd.leased(
                CreateImageRequest {
                    image: Some(record.clone()),
                    source_date_epoch: None,
                },
                lease,
            ))
            .await;
        match created {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                self.containerd
                    .images()
                    .update(self.containerd.leased(
                        UpdateImageRequest {
                            image: Some(record),
                            update_mask: None,
                            source_date_epoch: None,
                        },
                        lease,
                    ))
                    .await
                    .map_err(|e| RuntimeError::containerd("Images.Update", image.canonical(), e))?;
            }
            Err(e) => {
                return Err(RuntimeError::containerd(
                    "Images.Create",
                    image.canonical(),
                    e,
                ));
            }
        }
        Ok(fetched)
    }

    async fn read_info(&self, digest: &str) -> Result<Option<()>> {
        let r = self
            .containerd
            .content()
            .info(self.containerd.req(InfoRequest {
                digest: digest.to_owned(),
            }))
            .await;
        match r {
            Ok(_) => Ok(Some(())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(RuntimeError::containerd("Content.Info", digest, s)),
        }
    }

    /// Reads a small blob from Content, `None` when absent.
    async fn read_content(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let r = self
            .containerd
            .content()
            .read(self.containerd.req(ReadContentRequest {
                digest: digest.to_owned(),
                offset: 0,
                size: 0,
            }))
            .await;
        let mut stream = match r {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(RuntimeError::containerd("Content.Read", digest, s)),
        };
        let mut out = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => out.extend_from_slice(&chunk.data),
                Ok(None) => break,
                Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
                Err(s) => return Err(RuntimeError::containerd("Content.Read", digest, s)),
            }
        }
        Ok(Some(out))
    }

    async fn fetch_small(&self, image: &ImageRef, digest: &str) -> Result<Vec<u8>> {
        let resp = self.registry.blob(image, digest).await?;
        let bytes = resp.bytes().await.map_err(|e| RuntimeError::Registry {
            registry: image.registry.clone(),
            reason: format!("blob {digest}: {e}"),
        })?;
        let got = super::sha256_digest(&bytes);
        if got != digest {
            return Err(RuntimeError::Registry {
                registry: image.registry.clone(),
                reason: format!("blob {digest} arrived with digest {got}"),
            });
        }
        Ok(bytes.to_vec())
    }

    async fn write_bytes(
        &self,
        lease: &str,
        digest: &str,
        bytes: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let data = bytes.to_vec();
        let total = data.len() as i64;
        let reference = format!("stackpad-{digest}-{}", nanos());
        let expected = digest.to_owned();
        tokio::spawn(async move {
            let _ = tx
                .send(write_req(
                    WriteAction::Write,
                    &reference,
                    total,
                    &expected,
                    0,
                    data,
                    HashMap::new(),
                ))
                .await;
            let _ = tx
                .send(write_req(
                    WriteAction::Commit,
                    &reference,
                    total,
                    &expected,
                    total,
                    Vec::new(),
                    labels,
                ))
                .await;
        });
        self.finish_write(lease, digest, rx).await
    }

    /// Streams a blob from the registry into Content.
    async fn write_blob(
        &self,
        image: &ImageRef,
        lease: &str,
        layer: &Descriptor,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let resp = self.registry.blob(image, &layer.digest).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let reference = format!("stackpad-{}-{}", layer.digest, nanos());
        let expected = layer.digest.clone();
        let total = layer.size;
        let registry = image.registry.clone();
        let producer = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut offset = 0i64;
            let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| RuntimeError::Registry {
                    registry: registry.clone(),
                    reason: format!("blob {expected}: {e}"),
                })?;
                buf.extend_from_slice(&chunk);
                if buf.len() >= 1 << 20 {
                    let data = std::mem::take(&mut buf);
                    let n = data.len() as i64;
                    let msg = write_req(
                        WriteAction::Write,
                        &reference,
                        total,
                        &expected,
                        offset,
                        data,
                        HashMap::new(),
                    );
                    offset += n;
                    if tx.send(msg).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if !buf.is_empty() {
                let n = buf.len() as i64;
                let msg = write_req(
                    WriteAction::Write,
                    &reference,
                    total,
                    &expected,
                    offset,
                    buf,
                    HashMap::new(),
                );
                offset += n;
                let _ = tx.send(msg).await;
            }
            let _ = tx
                .send(write_req(
                    WriteAction::Commit,
                    &reference,
                    total,
                    &expected,
                    offset,
                    Vec::new(),
                    labels,
                ))
                .await;
            Ok::<(), RuntimeError>(())
        });
        let written = self.finish_write(lease, &layer.digest, rx).await;
        match producer.await {
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(RuntimeError::Registry {
                    registry: image.registry.clone(),
                    reason: format!("blob {}: download task failed: {e}", layer.digest),
                });
            }
            Ok(Ok(())) => {}
        }
        written
    }

    async fn finish_write(
        &self,
        lease: &str,
        digest: &str,
        rx: tokio::sync::mpsc::Receiver<WriteContentRequest>,
    ) -> Result<()> {
        let resp = self
            .containerd
            .content()
            .write(self.containerd.leased(ReceiverStream::new(rx), lease))
            .await;
        let mut stream = match resp {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(RuntimeError::containerd("Content.Write", digest, s)),
        };
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
                Err(s) => return Err(RuntimeError::containerd("Content.Write", digest, s)),
            }
        }
    }
}

fn write_req(
    action: WriteAction,
    reference: &str,
    total: i64,
    expected: &str,
    offset: i64,
    data: Vec<u8>,
    labels: HashMap<String, String>,
) -> WriteContentRequest {
    WriteContentRequest {
        action: action as i32,
        r#ref: reference.to_owned(),
        total,
        expected: expected.to_owned(),
        offset,
        data,
        labels,
    }
}

/// RFC 3339 UTC timestamp, second precision.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }
}
