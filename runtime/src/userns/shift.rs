//! Shifting a file tree's ownership into a range: every file, directory, symlink and device
//! of the tree gets owner `base + uid` and group `base + gid` (ids above 65535 become the
//! range's nobody). Setuid/setgid bits, which chown clears, are put back. Entries already
//! inside the range (a hardlink seen twice) are left alone, so a tree is shifted once whatever
//! the walk order. Does not follow symlinks or cross into other mounts.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::IdMap;

/// What a shift did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shifted {
    pub entries: u64,
    pub changed: u64,
}

/// Shifts every entry under (and including) `root` into `map`.
pub fn shift_tree(root: &Path, map: IdMap) -> std::io::Result<Shifted> {
    let dev = std::fs::symlink_metadata(root)?.dev();
    let mut out = Shifted::default();
    let mut stack: Vec<PathBuf> = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| at(&path, e))?;
        out.entries += 1;
        if shift_one(&path, &meta, map).map_err(|e| at(&path, e))? {
            out.changed += 1;
        }
        if meta.is_dir() && meta.dev() == dev {
            for entry in std::fs::read_dir(&path).map_err(|e| at(&path, e))? {
                stack.push(entry.map_err(|e| at(&path, e))?.path());
            }
        }
    }
    Ok(out)
}

/// Chowns one entry unless it is in the range already; true when it changed.
fn shift_one(path: &Path, meta: &std::fs::Metadata, map: IdMap) -> std::io::Result<bool> {
    if map.contains(meta.uid()) && map.contains(meta.gid()) {
        return Ok(false);
    }
    let uid = if map.contains(meta.uid()) {
        meta.uid()
    } else {
        map.host_id(meta.uid())
    };
    let gid = if map.contains(meta.gid()) {
        meta.gid()
    } else {
        map.host_id(meta.gid())
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    let special = meta.mode() & 0o6000;
    if special != 0 && !meta.file_type().is_symlink() {
        // chown cleared setuid/setgid: put the whole mode back.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    Ok(true)
}

fn at(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(p: &Path) -> (u32, u32) {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    }

    #[test]
    fn tree_is_shifted_once_with_setuid_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/su"), b"x").unwrap();
        std::fs::set_permissions(root.join("bin/su"), PermissionsExt::from_mode(0o4755)).unwrap();
        std::fs::write(root.join("data"), b"y").unwrap();
        // Chowning to arbitrary ids needs root: the agent's tests run as root.
        std::os::unix::fs::lchown(root.join("data"), Some(1000), Some(50))
            .expect("chown to uid 1000 needs root: run the runtime tests as root");
        std::fs::hard_link(root.join("data"), root.join("data-link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        std::os::unix::fs::lchown(root.join("link"), Some(0), Some(0)).unwrap();
        let map = IdMap { base: 131_072 };
        let first = shift_tree(&root, map).unwrap();
        assert_eq!(first.entries, 6);
        assert_eq!(
            first.changed, 5,
            "the hardlink's second name is already shifted"
        );
        assert_eq!(owner(&root), (131_072, 131_072));
        assert_eq!(owner(&root.join("data")), (132_072, 131_122));
        assert_eq!(owner(&root.join("link")), (131_072, 131_072));
        assert_eq!(
            owner(Path::new("/etc/passwd")),
            (0, 0),
            "symlinks are not followed"
        );
        let mode = std::fs::metadata(root.join("bin/su")).unwrap().mode();
        assert_eq!(mode & 0o7777, 0o4755);
        let again = shift_tree(&root, map).unwrap();
        assert_eq!(again.changed, 0);
    }
}
