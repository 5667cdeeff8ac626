//! Source checkout: the repository at the exact commit, shallow, through the git CLI, inside the
//! fetch sandbox.
//!
//! Every tenant value is parsed again here (defence in depth: control parses first): the URL with
//! [`tenant::source::SourceUrl`] (`https://` for tenants; `file://` and absolute paths only under
//! an operator's `local_sources` root), the ref with [`tenant::git::GitRef`], the commit with
//! [`tenant::git::CommitSha`], the subdirectory with [`tenant::path::Subdirectory`]. Every git
//! command line puts URLs and refs after `--end-of-options`. git runs in the sandbox
//! (`sandbox.rs`, `inside.rs`) and reaches the network only through the egress proxy
//! (`egress.rs`), which checks every address it connects to.
//!
//! Credentials for private repositories reach git through a credential helper that reads them
//! from the git process's environment, and answers only for the source's own host: they are
//! never on a command line, in a URL, or logged. A repository over SSH is fetched with the
//! request's deploy key, which reaches ssh as a file inside the sandbox only (`ssh.rs`), its
//! egress limited to the repository's host and port.

pub mod deps;
pub mod egress;
/// Reading a checkout without following its symlinks out (in `stackpad-detect`, whose
/// detection reads the same way).
pub use ::detect::files;
pub mod inside;
pub mod sandbox;
pub mod ssh;
#[cfg(test)]
pub(crate) mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tenant::git::{CommitSha, GitRef};
use tenant::path::Subdirectory;
use tenant::source::{Host, SourceUrl};

pub use sandbox::{CheckoutMount, FetchSettings, Sandbox};

/// Where to fetch from and what to check out (as received; parsed by [`checkout`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GitSource {
    /// `https://...`; `file:///...` or an absolute path only under an operator's local root.
    pub url: String,
    /// Branch or tag, used when `commit` is empty.
    pub reference: String,
    /// Full commit sha; wins over `reference`.
    pub commit: String,
    /// Folder inside the repository holding the app; empty = the root.
    pub subdirectory: String,
    pub username: String,
    pub password: String,
    pub submodules: bool,
    /// The deploy key (OpenSSH private key) of an SSH source.
    pub ssh_private_key: String,
    /// `known_hosts` lines trusted for an SSH source, besides the node's own file.
    pub ssh_known_hosts: String,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &redact_url(&self.url))
            .field("reference", &self.reference)
            .field("commit", &self.commit)
            .field("subdirectory", &self.subdirectory)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("submodules", &self.submodules)
            .field(
                "ssh_private_key",
                &if self.ssh_private_key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("ssh_known_hosts", &self.ssh_known_hosts)
            .finish()
    }
}

/// A checked-out source tree (on its own tmpfs, unmounted when the last clone is dropped).
#[derive(Debug, Clone)]
pub struct Checkout {
    /// The repository's work tree.
    pub repo: PathBuf,
    /// The app folder (`repo` joined with the subdirectory).
    pub app_dir: PathBuf,
    /// The full sha checked out.
    pub commit: String,
    pub mount: Arc<CheckoutMount>,
    /// The fetch sandbox, kept for the git steps that read the checkout after the fetch (the
    /// context archive): git reads the checkout's own `.git/config`, which only the sandbox's
    /// uid may act on.
    pub sandbox: Arc<Sandbox>,
}

