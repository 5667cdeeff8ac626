//! A BuildKit session hosted by buildd: dockerd's `POST /session` upgraded to h2c, on which
//! buildd is the gRPC *server* and BuildKit the client. buildd serves the file sync BuildKit
//! pulls local sources with (`moby.filesync.v1.FileSync/DiffCopy`, fsutil's packet protocol),
//! the build's secrets (`moby.buildkit.secrets.v1.Secrets/GetSecret`: what a
//! `RUN --mount=type=secret,id=NAME` reads at /run/secrets/NAME, held in memory only, never a
//! build argument or a layer), the registry's credentials when BuildKit pulls a base image from
//! a registry that asks for them (`moby.filesync.v1.Auth/Credentials`, for the configured host
//! only) and the health check BuildKit probes sessions with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::ignore::Excludes;
use super::upgrade;

/// The session services' generated code, in modules matching their packages.
#[allow(missing_debug_implementations, clippy::all, reason = "generated code")]
pub mod wire {
    pub mod fsutil {
        pub mod types {
            tonic::include_proto!("fsutil.types");
        }
    }
    pub mod moby {
        pub mod buildkit {
            pub mod secrets {
                pub mod v1 {
                    tonic::include_proto!("moby.buildkit.secrets.v1");
                }
            }
        }
        pub mod filesync {
            pub mod v1 {
                tonic::include_proto!("moby.filesync.v1");
            }
        }
    }
    pub mod grpc {
        pub mod health {
            pub mod v1 {
                tonic::include_proto!("grpc.health.v1");
            }
        }
    }
}

use wire::fsutil::types::{Packet, Stat, packet::PacketType};
use wire::grpc::health::v1 as health;
use wire::moby::buildkit::secrets::v1 as secrets;
use wire::moby::filesync::v1 as filesync;

/// Go's `os.ModeDir` and `os.ModeSymlink` bits in fsutil's `Stat.mode`.
const GO_MODE_DIR: u32 = 1 << 31;
const GO_MODE_SYMLINK: u32 = 1 << 27;
const CHUNK: usize = 32 * 1024;

/// An open session; dropping it closes the connection.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Local directories offered to BuildKit by name (`context`, `dockerfile`).
#[derive(Debug, Clone)]
struct FileSync {
    dirs: Arc<HashMap<String, PathBuf>>,
}

/// The build's secrets by id; an unknown id is NotFound (BuildKit then fails a `required`
/// mount and leaves an optional one empty).
#[derive(Clone)]
struct Secrets {
    values: Arc<HashMap<String, Vec<u8>>>,
}

#[tonic::async_trait]
impl secrets::secrets_server::Secrets for Secrets {
    async fn get_secret(
        &self,
        request: Request<secrets::GetSecretRequest>,
    ) -> Result<Response<secrets::GetSecretResponse>, Status> {
        let id = request.into_inner().id;
        match self.values.get(&id) {
            Some(data) => Ok(Response::new(secrets::GetSecretResponse {
                data: data.clone(),
            })),
            None => Err(Status::not_found(format!("secret {id} not found"))),
        }
    }
}

/// The registry credentials BuildKit may ask for: the configured host's, nothing for others.
#[derive(Clone)]
struct Auth {
    registry: Option<crate::config::RegistryAuth>,
}

#[tonic::async_trait]
impl filesync::auth_server::Auth for Auth {
    async fn credentials(
        &self,
        request: Request<filesync::CredentialsRequest>,
    ) -> Result<Response<filesync::CredentialsResponse>, Status> {
        let host = request.into_inner().host;
        Ok(Response::new(match &self.registry {
            Some(r) if r.host == host => filesync::CredentialsResponse {
                username: r.username.clone(),
                secret: r.password.clone(),
            },
            // BuildKit then goes on anonymously.
            _ => filesync::CredentialsResponse::default(),
        }))
    }
}

struct Health;

#[tonic::async_trait]
impl health::health_server::Health for Health {
    async fn check(
        &self,
        _: Request<health::HealthCheckRequest>,
    ) -> Result<Response<health::HealthCheckResponse>, Status> {
        Ok(Response::new(health::HealthCheckResponse {
            status: health::health_check_response::ServingStatus::Serving as i32,
        }))
    }
}

/// One entry of a walk: its stat (path relative, `/`-separated) and where it is on disk.
struct Entry {
    stat: Stat,
    path: PathBuf,
}

fn go_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let perm = meta.permissions().mode() & 0o777;
    if meta.is_dir() {
        perm | GO_MODE_DIR
    } else if meta.file_type().is_symlink() {
        perm | GO_MODE_SYMLINK
    } else {
        perm
    }
}

/// The contents of the regular file at `path`, never through a symlink (BuildKit asks for data
/// of regular files only; symlinks are sent as symlinks, by their stat's `linkname`).
async fn read_no_follow(path: &Path) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .await?;
    if !file.metadata().await?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut data = Vec::new();
    file.read_to_end(&mut data).await?;
    Ok(data)
}

