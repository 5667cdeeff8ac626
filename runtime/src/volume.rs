//! Persistent volumes: one per (service, name), each a filesystem of its own so its size is a
//! real limit. A volume is a sparse file formatted ext4 (`mkfs.ext4`), loop-mounted
//! (`nosuid,nodev`) under the agent's state directory and bound into the container:
//!
//! ```text
//! <state_dir>/volumes/<service_id>/<name>/fs.ext4     the filesystem image (sparse)
//!                                         /volume.json size and the id range its files are in
//!                                         /mnt         where the image is mounted
//! ```
//!
//! Why a loop-mounted image rather than project quotas: a quota needs the data directory on
//! XFS (or ext4 mounted with `prjquota`), which the node does not choose; a loop image works on
//! any filesystem, its limit is the filesystem's size (a write past it fails with ENOSPC in the
//! container and nothing else on the node fills up), and the image is one file to move or back
//! up. The cost is a loop device per mounted volume and ext4's metadata (about 5% at 64 MiB).
//!
//! The files of a volume belong to its project's user-namespace range: the root is made owned
//! by the range's root at creation, and when the project's range changes (the agent freed it
//! while the project had no container) every file is moved to the new range on the next mount.
//! Mounts survive agent and containerd restarts (they are the host's); [`Volumes::ensure`]
//! mounts again whatever is not mounted (after a reboot) before a task starts.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::userns::{IdMap, RANGE_SIZE};

/// Smallest and largest volume (ext4 with a journal needs a few MiB of its own).
pub const MIN_SIZE_BYTES: u64 = 16 << 20;
pub const MAX_SIZE_BYTES: u64 = 1 << 40;
/// Volumes one service may have.
pub const MAX_VOLUMES: usize = 8;

const IMAGE: &str = "fs.ext4";
const META: &str = "volume.json";
const MOUNT: &str = "mnt";

/// What the agent records of a volume next to its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    size_bytes: u64,
    /// Host id of the container root its files belong to.
    base: u32,
}

/// One volume on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub service_id: String,
    pub name: String,
    pub size_bytes: u64,
    /// Bytes used inside its filesystem; 0 when not mounted.
    pub used_bytes: u64,
    pub mounted: bool,
}

/// The node's volumes, under one directory.
#[derive(Debug, Clone)]
pub struct Volumes {
    dir: PathBuf,
}

fn volume_err(service_id: &str, name: &str, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Volume {
        volume: format!("{service_id}/{name}"),
        reason: reason.into(),
    }
}

/// Runs a command; its stderr in the error.
fn run(service_id: &str, name: &str, cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| volume_err(service_id, name, format!("{cmd:?}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(volume_err(
        service_id,
        name,
        format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    ))
}

/// Undoes the escapes of a path in /proc/self/mountinfo (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points and their sources, from /proc/self/mountinfo.
fn mounts() -> Vec<(PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let point = fields.get(4)?;
            let sep = fields.iter().position(|f| *f == "-")?;
            let source = fields.get(sep + 2)?;
            Some((PathBuf::from(unescape(point)), unescape(source)))
        })
        .collect()
}

/// The source (loop device) mounted at `point`, if something is.
fn mounted_source(point: &Path) -> Option<String> {
    mounts()
        .into_iter()
        .rev()
        .find(|(p, _)| p == point)
        .map(|(_, s)| s)
}

/// Moves every file of a tree from one id range to another (ids outside the old range go to
/// the new range's nobody). Does not follow symlinks or cross into other mounts.
fn reshift(root: &Path, from: IdMap, to: IdMap) -> std::io::Result<u64> {
    let dev = std::fs::symlink_metadata(root)?.dev();
    let move_id = |id: u32| {
        if from.contains(id) {
            to.host_id(id - from.base)
        } else if to.contains(id) {
            id
        } else {
            to.host_id(RANGE_SIZE)
        }
    };
    let mut changed = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let (uid, gid) = (move_id(meta.uid()), move_id(meta.gid()));
        if (uid, gid) != (meta.uid(), meta.gid()) {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
            let special = meta.mode() & 0o6000;
            if special != 0 && !meta.file_type().is_symlink() {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(meta.mode() & 0o7777),
                )?;
            }
            changed += 1;
        }
        if meta.is_dir() && meta.dev() == dev {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(changed)
}

/// Removes an empty lost+found from an unmounted image: it would make the volume non-empty
/// (initdb, for one, refuses that); e2fsck makes it again when it needs it. One that holds
/// recovered files stays.
fn remove_lost_found(image: &Path) {
    let _ = Command::new("debugfs")
        .args(["-w", "-R", "rmdir lost+found"])
        .arg(image)
        .output();
}

