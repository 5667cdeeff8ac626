//! The fetch sandbox from the inside: what `stackpad-buildd __fetch-sandbox SPEC` does after
//! `unshare --net --mount --pid --fork` put it in namespaces of its own (see `sandbox.rs`).
//!
//! As root of the new namespaces it builds a root filesystem that holds only what git needs
//! (`/usr` and the library links read-only, a few files of `/etc`, `/dev/null` and friends, a
//! fresh `/proc` and a small scratch tmpfs), the checkout at `/work`, the egress socket's folder at
//! `/run/egress` and the operator's local source roots read-only at their own paths; it pivots
//! into it, so the platform's state (`/var/lib/stackpad`, `/run/containerd`, `/run/docker.sock`,
//! buildd's config, `/root`) does not exist in there. It brings `lo` up, relays every TCP
//! connection to `127.0.0.1:<port>` to buildd's egress proxy over the Unix socket (the namespace
//! has no other interface: that relay is git's only way out), and runs git as the unprivileged
//! uid with `http.proxy` pointing at the relay. Its exit code is git's. A fetch over SSH also
//! gets ssh's files and a relay on `127.0.0.1:22` to its one host (`ssh.rs`).

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// The hidden subcommand of `stackpad-buildd` that runs this.
pub const HELPER_ARG: &str = "__fetch-sandbox";

/// Where things are inside the sandbox.
pub const WORK: &str = "/work";
pub(super) const EGRESS_DIR: &str = "/run/egress";
pub const EGRESS_SOCKET: &str = "proxy.sock";
const CA_FILE: &str = "/etc/stackpad-fetch/ca.pem";
/// The sandbox's scratch tmpfs (not `/tmp`, which an operator's local root may be under).
const SCRATCH: &str = "/run/scratch";
const GIT_CONFIG: &str = "/run/scratch/gitconfig";

/// What the helper is asked to do (JSON on its command line; holds no secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Spec {
    /// An empty folder (host path) the sandbox's root is built on.
    pub root: PathBuf,
    /// The checkout (host path, buildd's tmpfs); `/work` inside.
    pub checkout: PathBuf,
    /// The folder holding the egress proxy's socket (host path); `/run/egress` inside.
    pub egress: PathBuf,
    /// Operator local-source roots, shown read-only at their own paths.
    pub local_roots: Vec<PathBuf>,
    /// Extra CA certificates for git (host path).
    pub ca_file: Option<PathBuf>,
    pub uid: u32,
    pub gid: u32,
    /// git's global configuration, `(key, value)` in order (`http.proxy` is added here).
    pub config: Vec<(String, String)>,
    /// Names of environment variables passed on to git (credentials); nothing else is.
    pub pass_env: Vec<String>,
    /// git's arguments (run in `/work`), or npm's (run in the scratch folder).
    pub args: Vec<String>,
    /// What runs: git (the default) or npm (a dependency fetch).
    #[serde(default)]
    pub program: Program,
    /// A folder (host path) shown writable at `/deps`: where a dependency fetch leaves the
    /// package manager's cache.
    #[serde(default)]
    pub deps: Option<PathBuf>,
    /// A fetch over SSH: the relay's target and the host key's name (the key itself and the
    /// known hosts come on standard input, see `ssh.rs`).
    #[serde(default)]
    pub ssh: Option<super::ssh::SshSpec>,
}

/// The program the sandbox runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Program {
    #[default]
    Git,
    /// `npm` with its cache at `/deps/npm`, the relay as its proxy, no user or project
    /// configuration and no install scripts, run outside the checkout.
    Npm,
    /// Node running [`TARBALLS_SCRIPT`] (npm's own pacote, found beside `/usr/bin/npm`) with
    /// the arguments as tarball URLs, in npm's environment above: each tarball is streamed into
    /// npm's cache, what `npm cache add` does first. `npm cache add` then unpacks every tarball
    /// to a scratch folder to read its manifest, which an install from a lock file never uses:
    /// the Vite example's 28 packages took 3.3 s that way, 0.9 s this way.
    NpmTarballs,
}

