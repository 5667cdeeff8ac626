//! What a deploy asks for, as the agent's own type, and its validation. Stored with each
//! container (as JSON in a containerd extension) so the agent can restart it after a restart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, RuntimeError};

/// Who a container belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub organization_id: String,
    pub project_id: String,
    pub environment_id: String,
    pub service_id: String,
    pub service_name: String,
    pub deployment_id: String,
    /// `stackpad.node.v1.ServiceType` as a number.
    pub service_type: i32,
    /// The environment's name: the container is also `<service_name>.<environment_name>.internal`
    /// in its network's hosts file. Empty (and in records from before it) = no such alias.
    #[serde(default)]
    pub environment_name: String,
    /// Which of the deployment's replicas this is, from 0 (records from before replicas: 0).
    #[serde(default)]
    pub replica: u32,
}

impl Workload {
    /// The names the container has in its network's hosts file: the service's name, then
    /// `<service>.<environment>.internal` when the environment is named (#14).
    pub fn host_names(&self) -> String {
        if self.environment_name.is_empty() {
            self.service_name.clone()
        } else {
            format!(
                "{0} {0}.{1}.internal",
                self.service_name, self.environment_name
            )
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub container_port: u32,
    pub protocol: Protocol,
    pub name: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u32,
    /// 0 = node default.
    pub memory_bytes: u64,
    /// 0 = node default.
    pub pids_limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Probe {
    Http {
        path: String,
        port: u32,
    },
    Tcp {
        port: u32,
    },
    /// A command run inside the container (`agent::exec`); exit 0 passes.
    Exec {
        command: Vec<String>,
    },
}

/// A health check with its defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    pub probe: Probe,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub deadline_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartMode {
    Never,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartSpec {
    pub mode: RestartMode,
    /// 0 = unlimited.
    pub max_restarts: u32,
}

/// A persistent volume of the service, mounted read-write at `mount_path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub name: String,
    pub mount_path: String,
    pub size_bytes: u64,
}

/// Where a volume may not be mounted: the kernel's and the agent's own mounts.
const RESERVED_MOUNTS: &[&str] = &["/proc", "/sys", "/dev", "/etc/hosts", "/etc/resolv.conf"];

/// One deploy, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySpec {
    pub workload: Workload,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: String,
    pub ports: Vec<PortSpec>,
    pub resources: Resources,
    pub health: Option<HealthSpec>,
    pub restart: RestartSpec,
    pub read_only_rootfs: bool,
    pub stop_grace_ms: u32,
    /// Absent in the records of containers made before volumes existed.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
}

/// The node's limits a deploy is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min_memory_bytes: u64,
    pub max_memory_bytes: u64,
    pub max_cpu_millis: u32,
}

