//! Build contexts: the app folder at the checked-out commit as a tar, served to BuildKit over a
//! loopback HTTP listener this process owns.
//!
//! Why HTTP and not BuildKit's session (filesync): the dockerfile frontend accepts a remote
//! context (`context` = URL of a tarball) and reads the Dockerfile from it. buildd and BuildKit run
//! on the same build node, so a loopback URL reaches it without a client-hosted gRPC server on a
//! hijacked `/session` connection. Each context gets an unguessable path and is dropped when the
//! build ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use tokio::process::Command;
use tokio::sync::watch;

use crate::source::Sandbox;

/// Why a context could not be made or served.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot archive {dir} at {commit}: {detail}")]
    Archive {
        dir: String,
        commit: String,
        detail: String,
    },
    #[error("cannot write the generated Dockerfile for {dir}: {source}")]
    WriteDockerfile {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for build contexts on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What goes into a build context.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveSpec<'a> {
    /// The checkout's work tree.
    pub repo: &'a Path,
    /// The app folder inside it; empty = the root.
    pub subdirectory: &'a str,
    /// A generated file (name, content) to add at the top of the context.
    pub generated: Option<(&'a str, &'a str)>,
    /// Include checked-out submodules (`git archive` leaves them out).
    pub submodules: bool,
    /// The checkout's fetch sandbox: `git archive` runs in it, never as root on the host (git
    /// reads the checkout's `.git/config`, which sandboxed code could have written).
    pub sandbox: &'a Sandbox,
}

/// Tars the app folder as of the checked-out commit (tracked files only, no `.git`), adding the
/// generated file. Without submodules this is `git archive`; with them, the work tree (fresh
/// from the checkout, so nothing untracked) through GNU tar with fixed owners and times.
pub async fn archive(spec: ArchiveSpec<'_>, scratch: &Path) -> Result<Bytes, ContextError> {
    let repo = spec.repo;
    let fail = |detail: String| ContextError::Archive {
        dir: repo.display().to_string(),
        commit: "HEAD".into(),
        detail,
    };
    if !spec.submodules {
        // In the sandbox, as its uid, with the checkout at its `/work`; the generated file is
        // given on the command line, and a committed file of the same name is left out.
        let mut args: Vec<String> = vec!["archive".into(), "--format=tar".into()];
        if let Some((name, content)) = spec.generated {
            args.push(format!("--add-virtual-file={name}:{content}"));
        }
        args.push(if spec.subdirectory.is_empty() {
            "HEAD".into()
        } else {
            format!("HEAD:{}", spec.subdirectory)
        });
        if let Some((name, _)) = spec.generated {
            args.push("--".into());
            args.push(format!(":(exclude,literal){name}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let config = [
            ("core.hooksPath".to_owned(), "/dev/null".to_owned()),
            ("core.fsmonitor".to_owned(), "false".to_owned()),
        ];
        let out = spec
            .sandbox
            .git(&args, &config, &[])
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
        }
        return Ok(Bytes::from(out.stdout));
    }
    let generated_path = match spec.generated {
        Some((name, content)) => {
            let path = scratch.join(name);
            std::fs::write(&path, content).map_err(|source| ContextError::WriteDockerfile {
                dir: repo.display().to_string(),
                source,
            })?;
            Some(path)
        }
        None => None,
    };
    // With submodules: the work tree (tar archives symlinks as symlinks and runs nothing of the
    // checkout's), the generated file from buildd's own scratch folder.
    let mut cmd = Command::new("tar");
    cmd.args([
        "--sort=name",
        "--mtime=@0",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--exclude=.git",
        "-cf",
        "-",
        "-C",
    ])
    .arg(repo.join(spec.subdirectory))
    .arg(".");
    if let Some(path) = &generated_path {
        cmd.arg("-C")
            .arg(scratch)
            .arg(path.file_name().unwrap_or_default());
    }
    let out = cmd
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(Bytes::from(out.stdout))
}

/// What a URL serves: bytes held here, or a file read when asked for.
#[derive(Debug, Clone)]
enum Served {
    Bytes(Bytes),
    File(PathBuf),
}

/// A served URL: what it serves, how many guards serve it, and for a stable URL the entity tag
/// of bytes held in memory (a file's is made from its metadata when asked for). A file that is
/// still being made has `waiting`: one [`FileReady`]'s receiver per build making it; a request
/// waits until one of them says the file is there (empty: it is).
#[derive(Debug)]
struct Entry {
    served: Served,
    count: usize,
    etag: Option<String>,
    waiting: Vec<watch::Receiver<bool>>,
}

/// Says that a file served with [`ContextServer::serve_file`] is there. Requests for it wait
/// until [`FileReady::ready`]; dropped without it (the fetch making the file failed), they are
/// answered 503, which fails BuildKit's step, and the build reports the fetch's own error.
#[derive(Debug)]
pub struct FileReady(watch::Sender<bool>);

impl FileReady {
    pub fn ready(self) {
        let _ = self.0.send(true);
    }
}

/// Token -> what it serves.
type Contexts = Arc<Mutex<HashMap<String, Entry>>>;

/// The loopback HTTP listener BuildKit fetches contexts from.
#[derive(Debug, Clone)]
pub struct ContextServer {
    addr: SocketAddr,
    contexts: Contexts,
    /// Makes stable tokens unguessable (random per process).
    secret: String,
}

/// A context being served; dropping it stops serving it (when no other guard serves it).
#[derive(Debug)]
pub struct ServedContext {
    pub url: String,
    token: String,
    contexts: Contexts,
}

impl Drop for ServedContext {
    fn drop(&mut self) {
        if let Ok(mut map) = self.contexts.lock()
            && let Some(entry) = map.get_mut(&self.token)
        {
            entry.count -= 1;
            if entry.count == 0 {
                map.remove(&self.token);
            }
        }
    }
}

/// A file's entity tag: its size, modification time and inode (files served are written once,
/// then renamed into place, never rewritten).
fn file_etag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt as _;
    format!(
        "\"f{:x}-{:x}.{:x}-{:x}\"",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino()
    )
}

