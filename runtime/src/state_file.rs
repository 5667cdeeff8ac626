//! A JSON table on disk shared by every agent of the machine: read-modify-written under an
//! exclusive `flock` on a lock file beside it, saved by write + fsync + rename + directory
//! fsync, so a crash leaves the old table or the new one, never a torn one. The IP address
//! table and the user-namespace range table are kept this way.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Result, RuntimeError};

/// Runs `f` on the table at `path` (`Default` when the file does not exist yet) with the
/// machine-wide lock (`path` with the extension `lock`) held, and saves what `f` leaves when
/// it changed anything. An error from `f` saves nothing.
pub fn update<T, R>(path: &Path, f: impl FnOnce(&mut T) -> Result<R>) -> Result<R>
where
    T: Serialize + DeserializeOwned + Default + Clone + PartialEq,
{
    let lock_path = path.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| RuntimeError::io(&lock_path, e))?;
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| RuntimeError::io(&lock_path, e.into()))?;
    let mut state: T = match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            RuntimeError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => T::default(),
        Err(e) => return Err(RuntimeError::io(path, e)),
    };
    let before = state.clone();
    let out = f(&mut state)?;
    if state != before {
        save(path, &state)?;
    }
    Ok(out)
}

/// Write to `<path>.tmp`, fsync, rename over the table, fsync the directory.
fn save<T: Serialize>(path: &Path, state: &T) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let bytes = serde_json::to_vec_pretty(state).expect("state table serializes");
    let mut f = std::fs::File::create(&tmp).map_err(|e| RuntimeError::io(&tmp, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| RuntimeError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RuntimeError::io(path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RuntimeError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_saved_and_failed_updates_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let n = update(&path, |v: &mut Vec<u32>| {
            v.push(7);
            Ok(v.len())
        })
        .unwrap();
        assert_eq!(n, 1);
        assert!(dir.path().join("t.lock").exists());
        assert!(!dir.path().join("t.json.tmp").exists());
        let failed: Result<()> = update(&path, |v: &mut Vec<u32>| {
            v.push(8);
            Err(RuntimeError::io(
                Path::new("x"),
                std::io::Error::other("no"),
            ))
        });
        assert!(failed.is_err());
        let read = update(&path, |v: &mut Vec<u32>| Ok(v.clone())).unwrap();
        assert_eq!(read, vec![7]);
    }
}
