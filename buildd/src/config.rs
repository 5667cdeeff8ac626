//! The daemon's configuration: a TOML file with defaults for every key, checked at start.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::dockerfile::BaseImages;

/// `stackpad-buildd`'s configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC (`stackpad.build.v1.Builder`).
    pub listen: SocketAddr,
    /// Prometheus `/metrics`.
    pub metrics_listen: SocketAddr,
    /// Where BuildKit fetches build contexts; must be loopback (BuildKit runs on this node).
    pub context_listen: SocketAddr,
    pub max_concurrent_builds: usize,
    pub default_timeout_seconds: u64,
    pub default_memory_limit_bytes: u64,
    /// Ended builds kept in memory for GetBuild/WatchBuild (oldest forgotten first).
    pub keep_ended_builds: usize,
    /// Checkouts live here while builds run.
    pub work_dir: PathBuf,
    /// Network of `RUN` steps: `none` (default), `host`, or `default` (BuildKit's own).
    pub network_mode: String,
    /// How build contexts reach BuildKit: `session` (BuildKit's file sync over dockerd's
    /// `/session`) or `http` (a tarball on `context_listen`; also for buildkitd).
    pub context_transport: String,
    pub buildkit: BuildKitConfig,
    pub base_images: BaseImages,
}

/// Where BuildKit is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildKitConfig {
    /// `dockerd` (embedded BuildKit on `POST /grpc`) or `buildkitd`.
    pub kind: String,
    pub socket: PathBuf,
    /// dockerd's socket, used for the push when `kind = "dockerd"`.
    pub docker_socket: PathBuf,
}

impl Default for BuildKitConfig {
    fn default() -> Self {
        Self {
            kind: "dockerd".into(),
            socket: "/run/docker.sock".into(),
            docker_socket: "/run/docker.sock".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 7070).into(),
            metrics_listen: ([127, 0, 0, 1], 9470).into(),
            context_listen: ([127, 0, 0, 1], 0).into(),
            max_concurrent_builds: 4,
            default_timeout_seconds: 30 * 60,
            default_memory_limit_bytes: 4 << 30,
            keep_ended_builds: 1000,
            work_dir: "/var/lib/stackpad/buildd".into(),
            network_mode: "none".into(),
            context_transport: "session".into(),
            buildkit: BuildKitConfig::default(),
            base_images: BaseImages::default(),
        }
    }
}

/// A configuration value that cannot work; names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}

fn err(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        reason: reason.into(),
    }
}

impl Config {
    /// Parses a TOML document (missing keys take their defaults) and validates it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| err("file", e.message().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=64).contains(&self.max_concurrent_builds) {
            return Err(err("max_concurrent_builds", "must be between 1 and 64"));
        }
        if self.keep_ended_builds == 0 {
            return Err(err("keep_ended_builds", "must be at least 1"));
        }
        if self.default_timeout_seconds == 0 {
            return Err(err("default_timeout_seconds", "must be greater than 0"));
        }
        if !self.context_listen.ip().is_loopback() {
            return Err(err(
                "context_listen",
                "must be a loopback address: BuildKit runs on this node and contexts are not authenticated",
            ));
        }
        if !self.work_dir.is_absolute() {
            return Err(err("work_dir", "must be an absolute path"));
        }
        if !["none", "host", "default"].contains(&self.network_mode.as_str()) {
            return Err(err("network_mode", "must be none, host or default"));
        }
        if !["session", "http"].contains(&self.context_transport.as_str()) {
            return Err(err("context_transport", "must be session or http"));
        }
        if !["dockerd", "buildkitd"].contains(&self.buildkit.kind.as_str()) {
            return Err(err("buildkit.kind", "must be dockerd or buildkitd"));
        }
        if self.base_images.node.trim().is_empty() {
            return Err(err("base_images.node", "must not be empty"));
        }
        if self.base_images.static_server.trim().is_empty() {
            return Err(err("base_images.static_server", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_a_partial_file_keeps_them() {
        Config::default().validate().unwrap();
        let c =
            Config::from_toml("max_concurrent_builds = 2\n[base_images]\nnode = \"r/node:20\"\n")
                .unwrap();
        assert_eq!(c.max_concurrent_builds, 2);
        assert_eq!(c.base_images.node, "r/node:20");
        assert_eq!(c.base_images.static_server, "busybox:1");
        assert_eq!(c.network_mode, "none");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("max_concurrent_builds = 0", "max_concurrent_builds"),
            ("context_listen = \"0.0.0.0:0\"", "context_listen"),
            ("work_dir = \"rel\"", "work_dir"),
            ("network_mode = \"bridge\"", "network_mode"),
            ("[buildkit]\nkind = \"podman\"", "buildkit.kind"),
            ("nonsense = 1", "file"),
        ];
        for (text, key) in cases {
            let e = Config::from_toml(text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }
}