/// Why the source could not be checked out.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A field of the source is not acceptable (parsed again here after control).
    #[error("source.{field} refused: {reason}")]
    Refused { field: &'static str, reason: String },
    #[error(
        "source.url refused: local repository {path} is not under a local source root of this build node (an operator setting)"
    )]
    LocalNotAllowed { path: String },
    /// The egress proxy refused a connection git asked for; says what was refused, nothing of
    /// what is on the network.
    #[error("repository {url} is unreachable: {detail}")]
    EgressRefused { url: String, detail: String },
    #[error("repository {url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{what} not found in {url}: {detail}")]
    RevisionNotFound {
        url: String,
        what: String,
        detail: String,
    },
    #[error("subdirectory {subdirectory:?} does not exist at commit {commit}")]
    MissingSubdirectory {
        subdirectory: String,
        commit: String,
    },
    #[error("subdirectory {subdirectory:?} at commit {commit} is refused: {reason}")]
    UnsafeSubdirectory {
        subdirectory: String,
        commit: String,
        reason: String,
    },
    #[error("git {step} failed for {url}: {detail}")]
    Git {
        url: String,
        step: &'static str,
        detail: String,
    },
    #[error("checking out {url} took longer than {seconds}s: stopped")]
    TimedOut { url: String, seconds: u64 },
    #[error("the fetch sandbox could not {what}: {source}")]
    Sandbox {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Removes `user:password@` from a URL for messages.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, path)) if authority.contains('@') => {
                let host = authority.rsplit('@').next().unwrap_or_default();
                format!("{scheme}://<redacted>@{host}/{path}")
            }
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// What to fetch, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Https(tenant::source::HttpsUrl),
    /// Over SSH, with the request's deploy key.
    Ssh(tenant::source::SshUrl),
    /// An absolute path under one of the operator's roots.
    Local(PathBuf),
}

impl Remote {
    /// The URL git is given.
    pub fn git_url(&self) -> String {
        match self {
            Remote::Https(u) => u.as_str().to_owned(),
            // The port is the relay's business (the sandbox's 127.0.0.1:22 leads to it).
            Remote::Ssh(u) => u.without_port(),
            // file:// makes git honour --depth for local repositories.
            Remote::Local(p) => format!("file://{}", p.display()),
        }
    }
}

/// Which revision to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Commit(CommitSha),
    Ref(GitRef),
    Head,
}

/// A source with every tenant field parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub remote: Remote,
    pub want: Want,
    pub subdirectory: Subdirectory,
}

/// Parses `source`'s fields; local paths only under `local_roots`.
pub fn parse_source(source: &GitSource, local_roots: &[PathBuf]) -> Result<Target, SourceError> {
    let refused = |field: &'static str| {
        move |e: tenant::Invalid| SourceError::Refused {
            field,
            reason: e.to_string(),
        }
    };
    let remote = match SourceUrl::parse(&source.url).map_err(refused("url"))? {
        SourceUrl::Https(u) => Remote::Https(u),
        SourceUrl::Ssh(_) if source.ssh_private_key.is_empty() => {
            return Err(SourceError::Refused {
                field: "ssh_private_key",
                reason: "an SSH source is fetched with the project's deploy key, and none was sent"
                    .into(),
            });
        }
        SourceUrl::Ssh(u) => Remote::Ssh(u),
        SourceUrl::Local(path) => Remote::Local(local_allowed(&path, local_roots)?),
    };
    let want = match (source.commit.as_str(), source.reference.as_str()) {
        ("", "") => Want::Head,
        ("", r) => Want::Ref(GitRef::parse(r).map_err(refused("reference"))?),
        (c, _) => Want::Commit(CommitSha::parse(c).map_err(refused("commit"))?),
    };
    let subdirectory =
        Subdirectory::parse(&source.subdirectory).map_err(refused("subdirectory"))?;
    Ok(Target {
        remote,
        want,
        subdirectory,
    })
}

/// `path` if it lies under one of `roots`, both as written and once symlinks are resolved.
pub fn local_allowed(path: &Path, roots: &[PathBuf]) -> Result<PathBuf, SourceError> {
    let refuse = || SourceError::LocalNotAllowed {
        path: path.display().to_string(),
    };
    if !roots.iter().any(|r| path.starts_with(r)) {
        return Err(refuse());
    }
    if let Ok(real) = path.canonicalize() {
        let inside = roots
            .iter()
            .filter_map(|r| r.canonicalize().ok())
            .any(|r| real.starts_with(r));
        if !inside {
            return Err(refuse());
        }
    }
    Ok(path.to_path_buf())
}

