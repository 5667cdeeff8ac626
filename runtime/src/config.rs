//! The node agent's configuration: a TOML file, overridden by environment and flags.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::network::Subnet;

/// Credentials for one registry host (`host[:port]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    pub host: String,
    /// Talk plain HTTP to it. Loopback registries are always allowed plain HTTP.
    pub insecure: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A static bearer token (used instead of username/password).
    pub token: Option<String>,
}

/// How containers of different projects are kept apart (`isolation` in the TOML).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Per-project isolation by the `ebpf` crate's programs.
    #[default]
    Ebpf,
    /// Bridges and nftables forward rules only.
    Disabled,
}

/// This node's place in a cluster (#15): the private interface (WireGuard) the proxies and the
/// other nodes reach its containers over. Absent: a node alone, reached on its own bridges only.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The interface of the private network, e.g. `wg0`.
    pub interface: String,
    /// Addresses the proxies connect from: they reach web containers on their service port.
    pub proxy_addresses: Vec<Ipv4Addr>,
    /// The other nodes' container pools, routed over `interface`: containers may open
    /// connections to them (the isolation policy of the receiving node decides).
    pub subnets: Vec<Subnet>,
}

impl ClusterConfig {
    fn validate(&self, pool: &Subnet) -> Result<()> {
        let name_ok = !self.interface.is_empty()
            && self.interface.len() <= 15
            && self
                .interface
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(RuntimeError::invalid(
                "cluster.interface",
                "must be an interface name: 1-15 of [A-Za-z0-9_.-]",
            ));
        }
        if let Some(s) = self.subnets.iter().find(|s| s.overlaps(pool)) {
            return Err(RuntimeError::invalid(
                "cluster.subnets",
                format!("{s} overlaps this node's own subnet_pool {pool}"),
            ));
        }
        if let Some(a) = self.proxy_addresses.iter().find(|a| pool.contains(**a)) {
            return Err(RuntimeError::invalid(
                "cluster.proxy_addresses",
                format!("{a} is inside this node's own subnet_pool {pool}"),
            ));
        }
        Ok(())
    }
}

/// Everything `stackpad-node` needs to run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub node_id: String,
    pub containerd_socket: PathBuf,
    /// containerd namespace of this agent's containers, images and snapshots.
    pub namespace: String,
    /// Persistent state (logs).
    pub state_dir: PathBuf,
    /// Volatile state (log FIFOs, hosts files).
    pub run_dir: PathBuf,
    /// Address allocations shared by every agent on this machine (the kernel's routes are).
    pub ipam_dir: PathBuf,
    /// Host id ranges of the containers' user namespaces, shared by every agent on this
    /// machine (host uids are machine-wide).
    pub userns_dir: PathBuf,
    /// gRPC `NodeAgent` listener; loopback by default.
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listener.
    pub metrics_listen: SocketAddr,
    /// Pool the per-project subnets are cut from.
    pub subnet_pool: String,
    /// Prefix length of one project+environment subnet.
    pub subnet_prefix: u8,
    /// Let containers reach beyond the node (nftables masquerade). Off: nothing leaves.
    pub allow_egress: bool,
    pub registries: Vec<RegistryConfig>,
    pub snapshotter: String,
    pub runtime: String,
    /// Memory limit when a deploy asks for none.
    pub default_memory_bytes: u64,
    /// Smallest memory limit a deploy may ask for.
    pub min_memory_bytes: u64,
    pub default_pids_limit: u32,
    pub max_containers: u32,
    /// One log file's size before it is rotated, and how many rotated files are kept.
    pub log_file_bytes: u64,
    pub log_files: u32,
    /// Longest log line kept whole; longer lines are cut and marked truncated.
    pub log_line_bytes: usize,
    /// `ebpf`: per-project isolation by the `ebpf` crate's programs; `disabled`: bridges and
    /// nftables forward rules only.
    pub isolation: Isolation,
    /// Where the isolation maps and links are pinned (bpffs).
    pub bpf_pin_dir: PathBuf,
    /// ClickHouse's HTTP interface to ship container logs to; empty = logs stay on the node.
    pub clickhouse_url: String,
    /// ClickHouse database of the logs.
    pub clickhouse_database: String,
    /// Days container logs are kept, stamped on every row (the control plane's retention job
    /// drops partitions past it)...
    pub log_retention_days: u16,
    /// ...or, for these organization ids, their plan's retention.
    pub log_retention_days_by_organization: std::collections::BTreeMap<String, u16>,
    /// How often each running container's CPU, memory and network use is sampled into
    /// ClickHouse's `container_usage` (with `clickhouse_url`; `crate::usage`). 0 = never.
    pub usage_interval_ms: u64,
    /// Membership of a cluster: see [`ClusterConfig`].
    pub cluster: Option<ClusterConfig>,
    /// mTLS of the gRPC listener (`[tls]`: `cert`, `key`, `ca` PEM files, written by
    /// `stackpad-node join`): only `stackpad-control`'s certificate of the platform CA is
    /// accepted; the files are reloaded when they change. Required off loopback.
    pub tls: Option<pki::TlsFiles>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "node".to_owned()),
            containerd_socket: "/run/containerd/containerd.sock".into(),
            namespace: "stackpad".into(),
            state_dir: "/var/lib/stackpad/node".into(),
            run_dir: "/run/stackpad/node".into(),
            ipam_dir: "/var/lib/stackpad/ipam".into(),
            userns_dir: "/var/lib/stackpad/userns".into(),
            listen: "127.0.0.1:7070".parse().expect("literal address"),
            metrics_listen: "127.0.0.1:9101".parse().expect("literal address"),
            subnet_pool: "10.200.0.0/16".into(),
            subnet_prefix: 24,
            allow_egress: false,
            registries: Vec::new(),
            snapshotter: "overlayfs".into(),
            runtime: "io.containerd.runc.v2".into(),
            default_memory_bytes: 256 << 20,
            min_memory_bytes: 6 << 20,
            default_pids_limit: 512,
            max_containers: 200,
            log_file_bytes: 10 << 20,
            log_files: 3,
            log_line_bytes: 16 << 10,
            isolation: Isolation::Ebpf,
            bpf_pin_dir: "/sys/fs/bpf/stackpad".into(),
            clickhouse_url: String::new(),
            clickhouse_database: "stackpad_logs".into(),
            log_retention_days: 14,
            log_retention_days_by_organization: std::collections::BTreeMap::new(),
            usage_interval_ms: 10_000,
            cluster: None,
            tls: None,
        }
    }
}

