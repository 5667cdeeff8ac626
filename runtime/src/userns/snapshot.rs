//! Remapped snapshots (what containerd's Go client calls `WithRemappedSnapshot`, built layer
//! by layer): for each layer of the image, a snapshot `<chainID>-remap-<base>` on the one
//! below it holding the layer unpacked again with every file owned by the range's ids. The
//! top one is the parent of every container of that range; the lower ones are shared with
//! every other image on the same base layers, so a new build of an app only remaps its new
//! layers.
//!
//! One layer: an active snapshot on the remapped layer below (under a lease, so the garbage
//! collector leaves it alone), `Diff.Apply` of the layer's blob onto it, a shift
//! ([`super::shift`]) of the snapshot's own upper directory only (no overlay copy-up of the
//! layers below), commit. The image's config blob carries a
//! `containerd.io/gc.ref.snapshot.<snapshotter>/remap-<base>` label naming the top one, so the
//! remapped chain lives exactly as long as the image does (or a container on it).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
    Info as ContentInfo, UpdateRequest as UpdateContentRequest,
};
use containerd_client::types::{Descriptor as CdDescriptor, Mount};

use super::IdMap;
use crate::containerd::Containerd;
use crate::error::{Result, RuntimeError};
use crate::image::PulledImage;
use crate::image::manifest::Descriptor;

