//! Remapped snapshots (what containerd's Go client calls `WithRemappedSnapshot`, built layer
//! by layer): for each layer of the image, a snapshot `<chainID>-remap-<base>` on the one
//! below it holding the layer unpacked again with every file owned by the range's ids. The
//! top one is the parent of every container of that range; the lower ones are shared with
//! every other image on the same base layers, so a new build of an app only remaps its new
//! layers.
//!
//! One layer ([`crate::image::unpack`], as the pull unpacks it): an active snapshot on the
//! remapped layer below (under a lease, so the garbage collector leaves it alone), `Diff.Apply`
//! of the layer's blob onto it, a shift ([`super::shift`]) of the snapshot's own upper
//! directory only (no overlay copy-up of the layers below), commit. The image's config blob carries a
//! `containerd.io/gc.ref.snapshot.<snapshotter>/remap-<base>` label naming the top one, so the
//! remapped chain lives exactly as long as the image does (or a container on it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use containerd_client::services::v1::{Info as ContentInfo, UpdateRequest as UpdateContentRequest};

use super::IdMap;
use crate::containerd::Containerd;
use crate::error::{Result, RuntimeError};
use crate::image::PulledImage;
use crate::image::unpack::{self, LayerUnpack, Snapshots};

/// Builds and finds remapped snapshots; one build per snapshot at a time.
#[derive(Debug)]
pub struct Remapper {
    containerd: Containerd,
    snapshots: Snapshots,
    building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The name of an image chain's snapshot remapped into `map`.
pub fn remapped_key(chain_id: &str, map: IdMap) -> String {
    format!("{chain_id}-remap-{}", map.base)
}

impl Remapper {
    pub fn new(containerd: Containerd, snapshotter: &str) -> Self {
        Self {
            snapshots: Snapshots::new(containerd.clone(), snapshotter),
            containerd,
            building: Mutex::new(HashMap::new()),
        }
    }

    /// The key of `image`'s snapshot remapped into `map`, built if it does not exist yet.
    pub async fn remapped(&self, image: &PulledImage, map: IdMap) -> Result<String> {
        let key = remapped_key(&image.chain_id, map);
        // Referenced first: from here on the collector keeps it (whether it exists yet or not).
        self.reference(image, map, &key).await?;
        if self.snapshots.exists(&key).await? {
            return Ok(key);
        }
        let lock = self
            .building
            .lock()
            .expect("remap locks")
            .entry(key.clone())
            .or_default()
            .clone();
        let _building = lock.lock().await;
        if !self.snapshots.exists(&key).await? {
            let started = Instant::now();
            self.build(image, map).await?;
            tracing::info!(
                snapshot = %key,
                image = %image.name,
                ms = started.elapsed().as_millis() as u64,
                "remapped snapshot built"
            );
        }
        drop(_building);
        self.building.lock().expect("remap locks").remove(&key);
        Ok(key)
    }

    /// Labels the image's config blob with a reference to the remapped snapshot.
    async fn reference(&self, image: &PulledImage, map: IdMap, key: &str) -> Result<()> {
        let label = format!(
            "containerd.io/gc.ref.snapshot.{}/remap-{}",
            self.snapshots.snapshotter(),
            map.base
        );
        self.containerd
            .content()
            .update(self.containerd.req(UpdateContentRequest {
                info: Some(ContentInfo {
                    digest: image.config_digest.clone(),
                    labels: [(label.clone(), key.to_owned())].into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![format!("labels.{label}")],
                }),
            }))
            .await
            .map(|_| ())
            .map_err(|s| RuntimeError::containerd("Content.Update", &image.config_digest, s))
    }

    async fn build(&self, image: &PulledImage, map: IdMap) -> Result<()> {
        let lease = unpack::create_lease(&self.containerd, "remap").await?;
        let built = self.build_layers(image, map, &lease).await;
        unpack::delete_lease(&self.containerd, &lease).await;
        built
    }

    /// Each missing remapped layer, bottom up.
    async fn build_layers(&self, image: &PulledImage, map: IdMap, lease: &str) -> Result<()> {
        let chains = crate::image::chain_ids(&image.config.diff_ids);
        if chains.len() != image.layers.len() {
            return Err(RuntimeError::Image {
                reference: image.name.clone(),
                reason: format!(
                    "{} layers but {} diff ids",
                    image.layers.len(),
                    chains.len()
                ),
            });
        }
        let mut parent = String::new();
        for (i, layer) in image.layers.iter().enumerate() {
            let key = remapped_key(&chains[i], map);
            if !self.snapshots.exists(&key).await? {
                let shift: unpack::Rewrite =
                    Box::new(move |upper| super::shift::shift_tree(upper, map).map(|_| ()));
                let u = LayerUnpack {
                    layer,
                    diff_id: &image.config.diff_ids[i],
                    parent: &parent,
                    work: format!("{key}-work-{}", unpack::nanos()),
                    key: &key,
                };
                self.snapshots.unpack(lease, u, Some(shift)).await?;
            }
            parent = key;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remapped_keys_name_chain_and_base() {
        assert_eq!(
            remapped_key("sha256:ab", IdMap { base: 131_072 }),
            "sha256:ab-remap-131072"
        );
    }
}
