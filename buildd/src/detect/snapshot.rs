//! The files detection reads, gathered from a checkout in one place (the only effect).

use std::collections::BTreeSet;
use std::path::Path;

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
}

impl RepoSnapshot {
    /// Reads the snapshot of the app in `dir`.
    pub fn read(dir: &Path) -> std::io::Result<Self> {
        let mut files = BTreeSet::new();
        for entry in std::fs::read_dir(dir)? {
            files.insert(entry?.file_name().to_string_lossy().into_owned());
        }
        let read = |name: &str| -> std::io::Result<Option<String>> {
            if files.contains(name) {
                std::fs::read_to_string(dir.join(name)).map(Some)
            } else {
                Ok(None)
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
            files,
        })
    }
}