/// Builds and finds remapped snapshots; one build per snapshot at a time.
#[derive(Debug)]
pub struct Remapper {
    containerd: Containerd,
    snapshotter: String,
    building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The name of an image chain's snapshot remapped into `map`.
pub fn remapped_key(chain_id: &str, map: IdMap) -> String {
    format!("{chain_id}-remap-{}", map.base)
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl Remapper {
    pub fn new(containerd: Containerd, snapshotter: &str) -> Self {
        Self {
            containerd,
            snapshotter: snapshotter.to_owned(),
            building: Mutex::new(HashMap::new()),
        }
    }

    /// The key of `image`'s snapshot remapped into `map`, built if it does not exist yet.
    pub async fn remapped(&self, image: &PulledImage, map: IdMap) -> Result<String> {
        let key = remapped_key(&image.chain_id, map);
        // Referenced first: from here on the collector keeps it (whether it exists yet or not).
        self.reference(image, map, &key).await?;
        if self.exists(&key).await? {
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
        if !self.exists(&key).await? {
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

    async fn exists(&self, key: &str) -> Result<bool> {
        let r = self
            .containerd
            .snapshots()
            .stat(self.containerd.req(StatSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_owned(),
            }))
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(RuntimeError::containerd("Snapshots.Stat", key, s)),
        }
    }

    /// Labels the image's config blob with a reference to the remapped snapshot.
    async fn reference(&self, image: &PulledImage, map: IdMap, key: &str) -> Result<()> {
        let label = format!(
            "containerd.io/gc.ref.snapshot.{}/remap-{}",
            self.snapshotter, map.base
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
        let lease = format!("stackpad-remap-{}", nanos());
        let expire = SystemTime::now() + std::time::Duration::from_secs(3600);
        self.containerd
            .leases()
            .create(
                self.containerd.req(CreateLeaseRequest {
                    id: lease.clone(),
                    labels: [(
                        "containerd.io/gc.expire".to_owned(),
                        crate::image::pull::rfc3339(expire),
                    )]
                    .into(),
                }),
            )
            .await
            .map_err(|s| RuntimeError::containerd("Leases.Create", &lease, s))?;
        let built = self.build_layers(image, map, &lease).await;
        let _ = self
            .containerd
            .leases()
            .delete(self.containerd.req(DeleteLeaseRequest {
                id: lease,
                sync: false,
            }))
            .await;
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
            if !self.exists(&key).await? {
                self.build_layer(layer, &image.config.diff_ids[i], &parent, &key, map, lease)
                    .await?;
            }
            parent = key;
        }
        Ok(())
    }

    async fn build_layer(
        &self,
        layer: &Descriptor,
        diff_id: &str,
        parent: &str,
        key: &str,
        map: IdMap,
        lease: &str,
    ) -> Result<()> {
        let work = format!("{key}-work-{}", nanos());
        let mounts = self
            .containerd
            .snapshots()
            .prepare(self.containerd.leased(
                PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: work.clone(),
                    parent: parent.to_owned(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(|s| RuntimeError::containerd("Snapshots.Prepare", &work, s))?
            .into_inner()
            .mounts;
        let done = self
            .apply_and_shift(layer, diff_id, mounts, map, lease)
            .await;
        if let Err(e) = done {
            self.remove(&work).await;
            return Err(e);
        }
        let committed = self
            .containerd
            .snapshots()
            .commit(self.containerd.leased(
                CommitSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    name: key.to_owned(),
                    key: work.clone(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await;
        match committed {
            Ok(_) => Ok(()),
            // Another agent on this namespace built it meanwhile.
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                self.remove(&work).await;
                Ok(())
            }
            Err(s) => {
                self.remove(&work).await;
                Err(RuntimeError::containerd("Snapshots.Commit", key, s))
            }
        }
    }

    /// Unpacks the layer onto the work snapshot, then shifts what it wrote.
    async fn apply_and_shift(
        &self,
        layer: &Descriptor,
        diff_id: &str,
        mounts: Vec<Mount>,
        map: IdMap,
        lease: &str,
    ) -> Result<()> {
        let upper = upper_dir(&mounts).ok_or_else(|| RuntimeError::Image {
            reference: layer.digest.clone(),
            reason: format!("no upper directory in the snapshot's mounts {mounts:?}"),
        })?;
        let applied = self
            .containerd
            .diff()
            .apply(self.containerd.leased(
                ApplyRequest {
                    diff: Some(CdDescriptor {
                        media_type: layer.media_type.clone(),
                        digest: layer.digest.clone(),
                        size: layer.size,
                        annotations: HashMap::new(),
                    }),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                lease,
            ))
            .await
            .map_err(|s| RuntimeError::containerd("Diff.Apply", &layer.digest, s))?;
        let got = applied
            .into_inner()
            .applied
            .map(|d| d.digest)
            .unwrap_or_default();
        if got != diff_id {
            return Err(RuntimeError::Image {
                reference: layer.digest.clone(),
                reason: format!("layer unpacked to {got}, config says {diff_id}"),
            });
        }
        let shifted = tokio::task::spawn_blocking({
            let upper = upper.clone();
            move || super::shift::shift_tree(&upper, map)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("shift task: {e}"))));
        shifted.map(|_| ()).map_err(|e| RuntimeError::io(&upper, e))
    }

    async fn remove(&self, key: &str) {
        let _ = self
            .containerd
            .snapshots()
            .remove(self.containerd.req(RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_owned(),
            }))
            .await;
    }
}

/// The directory a snapshot's own changes land in: the bind source of a snapshot with no
/// parent, the `upperdir` of an overlay.
fn upper_dir(mounts: &[Mount]) -> Option<PathBuf> {
    let [m] = mounts else { return None };
    match m.r#type.as_str() {
        "bind" => Some(PathBuf::from(&m.source)),
        "overlay" => m
            .options
            .iter()
            .find_map(|o| o.strip_prefix("upperdir="))
            .map(PathBuf::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_dir_of_bind_and_overlay_mounts() {
        let bind = Mount {
            r#type: "bind".into(),
            source: "/s/1/fs".into(),
            target: String::new(),
            options: vec!["rw".into(), "rbind".into()],
        };
        assert_eq!(upper_dir(&[bind]), Some(PathBuf::from("/s/1/fs")));
        let overlay = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "index=off".into(),
                "workdir=/s/2/work".into(),
                "upperdir=/s/2/fs".into(),
                "lowerdir=/s/1/fs".into(),
            ],
        };
        assert_eq!(upper_dir(&[overlay]), Some(PathBuf::from("/s/2/fs")));
        assert_eq!(upper_dir(&[]), None);
        assert_eq!(
            remapped_key("sha256:ab", IdMap { base: 131_072 }),
            "sha256:ab-remap-131072"
        );
    }
}
