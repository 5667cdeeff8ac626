//! A git server over SSH on loopback for the deploy-key tests: OpenSSH's `sshd` (Debian's
//! `openssh-server`, installed by `scripts/services up` and never started as a service there)
//! run by the test on a port of its own, with a host key of its own and an `authorized_keys`
//! holding only the key the test gives, each login forced into `git-shell` (no shell, no
//! forwarding). It serves the repositories under any absolute path (the test's bare
//! repositories). Stopped and its folder removed on drop, also when the test fails.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The login the forced command runs under (`PermitRootLogin forced-commands-only`: a key
/// login for root runs `git-shell` and nothing else).
pub const LOGIN: &str = "root";

const SSHD: &str = "/usr/sbin/sshd";

/// A running `sshd` serving git over SSH.
#[derive(Debug)]
pub struct GitSshd {
    child: Child,
    dir: PathBuf,
    pub addr: SocketAddr,
    /// The host's public key (`ssh-ed25519 AAAA...`), for the client's known hosts.
    pub host_key: String,
}

impl Drop for GitSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `authorized_keys` line of `public_key`: forced into git-shell, nothing else allowed.
pub fn authorized_line(public_key: &str) -> String {
    format!(
        "restrict,command=\"git-shell -c \\\"$SSH_ORIGINAL_COMMAND\\\"\" {}\n",
        public_key.trim()
    )
}

impl GitSshd {
    /// Starts sshd on `ip` (a loopback address) with `public_key` the only key let in.
    pub fn start(ip: IpAddr, public_key: &str) -> anyhow::Result<Self> {
        if !Path::new(SSHD).exists() {
            bail!("{SSHD} is missing: install openssh-server with `scripts/services up`");
        }
        let dir = std::env::temp_dir().join(crate::unique_name("sshd"));
        std::fs::create_dir_all(&dir)?;
        // Removed by Drop from here on.
        let port = TcpListener::bind((ip, 0))?.local_addr()?.port();
        let addr = SocketAddr::new(ip, port);
        let host_key_file = dir.join("host_ed25519");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test sshd", "-f"])
            .arg(&host_key_file))?;
        let host_key = std::fs::read_to_string(dir.join("host_ed25519.pub"))?;
        let host_key = host_key
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        std::fs::write(dir.join("authorized_keys"), authorized_line(public_key))?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {addr}\n\
                 HostKey {host}\n\
                 PidFile none\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PermitRootLogin forced-commands-only\n\
                 AllowUsers {LOGIN}\n\
                 AuthorizedKeysFile {keys}\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 AllowTcpForwarding no\n\
                 AllowAgentForwarding no\n\
                 X11Forwarding no\n\
                 PermitTTY no\n\
                 AcceptEnv GIT_PROTOCOL\n\
                 LogLevel VERBOSE\n",
                host = host_key_file.display(),
                keys = dir.join("authorized_keys").display(),
            ),
        )?;
        // sshd's privilege separation folder (systemd's tmpfiles makes it elsewhere).
        std::fs::create_dir_all("/run/sshd")?;
        let log = std::fs::File::create(dir.join("sshd.log"))?;
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {SSHD}"))?;
        let server = GitSshd {
            child,
            dir,
            addr,
            host_key,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "sshd did not listen on {addr} within 10 s: {}",
                    server.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// Lets `public_key` in instead of the key before (a rotated deploy key pasted again).
    pub fn authorize(&self, public_key: &str) -> anyhow::Result<()> {
        std::fs::write(
            self.dir.join("authorized_keys"),
            authorized_line(public_key),
        )?;
        Ok(())
    }

    /// The `known_hosts` line for this server under `name` (`[name]:port`).
    pub fn known_hosts_line(&self, name: &str) -> String {
        format!("[{name}]:{} {}\n", self.addr.port(), self.host_key)
    }

    /// What sshd logged so far (logins accepted and refused).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

/// A bare repository `name.git` under `parent` holding `files` in one commit on `main`; its sha.
pub fn bare_repository(
    parent: &Path,
    name: &str,
    files: &[(&str, &str)],
) -> anyhow::Result<(PathBuf, String)> {
    let work = parent.join(format!("{name}-work"));
    std::fs::create_dir_all(&work)?;
    for (path, text) in files {
        let file = work.join(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(file, text)?;
    }
    let git = |dir: &Path, args: &[&str]| {
        run(Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args))
    };
    git(&work, &["init", "-q", "-b", "main"])?;
    git(&work, &["add", "."])?;
    git(&work, &["commit", "-q", "-m", "app"])?;
    let sha = git(&work, &["rev-parse", "HEAD"])?.trim().to_owned();
    let bare = parent.join(format!("{name}.git"));
    run(Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&work)
        .arg(&bare))?;
    std::fs::remove_dir_all(&work)?;
    // A fetch names the exact commit (protocol v0 too, should the client's GIT_PROTOCOL not
    // get through).
    git(
        &bare,
        &["config", "uploadpack.allowReachableSHA1InWant", "true"],
    )?;
    Ok((bare, sha))
}