/// Whether an `If-None-Match` header names `etag` (or `*`).
fn matches(headers: &header::HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// Answers a URL. Stable URLs carry an entity tag, and a request naming it is answered 304
/// without a body: BuildKit asks so (HEAD with `If-None-Match`) before fetching a URL it
/// fetched before, so an unchanged dependency tarball is not sent, hashed and stored again by
/// every build.
async fn serve_one(
    State(contexts): State<Contexts>,
    UrlPath(token): UrlPath<String>,
    headers: header::HeaderMap,
) -> axum::response::Response {
    let token = token.trim_end_matches(".tar").to_owned();
    let waiting = contexts
        .lock()
        .ok()
        .and_then(|m| m.get(&token).map(|e| e.waiting.clone()))
        .unwrap_or_default();
    if !waiting.is_empty() {
        if !wait_ready(waiting).await {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the build that makes this file failed",
            )
                .into_response();
        }
        if let Ok(mut map) = contexts.lock()
            && let Some(entry) = map.get_mut(&token)
        {
            entry.waiting.clear();
        }
    }
    let served = contexts
        .lock()
        .ok()
        .and_then(|m| m.get(&token).map(|e| (e.served.clone(), e.etag.clone())));
    let (served, etag) = match served {
        Some((Served::File(path), _)) => match tokio::fs::metadata(&path).await {
            Ok(meta) => {
                let etag = file_etag(&meta);
                (Served::File(path), Some(etag))
            }
            Err(_) => return StatusCode::NOT_FOUND.into_response(),
        },
        Some(other) => other,
        None => return StatusCode::NOT_FOUND.into_response(),
    };
    if let Some(etag) = etag.as_deref().filter(|e| matches(&headers, e)) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag.to_owned())]).into_response();
    }
    let body = match served {
        Served::Bytes(body) => body,
        Served::File(path) => match tokio::fs::read(&path).await {
            Ok(data) => Bytes::from(data),
            Err(_) => return StatusCode::NOT_FOUND.into_response(),
        },
    };
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response();
    if let Some(value) = etag.and_then(|e| header::HeaderValue::from_str(&e).ok()) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// Waits until one of the builds making a file says it is there: true; false when all of them
