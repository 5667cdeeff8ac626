//! The fetch sandbox from buildd's side: every git process of a checkout runs as
//! `unshare --net --mount --pid --fork --kill-child -- <helper> __fetch-sandbox SPEC` (the helper
//! is buildd's own binary; `inside.rs` is what it does there), in a network namespace whose only
//! way out is this checkout's [`EgressProxy`], as an unprivileged uid, on a root that holds none
//! of the platform's state.
//!
//! The checkout itself is a tmpfs buildd mounts at the checkout folder (size `max_bytes`,
//! `max_files` inodes, owned by the sandbox uid): the kernel bounds both size and file count,
//! mounting costs no disk set-up (no image file, no loop device, no mkfs), and unmounting frees
//! everything at once. It costs memory, bounded by `max_bytes` per running build (and swappable).
//! A timeout kills `unshare`, which kills the namespace's first process, which takes every
//! process of the namespace with it.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use super::SourceError;
use super::egress::{Egress, EgressEvent, EgressProxy};
use super::inside::{EGRESS_SOCKET, HELPER_ARG, Program, Spec};
use super::ssh::SshAccess;

/// How checkouts are sandboxed (from the configuration).
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// The binary run inside the namespaces (buildd's own).
    pub helper: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub timeout: Duration,
    pub max_bytes: u64,
    pub max_files: u64,
    pub ca_file: Option<PathBuf>,
    /// The operator's `known_hosts` file for SSH sources (`fetch_sandbox.ssh_known_hosts`).
    pub ssh_known_hosts: Option<PathBuf>,
    /// Operator roots for `file://` and absolute-path sources; empty = refused.
    pub local_roots: Vec<PathBuf>,
    pub egress: Egress,
}

impl FetchSettings {
    /// The settings a daemon with `config` uses (the helper defaults to this executable).
    pub fn from_config(config: &crate::config::Config) -> std::io::Result<Self> {
        let s = &config.fetch_sandbox;
        let helper = if s.helper.as_os_str().is_empty() {
            std::env::current_exe()?
        } else {
            s.helper.clone()
        };
        let resolver = match config.dns_resolver.parse() {
            Ok(addr) => super::egress::Resolver::nameserver(addr),
            Err(_) => super::egress::Resolver::System,
        };
        Ok(Self {
            helper,
            uid: s.uid,
            gid: s.gid,
            timeout: Duration::from_secs(s.timeout_seconds),
            max_bytes: s.max_bytes,
            max_files: s.max_files,
            ca_file: (!s.ca_file.as_os_str().is_empty()).then(|| s.ca_file.clone()),
            ssh_known_hosts: (!s.ssh_known_hosts.as_os_str().is_empty())
                .then(|| s.ssh_known_hosts.clone()),
            local_roots: config.local_sources.clone(),
            egress: Egress {
                policy: config.egress_policy(),
                resolver,
            },
        })
    }
}

/// The checkout's tmpfs; unmounted on drop (lazily, so a reader still inside it does not stop
/// the unmount).
#[derive(Debug)]
pub struct CheckoutMount {
    path: PathBuf,
}