/// What [`Program::NpmTarballs`] runs (fixed code: the tenant's input reaches it only as the
/// URLs on its command line, each checked to be on the registry by `source::deps`). Retries as
/// npm's defaults do; the first failure is printed on stderr and exits 1.
pub const TARBALLS_SCRIPT: &str = r#"'use strict';
const fs = require('fs');
const path = require('path');
const npm = path.resolve(path.dirname(fs.realpathSync('/usr/bin/npm')), '..');
const pacote = require(path.join(npm, 'node_modules', 'pacote'));
const env = process.env;
const ca = fs.readFileSync(env.npm_config_cafile, 'utf8')
  .split(/(?=-----BEGIN CERTIFICATE-----)/)
  .filter((c) => c.includes('BEGIN CERTIFICATE'));
const opts = {
  cache: path.join(env.npm_config_cache, '_cacache'),
  proxy: env.npm_config_https_proxy,
  ca,
  preferOffline: true,
  maxSockets: 16,
  retry: { retries: 2, factor: 10, minTimeout: 10000, maxTimeout: 60000 },
};
Promise.all(process.argv.slice(1).map((url) =>
  pacote.tarball.stream(url, (s) => { s.resume(); return s.promise(); }, opts)))
  .then(() => process.exit(0), (e) => {
    console.error(`npm error ${e.code || 'fetch'} ${e.message}`);
    process.exit(1);
  });
"#;

/// Where a dependency fetch's folder is inside the sandbox.
pub const DEPS: &str = "/deps";