/// Walks `root` like Go's `filepath.Walk` (each directory's names sorted, a directory before its
/// children), skipping `.git`; `only`, when set, keeps just those paths (and their parents).
fn walk(
    root: &Path,
    only: &Option<Vec<String>>,
    excludes: &Excludes,
) -> std::io::Result<Vec<Entry>> {
    fn visit(
        root: &Path,
        rel: &str,
        excludes: &Excludes,
        out: &mut Vec<Entry>,
    ) -> std::io::Result<()> {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let mut names: Vec<String> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        for name in names {
            if rel.is_empty() && name == ".git" {
                continue;
            }
            let path = dir.join(&name);
            let rel_path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if excludes.excludes(&rel_path) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path)?;
            use std::os::unix::fs::MetadataExt;
            let linkname = if meta.file_type().is_symlink() {
                std::fs::read_link(&path)?.to_string_lossy().into_owned()
            } else {
                String::new()
            };
            let stat = Stat {
                path: rel_path.clone(),
                mode: go_mode(&meta),
                uid: 0,
                gid: 0,
                size: if meta.is_file() { meta.len() as i64 } else { 0 },
                mod_time: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                linkname,
                ..Stat::default()
            };
            let is_dir = meta.is_dir();
            out.push(Entry { stat, path });
            if is_dir {
                visit(root, &rel_path, excludes, out)?;
            }
        }
        Ok(())
    }
    let mut all = Vec::new();
    visit(root, "", excludes, &mut all)?;
    if let Some(only) = only {
        all.retain(|e| only.iter().any(|o| wanted(&e.stat.path, o)));
    }
    Ok(all)
}

/// Whether `path` is asked for by the follow path `want`: the path itself, a parent of it, or
/// something inside it.
fn wanted(path: &str, want: &str) -> bool {
    let want = want.trim_end_matches('/');
    path == want || want.starts_with(&format!("{path}/")) || path.starts_with(&format!("{want}/"))
}

/// Follow paths and include patterns as a filter; `None` (send everything) when any of them is
/// a glob or the whole context, since a superset is always correct.
fn filter_from(values: Vec<String>) -> Option<Vec<String>> {
    let globby = values
        .iter()
        .any(|v| v.is_empty() || v == "." || v.contains(['*', '?', '[', '\\', '!']));
    (!values.is_empty() && !globby).then_some(values)
}