impl CheckoutMount {
    fn mount(path: &Path, settings: &FetchSettings) -> Result<Self, SourceError> {
        std::fs::create_dir_all(path).map_err(|source| SourceError::Sandbox {
            what: format!("create {}", path.display()),
            source,
        })?;
        let options = format!(
            "size={},nr_inodes={},mode=0700,uid={},gid={}",
            settings.max_bytes, settings.max_files, settings.uid, settings.gid
        );
        mount(
            Some("stackpad-checkout"),
            path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|e| SourceError::Sandbox {
            what: format!("mount the checkout tmpfs on {}", path.display()),
            source: e.into(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CheckoutMount {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

/// Unmounts checkout tmpfs left under `dir` by a buildd that stopped mid-build.
pub fn unmount_stale(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut stale: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    // Deepest first.
    stale.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for path in stale {
        let _ = umount2(&path, MntFlags::MNT_DETACH);
    }
}

/// One checkout's sandbox: its egress proxy and the folders the helper builds on.
#[derive(Debug)]
pub struct Sandbox {
    settings: Arc<FetchSettings>,
    /// `<checkout>.fetch`: `root/` (empty on the host).
    dir: PathBuf,
    /// The proxy's socket's folder: a short path of its own under the temp dir (0700), since a
    /// Unix socket's path must fit in 108 bytes and the work dir may be deep.
    egress: PathBuf,
    checkout: PathBuf,
    proxy: EgressProxy,
    /// A fetch over SSH: what ssh gets in each git run (`ssh.rs`).
    ssh: Option<SshAccess>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.egress);
    }
}

fn sandbox_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SourceError {
    let what = what.into();
    move |source| SourceError::Sandbox { what, source }
}

impl Sandbox {
    /// Mounts the checkout tmpfs at `dest` and starts the egress proxy.
    pub fn open(
        settings: Arc<FetchSettings>,
        dest: &Path,
    ) -> Result<(Self, CheckoutMount), SourceError> {
        Self::open_with(settings, dest, None)
    }

    /// Like [`Sandbox::open`]; with `ssh`, every git run gets ssh's files and relay, and the
    /// egress proxy serves the repository's host and SSH port only.
    pub fn open_with(
        settings: Arc<FetchSettings>,
        dest: &Path,
        ssh: Option<SshAccess>,
    ) -> Result<(Self, CheckoutMount), SourceError> {
        let mut dir = dest.as_os_str().to_owned();
        dir.push(".fetch");
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(dir.join("root")).map_err(sandbox_err(format!(
            "create {}",
            dir.join("root").display()
        )))?;
        let egress =
            std::env::temp_dir().join(format!("stackpad-egress-{}", uuid::Uuid::new_v4().simple()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&egress)
            .map_err(sandbox_err(format!("create {}", egress.display())))?;
        let socket = egress.join(EGRESS_SOCKET);
        let started = match &ssh {
            Some(ssh) => EgressProxy::start_for_target(
                settings.egress.clone(),
                ssh.host.clone(),
                ssh.port,
                &socket,
            ),
            None => EgressProxy::start(settings.egress.clone(), &socket),
        };
        let proxy = match started {
            Ok(proxy) => proxy,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&egress);
                return Err(sandbox_err("start the egress proxy")(e));
            }
        };
        let sandbox = Self {
            settings,
            dir,
            egress,
            checkout: dest.to_path_buf(),
            proxy,
            ssh,
        };
        // A failed mount drops the sandbox, which removes its folders.
        let mount = CheckoutMount::mount(dest, &sandbox.settings)?;
        Ok((sandbox, mount))
    }

    /// Whether the operator allowed local sources (the file protocol).
    pub fn allows_local(&self) -> bool {
        !self.settings.local_roots.is_empty()
    }

    /// What the egress proxy did so far.
    pub fn events(&self) -> Vec<EgressEvent> {
        self.proxy.events()
    }

    /// Runs `git <args>` in the sandbox (in the checkout) with `config` as its only
    /// configuration; `env` reaches git and nothing else (credentials).
    pub async fn git(
        &self,
        args: &[&str],
        config: &[(String, String)],
        env: &[(&str, &str)],
    ) -> Result<Output, SourceError> {
        let spec = Spec {
            root: self.dir.join("root"),
            checkout: self.checkout.clone(),
            egress: self.egress.clone(),
            local_roots: self.settings.local_roots.clone(),
            ca_file: self.settings.ca_file.clone(),
            uid: self.settings.uid,
            gid: self.settings.gid,
            config: config.to_vec(),
            pass_env: env.iter().map(|(k, _)| (*k).to_owned()).collect(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            program: Program::Git,
            deps: None,
            ssh: self.ssh.as_ref().map(SshAccess::spec),
        };
        let stdin = match &self.ssh {
            Some(ssh) => {
                Some(
                    serde_json::to_vec(&ssh.secrets).map_err(|e| SourceError::Sandbox {
                        what: "encode the ssh secrets".into(),
                        source: std::io::Error::other(e),
                    })?,
                )
            }
            None => None,
        };
        self.spawn(&spec, env, stdin).await
    }

    /// Runs `npm <args>` in the sandbox with `deps` (a host folder the sandbox uid may write)
    /// at `/deps` and npm's cache there. Its egress proxy (one of its own, for this run) serves
    /// only `hosts`, each address of which is still checked by the address policy. Returns
    /// npm's output and what the proxy did.
    pub async fn npm(
        &self,
        args: &[String],
        deps: &Path,
        hosts: &[String],
    ) -> Result<(Output, Vec<EgressEvent>), SourceError> {
        self.fetch_deps(Program::Npm, args, deps, hosts).await
    }

    /// Runs `program` (npm, or npm's tarball fetch) like [`Sandbox::npm`].
    pub(super) async fn fetch_deps(
        &self,
        program: Program,
        args: &[String],
        deps: &Path,
        hosts: &[String],
    ) -> Result<(Output, Vec<EgressEvent>), SourceError> {
        let egress =
            std::env::temp_dir().join(format!("stackpad-egress-{}", uuid::Uuid::new_v4().simple()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&egress)
            .map_err(sandbox_err(format!("create {}", egress.display())))?;
        struct Remove<'a>(&'a Path);
        impl Drop for Remove<'_> {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(self.0);
            }
        }
        let _remove = Remove(&egress);
        let proxy = EgressProxy::start_for_hosts(
            self.settings.egress.clone(),
            Some(hosts.to_vec()),
            &egress.join(EGRESS_SOCKET),
        )
        .map_err(sandbox_err("start the egress proxy"))?;
        let spec = Spec {
            root: self.dir.join("root"),
            checkout: self.checkout.clone(),
            egress: egress.clone(),
            local_roots: Vec::new(),
            ca_file: self.settings.ca_file.clone(),
            uid: self.settings.uid,
            gid: self.settings.gid,
            config: Vec::new(),
            pass_env: Vec::new(),
            args: args.to_vec(),
            program,
            deps: Some(deps.to_path_buf()),
            ssh: None,
        };
        let out = self.spawn(&spec, &[], None).await?;
        Ok((out, proxy.events()))
    }

    /// Runs the helper with `spec`; `stdin` (secrets) is written to its standard input.
    async fn spawn(
        &self,
        spec: &Spec,
        env: &[(&str, &str)],
        stdin: Option<Vec<u8>>,
    ) -> Result<Output, SourceError> {
        let spec = serde_json::to_string(spec).map_err(|e| SourceError::Sandbox {
            what: "encode the sandbox spec".into(),
            source: std::io::Error::other(e),
        })?;
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--net",
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
            "--",
        ])
        .arg(&self.settings.helper)
        .arg(HELPER_ARG)
        .arg(spec)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(SourceError::Spawn)?;
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A helper that failed before reading closes the pipe: its exit says why.
            let _ = pipe.write_all(&bytes).await;
        }
        child.wait_with_output().await.map_err(SourceError::Spawn)
    }
}