/// Why the sandbox could not be set up (printed on stderr, exit code 125).
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("bad sandbox spec: {0}")]
    Spec(#[from] serde_json::Error),
    #[error("{what} {path}: {source}")]
    Mount {
        what: &'static str,
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub(super) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HelperError {
    let what = what.into();
    move |source| HelperError::Io { what, source }
}

/// The helper's `main`: returns the process's exit code (git's, or 125 when the sandbox could
/// not be set up).
pub fn helper_main(args: &[String]) -> i32 {
    let result = match args {
        [spec] => serde_json::from_str(spec)
            .map_err(HelperError::from)
            .and_then(|spec| run(&spec)),
        _ => Err(HelperError::Io {
            what: format!("usage: stackpad-buildd {HELPER_ARG} SPEC"),
            source: std::io::ErrorKind::InvalidInput.into(),
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fetch sandbox: {e}");
            125
        }
    }
}

fn run(spec: &Spec) -> Result<i32, HelperError> {
    let lo = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(io("ip link set lo up"))?;
    if !lo.success() {
        return Err(HelperError::Io {
            what: "ip link set lo up".into(),
            source: std::io::Error::other(format!("exit {lo}")),
        });
    }
    build_root(spec)?;
    enter_root(&spec.root)?;

    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("bind 127.0.0.1:0"))?;
    let port = listener.local_addr().map_err(io("relay address"))?.port();
    std::thread::spawn(move || relay_all(listener));

    if let Some(ssh) = &spec.ssh {
        super::ssh::prepare_inside(ssh, spec.uid, spec.gid)?;
    }
    if spec.program == Program::Git {
        let mut config = spec.config.clone();
        config.push(("http.proxy".into(), format!("http://127.0.0.1:{port}")));
        if spec.ca_file.is_some() {
            config.push(("http.sslCAInfo".into(), CA_FILE.into()));
        }
        write_git_config(&config, spec.uid, spec.gid)?;
    }

    // Setuid programs stay unprivileged in here (the mounts are nosuid too).
    nix::sys::prctl::set_no_new_privs().map_err(|source| HelperError::Mount {
        what: "no_new_privs",
        path: String::new(),
        source,
    })?;
    if matches!(spec.program, Program::Npm | Program::NpmTarballs) {
        return run_npm(spec, port);
    }
    let mut git = Command::new("/usr/bin/git");
    git.args(&spec.args)
        .current_dir(WORK)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", SCRATCH)
        .env("TMPDIR", SCRATCH)
        .env("LC_ALL", "C")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", GIT_CONFIG)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("GIT_PROTOCOL_FROM_USER", "0")
        .uid(spec.uid)
        .gid(spec.gid);
    for name in &spec.pass_env {
        if let Ok(value) = std::env::var(name) {
            git.env(name, value);
        }
    }
    let status = git.status().map_err(io("run git"))?;
    Ok(status.code().unwrap_or(128))
}

/// npm as the unprivileged uid, in the scratch folder (no project there: the checkout's
/// `.npmrc` is never read), its only configuration on its environment.
fn run_npm(spec: &Spec, port: u16) -> Result<i32, HelperError> {
    let proxy = format!("http://127.0.0.1:{port}");
    let mut npm = if spec.program == Program::NpmTarballs {
        let mut node = Command::new("/usr/bin/node");
        node.args(["-e", TARBALLS_SCRIPT, "--"]);
        node
    } else {
        Command::new("/usr/bin/npm")
    };
    npm.args(&spec.args)
        .current_dir(SCRATCH)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", SCRATCH)
        .env("TMPDIR", SCRATCH)
        .env("LC_ALL", "C")
        .env("npm_config_cache", format!("{DEPS}/npm"))
        .env("npm_config_userconfig", format!("{SCRATCH}/npmrc"))
        .env("npm_config_globalconfig", format!("{SCRATCH}/npmrc-global"))
        .env("npm_config_https_proxy", &proxy)
        .env("npm_config_proxy", &proxy)
        .env("npm_config_ignore_scripts", "true")
        .env("npm_config_update_notifier", "false")
        .env("npm_config_audit", "false")
        .env("npm_config_fund", "false")
        .uid(spec.uid)
        .gid(spec.gid);
    // The build node's CA store (mirrored from the host), as git uses it; or the operator's.
    let ca = if spec.ca_file.is_some() {
        CA_FILE
    } else {
        "/etc/ssl/certs/ca-certificates.crt"
    };
    npm.env("npm_config_cafile", ca);
    let status = npm.status().map_err(io("run npm"))?;
    Ok(status.code().unwrap_or(128))
}

fn mount_err(what: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> HelperError {
    let path = path.display().to_string();
    move |source| HelperError::Mount { what, path, source }
}

fn tmpfs(target: &Path, options: &str) -> Result<(), HelperError> {
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options),
    )
    .map_err(mount_err("mount tmpfs on", target))
}

/// Binds `source` at `target` (created as a folder or an empty file), read-only unless `write`.
/// Only the system folders bring their submounts along (`recursive`): a local root's submounts
/// (another build's checkout, say) would keep their own, writable, flags.
fn bind(source: &Path, target: &Path, write: bool, recursive: bool) -> Result<(), HelperError> {
    if source.is_dir() {
        std::fs::create_dir_all(target).map_err(io(format!("mkdir {}", target.display())))?;
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("mkdir {}", parent.display())))?;
        }
        std::fs::File::create(target).map_err(io(format!("create {}", target.display())))?;
    }
    let mut bind_flags = MsFlags::MS_BIND;
    if recursive {
        bind_flags |= MsFlags::MS_REC;
    }
    mount(Some(source), target, None::<&str>, bind_flags, None::<&str>)
        .map_err(mount_err("bind", source))?;
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID;
    // The device files bound into /dev (null, zero, random...) must stay usable.
    if !source.starts_with("/dev") {
        flags |= MsFlags::MS_NODEV;
    }
    if !write {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(mount_err("remount", target))
}

/// `/bin` and friends: a symlink on merged-/usr systems (copied as a link), else a read-only bind.
fn mirror(path: &str, root: &Path) -> Result<(), HelperError> {
    let source = Path::new(path);
    let target = root.join(path.trim_start_matches('/'));
    match std::fs::symlink_metadata(source) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let link = std::fs::read_link(source).map_err(io(format!("readlink {path}")))?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("mkdir {}", parent.display())))?;
            }
            std::os::unix::fs::symlink(link, &target)
                .map_err(io(format!("symlink {}", target.display())))
        }
        Ok(_) => bind(source, &target, false, true),
        Err(_) => Ok(()),
    }
}

/// What git needs of the host's root, and nothing else.
const SYSTEM: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/alternatives",
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

