//! The files detection reads, gathered from a checkout in one place (the only effect).

use std::collections::BTreeSet;
use std::path::Path;

use super::DetectError;
use crate::files::read_checkout_file;

/// What detection needs to know about a checkout: its top-level names and the few files whose
/// content matters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoSnapshot {
    /// The directory, for messages.
    pub dir: String,
    /// Names of the entries at the top of the app directory.
    pub files: BTreeSet<String>,
    pub package_json: Option<String>,
    pub dockerfile: Option<String>,
    /// `next.config.{js,mjs,ts}`, if any.
    pub next_config: Option<String>,
    /// `.nvmrc` and `.node-version`, if any.
    pub nvmrc: Option<String>,
    pub node_version: Option<String>,
    /// `package-lock.json`, if any (read for the Node versions its packages declare); `None`
    /// too when it cannot be read or is larger than [`MAX_LOCK_FILE`]: nothing depends on it.
    pub package_lock: Option<String>,
}

/// Largest file detection reads.
const MAX_FILE: u64 = 1024 * 1024;
/// Largest lock file read (a large app's package-lock.json is a few megabytes).
pub const MAX_LOCK_FILE: u64 = 32 * 1024 * 1024;

impl RepoSnapshot {
    /// Reads the snapshot of the app in `dir` (an app directory already checked to be inside
    /// its checkout). Files are read without following symlinks out of `dir`.
    pub fn read(dir: &Path) -> Result<Self, DetectError> {
        let unreadable = |file: &str, e: std::io::Error| DetectError::Unreadable {
            dir: dir.display().to_string(),
            file: file.to_owned(),
            reason: e.to_string(),
        };
        let mut files = BTreeSet::new();
        for entry in std::fs::read_dir(dir).map_err(|e| unreadable(".", e))? {
            let entry = entry.map_err(|e| unreadable(".", e))?;
            files.insert(entry.file_name().to_string_lossy().into_owned());
        }
        let read = |name: &str| -> Result<Option<String>, DetectError> {
            if !files.contains(name) {
                return Ok(None);
            }
            match read_checkout_file(dir, Path::new(name), MAX_FILE) {
                Ok(Some(data)) => {
                    String::from_utf8(data)
                        .map(Some)
                        .map_err(|_| DetectError::Unreadable {
                            dir: dir.display().to_string(),
                            file: name.to_owned(),
                            reason: "it is not UTF-8".into(),
                        })
                }
                Ok(None) => Ok(None),
                Err(e) => Err(unreadable(name, e)),
            }
        };
        let mut next_config = None;
        for name in ["next.config.js", "next.config.mjs", "next.config.ts"] {
            if let Some(text) = read(name)? {
                next_config = Some(text);
                break;
            }
        }
        Ok(Self {
            dir: dir.display().to_string(),
            package_json: read("package.json")?,
            dockerfile: read("Dockerfile")?,
            next_config,
            nvmrc: read(".nvmrc")?,
            node_version: read(".node-version")?,
            package_lock: files
                .contains("package-lock.json")
                .then(|| read_checkout_file(dir, Path::new("package-lock.json"), MAX_LOCK_FILE))
                .and_then(|r| r.ok().flatten())
                .and_then(|data| String::from_utf8(data).ok()),
            files,
        })
    }
}
