//! Repositories over SSH, fetched with the project's deploy key.
//!
//! buildd's side ([`SshAccess`]) decides what the sandbox gets: the repository's host and port
//! (the only place its egress proxy lets a connection go, see
//! [`super::egress::EgressProxy::start_for_target`]), the name its host key is looked up under,
//! and, on the helper's standard input only, the private key and the known hosts (the build
//! node's `fetch_sandbox.ssh_known_hosts` file and the request's lines). Inside the sandbox
//! ([`prepare_inside`]) the helper writes them to the sandbox's own scratch tmpfs (the key 0600,
//! owned by the fetch uid; gone with the namespace when git exits) with an ssh configuration
//! that sends every connection to a relay on the sandbox's `127.0.0.1:22`, which asks the egress
//! proxy for exactly that host and port. Host keys are checked strictly (`StrictHostKeyChecking
//! yes`, never accept-new): an unknown or changed key fails the fetch. No agent, no forwarding,
//! no password or keyboard prompt, no other identity.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::Path;

use tenant::source::{Host, SshUrl};

use super::SourceError;
use super::inside::{EGRESS_DIR, EGRESS_SOCKET, HelperError, io, relay};

/// The folder inside the sandbox holding ssh's files (on the scratch tmpfs).
pub const SSH_DIR: &str = "/run/scratch/ssh";
const CONFIG: &str = "/run/scratch/ssh/config";
const IDENTITY: &str = "/run/scratch/ssh/id";
const KNOWN_HOSTS: &str = "/run/scratch/ssh/known_hosts";
/// The sandbox-local port ssh connects to (the relay to the egress proxy).
const RELAY: &str = "127.0.0.1:22";
/// The command git runs for ssh (`core.sshCommand`).
pub const SSH_COMMAND: &str = "ssh -F /run/scratch/ssh/config";
/// The largest private key and known_hosts text accepted.
pub const MAX_KEY_BYTES: usize = 16 * 1024;
pub const MAX_KNOWN_HOSTS_BYTES: usize = 256 * 1024;

/// What ssh gets for one checkout. The key and the known hosts go to the helper's standard
/// input, never its command line or environment.
#[derive(Clone)]
pub struct SshAccess {
    /// Where the relay connects: the host (no brackets) and port of the URL.
    pub host: String,
    pub port: u16,
    /// The name of the host's key in `known_hosts` (`host` or `[host]:port`).
    pub host_key_alias: String,
    pub secrets: SshSecrets,
}

impl std::fmt::Debug for SshAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshAccess")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("host_key_alias", &self.host_key_alias)
            .field("secrets", &self.secrets)
            .finish()
    }
}

/// What the helper reads on its standard input.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct SshSecrets {
    pub private_key: String,
    pub known_hosts: String,
}

/// The part of the sandbox's spec (on its command line: no secret) an SSH fetch adds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SshSpec {
    pub host: String,
    pub port: u16,
    pub host_key_alias: String,
}

impl std::fmt::Debug for SshSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSecrets")
            .field("private_key", &"<redacted>")
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

impl SshAccess {
    /// The access to `url` with `private_key`, trusting the build node's `operator_known_hosts`
    /// file and the request's `known_hosts` lines.
    pub fn new(
        url: &SshUrl,
        private_key: &str,
        known_hosts: &str,
        operator_known_hosts: Option<&Path>,
    ) -> Result<Self, SourceError> {
        check_private_key(private_key).map_err(|reason| SourceError::Refused {
            field: "ssh_private_key",
            reason,
        })?;
        check_known_hosts(known_hosts).map_err(|reason| SourceError::Refused {
            field: "ssh_known_hosts",
            reason,
        })?;
        let mut all = match operator_known_hosts {
            Some(path) => std::fs::read_to_string(path).map_err(|source| SourceError::Sandbox {
                what: format!("read fetch_sandbox.ssh_known_hosts {}", path.display()),
                source,
            })?,
            None => String::new(),
        };
        if !all.is_empty() && !all.ends_with('\n') {
            all.push('\n');
        }
        all.push_str(known_hosts);
        let mut private_key = private_key.to_owned();
        if !private_key.ends_with('\n') {
            private_key.push('\n');
        }
        Ok(Self {
            host: match url.host() {
                Host::Name(n) => n.clone(),
                Host::Ip(ip) => ip.to_string(),
            },
            port: url.port(),
            host_key_alias: url.known_hosts_name(),
            secrets: SshSecrets {
                private_key,
                known_hosts: all,
            },
        })
    }

