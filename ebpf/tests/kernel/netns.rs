//! Test "containers": network namespaces on a test-owned bridge in the host namespace, each
//! with a veth whose host end gets the classifiers. Everything is named uniquely per test and
//! removed by `Drop`, also when the test fails.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};
use ebpf::{Isolation, IsolationConfig};

pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails (never skips) when the test cannot have what it needs.
pub fn require_root_and_bpffs() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .unwrap_or_default();
    assert!(
        uid.split_whitespace().nth(1) == Some("0"),
        "these tests need root (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN): run them as root"
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    assert!(
        mounts.lines().any(|l| l.contains(" /sys/fs/bpf bpf ")),
        "bpffs is not mounted at /sys/fs/bpf: mount -t bpf bpf /sys/fs/bpf (or scripts/services up)"
    );
}

/// A test's network: a bridge, its namespaces, its own pin directory.
pub struct TestNet {
    pub tag: String,
    pub bridge: String,
    pub pin_dir: PathBuf,
    namespaces: Vec<String>,
    next: u8,
}

/// One namespace on the bridge.
#[derive(Clone, Debug)]
pub struct Node {
    pub ns: String,
    pub veth: String,
    pub ip: Ipv4Addr,
}

impl TestNet {
    pub fn new() -> Result<Self> {
        require_root_and_bpffs();
        let id = uuid::Uuid::new_v4().simple().to_string();
        // Not "sp...": the node agent's nftables rules match its "spb*" bridges, and with
        // bridge-nf-call-iptables on they would judge this test's bridged frames too.
        let tag = format!("ebt{}", &id[..7]);
        let bridge = format!("{tag}br");
        sh(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        let net = TestNet {
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/stackpad-test-{tag}")),
            tag,
            bridge,
            namespaces: Vec::new(),
            next: 0,
        };
        sh(&["ip", "link", "set", &net.bridge, "up"])?;
        Ok(net)
    }

    pub fn config(&self) -> IsolationConfig {
        IsolationConfig {
            pin_dir: self.pin_dir.clone(),
            ..Default::default()
        }
    }

    pub fn load(&self) -> Result<Isolation> {
        Ok(Isolation::load(&self.config())?)
    }

    /// A namespace with `ip/prefix` on eth0; `routes` are on-link prefixes beyond its subnet.
    pub fn node(&mut self, ip: Ipv4Addr, prefix: u8, routes: &[&str]) -> Result<Node> {
        self.next += 1;
        let ns = format!("{}-n{}", self.tag, self.next);
        let veth = format!("{}h{}", self.tag, self.next);
        let peer = format!("{}p{}", self.tag, self.next);
        sh(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        sh(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
        ])?;
        sh(&["ip", "link", "set", &peer, "netns", &ns])?;
        sh(&["ip", "-n", &ns, "link", "set", &peer, "name", "eth0"])?;
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/{prefix}"),
            "dev",
            "eth0",
        ])?;
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        for r in routes {
            sh(&["ip", "-n", &ns, "route", "add", r, "dev", "eth0"])?;
        }
        sh(&["ip", "link", "set", &veth, "master", &self.bridge, "up"])?;
        Ok(Node { ns, veth, ip })
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        let _ = sh(&["ip", "link", "del", &self.bridge]);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// Runs `f` on a thread inside the network namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        enter(&path);
        f()
    })
}

pub fn enter(path: &str) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

/// Background threads (servers, senders) stopped and joined on drop, before the namespaces
/// they hold are deleted.
#[derive(Default)]
pub struct Threads {
    pub stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Threads {
    pub fn spawn(&mut self, ns: &str, f: impl FnOnce(Arc<AtomicBool>) + Send + 'static) {
        let stop = self.stop.clone();
        self.handles.push(in_ns(ns, move || f(stop)));
    }

    /// Like `spawn`, in the test process's own (host) namespace.
    pub fn spawn_host(&mut self, f: impl FnOnce(Arc<AtomicBool>) + Send + 'static) {
        let stop = self.stop.clone();
        self.handles.push(std::thread::spawn(move || f(stop)));
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
