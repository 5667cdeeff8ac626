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
    /// Folders under which `file://` and absolute-path sources may be fetched (an operator
    /// setting, e.g. the platform's demo repository); empty = local sources are refused.
    pub local_sources: Vec<PathBuf>,
    /// The nameserver the fetch egress proxy asks (`host:port`); empty = the system resolver.
    pub dns_resolver: String,
    /// Address blocks git may never reach, whatever else allows them: the platform's own
    /// addresses (e.g. `203.0.113.7/32`).
    pub egress_deny: Vec<String>,
    /// Address blocks opened on purpose beside public unicast (an internal git server, a test's
    /// listener); never wins over `egress_deny`.
    pub egress_allow: Vec<String>,
    pub fetch_sandbox: FetchSandboxConfig,
    /// mTLS of the gRPC listener (`[tls]`: `cert`, `key`, `ca` PEM files from the node's join):
    /// only `stackpad-control`'s certificate of the platform CA is accepted; the files are
    /// reloaded when they change. Required when `listen` is off loopback.
    pub tls: Option<pki::TlsFiles>,
    /// Credentials of the registry builds pull their base images from and push to
    /// (`[registry_auth]`: `host`, `username`, `password`), e.g. a cluster node's own user of the
    /// platform registry; none = the registry is anonymous (the single-machine loopback one).
    pub registry_auth: Option<RegistryAuth>,
}

/// A registry's Basic credentials: given to dockerd with each push and to BuildKit over the
/// build's session when it pulls from `host`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    /// `host[:port]` as image names spell it, e.g. `127.0.0.1:5000`.
    pub host: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The sandbox git runs in (see `source::sandbox`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchSandboxConfig {
    /// The unprivileged uid and gid git runs as: not 0, and owning nothing of the platform.
    pub uid: u32,
    pub gid: u32,
    /// A whole checkout (init, fetch, checkout, submodules) is killed after this long.
    pub timeout_seconds: u64,
    /// Size and file-count limits of the tmpfs a checkout is written to.
    pub max_bytes: u64,
    pub max_files: u64,
    /// Extra CA certificates git trusts (PEM), e.g. an internal git server's; empty = none.
    pub ca_file: PathBuf,
    /// The SSH host keys this node trusts for repositories fetched over SSH (an OpenSSH
    /// `known_hosts` file, e.g. github.com's published keys); empty = none. A build request adds
    /// its project's own lines; a host key found in neither fails the fetch (never accepted on
    /// first use).
    pub ssh_known_hosts: PathBuf,
    /// The program run inside the new namespaces (`<helper> __fetch-sandbox SPEC`); empty =
    /// this binary.
    pub helper: PathBuf,
}

impl Default for FetchSandboxConfig {
    fn default() -> Self {
        Self {
            uid: 65532,
            gid: 65532,
            timeout_seconds: 600,
            max_bytes: 2 << 30,
            max_files: 200_000,
            ca_file: PathBuf::new(),
            ssh_known_hosts: PathBuf::new(),
            helper: PathBuf::new(),
        }
    }
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
            local_sources: Vec::new(),
            dns_resolver: String::new(),
            egress_deny: Vec::new(),
            egress_allow: Vec::new(),
            fetch_sandbox: FetchSandboxConfig::default(),
            tls: None,
            registry_auth: None,
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
        if let Some(tls) = &self.tls {
            tls.validate().map_err(|e| err("tls", e))?;
        }
        if let Some(auth) = &self.registry_auth {
            if auth.host.trim().is_empty() || auth.host.contains('/') {
                return Err(err(
                    "registry_auth.host",
                    "must be a registry host[:port] without a path",
                ));
            }
            if auth.username.is_empty() || auth.username.contains(':') {
                return Err(err(
                    "registry_auth.username",
                    "must not be empty nor contain ':'",
                ));
            }
            if auth.password.is_empty() {
                return Err(err("registry_auth.password", "must not be empty"));
            }
        }
        pki::require_tls_off_loopback("listen", self.listen, "tls", self.tls.is_some())
            .map_err(|e| err("tls", e.to_string()))?;
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
        for root in &self.local_sources {
            if !root.is_absolute()
                || root.parent().is_none()
                || root.components().any(|c| c.as_os_str() == "..")
            {
                return Err(err(
                    "local_sources",
                    format!(
                        "{} must be an absolute folder below / without ..",
                        root.display()
                    ),
                ));
            }
        }
        if !self.dns_resolver.is_empty() && self.dns_resolver.parse::<SocketAddr>().is_err() {
            return Err(err("dns_resolver", "must be an address like 127.0.0.1:53"));
        }
        for (key, blocks) in [
            ("egress_deny", &self.egress_deny),
            ("egress_allow", &self.egress_allow),
        ] {
            for block in blocks {
                tenant::address::Cidr::parse(block).map_err(|e| err(key, e.to_string()))?;
            }
        }
        let sandbox = &self.fetch_sandbox;
        if sandbox.uid == 0 || sandbox.gid == 0 {
            return Err(err(
                "fetch_sandbox.uid",
                "git must run as an unprivileged uid and gid, not 0",
            ));
        }
        if sandbox.timeout_seconds == 0 {
            return Err(err(
                "fetch_sandbox.timeout_seconds",
                "must be greater than 0",
            ));
        }
        if sandbox.max_bytes < 1 << 20 {
            return Err(err("fetch_sandbox.max_bytes", "must be at least 1 MiB"));
        }
        if sandbox.max_files < 100 {
            return Err(err("fetch_sandbox.max_files", "must be at least 100"));
        }
        Ok(())
    }

    /// The policy git's connections are checked against.
    pub fn egress_policy(&self) -> tenant::address::AddressPolicy {
        let parse = |blocks: &[String]| {
            blocks
                .iter()
                .filter_map(|b| tenant::address::Cidr::parse(b).ok())
                .collect()
        };
        tenant::address::AddressPolicy {
            deny: parse(&self.egress_deny),
            allow: parse(&self.egress_allow),
        }
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
    fn the_example_file_is_the_defaults() {
        let example = Config::from_toml(include_str!("../buildd.example.toml")).unwrap();
        assert_eq!(example, Config::default());
        assert!(
            example.local_sources.is_empty(),
            "local sources are off by default"
        );
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
            ("local_sources = [\"rel/x\"]", "local_sources"),
            ("dns_resolver = \"resolver\"", "dns_resolver"),
            ("egress_allow = [\"10.0.0.0/99\"]", "egress_allow"),
            ("egress_deny = [\"x\"]", "egress_deny"),
            ("[fetch_sandbox]\nuid = 0", "fetch_sandbox.uid"),
        ];
        for (text, key) in cases {
            let e = Config::from_toml(text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }
}
