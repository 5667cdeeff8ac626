//! Remapped snapshots (what containerd's Go client calls `WithRemappedSnapshot`): a snapshot
//! of the image's committed chain whose every file is owned by a range's ids, committed as
//! `<chainID>-remap-<base>` and shared by every container of that range, whose own active
//! snapshot is prepared on top of it.
//!
//! Built once per image and range: an active snapshot on the chain (under a lease, so the
//! garbage collector leaves it alone) is mounted on the agent's run directory, shifted
//! ([`super::shift`]), unmounted and committed. The image's config blob carries a
//! `containerd.io/gc.ref.snapshot.<snapshotter>/remap-<base>` label, so the remapped snapshot
//! lives exactly as long as the image does (or a container on it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest, Info as ContentInfo,
    UpdateRequest as UpdateContentRequest,
};
use containerd_client::types::Mount;

use super::IdMap;
use crate::containerd::Containerd;
use crate::error::{Result, RuntimeError};
use crate::image::PulledImage;

/// Builds and finds remapped snapshots; one build per snapshot at a time.
#[derive(Debug)]
pub struct Remapper {
    containerd: Containerd,
    snapshotter: String,
    /// Where work snapshots are mounted while they are shifted.
    work_dir: PathBuf,
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
    pub fn new(containerd: Containerd, snapshotter: &str, run_dir: &Path) -> Self {
        Self {
            containerd,
            snapshotter: snapshotter.to_owned(),
            work_dir: run_dir.join("remap"),
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
            self.build(&image.chain_id, map, &key).await?;
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

    async fn build(&self, chain_id: &str, map: IdMap, key: &str) -> Result<()> {
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
        let built = self.build_leased(chain_id, map, key, &lease).await;
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

    async fn build_leased(&self, chain_id: &str, map: IdMap, key: &str, lease: &str) -> Result<()> {
        let work = format!("{key}-work-{}", nanos());
        let mounts = self
            .containerd
            .snapshots()
            .prepare(self.containerd.leased(
                PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: work.clone(),
                    parent: chain_id.to_owned(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(|s| RuntimeError::containerd("Snapshots.Prepare", &work, s))?
            .into_inner()
            .mounts;
        let target = self.work_dir.join(nanos().to_string());
        let shifted = tokio::task::spawn_blocking({
            let target = target.clone();
            move || shift_mounted(&mounts, &target, map)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("shift task: {e}"))));
        if let Err(e) = shifted {
            self.remove(&work).await;
            return Err(RuntimeError::io(&target, e));
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

/// Mounts a snapshot's mounts on `target`, shifts the tree, unmounts (also on failure).
fn shift_mounted(mounts: &[Mount], target: &Path, map: IdMap) -> std::io::Result<()> {
    let [m] = mounts else {
        return Err(std::io::Error::other(format!(
            "expected one mount for the snapshot, got {}",
            mounts.len()
        )));
    };
    std::fs::create_dir_all(target)?;
    let mounted = mount_one(m, target);
    let result = mounted.and_then(|()| {
        let out = super::shift::shift_tree(target, map);
        let unmounted = nix::mount::umount(target).map_err(std::io::Error::from);
        out.and(unmounted)
    });
    let _ = std::fs::remove_dir(target);
    result
}

/// One containerd mount (`bind` or `overlay`) at `target`.
fn mount_one(m: &Mount, target: &Path) -> std::io::Result<()> {
    use nix::mount::MsFlags;
    let mut flags = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            other => data.push(other),
        }
    }
    let data = data.join(",");
    // The kernel takes one page of mount data: a very deep image's lowerdir list does not fit.
    if data.len() >= 4096 {
        return Err(std::io::Error::other(format!(
            "mount options of {} bytes exceed a page (image has too many layers)",
            data.len()
        )));
    }
    let fstype = if flags.contains(MsFlags::MS_BIND) {
        None
    } else {
        Some(m.r#type.as_str())
    };
    nix::mount::mount(
        Some(m.source.as_str()),
        target,
        fstype,
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|e| std::io::Error::other(format!("mount {} on {}: {e}", m.r#type, target.display())))
}