type PacketStream = Pin<Box<dyn Stream<Item = Result<Packet, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl filesync::file_sync_server::FileSync for FileSync {
    type DiffCopyStream = PacketStream;

    async fn diff_copy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::DiffCopyStream>, Status> {
        let meta = request.metadata();
        let dir_name = meta
            .get("dir-name")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("context")
            .to_owned();
        let root = self.dirs.get(&dir_name).cloned().ok_or_else(|| {
            Status::not_found(format!("no local directory {dir_name:?} in this session"))
        })?;
        // BuildKit asks for single files (the Dockerfile, .dockerignore) with followpaths or
        // include patterns; plain names are all it uses for those.
        let mut only: Vec<String> = Vec::new();
        for key in ["followpaths", "include-patterns"] {
            for v in meta.get_all(key) {
                if let Ok(v) = v.to_str() {
                    only.push(v.trim_start_matches("./").to_owned());
                }
            }
        }
        let only = filter_from(only);
        let excludes: Vec<String> = meta
            .get_all("exclude-patterns")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let excludes = Excludes::new(&excludes);
        let entries = walk(&root, &only, &excludes)
            .map_err(|e| Status::internal(format!("walking {}: {e}", root.display())))?;
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<Packet, Status>>(64);
        tokio::spawn(async move {
            for e in &entries {
                let p = Packet {
                    r#type: PacketType::PacketStat as i32,
                    stat: Some(e.stat.clone()),
                    id: 0,
                    data: Vec::new(),
                };
                if tx.send(Ok(p)).await.is_err() {
                    return;
                }
            }
            let end = Packet {
                r#type: PacketType::PacketStat as i32,
                ..Packet::default()
            };
            if tx.send(Ok(end)).await.is_err() {
                return;
            }
            while let Ok(Some(p)) = incoming.message().await {
                match PacketType::try_from(p.r#type) {
                    Ok(PacketType::PacketReq) => {
                        let Some(e) = entries.get(p.id as usize) else {
                            return;
                        };
                        let data = match read_no_follow(&e.path).await {
                            Ok(d) => d,
                            Err(err) => {
                                let msg = format!("reading {}: {err}", e.stat.path);
                                let _ = tx
                                    .send(Ok(Packet {
                                        r#type: PacketType::PacketErr as i32,
                                        data: msg.into_bytes(),
                                        ..Packet::default()
                                    }))
                                    .await;
                                return;
                            }
                        };
                        for chunk in data.chunks(CHUNK) {
                            let p = Packet {
                                r#type: PacketType::PacketData as i32,
                                id: p.id,
                                data: chunk.to_vec(),
                                stat: None,
                            };
                            if tx.send(Ok(p)).await.is_err() {
                                return;
                            }
                        }
                        let eof = Packet {
                            r#type: PacketType::PacketData as i32,
                            id: p.id,
                            ..Packet::default()
                        };
                        if tx.send(Ok(eof)).await.is_err() {
                            return;
                        }
                    }
                    Ok(PacketType::PacketFin) => {
                        let _ = tx
                            .send(Ok(Packet {
                                r#type: PacketType::PacketFin as i32,
                                ..Packet::default()
                            }))
                            .await;
                        return;
                    }
                    _ => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Opens a session on dockerd offering `dirs` by name, `secrets` by id and the credentials of
/// `registry` (if any) for its host. `shared_key` lets BuildKit reuse what it already copied from
/// an earlier session with the same key.
pub async fn open(
    docker_socket: &Path,
    shared_key: &str,
    dirs: HashMap<String, PathBuf>,
    secrets: HashMap<String, Vec<u8>>,
    registry: Option<crate::config::RegistryAuth>,
) -> std::io::Result<Session> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let headers = [
        ("X-Docker-Expose-Session-Uuid", id.clone()),
        ("X-Docker-Expose-Session-Name", "stackpad-buildd".to_owned()),
        ("X-Docker-Expose-Session-Sharedkey", shared_key.to_owned()),
        (
            "X-Docker-Expose-Session-Grpc-Method",
            "/moby.filesync.v1.FileSync/DiffCopy".to_owned(),
        ),
        (
            "X-Docker-Expose-Session-Grpc-Method",
            "/moby.buildkit.secrets.v1.Secrets/GetSecret".to_owned(),
        ),
        (
            "X-Docker-Expose-Session-Grpc-Method",
            "/moby.filesync.v1.Auth/Credentials".to_owned(),
        ),
        (
            "X-Docker-Expose-Session-Grpc-Method",
            "/grpc.health.v1.Health/Check".to_owned(),
        ),
    ];
    let stream = upgrade::upgrade(docker_socket, "/session", &headers).await?;
    let sync = FileSync {
        dirs: Arc::new(dirs),
    };
    let secrets = Secrets {
        values: Arc::new(secrets),
    };
    let task = tokio::spawn(async move {
        let incoming = futures::stream::once(async move { Ok::<_, std::io::Error>(stream) });
        let served = tonic::transport::Server::builder()
            .add_service(filesync::file_sync_server::FileSyncServer::new(sync))
            .add_service(secrets::secrets_server::SecretsServer::new(secrets))
            .add_service(filesync::auth_server::AuthServer::new(Auth { registry }))
            .add_service(health::health_server::HealthServer::new(Health))
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "BuildKit session ended with an error");
        }
    });
    Ok(Session { id, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_order_is_go_filepath_walk_order_and_follow_paths_keep_parents_and_children() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["a.txt", "a/b/c.txt", "a/z.txt", "b.txt", ".git/HEAD"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        let paths = |only: Option<Vec<String>>| -> Vec<String> {
            walk(dir.path(), &only, &Excludes::default())
                .unwrap()
                .into_iter()
                .map(|e| e.stat.path)
                .collect()
        };
        // "a" (and everything in it) sorts before "a.txt", as in Go; .git is never sent.
        assert_eq!(
            paths(None),
            ["a", "a/b", "a/b/c.txt", "a/z.txt", "a.txt", "b.txt"]
        );
        assert_eq!(
            paths(filter_from(vec!["a/b/".into()])),
            ["a", "a/b", "a/b/c.txt"]
        );
        assert_eq!(paths(filter_from(vec!["b.txt".into()])), ["b.txt"]);
        assert_eq!(filter_from(vec!["*.txt".into()]), None);
        assert_eq!(filter_from(vec![".".into(), "x".into()]), None);
        let dir_stat = &walk(dir.path(), &None, &Excludes::default()).unwrap()[0].stat;
        assert_eq!(dir_stat.mode & GO_MODE_DIR, GO_MODE_DIR);
    }

    #[tokio::test]
    async fn symlinks_are_sent_as_symlinks_and_never_followed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "mine").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("s")).unwrap();
        let entries = walk(dir.path(), &None, &Excludes::default()).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.stat.path.as_str()).collect();
        assert_eq!(
            paths,
            ["d", "f", "s"],
            "nothing under the linked folder is walked"
        );
        for e in entries.iter().filter(|e| e.stat.path != "f") {
            assert_eq!(
                e.stat.mode & GO_MODE_SYMLINK,
                GO_MODE_SYMLINK,
                "{}",
                e.stat.path
            );
            assert!(
                e.stat
                    .linkname
                    .starts_with(&*outside.path().to_string_lossy())
            );
            assert!(read_no_follow(&e.path).await.is_err(), "{}", e.stat.path);
        }
        assert_eq!(
            read_no_follow(&dir.path().join("f")).await.unwrap(),
            b"mine"
        );
    }
}
