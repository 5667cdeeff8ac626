//! Reading a tenant's checkout as root without following its symlinks out of it.
//!
//! The checkout was written by sandboxed git from the tenant's repository: any name in it may be
//! a symlink to a host path. Everything buildd itself reads there goes through these helpers.

use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

fn refused(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, what)
}

/// The real path of `root/rel`, which must stay inside the real `root` once every symlink is
/// resolved; `Ok(None)` when it does not exist.
pub fn resolve_inside(root: &Path, rel: &Path) -> io::Result<Option<PathBuf>> {
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(refused(format!(
            "{} is not a plain relative path",
            rel.display()
        )));
    }
    let real_root = root.canonicalize()?;
    let real = match root.join(rel).canonicalize() {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !real.starts_with(&real_root) {
        return Err(refused(format!(
            "{} is a symlink that points outside the checkout",
            rel.display()
        )));
    }
    Ok(Some(real))
}

/// The contents of the regular file `root/rel` (at most `limit` bytes), `Ok(None)` when it does
/// not exist. A symlink is followed only when it resolves inside `root`; the resolved file is
/// opened with `O_NOFOLLOW` and must be a regular file.
pub fn read_checkout_file(root: &Path, rel: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let Some(real) = resolve_inside(root, rel)? else {
        return Ok(None);
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&real)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() || kind.is_socket() || kind.is_char_device() {
            "a special file"
        } else {
            "not a regular file"
        };
        return Err(refused(format!("{} is {what}", rel.display())));
    }
    let mut data = Vec::new();
    file.take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(refused(format!(
            "{} is larger than {limit} bytes",
            rel.display()
        )));
    }
    Ok(Some(data))
}

/// The app directory `root/sub`: no component of `sub` may be a symlink, and it must be a
/// directory inside `root`. `Ok(None)` when it does not exist.
pub fn app_dir_inside(root: &Path, sub: &Path) -> io::Result<Option<PathBuf>> {
    let mut path = root.to_path_buf();
    for part in sub.components() {
        match part {
            Component::Normal(name) => path.push(name),
            Component::CurDir => continue,
            _ => {
                return Err(refused(format!(
                    "{} is not a plain relative path",
                    sub.display()
                )));
            }
        }
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(refused(format!(
                    "{} is a symlink",
                    path.strip_prefix(root).unwrap_or(&path).display()
                )));
            }
            Ok(meta) if !meta.is_dir() => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    match resolve_inside(root, sub)? {
        Some(real) if real.is_dir() => Ok(Some(path)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_out_of_the_root_are_not_followed_and_inside_ones_are() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host").unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::write(r.join("real.json"), "{}").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), r.join("out")).unwrap();
        std::os::unix::fs::symlink("real.json", r.join("in")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/passwd", r.join("dots")).unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("dir")).unwrap();
        std::fs::create_dir(r.join("sub")).unwrap();

        let err = read_checkout_file(r, Path::new("out"), 1024).unwrap_err();
        assert!(
            err.to_string().contains("points outside the checkout"),
            "{err}"
        );
        let err = read_checkout_file(r, Path::new("dots"), 1024).unwrap_err();
        assert!(
            err.to_string().contains("points outside the checkout"),
            "{err}"
        );
        let err = read_checkout_file(r, Path::new("dir/secret"), 1024).unwrap_err();
        assert!(
            err.to_string().contains("points outside the checkout"),
            "{err}"
        );
        assert_eq!(
            read_checkout_file(r, Path::new("in"), 1024).unwrap(),
            Some(b"{}".to_vec())
        );
        assert_eq!(
            read_checkout_file(r, Path::new("none"), 1024).unwrap(),
            None
        );
        let err = read_checkout_file(r, Path::new("real.json"), 1).unwrap_err();
        assert!(err.to_string().contains("larger than 1 bytes"), "{err}");
        let err = read_checkout_file(r, Path::new("sub"), 1024).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        assert!(read_checkout_file(r, Path::new("../x"), 1024).is_err());

        let err = app_dir_inside(r, Path::new("dir")).unwrap_err();
        assert!(err.to_string().contains("dir is a symlink"), "{err}");
        assert_eq!(
            app_dir_inside(r, Path::new("sub")).unwrap(),
            Some(r.join("sub"))
        );
        assert_eq!(app_dir_inside(r, Path::new("real.json")).unwrap(), None);
        assert_eq!(app_dir_inside(r, Path::new("nope/x")).unwrap(), None);
    }
}
