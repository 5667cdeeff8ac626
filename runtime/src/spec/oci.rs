//! The OCI runtime spec of a container, built from scratch (not from a default): the
//! process from the image config merged with the deploy, limits, seccomp, a minimal capability
//! set, no new privileges, masked and read-only /proc paths, the project network's namespace
//! and hosts file, a user namespace mapping the container's ids into its project's host range,
//! and optionally a read-only root with a writable /tmp.

use serde_json::{Value, json};

use super::deploy::DeploySpec;
use super::seccomp;
use crate::error::{Result, RuntimeError};
use crate::image::ImageConfig;
use crate::userns::IdMap;
use crate::volume::Volumes;

/// containerd's type URL for a runtime spec carried in a `google.protobuf.Any`.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// Capabilities every container gets: Docker's default set without NET_RAW, MKNOD,
/// AUDIT_WRITE and SETFCAP. Never SYS_ADMIN.
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
];

/// Paths hidden from the container (moby's list, plus bpffs: /sys is the host's, bound, and
/// the isolation programs' pinned maps live there).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/fs/bpf",
];

/// Paths the container sees read-only.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything the spec is built from.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub deploy: &'a DeploySpec,
    pub image: &'a ImageConfig,
    pub namespace: &'a str,
    pub container_id: &'a str,
    pub netns_path: &'a str,
    pub hosts_path: &'a str,
    /// The network's resolv.conf (its DNS responder), bound at /etc/resolv.conf when given.
    pub resolv_path: Option<&'a str>,
    /// Limits with the node defaults applied.
    pub memory_bytes: u64,
    pub pids_limit: u32,
    /// The host range the container's uids and gids map to.
    pub id_map: IdMap,
    /// The node's volumes (where each of the deploy's volumes is mounted on the host).
    pub volumes: &'a Volumes,
}

