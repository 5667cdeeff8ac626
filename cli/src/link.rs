//! Linked directories: `stackpad link` writes `.stackpad.json` in the app's directory, naming
//! the project and, when chosen, the environment and service (ids and names). A command run in
//! that directory or below it (searched upwards, like git) acts on them when no flag names
//! another. The file holds no secret (the token stays in the login file) and can be committed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CliError;
use super::resolve::Named;

/// The link file's name.
pub const FILE: &str = ".stackpad.json";

/// What a directory is linked to. Field names are stable (the file is read by later versions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub project: Named,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Named>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Named>,
}

/// The nearest link file at or above `dir`, if any.
pub fn find(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().map(|d| d.join(FILE)).find(|p| p.is_file())
}

/// The link that applies in `dir`: the nearest file, parsed.
pub fn load(dir: &Path) -> Result<Option<(PathBuf, Link)>, CliError> {
    let Some(path) = find(dir) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| CliError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let link = serde_json::from_str(&text).map_err(|e| CliError::BadLink {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(Some((path, link)))
}

/// Writes `dir/.stackpad.json` (replacing an older one there).
pub fn write(dir: &Path, link: &Link) -> Result<PathBuf, CliError> {
    let path = dir.join(FILE);
    let mut text = serde_json::to_string_pretty(link).expect("a link serializes");
    text.push('\n');
    std::fs::write(&path, text).map_err(|source| CliError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(id: &str, name: &str) -> Named {
        Named {
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_link_is_found_from_below_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let below = dir.path().join("src/deep");
        std::fs::create_dir_all(&below).unwrap();
        assert!(load(&below).unwrap().is_none());
        let link = Link {
            project: named("p1", "shop"),
            environment: Some(named("e1", "production")),
            service: None,
        };
        let path = write(dir.path(), &link).unwrap();
        let (found, read) = load(&below).unwrap().unwrap();
        assert_eq!((found, read), (path.clone(), link));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("service"), "{text}");
    }

    #[test]
    fn a_broken_link_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(".stackpad.json") && e.contains("stackpad link"),
            "{e}"
        );
    }
}
