//! Layers onto the snapshotter, shared by the pull (snapshots named by chain id) and the
//! user-namespace remapper (snapshots named `<chainID>-remap-<base>`): temporary leases, and
//! one layer unpacked as an active snapshot on its parent under a lease, `Diff.Apply` of the
//! layer's blob, the diff id checked, an optional rewrite of what it wrote, commit under the
//! final key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
};
use containerd_client::types::{Descriptor as CdDescriptor, Mount};

use super::manifest::Descriptor;
use crate::containerd::Containerd;
use crate::error::{Result, RuntimeError};

/// Nanoseconds since the epoch: the unique part of temporary names.
pub(crate) fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Creates a lease `stackpad-<purpose>-<nanos>` that expires after an hour (should the agent
/// die before deleting it) and returns its id.
pub async fn create_lease(containerd: &Containerd, purpose: &str) -> Result<String> {
    let lease = format!("stackpad-{purpose}-{}", nanos());
    let expire = SystemTime::now() + std::time::Duration::from_secs(3600);
    containerd
        .leases()
        .create(
            containerd.req(CreateLeaseRequest {
                id: lease.clone(),
                labels: [(
                    "containerd.io/gc.expire".to_owned(),
                    super::pull::rfc3339(expire),
                )]
                .into(),
            }),
        )
        .await
        .map_err(|s| RuntimeError::containerd("Leases.Create", &lease, s))?;
    Ok(lease)
}

/// Deletes a lease (best effort: an undeleted one expires by itself).
pub async fn delete_lease(containerd: &Containerd, lease: &str) {
    let _ = containerd
        .leases()
        .delete(containerd.req(DeleteLeaseRequest {
            id: lease.to_owned(),
            sync: false,
        }))
        .await;
}

/// What is done to the files one layer wrote (its snapshot's own upper directory) between
/// the unpack and the commit; runs on a blocking thread.
pub type Rewrite = Box<dyn FnOnce(&Path) -> std::io::Result<()> + Send>;

/// One layer to unpack.
#[derive(Debug)]
pub struct LayerUnpack<'a> {
    pub layer: &'a Descriptor,
    /// The uncompressed digest the image config names for it.
    pub diff_id: &'a str,
    /// The committed snapshot below (empty for the bottom layer).
    pub parent: &'a str,
    /// The active snapshot it is unpacked into (removed again on failure).
    pub work: String,
    /// The committed snapshot's name.
    pub key: &'a str,
}

/// One snapshotter of containerd.
#[derive(Debug, Clone)]
pub struct Snapshots {
    containerd: Containerd,
    snapshotter: String,
}

impl Snapshots {
    pub fn new(containerd: Containerd, snapshotter: &str) -> Self {
        Self {
            containerd,
            snapshotter: snapshotter.to_owned(),
        }
    }

    pub fn snapshotter(&self) -> &str {
        &self.snapshotter
    }

    pub async fn exists(&self, key: &str) -> Result<bool> {
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

    /// Removes a snapshot (best effort).
    pub async fn remove(&self, key: &str) {
        let _ = self
            .containerd
            .snapshots()
            .remove(self.containerd.req(RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_owned(),
            }))
            .await;
    }

    /// Unpacks `u.layer` onto `u.parent` (then `rewrite`s what it wrote, if given) and commits
    /// it as `u.key`. A key another agent committed meanwhile counts as done.
    pub async fn unpack(
        &self,
        lease: &str,
        u: LayerUnpack<'_>,
        rewrite: Option<Rewrite>,
    ) -> Result<()> {
        let mounts = self
            .containerd
            .snapshots()
            .prepare(self.containerd.leased(
                PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: u.work.clone(),
                    parent: u.parent.to_owned(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(|s| RuntimeError::containerd("Snapshots.Prepare", &u.work, s))?
            .into_inner()
            .mounts;
        if let Err(e) = self.apply(lease, u.layer, u.diff_id, mounts, rewrite).await {
            self.remove(&u.work).await;
            return Err(e);
        }
        let committed = self
            .containerd
            .snapshots()
            .commit(self.containerd.leased(
                CommitSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    name: u.key.to_owned(),
                    key: u.work.clone(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await;
        match committed {
            Ok(_) => Ok(()),
            // Another pull or agent committed the same layer first.
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                self.remove(&u.work).await;
                Ok(())
            }
            Err(s) => {
                self.remove(&u.work).await;
                Err(RuntimeError::containerd("Snapshots.Commit", u.key, s))
            }
        }
    }

    /// `Diff.Apply` of the layer onto the work snapshot's mounts, the diff id checked, then
    /// the rewrite of its upper directory.
    async fn apply(
        &self,
        lease: &str,
        layer: &Descriptor,
        diff_id: &str,
        mounts: Vec<Mount>,
        rewrite: Option<Rewrite>,
    ) -> Result<()> {
        let rewrite = match rewrite {
            None => None,
            Some(f) => {
                let upper = upper_dir(&mounts).ok_or_else(|| RuntimeError::Image {
                    reference: layer.digest.clone(),
                    reason: format!("no upper directory in the snapshot's mounts {mounts:?}"),
                })?;
                Some((upper, f))
            }
        };
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
        let Some((upper, f)) = rewrite else {
            return Ok(());
        };
        let done = tokio::task::spawn_blocking({
            let upper = upper.clone();
            move || f(&upper)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("rewrite task: {e}"))));
        done.map_err(|e| RuntimeError::io(&upper, e))
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
    }
}