impl Volumes {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The volumes under the agent's state directory.
    pub fn under_state_dir(state_dir: &Path) -> Self {
        Self::new(state_dir.join("volumes"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn volume_dir(&self, service_id: &str, name: &str) -> PathBuf {
        self.dir.join(service_id).join(name)
    }

    /// Where the volume is mounted on the host: the source of the container's bind mount.
    pub fn mount_path(&self, service_id: &str, name: &str) -> PathBuf {
        self.volume_dir(service_id, name).join(MOUNT)
    }

    fn meta(&self, service_id: &str, name: &str) -> Result<Option<Meta>> {
        let path = self.volume_dir(service_id, name).join(META);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| volume_err(service_id, name, format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RuntimeError::io(path, e)),
        }
    }

    fn write_meta(&self, service_id: &str, name: &str, meta: Meta) -> Result<()> {
        let dir = self.volume_dir(service_id, name);
        let tmp = dir.join(format!("{META}.tmp"));
        let bytes = serde_json::to_vec(&meta).expect("meta serializes");
        std::fs::write(&tmp, bytes).map_err(|e| RuntimeError::io(&tmp, e))?;
        std::fs::rename(&tmp, dir.join(META)).map_err(|e| RuntimeError::io(&tmp, e))
    }

    /// Makes the volume exist with at least `size_bytes`, mounted, its files in `id_map`'s
    /// range; returns where it is mounted. Idempotent; blocking (mkfs, mount, chown).
    pub fn ensure(
        &self,
        service_id: &str,
        name: &str,
        size_bytes: u64,
        id_map: IdMap,
    ) -> Result<PathBuf> {
        let dir = self.volume_dir(service_id, name);
        let image = dir.join(IMAGE);
        let mnt = dir.join(MOUNT);
        std::fs::create_dir_all(&mnt).map_err(|e| RuntimeError::io(&mnt, e))?;
        let mut meta = match self.meta(service_id, name)? {
            Some(m) => m,
            None => {
                self.create(service_id, name, &image, size_bytes, id_map)?;
                let m = Meta {
                    size_bytes,
                    base: id_map.base,
                };
                self.write_meta(service_id, name, m)?;
                tracing::info!(service_id, name, size_bytes, "volume created");
                m
            }
        };
        if size_bytes < meta.size_bytes {
            return Err(RuntimeError::invalid(
                "volumes.size_bytes",
                format!(
                    "volume {name} has {} bytes: it can grow, not shrink to {size_bytes}",
                    meta.size_bytes
                ),
            ));
        }
        if size_bytes > meta.size_bytes {
            // Offline: online growth needs CAP_SYS_RESOURCE, which a node in a container may
            // lack; no container holds the volume while a task is being started for it.
            self.unmount(service_id, name)?;
            self.grow(service_id, name, &image, size_bytes)?;
            meta.size_bytes = size_bytes;
            self.write_meta(service_id, name, meta)?;
        }
        if mounted_source(&mnt).is_none() {
            run(
                service_id,
                name,
                Command::new("mount")
                    .args(["-t", "ext4", "-o", "loop,nosuid,nodev,noatime"])
                    .arg(&image)
                    .arg(&mnt),
            )?;
            tracing::info!(service_id, name, "volume mounted");
        }
        if meta.base != id_map.base {
            let changed = reshift(&mnt, IdMap { base: meta.base }, id_map)
                .map_err(|e| RuntimeError::io(&mnt, e))?;
            tracing::info!(
                service_id,
                name,
                from = meta.base,
                to = id_map.base,
                changed,
                "volume moved to the project's new id range"
            );
            meta.base = id_map.base;
            self.write_meta(service_id, name, meta)?;
        }
        Ok(mnt)
    }

    /// A new sparse image formatted ext4, its root owned by the container's root. Made under
    /// a temporary name so a half-made image is never mounted.
    fn create(
        &self,
        service_id: &str,
        name: &str,
        image: &Path,
        size_bytes: u64,
        id_map: IdMap,
    ) -> Result<()> {
        let tmp = image.with_extension("ext4.tmp");
        let file = std::fs::File::create(&tmp).map_err(|e| RuntimeError::io(&tmp, e))?;
        file.set_len(size_bytes)
            .map_err(|e| RuntimeError::io(&tmp, e))?;
        drop(file);
        let root = id_map.host_id(0);
        run(
            service_id,
            name,
            Command::new("mkfs.ext4")
                // No blocks reserved for root: the size asked for is the size usable.
                .args(["-q", "-F", "-m", "0", "-E"])
                .arg(format!("root_owner={root}:{root}"))
                .arg(&tmp),
        )?;
        remove_lost_found(&tmp);
        std::fs::rename(&tmp, image).map_err(|e| RuntimeError::io(image, e))
    }

    /// Grows an unmounted volume's file, then its filesystem (checked first, as resize2fs
    /// asks).
    fn grow(&self, service_id: &str, name: &str, image: &Path, size_bytes: u64) -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(image)
            .map_err(|e| RuntimeError::io(image, e))?;
        file.set_len(size_bytes)
            .map_err(|e| RuntimeError::io(image, e))?;
        drop(file);
        // Exit 1: it fixed something, e.g. made lost+found again.
        let checked = Command::new("e2fsck")
            .args(["-f", "-p"])
            .arg(image)
            .output()
            .map_err(|e| volume_err(service_id, name, format!("e2fsck: {e}")))?;
        if !matches!(checked.status.code(), Some(0 | 1)) {
            return Err(volume_err(
                service_id,
                name,
                format!(
                    "e2fsck found errors it could not fix ({}): {}",
                    checked.status,
                    String::from_utf8_lossy(&checked.stdout).trim()
                ),
            ));
        }
        run(service_id, name, Command::new("resize2fs").arg(image))?;
        remove_lost_found(image);
        tracing::info!(service_id, name, size_bytes, "volume grown");
        Ok(())
    }

    /// Unmounts and deletes one volume with its data; false when there was none.
    pub fn remove(&self, service_id: &str, name: &str) -> Result<bool> {
        let dir = self.volume_dir(service_id, name);
        if !dir.exists() {
            return Ok(false);
        }
        self.unmount(service_id, name)?;
        std::fs::remove_dir_all(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
        let parent = self.dir.join(service_id);
        // The service's directory goes with its last volume.
        let _ = std::fs::remove_dir(&parent);
        tracing::info!(service_id, name, "volume removed");
        Ok(true)
    }

    /// Unmounts the volume if it is mounted (the loop device goes with it).
    pub fn unmount(&self, service_id: &str, name: &str) -> Result<()> {
        let mnt = self.mount_path(service_id, name);
        while mounted_source(&mnt).is_some() {
            run(service_id, name, Command::new("umount").arg(&mnt))?;
        }
        Ok(())
    }

    /// The names of a service's volumes on this node.
    pub fn names(&self, service_id: &str) -> Result<Vec<String>> {
        let dir = self.dir.join(service_id);
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(RuntimeError::io(&dir, e)),
        };
        for e in entries {
            let e = e.map_err(|e| RuntimeError::io(&dir, e))?;
            if e.path().is_dir() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every volume on this node, or one service's.
    pub fn list(&self, service_id: Option<&str>) -> Result<Vec<VolumeInfo>> {
        let services = match service_id {
            Some(s) => vec![s.to_owned()],
            None => match std::fs::read_dir(&self.dir) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
                Err(e) => return Err(RuntimeError::io(&self.dir, e)),
            },
        };
        let mut out = Vec::new();
        for service in services {
            for name in self.names(&service)? {
                let Some(meta) = self.meta(&service, &name)? else {
                    continue;
                };
                let mnt = self.mount_path(&service, &name);
                let mounted = mounted_source(&mnt).is_some();
                let used_bytes = if mounted {
                    nix::sys::statvfs::statvfs(&mnt)
                        .map(|s| (s.blocks() - s.blocks_free()) * s.fragment_size())
                        .unwrap_or(0)
                } else {
                    0
                };
                out.push(VolumeInfo {
                    service_id: service.clone(),
                    name,
                    size_bytes: meta.size_bytes,
                    used_bytes,
                    mounted,
                });
            }
        }
        out.sort_by(|a, b| (&a.service_id, &a.name).cmp(&(&b.service_id, &b.name)));
        Ok(out)
    }

    /// Unmounts every volume (a test's clean-up, or a node being emptied); data stays.
    pub fn unmount_all(&self) {
        for v in self.list(None).unwrap_or_default() {
            if let Err(e) = self.unmount(&v.service_id, &v.name) {
                tracing::warn!(error = %e, "unmount");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    #[test]
    fn reshift_moves_ids_between_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let from = IdMap { base: 200_000 };
        let to = IdMap { base: 300_000 };
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        std::os::unix::fs::lchown(&f, Some(200_999), Some(200_005)).unwrap();
        std::os::unix::fs::lchown(dir.path(), Some(200_000), Some(200_000)).unwrap();
        let changed = reshift(dir.path(), from, to).unwrap();
        assert_eq!(changed, 2);
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!((m.uid(), m.gid()), (300_999, 300_005));
        assert_eq!(reshift(dir.path(), from, to).unwrap(), 0, "shifted once");
    }
}