/// The container id of a deployment's replica: the same replica always gets the same id, so a
/// retried deploy finds the container it made. Replica 0 has the id of the deployment alone
/// (the id of every container made before replicas).
pub fn container_id(deployment_id: &str, replica: u32) -> String {
    let key = match replica {
        0 => deployment_id.to_owned(),
        r => format!("{deployment_id}/{r}"),
    };
    let h = hex::encode(Sha256::digest(key.as_bytes()));
    format!("sp-{}", &h[..24])
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A DNS label: 1-63 of [a-z0-9-], not starting or ending with '-'.
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn check_port(field: &str, port: u32) -> Result<()> {
    if !(1..=65535).contains(&port) {
        return Err(RuntimeError::invalid(
            field,
            format!("port {port} is out of range 1..=65535"),
        ));
    }
    Ok(())
}

/// Whether `path` is `dir` or inside it (both normalized absolute paths).
fn is_under(path: &str, dir: &str) -> bool {
    path == dir || dir == "/" || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// An absolute, normalized path (no `.`, `..`, `//` or trailing `/`), not `/` and not on the
/// kernel's or the agent's mounts.
fn check_mount_path(path: &str) -> Result<()> {
    let bad = |reason: String| Err(RuntimeError::invalid("volumes.mount_path", reason));
    if !path.starts_with('/') || path == "/" {
        return bad(format!("{path:?} must be an absolute path other than /"));
    }
    if path.len() > 1024 || path.chars().any(|c| c.is_control()) {
        return bad(format!(
            "{path:?} must be at most 1024 printable characters"
        ));
    }
    if path[1..]
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return bad(format!(
            "{path:?} must be normalized (no ., .., // or trailing /)"
        ));
    }
    if let Some(r) = RESERVED_MOUNTS.iter().find(|r| is_under(path, r)) {
        return bad(format!("{path:?} is under {r}, which the platform mounts"));
    }
    Ok(())
}

impl DeploySpec {
    /// Checks everything that does not need the image or the engine; the error names the field.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        let w = &self.workload;
        for (field, v) in [
            ("workload.project_id", &w.project_id),
            ("workload.environment_id", &w.environment_id),
            ("workload.deployment_id", &w.deployment_id),
        ] {
            if !is_id(v) {
                return Err(RuntimeError::invalid(
                    field,
                    format!("{v:?} must be 1-128 of [A-Za-z0-9._-]"),
                ));
            }
        }
        for (field, v) in [
            ("workload.organization_id", &w.organization_id),
            ("workload.service_id", &w.service_id),
        ] {
            if !v.is_empty() && !is_id(v) {
                return Err(RuntimeError::invalid(
                    field,
                    format!("{v:?} must be [A-Za-z0-9._-]"),
                ));
            }
        }
        if !is_dns_label(&w.service_name) {
            return Err(RuntimeError::invalid(
                "workload.service_name",
                format!(
                    "{:?} must be a DNS label (1-63 of [a-z0-9-])",
                    w.service_name
                ),
            ));
        }
        if !w.environment_name.is_empty() && !is_dns_label(&w.environment_name) {
            return Err(RuntimeError::invalid(
                "workload.environment_name",
                format!(
                    "{:?} must be a DNS label (1-63 of [a-z0-9-]) or empty",
                    w.environment_name
                ),
            ));
        }
        if self.image.is_empty() {
            return Err(RuntimeError::invalid("image", "must not be empty"));
        }
        crate::image::ImageRef::parse(&self.image)?;
        for (k, v) in &self.env {
            if !is_env_name(k) {
                return Err(RuntimeError::invalid(
                    "env",
                    format!("name {k:?} must match [A-Za-z_][A-Za-z0-9_]*"),
                ));
            }
            if v.contains('\0') {
                return Err(RuntimeError::invalid(
                    "env",
                    format!("value of {k} contains NUL"),
                ));
            }
        }
        for a in self.command.iter().chain(&self.args) {
            if a.contains('\0') {
                return Err(RuntimeError::invalid(
                    "command",
                    "arguments must not contain NUL",
                ));
            }
        }
        if !self.working_dir.is_empty() && !self.working_dir.starts_with('/') {
            return Err(RuntimeError::invalid(
                "working_dir",
                "must be an absolute path",
            ));
        }
        for p in &self.ports {
            check_port("ports.container_port", p.container_port)?;
        }
        let r = &self.resources;
        if r.memory_bytes != 0 && r.memory_bytes < limits.min_memory_bytes {
            return Err(RuntimeError::invalid(
                "resources.memory_bytes",
                format!(
                    "{} bytes is below the node's floor of {} bytes",
                    r.memory_bytes, limits.min_memory_bytes
                ),
            ));
        }
        if r.memory_bytes > limits.max_memory_bytes {
            return Err(RuntimeError::invalid(
                "resources.memory_bytes",
                format!(
                    "{} bytes is more than the node has ({})",
                    r.memory_bytes, limits.max_memory_bytes
                ),
            ));
        }
        if r.cpu_millis > limits.max_cpu_millis {
            return Err(RuntimeError::invalid(
                "resources.cpu_millis",
                format!(
                    "{} is more than the node has ({})",
                    r.cpu_millis, limits.max_cpu_millis
                ),
            ));
        }
        if r.cpu_millis != 0 && r.cpu_millis < 10 {
            return Err(RuntimeError::invalid(
                "resources.cpu_millis",
                "must be 0 (no limit) or at least 10",
            ));
        }
        if let Some(h) = &self.health {
            match &h.probe {
                Probe::Http { path, port } => {
                    check_port("health_check.http.port", *port)?;
                    if !path.starts_with('/')
                        || path.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        return Err(RuntimeError::invalid(
                            "health_check.http.path",
                            format!("{path:?} must start with / and have no spaces"),
                        ));
                    }
                }
                Probe::Tcp { port } => check_port("health_check.tcp.port", *port)?,
                Probe::Exec { command } => {
                    if command.is_empty() || command.len() > 64 {
                        return Err(RuntimeError::invalid(
                            "health_check.exec.command",
                            "needs 1 to 64 items",
                        ));
                    }
                    if command.iter().any(|a| a.contains('\0') || a.len() > 4096) {
                        return Err(RuntimeError::invalid(
                            "health_check.exec.command",
                            "items must be at most 4096 bytes without NUL",
                        ));
                    }
                }
            }
            if h.interval_ms < 10 || h.timeout_ms < 10 {
                return Err(RuntimeError::invalid(
                    "health_check",
                    "interval and timeout must be at least 10 ms",
                ));
            }
        }
        self.validate_volumes()
    }

    fn validate_volumes(&self) -> Result<()> {
        use crate::volume::{MAX_SIZE_BYTES, MAX_VOLUMES, MIN_SIZE_BYTES};
        if self.volumes.is_empty() {
            return Ok(());
        }
        if self.workload.service_id.is_empty() {
            return Err(RuntimeError::invalid(
                "workload.service_id",
                "is required with volumes (a volume belongs to its service)",
            ));
        }
        if self.volumes.len() > MAX_VOLUMES {
            return Err(RuntimeError::invalid(
                "volumes",
                format!("{} volumes; at most {MAX_VOLUMES}", self.volumes.len()),
            ));
        }
        for (i, v) in self.volumes.iter().enumerate() {
            if !is_dns_label(&v.name) {
                return Err(RuntimeError::invalid(
                    "volumes.name",
                    format!("{:?} must be a DNS label (1-63 of [a-z0-9-])", v.name),
                ));
            }
            check_mount_path(&v.mount_path)?;
            if !(MIN_SIZE_BYTES..=MAX_SIZE_BYTES).contains(&v.size_bytes) {
                return Err(RuntimeError::invalid(
                    "volumes.size_bytes",
                    format!(
                        "{} bytes for {}: must be {MIN_SIZE_BYTES}..={MAX_SIZE_BYTES}",
                        v.size_bytes, v.name
                    ),
                ));
            }
            for other in &self.volumes[..i] {
                if other.name == v.name {
                    return Err(RuntimeError::invalid(
                        "volumes.name",
                        format!("{:?} is given twice", v.name),
                    ));
                }
                if is_under(&v.mount_path, &other.mount_path)
                    || is_under(&other.mount_path, &v.mount_path)
                {
                    return Err(RuntimeError::invalid(
                        "volumes.mount_path",
                        format!("{} and {} overlap", other.mount_path, v.mount_path),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn container_id(&self) -> String {
        container_id(&self.workload.deployment_id, self.workload.replica)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> DeploySpec {
        DeploySpec {
            workload: Workload {
                organization_id: "o1".into(),
                project_id: "p1".into(),
                environment_id: "prod".into(),
                service_id: "s1".into(),
                service_name: "web".into(),
                deployment_id: "d1".into(),
                service_type: 1,
                environment_name: "production".into(),
                replica: 0,
            },
            image: "127.0.0.1:5000/stackpad/busybox:1".into(),
            command: vec![],
            args: vec!["httpd".into(), "-f".into()],
            env: BTreeMap::from([("PORT".into(), "8080".into())]),
            working_dir: String::new(),
            ports: vec![PortSpec {
                container_port: 8080,
                protocol: Protocol::Tcp,
                name: "http".into(),
            }],
            resources: Resources {
                cpu_millis: 500,
                memory_bytes: 64 << 20,
                pids_limit: 0,
            },
            health: Some(HealthSpec {
                probe: Probe::Http {
                    path: "/".into(),
                    port: 8080,
                },
                interval_ms: 100,
                timeout_ms: 1000,
                healthy_threshold: 1,
                unhealthy_threshold: 3,
                deadline_ms: 60_000,
            }),
            restart: RestartSpec {
                mode: RestartMode::OnFailure,
                max_restarts: 0,
            },
            read_only_rootfs: false,
            stop_grace_ms: 10_000,
            volumes: vec![],
        }
    }

    pub(crate) const LIMITS: Limits = Limits {
        min_memory_bytes: 6 << 20,
        max_memory_bytes: 8 << 30,
        max_cpu_millis: 2000,
    };

    #[test]
    fn sample_is_valid_and_ids_are_deterministic() {
        sample().validate(&LIMITS).unwrap();
        assert_eq!(container_id("d1", 0), container_id("d1", 0));
        assert_ne!(container_id("d1", 0), container_id("d2", 0));
        assert_ne!(container_id("d1", 0), container_id("d1", 1));
        assert_ne!(container_id("d1", 1), container_id("d1", 2));
        assert_eq!(container_id("d1", 0).len(), 27);
        assert_eq!(container_id("d1", 2).len(), 27);
    }

    #[test]
    fn bad_input_names_the_field() {
        type Mutation = Box<dyn Fn(&mut DeploySpec)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|s| {
                    s.env.insert("1BAD".into(), "x".into());
                }),
                "env",
            ),
            (
                Box::new(|s| {
                    s.env.insert("A-B".into(), "x".into());
                }),
                "env",
            ),
            (
                Box::new(|s| s.ports[0].container_port = 70000),
                "ports.container_port",
            ),
            (
                Box::new(|s| s.ports[0].container_port = 0),
                "ports.container_port",
            ),
            (
                Box::new(|s| s.resources.memory_bytes = 1 << 20),
                "resources.memory_bytes",
            ),
            (
                Box::new(|s| s.resources.cpu_millis = 64_000),
                "resources.cpu_millis",
            ),
            (
                Box::new(|s| s.workload.service_name = "Web_1".into()),
                "workload.service_name",
            ),
            (
                Box::new(|s| s.workload.deployment_id = String::new()),
                "workload.deployment_id",
            ),
            (Box::new(|s| s.image = "busybox".into()), "image"),
            (Box::new(|s| s.working_dir = "rel".into()), "working_dir"),
            (
                Box::new(|s| {
                    s.health = Some(HealthSpec {
                        probe: Probe::Tcp { port: 0 },
                        ..s.health.clone().unwrap()
                    })
                }),
                "health_check.tcp.port",
            ),
            (
                Box::new(|s| s.volumes[0].mount_path = "data".into()),
                "volumes.mount_path",
            ),
            (
                Box::new(|s| s.volumes[0].mount_path = "/a/../etc".into()),
                "volumes.mount_path",
            ),
            (
                Box::new(|s| s.volumes[0].mount_path = "/proc/x".into()),
                "volumes.mount_path",
            ),
            (
                Box::new(|s| s.volumes[0].mount_path = "/sys".into()),
                "volumes.mount_path",
            ),
            (
                Box::new(|s| s.volumes[0].mount_path = "/".into()),
                "volumes.mount_path",
            ),
            (
                Box::new(|s| s.volumes[0].mount_path = "/data/".into()),
                "volumes.mount_path",
            ),
            (
                Box::new(|s| s.volumes[0].size_bytes = 1 << 20),
                "volumes.size_bytes",
            ),
            (
                Box::new(|s| s.volumes[0].size_bytes = 4 << 40),
                "volumes.size_bytes",
            ),
            (
                Box::new(|s| s.volumes[0].name = "Data".into()),
                "volumes.name",
            ),
            (
                Box::new(|s| s.workload.service_id.clear()),
                "workload.service_id",
            ),
            (
                Box::new(|s| {
                    let mut v = s.volumes[0].clone();
                    v.name = "other".into();
                    v.mount_path = "/data/sub".into();
                    s.volumes.push(v);
                }),
                "volumes.mount_path",
            ),
            (
                Box::new(|s| {
                    let mut v = s.volumes[0].clone();
                    v.mount_path = "/other".into();
                    s.volumes.push(v);
                }),
                "volumes.name",
            ),
            (
                Box::new(|s| {
                    s.volumes = (0..9)
                        .map(|i| VolumeSpec {
                            name: format!("v{i}"),
                            mount_path: format!("/v{i}"),
                            size_bytes: 16 << 20,
                        })
                        .collect()
                }),
                "volumes",
            ),
        ];
        for (mutate, field) in cases {
            let mut s = sample();
            s.volumes = vec![VolumeSpec {
                name: "data".into(),
                mount_path: "/data".into(),
                size_bytes: 64 << 20,
            }];
            s.validate(&LIMITS).unwrap();
            mutate(&mut s);
            let err = s.validate(&LIMITS).unwrap_err().to_string();
            assert!(err.contains(field), "expected {field} in {err:?}");
        }
    }
}