/// ended without.
async fn wait_ready(waiting: Vec<watch::Receiver<bool>>) -> bool {
    let waits = waiting.into_iter().map(|mut rx| {
        Box::pin(async move {
            match rx.wait_for(|ready| *ready).await {
                Ok(_) => Ok(()),
                Err(_) => Err(()),
            }
        })
    });
    futures::future::select_ok(waits).await.is_ok()
}

async fn serve_named(
    state: State<Contexts>,
    UrlPath((token, _name)): UrlPath<(String, String)>,
    headers: header::HeaderMap,
) -> axum::response::Response {
    serve_one(state, UrlPath(token), headers).await
}

impl ContextServer {
    /// Binds `addr` (a loopback address; port 0 picks one) and serves in the background.
    pub async fn start(addr: SocketAddr) -> Result<Self, ContextError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ContextError::Listen { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ContextError::Listen { addr, source })?;
        let contexts: Contexts = Arc::default();
        let app = axum::Router::new()
            .route("/contexts/{token}", axum::routing::get(serve_one))
            .route("/contexts/{token}/{name}", axum::routing::get(serve_named))
            .with_state(contexts.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "context server stopped");
            }
        });
        Ok(Self {
            addr: local,
            contexts,
            secret: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `tar` under a fresh unguessable URL until the returned guard is dropped.
    pub fn serve(&self, tar: Bytes) -> ServedContext {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let url = format!("http://{}/contexts/{token}.tar", self.addr);
        self.insert(token, url, Served::Bytes(tar), None, None)
    }

    /// Serves the file at `path` (read when asked for) as `.../<token>/<name>`, where the token
    /// is unguessable and the same for the same `key` while this process runs: a Dockerfile
    /// `ADD` of the URL is the same instruction from build to build, so BuildKit's cache keeps
    /// what follows it. Several guards may serve one key; it is served until the last goes.
    /// The URL is handed out before the file is made (a build's solve starts while its
    /// dependencies are fetched): requests wait for the returned [`FileReady`], unless a build
    /// serving the same key said so already (the file is written once, never rewritten).
    pub fn serve_file(&self, key: &str, path: PathBuf, name: &str) -> (ServedContext, FileReady) {
        let (tx, rx) = watch::channel(false);
        (
            self.serve_stable(key, Served::File(path), name, Some(rx)),
            FileReady(tx),
        )
    }

    /// Like [`ContextServer::serve_file`], for bytes held in memory.
    pub fn serve_bytes(&self, key: &str, data: Bytes, name: &str) -> ServedContext {
        self.serve_stable(key, Served::Bytes(data), name, None)
    }

    fn serve_stable(
        &self,
        key: &str,
        served: Served,
        name: &str,
        waiting: Option<watch::Receiver<bool>>,
    ) -> ServedContext {
        use sha2::Digest as _;
        let mut digest = sha2::Sha256::new();
        digest.update(self.secret.as_bytes());
        digest.update([0]);
        digest.update(key.as_bytes());
        let token = hex::encode(&digest.finalize()[..16]);
        let url = format!("http://{}/contexts/{token}/{name}", self.addr);
        // A file's tag is made from its metadata when asked for; bytes' from their digest.
        let etag = match &served {
            Served::Bytes(data) => Some(format!(
                "\"b{}\"",
                hex::encode(&sha2::Sha256::digest(data)[..16])
            )),
            Served::File(_) => None,
        };
        self.insert(token, url, served, etag, waiting)
    }

    fn insert(
        &self,
        token: String,
        url: String,
        served: Served,
        etag: Option<String>,
        waiting: Option<watch::Receiver<bool>>,
    ) -> ServedContext {
        if let Ok(mut map) = self.contexts.lock() {
            map.entry(token.clone())
                .and_modify(|e| {
                    e.served = served.clone();
                    e.etag = etag.clone();
                    e.count += 1;
                    // Served and ready already: nothing to wait for. Else wait for any maker.
                    if !e.waiting.is_empty() {
                        e.waiting
                            .retain(|rx| *rx.borrow() || rx.has_changed().is_ok());
                        e.waiting.extend(waiting.clone());
                    }
                })
                .or_insert(Entry {
                    served,
                    count: 1,
                    etag,
                    waiting: waiting.into_iter().collect(),
                });
        }
        ServedContext {
            url,
            token,
            contexts: self.contexts.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
