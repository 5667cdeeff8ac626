//! Pure parsing of OCI/Docker manifests, indexes and image configs, and platform selection.

use std::collections::HashMap;

use serde::Deserialize;

use super::registry::{MT_DOCKER_LIST, MT_OCI_INDEX};
use crate::error::{Result, RuntimeError};

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// An image manifest: its config and layers.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// What the fetched document is.
#[derive(Debug, Clone)]
pub enum Document {
    /// An index: the manifest to fetch next for linux/amd64.
    Index(Descriptor),
    Manifest(Manifest),
}

/// Parses a manifest or index; for an index picks the linux/amd64 entry.
pub fn parse_document(reference: &str, media_type: &str, bytes: &[u8]) -> Result<Document> {
    let bad = |reason: String| RuntimeError::Image {
        reference: reference.to_owned(),
        reason,
    };
    let index: Index =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("manifest is not JSON: {e}")))?;
    let is_index = media_type == MT_OCI_INDEX
        || media_type == MT_DOCKER_LIST
        || index.media_type.as_deref() == Some(MT_OCI_INDEX)
        || index.media_type.as_deref() == Some(MT_DOCKER_LIST)
        || index.manifests.is_some();
    if is_index {
        let entries = index.manifests.unwrap_or_default();
        let found: Vec<String> = entries
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| format!("{}/{}", p.os, p.architecture))
            .collect();
        return entries
            .into_iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .map(Document::Index)
            .ok_or_else(|| RuntimeError::WrongPlatform {
                reference: reference.to_owned(),
                found: if found.is_empty() {
                    "none".into()
                } else {
                    found.join(", ")
                },
            });
    }
    let m: Manifest =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid manifest: {e}")))?;
    if m.layers.is_empty() {
        return Err(bad("manifest has no layers".into()));
    }
    Ok(Document::Manifest(m))
}

/// The parts of an image config a container is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<RawRunConfig>,
    rootfs: RawRootfs,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRunConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    #[allow(dead_code, reason = "parsed for completeness, not used")]
    labels: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct RawRootfs {
    diff_ids: Vec<String>,
}

/// Parses an image config and refuses anything but linux/amd64.
pub fn parse_config(reference: &str, bytes: &[u8], layers: usize) -> Result<ImageConfig> {
    let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| RuntimeError::Image {
        reference: reference.to_owned(),
        reason: format!("invalid image config: {e}"),
    })?;
    if raw.os != "linux" || raw.architecture != "amd64" {
        return Err(RuntimeError::WrongPlatform {
            reference: reference.to_owned(),
            found: format!("{}/{}", raw.os, raw.architecture),
        });
    }
    if raw.rootfs.diff_ids.len() != layers {
        return Err(RuntimeError::Image {
            reference: reference.to_owned(),
            reason: format!(
                "config lists {} diff ids for {layers} layers",
                raw.rootfs.diff_ids.len()
            ),
        });
    }
    let c = raw.config.unwrap_or_default();
    Ok(ImageConfig {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir.unwrap_or_default(),
        user: c.user.unwrap_or_default(),
        diff_ids: raw.rootfs.diff_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_picks_amd64_or_names_what_exists() {
        let idx = br#"{"schemaVersion":2,"manifests":[
            {"mediaType":"m","digest":"sha256:a","size":1,"platform":{"architecture":"arm64","os":"linux"}},
            {"mediaType":"m","digest":"sha256:b","size":2,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
        match parse_document("r", MT_OCI_INDEX, idx).unwrap() {
            Document::Index(d) => assert_eq!(d.digest, "sha256:b"),
            other => panic!("unexpected {other:?}"),
        }
        let arm = br#"{"manifests":[{"digest":"sha256:a","size":1,"platform":{"architecture":"arm64","os":"linux"}}]}"#;
        let err = parse_document("r", "", arm).unwrap_err().to_string();
        assert!(err.contains("linux/arm64"), "{err}");
    }

    #[test]
    fn config_refuses_other_architectures() {
        let cfg = br#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:x"]}}"#;
        let err = parse_config("r", cfg, 1).unwrap_err().to_string();
        assert!(err.contains("amd64") && err.contains("arm64"), "{err}");
        let ok = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"],"Env":["A=1"]},"rootfs":{"type":"layers","diff_ids":["sha256:x"]}}"#;
        let c = parse_config("r", ok, 1).unwrap();
        assert_eq!(c.cmd, vec!["sh"]);
        assert_eq!(c.env, vec!["A=1"]);
    }
}