    pub fn spec(&self) -> SshSpec {
        SshSpec {
            host: self.host.clone(),
            port: self.port,
            host_key_alias: self.host_key_alias.clone(),
        }
    }
}

/// An OpenSSH private key as `ssh-keygen` and control write it: PEM-armoured, ASCII, bounded.
pub fn check_private_key(key: &str) -> Result<(), String> {
    let key = key.trim();
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("longer than {MAX_KEY_BYTES} bytes"));
    }
    let ascii = key
        .bytes()
        .all(|b| b == b'\n' || b == b'\r' || (0x20..0x7f).contains(&b));
    if !ascii
        || !key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
        || !key.ends_with("-----END OPENSSH PRIVATE KEY-----")
    {
        return Err("not an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----)".into());
    }
    Ok(())
}

/// `known_hosts` lines: printable ASCII, bounded (ssh itself reads them; a bad line is skipped).
pub fn check_known_hosts(text: &str) -> Result<(), String> {
    if text.len() > MAX_KNOWN_HOSTS_BYTES {
        return Err(format!("longer than {MAX_KNOWN_HOSTS_BYTES} bytes"));
    }
    if !text
        .bytes()
        .all(|b| b == b'\n' || b == b'\r' || (0x20..0x7f).contains(&b))
    {
        return Err("holds a control or non-ASCII character".into());
    }
    Ok(())
}

/// ssh's whole configuration inside the sandbox: every host goes to the relay, the host key is
/// checked strictly under `alias`, the deploy key is the only identity, nothing is forwarded.
pub fn ssh_config(alias: &str) -> String {
    format!(
        "Host *\n\
         \tHostName 127.0.0.1\n\
         \tPort 22\n\
         \tHostKeyAlias {alias}\n\
         \tCheckHostIP no\n\
         \tStrictHostKeyChecking yes\n\
         \tUpdateHostKeys no\n\
         \tUserKnownHostsFile {KNOWN_HOSTS}\n\
         \tGlobalKnownHostsFile /dev/null\n\
         \tIdentityFile {IDENTITY}\n\
         \tIdentitiesOnly yes\n\
         \tIdentityAgent none\n\
         \tAddKeysToAgent no\n\
         \tForwardAgent no\n\
         \tForwardX11 no\n\
         \tClearAllForwardings yes\n\
         \tPermitLocalCommand no\n\
         \tProxyCommand none\n\
         \tBatchMode yes\n\
         \tPasswordAuthentication no\n\
         \tKbdInteractiveAuthentication no\n\
         \tPreferredAuthentications publickey\n\
         \tConnectTimeout 15\n\
         \tServerAliveInterval 15\n\
         \tLogLevel ERROR\n"
    )
}

