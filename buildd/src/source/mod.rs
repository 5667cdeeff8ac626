//! Source checkout: the repository at the exact commit, shallow, through the git CLI.
//!
//! Credentials for private repositories reach git through a credential helper that reads them
//! from the git process's environment: they are never on a command line, in a URL, or logged.

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

/// Where to fetch from and what to check out.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GitSource {
    /// `https://...`, `http://...`, `file:///...` or an absolute local path.
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
            .finish()
    }
}

/// A checked-out source tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The repository's work tree.
    pub repo: PathBuf,
    /// The app folder (`repo` joined with the subdirectory).
    pub app_dir: PathBuf,
    /// The full sha checked out.
    pub commit: String,
}

/// Why the source could not be checked out.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "unsupported repository url {url:?}: use https://, http://, file:// or an absolute path"
    )]
    UnsupportedUrl { url: String },
    #[error("invalid commit {commit:?}: expected a full 40-character hex sha")]
    InvalidCommit { commit: String },
    #[error(
        "invalid subdirectory {subdirectory:?}: must be relative and stay inside the repository"
    )]
    InvalidSubdirectory { subdirectory: String },
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
    #[error("git {step} failed for {url}: {detail}")]
    Git {
        url: String,
        step: &'static str,
        detail: String,
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

fn fetch_url(url: &str) -> Result<String, SourceError> {
    let ok =
        url.starts_with("https://") || url.starts_with("http://") || url.starts_with("file:///");
    if ok {
        Ok(url.to_owned())
    } else if url.starts_with('/') {
        // file:// makes git honour --depth for local repositories.
        Ok(format!("file://{url}"))
    } else {
        Err(SourceError::UnsupportedUrl {
            url: redact_url(url),
        })
    }
}

fn valid_subdirectory(sub: &str) -> bool {
    let path = Path::new(sub);
    !path.is_absolute()
        && path.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

/// Runs git steps in one work tree with the source's credentials.
struct Git<'a> {
    dir: &'a Path,
    source: &'a GitSource,
    url: String,
}

impl Git<'_> {
    async fn run(
        &self,
        step: &'static str,
        args: &[&str],
    ) -> Result<String, (String, SourceError)> {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(self.dir);
        // Only our helper answers; no prompt ever blocks a build.
        cmd.args([
            "-c",
            "credential.helper=",
            "-c",
            "protocol.file.allow=always",
        ]);
        if !self.source.password.is_empty() {
            cmd.args([
                "-c",
                "credential.helper=!f() { test \"$1\" = get || exit 0; \
                 echo username=\"$STACKPAD_GIT_USERNAME\"; echo password=\"$STACKPAD_GIT_PASSWORD\"; }; f",
            ]);
            let user = if self.source.username.is_empty() {
                "x-access-token"
            } else {
                &self.source.username
            };
            cmd.env("STACKPAD_GIT_USERNAME", user)
                .env("STACKPAD_GIT_PASSWORD", &self.source.password);
        }
        cmd.args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = cmd
            .output()
            .await
            .map_err(|e| (String::new(), SourceError::Spawn(e)))?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let stderr = if self.source.password.is_empty() {
            stderr
        } else {
            stderr.replace(&self.source.password, "<redacted>")
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned());
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
    let lower = stderr.to_lowercase();
    let detail = last_line(stderr);
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
        || lower.contains("could not resolve host")
        || lower.contains("failed to connect")
        || lower.contains("connection refused")
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

/// Checks `source` out into `dest` (created, must not exist or be empty) at the exact commit:
/// a shallow fetch of that one commit (or of `reference`), submodules only when asked.
/// `log` receives git's progress lines (never credentials).
pub async fn checkout(
    source: &GitSource,
    dest: &Path,
    log: &mut (dyn FnMut(String) + Send),
) -> Result<Checkout, SourceError> {
    let url = fetch_url(&source.url)?;
    let shown = redact_url(&source.url);
    let full_sha =
        source.commit.len() == 40 && source.commit.chars().all(|c| c.is_ascii_hexdigit());
    if !source.commit.is_empty() && !full_sha {
        return Err(SourceError::InvalidCommit {
            commit: source.commit.clone(),
        });
    }
    if !valid_subdirectory(&source.subdirectory) {
        return Err(SourceError::InvalidSubdirectory {
            subdirectory: source.subdirectory.clone(),
        });
    }
    std::fs::create_dir_all(dest).map_err(SourceError::Spawn)?;
    let git = Git {
        dir: dest,
        source,
        url: shown.clone(),
    };
    let step_err = |(_, e): (String, SourceError)| e;
    git.run("init", &["init", "-q", "--template="])
        .await
        .map_err(step_err)?;
    // Submodules with relative URLs resolve them against `origin`; otherwise the URL is fetched
    // directly (one git process fewer).
    let remote = if source.submodules {
        git.run("remote add", &["remote", "add", "origin", &url])
            .await
            .map_err(step_err)?;
        "origin"
    } else {
        url.as_str()
    };
    let (want, what) = match (source.commit.as_str(), source.reference.as_str()) {
        ("", "") => ("HEAD".to_owned(), "HEAD".to_owned()),
        ("", reference) => (reference.to_owned(), format!("ref {reference:?}")),
        (commit, _) => (commit.to_owned(), format!("commit {commit}")),
    };
    log(format!("fetching {what} from {shown} (shallow)"));
    git.run(
        "fetch",
        &[
            "fetch",
            "-q",
            "--depth",
            "1",
            "--no-tags",
            "--no-auto-maintenance",
            remote,
            &want,
        ],
    )
    .await
    .map_err(|(stderr, e)| classify_fetch(&stderr, &shown, what.clone(), e))?;
    git.run("checkout", &["checkout", "-q", "--detach", "FETCH_HEAD"])
        .await
        .map_err(step_err)?;
    // FETCH_HEAD's first word is the fetched commit (what was just checked out).
    let commit = std::fs::read_to_string(dest.join(".git/FETCH_HEAD"))
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_owned))
        .filter(|c| c.len() >= 40 && c.chars().all(|ch| ch.is_ascii_hexdigit()))
        .ok_or_else(|| SourceError::Git {
            url: shown.clone(),
            step: "read FETCH_HEAD",
            detail: "no commit in .git/FETCH_HEAD".into(),
        })?;
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
    let app_dir = if source.subdirectory.is_empty() {
        dest.to_path_buf()
    } else {
        dest.join(&source.subdirectory)
    };
    if !app_dir.is_dir() {
        return Err(SourceError::MissingSubdirectory {
            subdirectory: source.subdirectory.clone(),
            commit,
        });
    }
    Ok(Checkout {
        repo: dest.to_path_buf(),
        app_dir,
        commit,
    })
}
