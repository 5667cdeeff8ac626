//! `stackpad-control`'s configuration: a TOML file, then environment overrides, then checks.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ::api::NodeRole;
use serde::{Deserialize, Serialize};

/// A daemon the control plane knows at start (registered or updated in the `nodes` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    /// `build` (buildd) or `compute` (node agent).
    pub role: String,
    /// gRPC address, e.g. `http://127.0.0.1:7101`.
    pub address: String,
    #[serde(default)]
    pub cpu_millis: i32,
    #[serde(default)]
    pub memory_bytes: i64,
}

impl NodeConfig {
    /// The node's role: a configured node is `build` or `compute` (proxies register over the
    /// API).
    pub fn role(&self) -> Result<NodeRole, ConfigError> {
        match self.role.parse::<NodeRole>() {
            Ok(role @ (NodeRole::Build | NodeRole::Compute)) => Ok(role),
            _ => Err(invalid(
                "nodes.role",
                format!(
                    "node {}: {:?} is not build or compute",
                    self.name, self.role
                ),
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// REST API listener.
    pub listen: SocketAddr,
    pub database_url: String,
    /// 64 hex digits: the key encrypting env vars, secrets and webhook secrets at rest.
    pub encryption_key: String,
    /// Operator token: creates organizations and registers nodes. Empty = no operator access.
    pub admin_token: String,
    /// The proxy's admin gRPC address; empty = no proxy (services are not routed).
    pub proxy_address: String,
    /// Bearer token for the proxy's admin API.
    pub proxy_token: String,
    /// Where builds push, e.g. `127.0.0.1:5000`; images are `<registry>/<org>/<service>`.
    pub registry: String,
    /// Services get `<service>-<project>.<apps_domain>` as their default host.
    pub apps_domain: String,
    /// Pipeline workers (deployments driven at once by this process).
    pub workers: usize,
    /// A worker that has not renewed its claim for this long is presumed dead; another takes over.
    pub lease_ms: u64,
    /// How often nodes are asked for their info (the heartbeat).
    pub heartbeat_interval_ms: u64,
    /// A node silent for this long is marked down.
    pub node_down_after_ms: u64,
    /// How long a new container may take to pass its health check.
    pub health_deadline_ms: u32,
    /// How long the old version may finish its requests after the switch.
    pub drain_deadline_ms: u32,
    /// Grace period (SIGTERM to SIGKILL) of the old container once drained; 0 = its own.
    pub stop_grace_ms: u32,
    /// How long a build may take.
    pub build_timeout_s: u32,
    /// Nodes registered at start.
    pub nodes: Vec<NodeConfig>,
    /// ClickHouse's HTTP interface holding the container logs; empty = no log search.
    pub clickhouse_url: String,
    pub clickhouse_database: String,
    /// Days build logs are kept (the `build_logs` rows' retention; dropped by the same job).
    pub build_log_retention_days: u16,
    /// How often expired partitions of the log store (container and access logs) are dropped;
    /// 0 = never (another control plane instance does it). Retention itself is stamped on each
    /// row by its writer (the organization's plan in the node agent's and proxy's settings).
    pub log_retention_interval_ms: u64,
    /// Nameserver (`ip:port`, or `ip` for port 53) custom domains are resolved through;
    /// empty = the system's (`/etc/resolv.conf`).
    pub dns_resolver: String,
    /// The proxy's public addresses, offered as A/AAAA records for custom domains (apex
    /// domains cannot CNAME); empty = CNAME only.
    pub ingress_ips: Vec<std::net::IpAddr>,
    /// How often every custom domain is re-checked.
    pub domain_check_interval_ms: u64,
    /// How often preview environments are checked for idleness (#17); 0 = never (another
    /// control plane instance does it). Needs `clickhouse_url` (the access logs).
    pub idle_check_interval_ms: u64,
    /// How long the volumes of a deleted service (a closed preview's database included) stay
    /// on their node before they are removed (#14, #17); default 7 days.
    pub volume_grace_secs: u64,
    /// GitHub's REST API, where previews' deployment statuses go for projects with a GitHub
    /// token (#17): `https://api.github.com`, or an Enterprise Server's `https://<host>/api/v3`.
    pub github_api_url: String,
    /// How often previews' states are compared with what GitHub was told; 0 = never (another
    /// control plane instance does it).
    pub github_status_interval_ms: u64,
    /// Prometheus `/metrics` listener; none = not served.
    pub metrics_listen: Option<SocketAddr>,
    /// How often this process asks the nodes about the services' volumes for `/metrics` (a
    /// scrape shows the last answers, never waits on a node); a node that stops answering
    /// keeps its volumes' last figures, with their age, for ten of these intervals.
    pub volume_metrics_interval_ms: u64,
    /// Address blocks a tenant's git host may never resolve to, beyond the built-in private
    /// and special ranges: the platform's own (e.g. `["203.0.113.0/24"]`). Wins over
    /// `egress_allow`.
    pub egress_deny: Vec<String>,
    /// Address blocks opened to tenants' git hosts although they are private or special (an
    /// internal git server). Empty by default.
    pub egress_allow: Vec<String>,
    /// Organizations (by name) whose services may build from a repository on the build node's
    /// disk (`file://` or an absolute path). Empty by default: an operator setting for the
    /// operator's own demo organization, never a tenant feature.
    pub local_sources_organizations: Vec<String>,
    /// Backups of managed services (#14): where objects go (`store`: a local directory by
    /// default, `s3://bucket` with `s3_*`), the scheduler's pace, verification.
    pub backups: crate::backups::BackupSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
            database_url: "postgres://stackpad:stackpad@127.0.0.1:5432/stackpad".into(),
            encryption_key: String::new(),
            admin_token: String::new(),
            proxy_address: String::new(),
            proxy_token: String::new(),
            registry: "127.0.0.1:5000".into(),
            apps_domain: "stackpad.localhost".into(),
            workers: 4,
            lease_ms: 10_000,
            heartbeat_interval_ms: 2_000,
            node_down_after_ms: 10_000,
            health_deadline_ms: 60_000,
            drain_deadline_ms: 30_000,
            stop_grace_ms: 0,
            build_timeout_s: 900,
            nodes: vec![],
            clickhouse_url: String::new(),
            clickhouse_database: "stackpad_logs".into(),
            build_log_retention_days: 14,
            log_retention_interval_ms: 3_600_000,
            dns_resolver: String::new(),
            ingress_ips: vec![],
            domain_check_interval_ms: 300_000,
            idle_check_interval_ms: 10_000,
            volume_grace_secs: crate::volumes::GRACE.as_secs(),
            github_api_url: "https://api.github.com".into(),
            github_status_interval_ms: 5_000,
            metrics_listen: None,
            volume_metrics_interval_ms: 30_000,
            egress_deny: vec![],
            egress_allow: vec![],
            local_sources_organizations: vec![],
            backups: crate::backups::BackupSettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("config key {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl ConfigError {
    pub fn from_crypto(e: crate::crypto::CryptoError) -> Self {
        invalid("encryption_key", e.to_string())
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl Config {
    /// Reads `path` (if given), applies `STACKPAD_*` / `DATABASE_URL` environment overrides,
    /// validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.display().to_string(),
                    source,
                })?
            }
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = get("STACKPAD_ENCRYPTION_KEY") {
            self.encryption_key = v;
        }
        if let Some(v) = get("STACKPAD_ADMIN_TOKEN") {
            self.admin_token = v;
        }
        if let Some(v) = get("STACKPAD_LISTEN") {
            self.listen = v
                .parse()
                .map_err(|e| invalid("listen", format!("STACKPAD_LISTEN={v:?}: {e}")))?;
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::crypto::SecretBox::from_hex(&self.encryption_key)
            .map_err(|e| invalid("encryption_key", e.to_string()))?;
        if self.database_url.is_empty() {
            return Err(invalid("database_url", "must not be empty"));
        }
        if !self.admin_token.is_empty() && self.admin_token.len() < 16 {
            return Err(invalid("admin_token", "must be at least 16 characters"));
        }
        if !(self.github_api_url.starts_with("https://")
            || self.github_api_url.starts_with("http://"))
            || reqwest::Url::parse(&self.github_api_url).is_err()
        {
            return Err(invalid(
                "github_api_url",
                format!("{:?} is not an http(s) URL", self.github_api_url),
            ));
        }
        if self.workers == 0 {
            return Err(invalid("workers", "must be at least 1"));
        }
        if self.lease_ms < 500 {
            return Err(invalid("lease_ms", "must be at least 500"));
        }
        if self.node_down_after_ms <= self.heartbeat_interval_ms {
            return Err(invalid(
                "node_down_after_ms",
                "must be longer than heartbeat_interval_ms",
            ));
        }
        if self.registry.is_empty() || self.registry.contains("://") {
            return Err(invalid("registry", "must be host:port, without a scheme"));
        }
        self.dns_resolver_address()?;
        if self.domain_check_interval_ms < 100 {
            return Err(invalid("domain_check_interval_ms", "must be at least 100"));
        }
        if self.volume_metrics_interval_ms < 100 {
            return Err(invalid(
                "volume_metrics_interval_ms",
                "must be at least 100",
            ));
        }
        self.address_policy()?;
        for org in &self.local_sources_organizations {
            if org.trim().is_empty() || org.len() > 200 {
                return Err(invalid(
                    "local_sources_organizations",
                    format!("{org:?} is not an organization name"),
                ));
            }
        }
        for node in &self.nodes {
            node.role()?;
            if !node.address.starts_with("http://") && !node.address.starts_with("https://") {
                return Err(invalid(
                    "nodes.address",
                    format!(
                        "node {}: {:?} needs http:// or https://",
                        node.name, node.address
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The nameserver for custom domains; `None` = the system's.
    pub fn dns_resolver_address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let v = self.dns_resolver.trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse::<SocketAddr>()
            .or_else(|_| {
                v.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
            })
            .map(Some)
            .map_err(|_| invalid("dns_resolver", format!("{v:?} is not ip:port or ip")))
    }

    /// The policy tenants' git hosts are checked with: `egress_deny` and `egress_allow` parsed.
    pub fn address_policy(&self) -> Result<tenant::address::AddressPolicy, ConfigError> {
        let blocks = |key: &'static str, values: &[String]| {
            values
                .iter()
                .map(|v| {
                    tenant::address::Cidr::parse(v.trim()).map_err(|e| invalid(key, e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(tenant::address::AddressPolicy {
            deny: blocks("egress_deny", &self.egress_deny)?,
            allow: blocks("egress_allow", &self.egress_allow)?,
        })
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config {
            encryption_key: "ab".repeat(32),
            ..Config::default()
        }
    }

    #[test]
    fn default_needs_a_key_and_names_it() {
        let err = Config::default().validate().unwrap_err().to_string();
        assert!(err.contains("encryption_key"), "{err}");
        valid().validate().unwrap();
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    workers: 0,
                    ..valid()
                },
                "workers",
            ),
            (
                Config {
                    lease_ms: 1,
                    ..valid()
                },
                "lease_ms",
            ),
            (
                Config {
                    admin_token: "short".into(),
                    ..valid()
                },
                "admin_token",
            ),
            (
                Config {
                    registry: "http://x".into(),
                    ..valid()
                },
                "registry",
            ),
            (
                Config {
                    dns_resolver: "ns.example:53".into(),
                    ..valid()
                },
                "dns_resolver",
            ),
            (
                Config {
                    domain_check_interval_ms: 0,
                    ..valid()
                },
                "domain_check_interval_ms",
            ),
            (
                Config {
                    volume_metrics_interval_ms: 10,
                    ..valid()
                },
                "volume_metrics_interval_ms",
            ),
            (
                Config {
                    egress_deny: vec!["10.0.0.0/33".into()],
                    ..valid()
                },
                "egress_deny",
            ),
            (
                Config {
                    egress_allow: vec!["not-a-block".into()],
                    ..valid()
                },
                "egress_allow",
            ),
            (
                Config {
                    local_sources_organizations: vec!["".into()],
                    ..valid()
                },
                "local_sources_organizations",
            ),
            (
                Config {
                    nodes: vec![NodeConfig {
                        name: "n".into(),
                        role: "gpu".into(),
                        address: "http://x".into(),
                        cpu_millis: 0,
                        memory_bytes: 0,
                    }],
                    ..valid()
                },
                "nodes.role",
            ),
        ];
        for (config, key) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err} should name {key}");
        }
    }

    #[test]
    fn the_example_config_is_valid() {
        let c: Config = toml::from_str(include_str!("../control.example.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.nodes.len(), 2);
    }

    #[test]
    fn toml_and_env_override() {
        let mut c: Config = toml::from_str(&format!(
            "encryption_key = \"{}\"\nworkers = 2\n[[nodes]]\nname = \"b1\"\nrole = \"build\"\naddress = \"http://127.0.0.1:7101\"\n",
            "cd".repeat(32)
        ))
        .unwrap();
        assert_eq!(c.workers, 2);
        c.apply_env(|k| (k == "DATABASE_URL").then(|| "postgres://other".to_owned()))
            .unwrap();
        assert_eq!(c.database_url, "postgres://other");
        c.validate().unwrap();
        assert!(toml::from_str::<Config>("nope = 1").is_err());
    }

    #[test]
    fn egress_blocks_become_the_address_policy() {
        let policy = Config {
            egress_deny: vec!["203.0.113.0/24".into()],
            egress_allow: vec!["10.9.0.0/16".into()],
            ..valid()
        }
        .address_policy()
        .unwrap();
        assert!(policy.check("203.0.113.7".parse().unwrap()).is_err());
        assert!(policy.check("10.9.1.1".parse().unwrap()).is_ok());
        assert!(policy.check("10.8.1.1".parse().unwrap()).is_err());
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn dns_resolver_takes_ip_port_or_ip() {
        let at = |v: &str| {
            Config {
                dns_resolver: v.into(),
                ..valid()
            }
            .dns_resolver_address()
            .unwrap()
            .map(|a| a.to_string())
        };
        assert_eq!(at(""), None);
        assert_eq!(at("127.0.0.1:8053").as_deref(), Some("127.0.0.1:8053"));
        assert_eq!(at("192.0.2.53").as_deref(), Some("192.0.2.53:53"));
    }
}