/// Inside the sandbox, before privileges are dropped: reads the secrets from standard input,
/// writes ssh's files for `uid`/`gid`, and starts the relay on `127.0.0.1:22`.
pub fn prepare_inside(spec: &SshSpec, uid: u32, gid: u32) -> Result<(), HelperError> {
    let mut input = String::new();
    std::io::stdin()
        .take((MAX_KEY_BYTES + MAX_KNOWN_HOSTS_BYTES + 4096) as u64)
        .read_to_string(&mut input)
        .map_err(io("read the ssh secrets"))?;
    let secrets: SshSecrets = serde_json::from_str(&input)?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(SSH_DIR)
        .map_err(io(format!("mkdir {SSH_DIR}")))?;
    let owner = |path: &str| {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| HelperError::Io {
            what: format!("chown {path}"),
            source: e.into(),
        })
    };
    for (path, text, mode) in [
        (IDENTITY, secrets.private_key.as_str(), 0o600),
        (KNOWN_HOSTS, secrets.known_hosts.as_str(), 0o600),
        (CONFIG, ssh_config(&spec.host_key_alias).as_str(), 0o600),
    ] {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(io(format!("create {path}")))?;
        file.write_all(text.as_bytes())
            .map_err(io(format!("write {path}")))?;
        owner(path)?;
    }
    owner(SSH_DIR)?;
    let listener = TcpListener::bind(RELAY).map_err(io(format!("bind {RELAY}")))?;
    let target = format!("{}:{}", bracketed(&spec.host), spec.port);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let target = target.clone();
            std::thread::spawn(move || {
                if let Some(unix) = connect_through_proxy(&target) {
                    relay(conn, unix);
                } else {
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                }
            });
        }
    });
    Ok(())
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Asks the egress proxy for `target`; the stream once it answered 200.
fn connect_through_proxy(target: &str) -> Option<UnixStream> {
    let mut unix = UnixStream::connect(Path::new(EGRESS_DIR).join(EGRESS_SOCKET)).ok()?;
    unix.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8 * 1024 || unix.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head);
    let ok = status.split(' ').nth(1).is_some_and(|code| code == "200");
    ok.then_some(unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(value: &str) -> SshUrl {
        match tenant::source::SourceUrl::parse(value).unwrap() {
            tenant::source::SourceUrl::Ssh(u) => u,
            other => panic!("{other:?}"),
        }
    }

    const KEY: &str =
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----";

    #[test]
    fn access_names_the_host_key_and_target_and_hides_the_key() {
        let a =
            SshAccess::new(&url("ssh://git@git.example.com:2222/r.git"), KEY, "", None).unwrap();
        assert_eq!((a.host.as_str(), a.port), ("git.example.com", 2222));
        assert_eq!(a.host_key_alias, "[git.example.com]:2222");
        assert!(a.secrets.private_key.ends_with("KEY-----\n"));
        assert!(!format!("{a:?}").contains("AAAA"));
        let a = SshAccess::new(&url("git@[2a01:4f8::1]:r.git"), KEY, "x y z\n", None).unwrap();
        assert_eq!((a.host.as_str(), a.port), ("2a01:4f8::1", 22));
        assert_eq!(bracketed(&a.host), "[2a01:4f8::1]");
        assert_eq!(a.secrets.known_hosts, "x y z\n");
    }

    #[test]
    fn bad_keys_and_known_hosts_are_refused_naming_the_field() {
        let u = url("git@github.com:a/b.git");
        for (key, hosts, field) in [
            ("", "", "ssh_private_key"),
            ("ssh-ed25519 AAAA", "", "ssh_private_key"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\n-----END RSA PRIVATE KEY-----",
                "",
                "ssh_private_key",
            ),
            (KEY, "github.com ssh-ed25519 AAAA\0", "ssh_known_hosts"),
        ] {
            match SshAccess::new(&u, key, hosts, None) {
                Err(SourceError::Refused { field: f, reason }) => {
                    assert_eq!(f, field, "{reason}");
                    assert!(!reason.contains("AAAA"), "{reason}");
                }
                other => panic!("{key:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_config_checks_host_keys_strictly_and_forwards_nothing() {
        let c = ssh_config("[git.example.com]:2222");
        for line in [
            "HostKeyAlias [git.example.com]:2222",
            "StrictHostKeyChecking yes",
            "IdentitiesOnly yes",
            "IdentityAgent none",
            "ForwardAgent no",
            "BatchMode yes",
            "GlobalKnownHostsFile /dev/null",
            "HostName 127.0.0.1",
        ] {
            assert!(c.lines().any(|l| l.trim() == line), "{line} missing:\n{c}");
        }
        assert!(!c.contains("accept-new"));
    }
}
