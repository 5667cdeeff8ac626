//! The state file: routes and service upstream sets, written atomically (temp file + fsync +
//! rename) after every change and read at start, so a restarted proxy serves the same routes
//! before any control plane answers.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::health::HealthCheckSpec;
use crate::routes::RouteSpec;
use crate::upstream::{LoadBalancing, UpstreamSpec};

/// What the state file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    pub version: u32,
    pub routes: Vec<RouteSpec>,
    pub services: Vec<PersistedService>,
    /// Generations held beyond the live routes (removed routes, switches).
    #[serde(default)]
    pub generations: Generations,
}

/// The control plane's generations the proxy holds where no live route carries them: a removed
/// route's (so a late push cannot bring it back) and each service's newest switch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generations {
    #[serde(default)]
    pub removed_routes: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub switches: std::collections::BTreeMap<String, u64>,
}

/// One service's active upstream set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedService {
    pub service_id: String,
    pub upstreams: Vec<UpstreamSpec>,
    pub health_check: HealthCheckSpec,
    pub load_balancing: LoadBalancing,
    pub generation: u64,
}

/// Reading or writing the state file failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The state file at one path.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored state; `None` when there is no file yet.
    pub fn load(&self) -> Result<Option<PersistedState>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Parse {
                path: self.path.clone(),
                source,
            })
    }

    /// Writes `state` to a temporary file beside the state file, syncs it and renames it over
    /// the old one: a crash leaves either the old or the new file, never half of one.
    pub fn save(&self, state: &PersistedState) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp.{}", std::process::id()));
        let tmp = dir.join(name);
        let json = serde_json::to_vec_pretty(state).expect("state serializes");
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = std::env::temp_dir().join(format!("stackpad-proxy-store-{}", std::process::id()));
        let file = StateFile::new(dir.join("state.json"));
        assert_eq!(file.load().unwrap(), None);
        let state = PersistedState {
            version: 1,
            routes: vec![RouteSpec {
                route_id: "r".into(),
                hosts: vec!["a.com".into()],
                path_prefix: String::new(),
                service_id: "s".into(),
                max_body_bytes: 10,
                allow_plain_http: true,
                organization_id: "o".into(),
                project_id: "p".into(),
                environment_id: "e".into(),
                generation: 3,
            }],
            services: vec![PersistedService {
                service_id: "s".into(),
                upstreams: vec![UpstreamSpec {
                    address: "127.0.0.1:1".into(),
                    deployment_id: "d".into(),
                    weight: 1,
                }],
                health_check: HealthCheckSpec::default(),
                load_balancing: LoadBalancing::LeastConnections,
                generation: 3,
            }],
            generations: Generations {
                removed_routes: [("gone".to_owned(), 7)].into(),
                switches: [("s".to_owned(), 9)].into(),
            },
        };
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), Some(state));
        std::fs::write(file.path(), b"{not json").unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(
            err.contains("state.json") && err.contains("not valid"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