/// The `host[:port]` git's credential protocol names a URL's server by.
fn credential_host(url: &tenant::source::HttpsUrl) -> String {
    let host = match url.host() {
        Host::Name(n) => n.clone(),
        Host::Ip(ip) => ip.to_string(),
    };
    if url.port() == 443 {
        host
    } else {
        format!("{host}:{}", url.port())
    }
}

/// Answers git's `get` with the environment's credentials, for the source's host only.
const CREDENTIAL_HELPER: &str = "!f() { test \"$1\" = get || exit 0; h=; \
    while IFS='=' read -r k v; do test \"$k\" = host && h=\"$v\"; done; \
    test -n \"$h\" && test \"$h\" = \"$STACKPAD_GIT_HOST\" || exit 0; \
    echo username=\"$STACKPAD_GIT_USERNAME\"; echo password=\"$STACKPAD_GIT_PASSWORD\"; }; f";

/// git's whole configuration for a checkout; `local` when the operator's local sources (file
/// protocol) are allowed, `ssh` for a repository over SSH.
fn git_config(local: bool, with_credentials: bool, ssh: bool) -> Vec<(String, String)> {
    let mut config: Vec<(String, String)> = vec![
        ("protocol.allow".into(), "never".into()),
        ("protocol.https.allow".into(), "always".into()),
        ("http.followRedirects".into(), "initial".into()),
        ("core.hooksPath".into(), "/dev/null".into()),
        ("credential.helper".into(), String::new()),
        ("init.defaultBranch".into(), "main".into()),
        ("advice.detachedHead".into(), "false".into()),
        ("submodule.recurse".into(), "false".into()),
    ];
    if local {
        config.push(("protocol.file.allow".into(), "always".into()));
        // The operator's repositories (the only ones visible in the sandbox, read-only) are
        // owned by another uid than the sandbox's.
        config.push(("safe.directory".into(), "*".into()));
    }
    if with_credentials {
        config.push(("credential.helper".into(), CREDENTIAL_HELPER.into()));
    }
    if ssh {
        config.push(("protocol.ssh.allow".into(), "always".into()));
        config.push(("core.sshCommand".into(), ssh::SSH_COMMAND.into()));
    }
    config
}

/// One checkout's git runs: each one in the sandbox, with the source's credentials.
struct Git<'a> {
    sandbox: &'a Sandbox,
    source: &'a GitSource,
    config: Vec<(String, String)>,
    host: String,
    url: String,
}