/// The process arguments: Docker's rules (a deploy command replaces the entrypoint and drops
/// the image's cmd; deploy args replace the cmd).
pub fn process_args(deploy: &DeploySpec, image: &ImageConfig) -> Vec<String> {
    let (entrypoint, cmd) = if !deploy.command.is_empty() {
        (deploy.command.clone(), deploy.args.clone())
    } else if !deploy.args.is_empty() {
        (image.entrypoint.clone(), deploy.args.clone())
    } else {
        (image.entrypoint.clone(), image.cmd.clone())
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// The environment: the image's, then the deploy's over it, with PATH and HOSTNAME.
pub fn process_env(deploy: &DeploySpec, image: &ImageConfig) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(n, _)| n == k) {
        Some(e) => e.1 = v.to_owned(),
        None => env.push((k.to_owned(), v.to_owned())),
    };
    set("PATH", DEFAULT_PATH);
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    set("HOSTNAME", &deploy.workload.service_name);
    for (k, v) in &deploy.env {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// `uid[:gid]`, numeric only (the agent does not read the image's /etc/passwd).
fn parse_user(image_ref: &str, user: &str) -> Result<(u32, u32)> {
    if user.is_empty() || user == "root" {
        return Ok((0, 0));
    }
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let uid: u32 = u.parse().map_err(|_| RuntimeError::Image {
        reference: image_ref.to_owned(),
        reason: format!("user {user:?} must be numeric uid[:gid]"),
    })?;
    let gid: u32 = if g.is_empty() {
        uid
    } else {
        g.parse().map_err(|_| RuntimeError::Image {
            reference: image_ref.to_owned(),
            reason: format!("group in {user:?} must be numeric"),
        })?
    };
    Ok((uid, gid))
}

fn device_rule(kind: &str, major: i64, minor: Option<i64>) -> Value {
    json!({ "allow": true, "type": kind, "major": major, "minor": minor, "access": "rwm" })
}

/// Builds the spec; fails when the image and deploy give no command or an unusable user.
pub fn build_spec(input: &SpecInput<'_>) -> Result<Value> {
    let d = input.deploy;
    let args = process_args(d, input.image);
    if args.is_empty() {
        return Err(RuntimeError::invalid(
            "command",
            format!(
                "image {} has no entrypoint or cmd and the deploy gives none",
                d.image
            ),
        ));
    }
    let (uid, gid) = parse_user(&d.image, &input.image.user)?;
    let cwd = if !d.working_dir.is_empty() {
        d.working_dir.clone()
    } else if !input.image.working_dir.is_empty() {
        input.image.working_dir.clone()
    } else {
        "/".to_owned()
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        // sysfs cannot be mounted from a user namespace that does not own the network
        // namespace (the agent made it): the host's sysfs is bound read-only instead (moby
        // does the same). Recursively: the kernel refuses a plain bind from a user namespace
        // of a mount with locked submounts. Root inside is an unprivileged host uid, so the
        // submounts give it what any unprivileged host user gets.
        json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        json!({"destination": "/etc/hosts", "type": "bind", "source": input.hosts_path, "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}),
    ];
    if let Some(resolv) = input.resolv_path {
        mounts.push(json!({"destination": "/etc/resolv.conf", "type": "bind", "source": resolv, "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}));
    }
    // The service's volumes, bound from their host mounts; a parent before what is under it.
    let mut volumes: Vec<_> = d.volumes.iter().collect();
    volumes.sort_by_key(|v| v.mount_path.matches('/').count());
    for v in volumes {
        let source = input.volumes.mount_path(&d.workload.service_id, &v.name);
        mounts.push(json!({"destination": v.mount_path, "type": "bind", "source": source, "options": ["rbind", "rw", "nosuid", "nodev"]}));
    }
    if d.read_only_rootfs {
        mounts.push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]}));
    }
    let mut resources = json!({
        "devices": [
            {"allow": false, "access": "rwm"},
            device_rule("c", 1, Some(3)),
            device_rule("c", 1, Some(5)),
            device_rule("c", 1, Some(7)),
            device_rule("c", 1, Some(8)),
            device_rule("c", 1, Some(9)),
            device_rule("c", 5, Some(0)),
            device_rule("c", 5, Some(1)),
            device_rule("c", 5, Some(2)),
            device_rule("c", 136, None),
        ],
        "memory": { "limit": input.memory_bytes, "swap": input.memory_bytes },
        "pids": { "limit": input.pids_limit },
    });
    let cpu = d.resources.cpu_millis;
    if cpu > 0 {
        resources["cpu"] = json!({
            "shares": (u64::from(cpu) * 1024 / 1000).max(2),
            "quota": i64::from(cpu) * 100,
            "period": 100_000,
        });
    }
    Ok(json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": { "uid": uid, "gid": gid, "additionalGids": [gid] },
            "args": args,
            "env": process_env(d, input.image),
            "cwd": cwd,
            "capabilities": {
                "bounding": CAPABILITIES,
                "effective": CAPABILITIES,
                "permitted": CAPABILITIES,
            },
            "noNewPrivileges": true,
            "oomScoreAdj": 0,
        },
        "root": { "path": "rootfs", "readonly": d.read_only_rootfs },
        "hostname": d.workload.service_name,
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "cgroupsPath": format!("/{}/{}", input.namespace, input.container_id),
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "cgroup"},
                {"type": "network", "path": input.netns_path},
                {"type": "user"},
            ],
            "uidMappings": input.id_map.oci_mapping(),
            "gidMappings": input.id_map.oci_mapping(),
            "seccomp": seccomp::default_profile(),
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }))
}