impl NodeConfig {
    /// Reads a TOML file; missing keys keep their defaults, unknown keys are refused.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| RuntimeError::io(path, e))?;
        toml::from_str(&text)
            .map_err(|e| RuntimeError::invalid(path.display().to_string(), e.to_string()))
    }

    /// The subnet pool, parsed.
    pub fn pool(&self) -> Result<Subnet> {
        self.subnet_pool
            .parse::<Subnet>()
            .map_err(|e| RuntimeError::invalid("subnet_pool", e))
    }

    /// Refuses values the agent cannot run with, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.log_retention_days == 0 {
            return Err(RuntimeError::invalid(
                "log_retention_days",
                "must be at least 1",
            ));
        }
        if let Some((org, _)) = self
            .log_retention_days_by_organization
            .iter()
            .find(|(_, days)| **days == 0)
        {
            return Err(RuntimeError::invalid(
                "log_retention_days_by_organization",
                format!("{org}: must be at least 1"),
            ));
        }
        if self.usage_interval_ms != 0 && self.usage_interval_ms < 200 {
            return Err(RuntimeError::invalid(
                "usage_interval_ms",
                "must be 0 (off) or at least 200",
            ));
        }
        let pool = self.pool()?;
        let docker_pool: Subnet = "10.88.0.0/16".parse().expect("literal subnet");
        if pool.overlaps(&docker_pool) {
            return Err(RuntimeError::invalid(
                "subnet_pool",
                format!("{pool} overlaps 10.88.0.0/16 (used by podman/buildah bridges)"),
            ));
        }
        if self.subnet_prefix < pool.prefix || self.subnet_prefix > 28 {
            return Err(RuntimeError::invalid(
                "subnet_prefix",
                format!("must be between the pool's /{} and /28", pool.prefix),
            ));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate(&pool)?;
        }
        if let Some(tls) = &self.tls {
            tls.validate()
                .map_err(|e| RuntimeError::invalid("tls", e))?;
        }
        pki::require_tls_off_loopback("listen", self.listen, "tls", self.tls.is_some())
            .map_err(|e| RuntimeError::invalid("tls", e.to_string()))?;
        let ns_ok = !self.namespace.is_empty()
            && self.namespace.len() <= 40
            && self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ns_ok {
            return Err(RuntimeError::invalid(
                "namespace",
                "must be 1-40 of [A-Za-z0-9_-]",
            ));
        }
        if self.min_memory_bytes < (4 << 20) {
            return Err(RuntimeError::invalid(
                "min_memory_bytes",
                "must be at least 4 MiB",
            ));
        }
        if self.default_memory_bytes < self.min_memory_bytes {
            return Err(RuntimeError::invalid(
                "default_memory_bytes",
                "must not be below min_memory_bytes",
            ));
        }
        if self.log_file_bytes < 4096 || self.log_files == 0 {
            return Err(RuntimeError::invalid(
                "log_file_bytes",
                "log files must be at least 4096 bytes and log_files at least 1",
            ));
        }
        if self.max_containers == 0 {
            return Err(RuntimeError::invalid(
                "max_containers",
                "must be at least 1",
            ));
        }
        for r in &self.registries {
            if r.host.is_empty() {
                return Err(RuntimeError::invalid(
                    "registries.host",
                    "must not be empty",
                ));
            }
            if r.username.is_some() != r.password.is_some() {
                return Err(RuntimeError::invalid(
                    format!("registries[{}]", r.host),
                    "username and password go together",
                ));
            }
        }
        Ok(())
    }

    /// The credentials and transport settings for a registry host.
    pub fn registry(&self, host: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.host == host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_loopback() {
        let c = NodeConfig::default();
        c.validate().unwrap();
        assert!(c.listen.ip().is_loopback());
    }

    #[test]
    fn refuses_docker_pool_and_bad_keys() {
        let c = NodeConfig {
            subnet_pool: "10.88.0.0/16".into(),
            ..NodeConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("subnet_pool")
        );
        let err = toml::from_str::<NodeConfig>("nope = 1").unwrap_err();
        assert!(err.to_string().contains("nope"));
        let c: NodeConfig = toml::from_str("namespace = \"t1\"\nallow_egress = true").unwrap();
        assert_eq!(c.namespace, "t1");
        assert!(c.allow_egress);
    }

    #[test]
    fn isolation_is_read_by_its_spelling_and_unknown_values_are_refused() {
        let c: NodeConfig = toml::from_str("isolation = \"disabled\"").unwrap();
        assert_eq!(c.isolation, Isolation::Disabled);
        let c: NodeConfig = toml::from_str("isolation = \"ebpf\"").unwrap();
        assert_eq!(c.isolation, Isolation::Ebpf);
        assert_eq!(NodeConfig::default().isolation, Isolation::Ebpf);
        let dir = std::env::temp_dir().join(format!("stackpad-node-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(&path, "isolation = \"bpf\"\n").unwrap();
        let err = NodeConfig::from_file(&path).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("isolation"), "{err}");
        assert!(err.contains("ebpf") && err.contains("disabled"), "{err}");
        let written = toml::to_string(&NodeConfig {
            isolation: Isolation::Disabled,
            ..NodeConfig::default()
        })
        .unwrap();
        assert!(written.contains("isolation = \"disabled\""), "{written}");
    }

    #[test]
    fn cluster_membership_is_read_and_checked() {
        let text = "subnet_pool = \"10.96.16.0/20\"\n[cluster]\ninterface = \"spk0w2\"\n\
                    proxy_addresses = [\"10.77.0.1\"]\nsubnets = [\"10.96.32.0/20\"]\n";
        let c: NodeConfig = toml::from_str(text).unwrap();
        c.validate().unwrap();
        let cluster = c.cluster.as_ref().unwrap();
        assert_eq!(cluster.interface, "spk0w2");
        assert_eq!(cluster.proxy_addresses, vec![Ipv4Addr::new(10, 77, 0, 1)]);
        assert_eq!(cluster.subnets, vec!["10.96.32.0/20".parse().unwrap()]);
        assert_eq!(NodeConfig::default().cluster, None);

        let overlapping = text.replace("10.96.32.0/20", "10.96.16.0/24");
        let err = toml::from_str::<NodeConfig>(&overlapping)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cluster.subnets") && err.contains("10.96.16.0/24"),
            "{err}"
        );
        let bad_name = text.replace("spk0w2", "a-name-far-too-long");
        let err = toml::from_str::<NodeConfig>(&bad_name)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("cluster.interface"), "{err}");
        let err = toml::from_str::<NodeConfig>(&text.replace("10.77.0.1", "ten"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("proxy_addresses"), "{err}");
    }

    #[test]
    fn log_retention_by_plan_is_read_and_checked() {
        let c: NodeConfig = toml::from_str(
            "log_retention_days = 7\n[log_retention_days_by_organization]\n\"org-pro\" = 90\n",
        )
        .unwrap();
        assert_eq!(c.log_retention_days, 7);
        assert_eq!(c.log_retention_days_by_organization["org-pro"], 90);
        c.validate().unwrap();
        let c = NodeConfig {
            log_retention_days: 0,
            ..NodeConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("log_retention_days"), "{err}");
    }
}