fn build_root(spec: &Spec) -> Result<(), HelperError> {
    let root = &spec.root;
    tmpfs(root, "size=1m,nr_inodes=4096,mode=755")?;
    for path in SYSTEM {
        mirror(path, root)?;
    }
    // Users of the sandbox only (ssh refuses to run for a uid without a passwd entry).
    for (file, text) in [
        (
            "etc/passwd",
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\n\
                 fetch:x:{}:{}:stackpad fetch:{SCRATCH}:/usr/sbin/nologin\n",
                spec.uid, spec.gid
            ),
        ),
        ("etc/group", format!("root:x:0:\nfetch:x:{}:\n", spec.gid)),
    ] {
        std::fs::write(root.join(file), text).map_err(io(format!("write /{file}")))?;
    }
    let proc = root.join("proc");
    std::fs::create_dir_all(&proc).map_err(io("mkdir proc"))?;
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(mount_err("mount proc on", &proc))?;
    let scratch = root.join(SCRATCH.trim_start_matches('/'));
    std::fs::create_dir_all(&scratch).map_err(io("mkdir scratch"))?;
    tmpfs(&scratch, "size=64m,nr_inodes=4096,mode=1777")?;
    bind(
        &spec.checkout,
        &root.join(WORK.trim_start_matches('/')),
        true,
        false,
    )?;
    bind(
        &spec.egress,
        &root.join(EGRESS_DIR.trim_start_matches('/')),
        true,
        false,
    )?;
    if let Some(deps) = &spec.deps {
        bind(deps, &root.join(DEPS.trim_start_matches('/')), true, false)?;
    }
    for local in &spec.local_roots {
        if local.exists() {
            bind(
                local,
                &root.join(local.strip_prefix("/").unwrap_or(local)),
                false,
                false,
            )?;
        }
    }
    if let Some(ca) = &spec.ca_file {
        bind(
            ca,
            &root.join(CA_FILE.trim_start_matches('/')),
            false,
            false,
        )?;
    }
    Ok(())
}

fn enter_root(root: &Path) -> Result<(), HelperError> {
    let old = root.join(".old-root");
    std::fs::create_dir_all(&old).map_err(io("mkdir .old-root"))?;
    nix::unistd::pivot_root(root, &old).map_err(mount_err("pivot_root to", root))?;
    std::env::set_current_dir("/").map_err(io("chdir /"))?;
    umount2("/.old-root", MntFlags::MNT_DETACH)
        .map_err(mount_err("detach", Path::new("/.old-root")))?;
    std::fs::remove_dir("/.old-root").map_err(io("rmdir /.old-root"))?;
    // The root's own tmpfs is read-only from now on (git's uid could not write it anyway).
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(mount_err("remount read-only", Path::new("/")))
}

fn write_git_config(config: &[(String, String)], uid: u32, gid: u32) -> Result<(), HelperError> {
    let mut text = String::new();
    for (key, value) in config {
        // `section.sub.name` -> [section "sub"] name = value; values quoted and escaped.
        let (section, name) = key.rsplit_once('.').unwrap_or((key, ""));
        let header = match section.split_once('.') {
            Some((s, sub)) => format!("[{s} \"{}\"]", escape(sub)),
            None => format!("[{section}]"),
        };
        text.push_str(&format!("{header}\n\t{name} = \"{}\"\n", escape(value)));
    }
    let mut file = std::fs::File::create(GIT_CONFIG).map_err(io("create git config"))?;
    file.write_all(text.as_bytes())
        .map_err(io("write git config"))?;
    nix::unistd::chown(
        GIT_CONFIG,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(mount_err("chown", Path::new(GIT_CONFIG)))
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Relays each connection git opens to the egress proxy's Unix socket.
fn relay_all(listener: TcpListener) {
    let socket = Path::new(EGRESS_DIR).join(EGRESS_SOCKET);
    for conn in listener.incoming().flatten() {
        let socket = socket.clone();
        std::thread::spawn(move || {
            if let Ok(unix) = UnixStream::connect(&socket) {
                relay(conn, unix);
            }
        });
    }
}

pub(super) fn relay(tcp: TcpStream, unix: UnixStream) {
    let (Ok(mut tcp_read), Ok(mut unix_write)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut tcp_read, &mut unix_write);
        let _ = unix_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut unix_read, mut tcp_write) = (unix, tcp);
    let _ = std::io::copy(&mut unix_read, &mut tcp_write);
    let _ = tcp_write.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}