/// The spec wrapped the way containerd stores it.
pub fn spec_any(spec: &Value) -> prost_types::Any {
    prost_types::Any {
        type_url: SPEC_TYPE_URL.to_owned(),
        value: serde_json::to_vec(spec).expect("spec serializes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::deploy::tests::sample;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec![],
            cmd: vec!["sh".into()],
            env: vec!["PATH=/bin".into(), "PORT=1".into()],
            working_dir: "/www".into(),
            user: String::new(),
            diff_ids: vec![],
        }
    }

    fn build(d: &DeploySpec) -> Value {
        build_spec(&SpecInput {
            deploy: d,
            image: &image(),
            namespace: "stackpad",
            container_id: "sp-1",
            netns_path: "/run/netns/sp-1",
            hosts_path: "/run/stackpad/hosts",
            resolv_path: Some("/run/stackpad/resolv.conf"),
            memory_bytes: 64 << 20,
            pids_limit: 128,
            id_map: IdMap { base: 131_072 },
            volumes: &Volumes::new("/var/lib/stackpad/node/volumes"),
        })
        .unwrap()
    }

    #[test]
    fn volumes_are_bound_from_their_host_mounts() {
        let mut d = sample();
        for (name, path) in [("logs", "/var/log/app"), ("data", "/data")] {
            d.volumes.push(crate::spec::VolumeSpec {
                name: name.into(),
                mount_path: path.into(),
                size_bytes: 64 << 20,
            });
        }
        let s = build(&d);
        let binds: Vec<&Value> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["source"].as_str().unwrap().contains("/volumes/"))
            .collect();
        assert_eq!(binds.len(), 2);
        assert_eq!(binds[0]["destination"], "/data", "shallower first");
        assert_eq!(
            binds[0]["source"],
            "/var/lib/stackpad/node/volumes/s1/data/mnt"
        );
        assert_eq!(
            binds[1]["options"],
            json!(["rbind", "rw", "nosuid", "nodev"])
        );
    }

    #[test]
    fn spec_is_hardened() {
        let s = build(&sample());
        let p = &s["process"];
        assert_eq!(p["noNewPrivileges"], true);
        let caps: Vec<&str> = p["capabilities"]["effective"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(!caps.contains(&"CAP_NET_RAW") && !caps.contains(&"CAP_SYS_ADMIN"));
        assert!(p["capabilities"].get("ambient").is_none());
        assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(s["linux"]["maskedPaths"][2], "/proc/kcore");
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 128);
        assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(s["hostname"], "web");
        assert_eq!(s["linux"]["namespaces"][5]["path"], "/run/netns/sp-1");
        assert_eq!(s["root"]["readonly"], false);
        assert_eq!(s["linux"]["namespaces"][6]["type"], "user");
        let map = json!([{"containerID": 0, "hostID": 131_072, "size": 65_536}]);
        assert_eq!(s["linux"]["uidMappings"], map);
        assert_eq!(s["linux"]["gidMappings"], map);
        let sys = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert_eq!(sys["type"], "bind");
        assert!(sys["options"].as_array().unwrap().contains(&json!("ro")));
    }

    #[test]
    fn process_merges_image_and_deploy() {
        let s = build(&sample());
        assert_eq!(s["process"]["args"], json!(["httpd", "-f"]));
        assert_eq!(s["process"]["cwd"], "/www");
        let env = s["process"]["env"].as_array().unwrap();
        assert!(
            env.contains(&json!("PORT=8080")),
            "deploy env wins: {env:?}"
        );
        assert!(env.contains(&json!("PATH=/bin")));
        let mut d = sample();
        d.command = vec!["/bin/echo".into()];
        d.args = vec![];
        assert_eq!(process_args(&d, &image()), vec!["/bin/echo"]);
        d.command = vec![];
        assert_eq!(process_args(&d, &image()), vec!["sh"]);
    }

    #[test]
    fn read_only_root_gets_a_writable_tmp() {
        let mut d = sample();
        d.read_only_rootfs = true;
        let s = build(&d);
        assert_eq!(s["root"]["readonly"], true);
        let has_tmp = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/tmp");
        assert!(has_tmp);
    }

    #[test]
    fn refuses_named_users_and_empty_commands() {
        let mut img = image();
        img.user = "nobody".into();
        assert!(parse_user("i", &img.user).is_err());
        assert_eq!(parse_user("i", "1000:50").unwrap(), (1000, 50));
        let mut d = sample();
        d.args.clear();
        let empty = ImageConfig::default();
        let err = build_spec(&SpecInput {
            deploy: &d,
            image: &empty,
            namespace: "n",
            container_id: "c",
            netns_path: "/x",
            hosts_path: "/h",
            resolv_path: None,
            memory_bytes: 1,
            pids_limit: 1,
            id_map: IdMap { base: 131_072 },
            volumes: &Volumes::new("/v"),
        })
        .unwrap_err();
        assert!(err.to_string().contains("command"));
    }
}