impl Git<'_> {
    async fn run(
        &self,
        step: &'static str,
        args: &[&str],
    ) -> Result<String, (String, SourceError)> {
        let user = if self.source.username.is_empty() {
            "x-access-token"
        } else {
            &self.source.username
        };
        let env: Vec<(&str, &str)> = if self.source.password.is_empty() {
            vec![]
        } else {
            vec![
                ("STACKPAD_GIT_HOST", self.host.as_str()),
                ("STACKPAD_GIT_USERNAME", user),
                ("STACKPAD_GIT_PASSWORD", self.source.password.as_str()),
            ]
        };
        let out = self
            .sandbox
            .git(args, &self.config, &env)
            .await
            .map_err(|e| (String::new(), e))?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let stderr = if self.source.password.is_empty() {
            stderr
        } else {
            stderr.replace(&self.source.password, "<redacted>")
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
        if out.status.code() == Some(125)
            && let Some(what) = stderr.strip_prefix("fetch sandbox: ")
        {
            let err = SourceError::Sandbox {
                what: "start".into(),
                source: std::io::Error::other(what.to_owned()),
            };
            return Err((String::new(), err));
        }
        // A connection the proxy refused explains the failure; git's own words (which could
        // tell an open port from a closed one) are not shown.
        if let Some(detail) = self.sandbox.events().iter().find_map(|e| e.explain()) {
            let err = SourceError::EgressRefused {
                url: self.url.clone(),
                detail,
            };
            return Err((String::new(), err));
        }
        let err = SourceError::Git {
            url: self.url.clone(),
            step,
            detail: last_line(&stderr),
        };
        Err((stderr, err))
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::trim)
        .find(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .or_else(|| text.lines().last())
        .unwrap_or("no output")
        .to_owned()
}

fn classify_fetch(stderr: &str, url: &str, what: String, err: SourceError) -> SourceError {
    if !matches!(err, SourceError::Git { .. }) {
        return err;
    }
    let lower = stderr.to_lowercase();
    let detail = last_line(stderr);
    if lower.contains("permission denied (publickey") {
        return SourceError::Unreachable {
            url: url.to_owned(),
            detail: "authentication failed: the SSH server refused the project's deploy key \
                     (permission denied (publickey)); add its public half to the repository"
                .into(),
        };
    }
    if lower.contains("host key verification failed")
        || lower.contains("host key is known for")
        || lower.contains("remote host identification has changed")
    {
        return SourceError::Unreachable {
            url: url.to_owned(),
            detail: "host key verification failed: the SSH server's key is not among the \
                     project's known hosts nor the build node's ssh_known_hosts, or differs"
                .into(),
        };
    }
    if lower.contains("couldn't find remote ref")
        || lower.contains("not our ref")
        || lower.contains("no such remote ref")
        || lower.contains("unadvertised object")
        || lower.contains("upload-pack: not our ref")
        || lower.contains("remote error: want")
    {
        SourceError::RevisionNotFound {
            url: url.to_owned(),
            what,
            detail,
        }
    } else if lower.contains("could not read from remote")
        || lower.contains("does not appear to be a git repository")
        || lower.contains("not found")
        || lower.contains("authentication failed")
        || lower.contains("could not read username")
    {
        SourceError::Unreachable {
            url: url.to_owned(),
            detail,
        }
    } else {
        err
    }
}

/// `git fetch` of one revision, shallow, with `remote` and `want` after `--end-of-options` so
/// neither can ever be read as an option (whatever reached here).
pub fn fetch_args<'a>(remote: &'a str, want: &'a str) -> Vec<&'a str> {
    vec![
        "fetch",
        "-q",
        "--depth",
        "1",
        "--no-tags",
        "--no-auto-maintenance",
        "--no-recurse-submodules",
        "--end-of-options",
        remote,
        want,
    ]
}

/// The lowest level of a fetch: `git fetch` of `want` from `remote` as they are, in an
/// initialised repository in `sandbox`'s checkout. Unchecked strings are safe here too: they
/// come after `--end-of-options`.
pub async fn fetch_unchecked(
    sandbox: &Sandbox,
    remote: &str,
    want: &str,
) -> Result<std::process::Output, SourceError> {
    let config = git_config(sandbox.allows_local(), false, false);
    sandbox.git(&fetch_args(remote, want), &config, &[]).await
}

/// Checks `source` out into `dest` (created; must not exist or be empty) at the exact commit:
/// a shallow fetch of that one commit (or of `reference`), submodules only when asked, all in
/// the fetch sandbox within `settings.timeout`. `log` receives progress lines (never
/// credentials).
pub async fn checkout(
    settings: &Arc<FetchSettings>,
    source: &GitSource,
    dest: &Path,
    log: &mut (dyn FnMut(String) + Send),
) -> Result<Checkout, SourceError> {
    let target = parse_source(source, &settings.local_roots)?;
    let shown = redact_url(&source.url);
    match tokio::time::timeout(
        settings.timeout,
        run_checkout(settings, source, &target, dest, log),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(SourceError::TimedOut {
            url: shown,
            seconds: settings.timeout.as_secs(),
        }),
    }
}

async fn run_checkout(
    settings: &Arc<FetchSettings>,
    source: &GitSource,
    target: &Target,
    dest: &Path,
    log: &mut (dyn FnMut(String) + Send),
) -> Result<Checkout, SourceError> {
    let shown = redact_url(&source.url);
    let url = target.remote.git_url();
    let ssh = match &target.remote {
        Remote::Ssh(u) => Some(ssh::SshAccess::new(
            u,
            &source.ssh_private_key,
            &source.ssh_known_hosts,
            settings.ssh_known_hosts.as_deref(),
        )?),
        _ => None,
    };
    let (sandbox, mount) = Sandbox::open_with(settings.clone(), dest, ssh)?;
    let host = match &target.remote {
        Remote::Https(u) => credential_host(u),
        Remote::Ssh(_) | Remote::Local(_) => String::new(),
    };
    let git = Git {
        sandbox: &sandbox,
        source,
        config: git_config(
            matches!(target.remote, Remote::Local(_)),
            !source.password.is_empty() && matches!(target.remote, Remote::Https(_)),
            matches!(target.remote, Remote::Ssh(_)),
        ),
        host,
        url: shown.clone(),
    };
    let step_err = |(_, e): (String, SourceError)| e;
    git.run("init", &["init", "-q", "--template="])
        .await
        .map_err(step_err)?;
    // Submodules with relative URLs resolve them against `origin`; otherwise the URL is fetched
    // directly (one git process fewer).
    let remote = if source.submodules {
        git.run(
            "remote add",
            &["remote", "add", "--end-of-options", "origin", &url],
        )
        .await
        .map_err(step_err)?;
        "origin"
    } else {
        url.as_str()
    };
    let (want, what) = match &target.want {
        Want::Head => ("HEAD".to_owned(), "HEAD".to_owned()),
        Want::Ref(r) => (r.as_str().to_owned(), format!("ref {:?}", r.as_str())),
        Want::Commit(c) => (c.as_str().to_owned(), format!("commit {c}")),
    };
    log(format!("fetching {what} from {shown} (shallow, sandboxed)"));
    git.run("fetch", &fetch_args(remote, &want))
        .await
        .map_err(|(stderr, e)| classify_fetch(&stderr, &shown, what.clone(), e))?;
    git.run("checkout", &["checkout", "-q", "--detach", "FETCH_HEAD"])
        .await
        .map_err(step_err)?;
    // FETCH_HEAD's first word is the fetched commit (what was just checked out): a ref is
    // resolved to this sha before anything is built.
    // Read without following a symlink out of the checkout, and bounded.
    let commit = files::read_checkout_file(dest, Path::new(".git/FETCH_HEAD"), 64 * 1024)
        .ok()
        .flatten()
        .and_then(|t| {
            String::from_utf8_lossy(&t)
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .and_then(|c| CommitSha::parse(&c).ok())
        .ok_or_else(|| SourceError::Git {
            url: shown.clone(),
            step: "read FETCH_HEAD",
            detail: "no commit in .git/FETCH_HEAD".into(),
        })?
        .as_str()
        .to_owned();
    log(format!("checked out {commit}"));
    if source.submodules {
        log("updating submodules (shallow)".to_owned());
        git.run(
            "submodule update",
            &[
                "submodule",
                "update",
                "--init",
                "--recursive",
                "--depth",
                "1",
            ],
        )
        .await
        .map_err(step_err)?;
    }
    // The subdirectory is walked without following symlinks: `app -> /` with subdirectory
    // `app/etc` would otherwise make a host folder the build context.
    let app_dir = if target.subdirectory.is_root() {
        dest.to_path_buf()
    } else {
        match files::app_dir_inside(dest, Path::new(target.subdirectory.as_str())) {
            Ok(Some(dir)) => dir,
            Ok(None) => {
                return Err(SourceError::MissingSubdirectory {
                    subdirectory: source.subdirectory.clone(),
                    commit,
                });
            }
            Err(e) => {
                return Err(SourceError::UnsafeSubdirectory {
                    subdirectory: source.subdirectory.clone(),
                    commit,
                    reason: e.to_string(),
                });
            }
        }
    };
    Ok(Checkout {
        repo: dest.to_path_buf(),
        app_dir,
        commit,
        mount: Arc::new(mount),
        sandbox: Arc::new(sandbox),
    })
}
