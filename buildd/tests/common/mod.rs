//! Helpers for buildd's tests against real git, dockerd's BuildKit and the registry.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(clippy::unwrap_used, reason = "test helpers")]

use std::path::{Path, PathBuf};

pub mod apps;
pub mod fetch;

pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

pub fn registry() -> String {
    std::env::var("STACKPAD_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

pub fn docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .unwrap_or_else(|_| "unix:///run/docker.sock".into())
        .trim_start_matches("unix://")
        .into()
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A git repository holding a copy of a fixture, committed; returns (dir, sha).
pub fn fixture_repo(name: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(name), dir.path());
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "fixture"]);
    let sha = git(dir.path(), &["rev-parse", "HEAD"]);
    (dir, sha)
}

/// Writes `content` to `file` in the repository and commits; returns the new sha.
pub fn commit_change(repo: &Path, file: &str, content: &str) -> String {
    std::fs::write(repo.join(file), content).unwrap();
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "change"]);
    git(repo, &["rev-parse", "HEAD"])
}

use buildd::config::Config;
use buildd::daemon::Daemon;
use proto::build::v1 as pb;
use proto::build::v1::builder_client::BuilderClient;
use stackpad_tests::registry::PushedImages;
use tonic::transport::Channel;

/// A daemon on loopback ports of its own, with the local base images, and its work folder;
/// the repositories its requests push to are emptied when it goes (also when the test fails).
pub struct TestDaemon {
    pub daemon: Daemon,
    pub client: BuilderClient<Channel>,
    pushed: PushedImages,
    _work: tempfile::TempDir,
}

pub async fn daemon(max_concurrent_builds: usize) -> TestDaemon {
    daemon_with(max_concurrent_builds, "session").await
}

/// A daemon whose contexts reach BuildKit by `transport` (`session` or `http`).
pub async fn daemon_with(max_concurrent_builds: usize, transport: &str) -> TestDaemon {
    daemon_configured(max_concurrent_builds, transport, |_| {}).await
}

/// A daemon as [`daemon_with`] makes it, with `adjust` applied to its configuration.
pub async fn daemon_configured(
    max_concurrent_builds: usize,
    transport: &str,
    adjust: impl FnOnce(&mut Config),
) -> TestDaemon {
    let work = tempfile::tempdir().unwrap();
    let socket = docker_socket();
    if !socket.exists() {
        panic!(
            "dockerd (BuildKit) is not running: no socket at {}; start the platform services with `scripts/services up`",
            socket.display()
        );
    }
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        work_dir: work.path().to_path_buf(),
        max_concurrent_builds,
        context_transport: transport.to_owned(),
        ..Config::default()
    };
    // The tests' repositories live in temporary folders: the operator setting lets them in.
    config.local_sources = vec![std::env::temp_dir()];
    config.fetch_sandbox.helper = fetch::helper();
    config.buildkit.socket = socket.clone();
    config.buildkit.docker_socket = socket;
    config.base_images.node = format!("{}/stackpad/node:20", registry());
    config.base_images.static_server = format!("{}/stackpad/busybox:1", registry());
    // The other majors scripts/base-images publishes (stackpad/node:22, :24).
    config.base_images.node_majors = vec![22, 24];
    adjust(&mut config);
    let daemon = Daemon::start(config).await.expect("daemon starts");
    let client = BuilderClient::connect(format!("http://{}", daemon.grpc_addr))
        .await
        .expect("gRPC connect");
    TestDaemon {
        daemon,
        client,
        pushed: PushedImages::new(),
        _work: work,
    }
}

impl TestDaemon {
    /// A StartBuild request for the repository at `repo` and commit `sha`, pushing to a unique
    /// repository under `tests/` that this daemon empties when it goes.
    pub fn start_request(&self, id: &str, repo: &Path, sha: &str) -> pb::StartBuildRequest {
        let image = format!("{}/tests/{}", registry(), unique("buildd"));
        self.pushed.track(&image);
        pb::StartBuildRequest {
            build_id: id.to_owned(),
            source: Some(pb::GitSource {
                url: repo.display().to_string(),
                commit: sha.to_owned(),
                ..Default::default()
            }),
            image,
            build_args: [(
                "BASE".to_owned(),
                format!("{}/stackpad/busybox:1", registry()),
            )]
            .into(),
            ..Default::default()
        }
    }
}

/// Every event of a build until it ends.
pub async fn watch_all(
    client: &mut BuilderClient<Channel>,
    id: &str,
) -> Vec<pb::build_event::Event> {
    let mut stream = client
        .watch_build(pb::WatchBuildRequest {
            build_id: id.to_owned(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    while let Some(ev) = stream.message().await.expect("watch stream") {
        events.extend(ev.event);
    }
    events
}

/// Starts `req` and returns every event of the build until it ended.
pub async fn run_to_end(
    d: &mut TestDaemon,
    req: pb::StartBuildRequest,
) -> Vec<pb::build_event::Event> {
    let id = req.build_id.clone();
    d.client.start_build(req).await.expect("start");
    watch_all(&mut d.client, &id).await
}

/// The final status of a build that must have succeeded (the log is printed if not).
pub fn succeeded(events: &[pb::build_event::Event]) -> pb::BuildStatus {
    let status = final_status(events);
    assert_eq!(
        status.state(),
        pb::BuildState::Succeeded,
        "{}\n{status:?}\n{:#?}",
        status.failure_reason,
        log_lines(events)
    );
    status
}

pub fn final_status(events: &[pb::build_event::Event]) -> pb::BuildStatus {
    match events.last() {
        Some(pb::build_event::Event::Status(s)) => s.clone(),
        other => panic!("the last event is not a status: {other:?}"),
    }
}

pub fn log_lines(events: &[pb::build_event::Event]) -> Vec<pb::LogLine> {
    events
        .iter()
        .filter_map(|e| match e {
            pb::build_event::Event::Log(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

pub fn steps(events: &[pb::build_event::Event]) -> Vec<pb::StepProgress> {
    events
        .iter()
        .filter_map(|e| match e {
            pb::build_event::Event::Step(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// Commits `content` to `file` of `repo` and builds that commit into `image` again (a rebuild
/// of the same app, as a deployment of a new commit); the build's events.
pub async fn rebuild(
    d: &mut TestDaemon,
    repo: &Path,
    image: &str,
    file: &str,
    content: &str,
) -> Vec<pb::build_event::Event> {
    let sha = commit_change(repo, file, content);
    let mut req = d.start_request(&unique("rebuild"), repo, &sha);
    req.image = image.to_owned();
    run_to_end(d, req).await
}

/// Whether each finished step whose name contains `needle` came from BuildKit's cache.
pub fn cached_steps(events: &[pb::build_event::Event], needle: &str) -> Vec<bool> {
    steps(events)
        .into_iter()
        .filter(|s| s.name.contains(needle) && s.completed_at_unix_ms > 0)
        .map(|s| s.cached)
        .collect()
}

/// A git repository with the given files, committed; returns (dir, sha).
pub fn repo_with(files: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "test"]);
    let sha = git(dir.path(), &["rev-parse", "HEAD"]);
    (dir, sha)
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A container run from a pushed image in containerd, in a namespace of its own; removed (with
/// the namespace) on drop.
pub struct Container {
    namespace: String,
    id: String,
    image: String,
}

fn ctr(namespace: &str, args: &[&str]) -> Result<String, String> {
    let address = std::env::var("CONTAINERD_ADDRESS")
        .unwrap_or_else(|_| "/run/containerd/containerd.sock".into());
    let out = std::process::Command::new("ctr")
        .args(["--address", &address, "-n", namespace])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ctr: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Container {
    /// Pulls `image` (plain HTTP from the loopback registry) and runs it with the host network and
    /// `PORT=port`.
    pub fn run(image: &str, port: u16) -> Container {
        let c = Container {
            namespace: unique("buildd-test"),
            id: unique("app"),
            image: image.to_owned(),
        };
        // A read racing a push to the same repository can get a 500 "invalid checksum digest
        // format" from the registry (distribution 2.8 writes its link files in place; seen once
        // in a full run): retry a few times before calling it a failure.
        let mut attempt = 1;
        while let Err(e) = ctr(&c.namespace, &["images", "pull", "--plain-http", image]) {
            if attempt == 5 {
                panic!("containerd pull failed (is containerd up? `scripts/services up`): {e}");
            }
            attempt += 1;
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let env = format!("PORT={port}");
        ctr(
            &c.namespace,
            &["run", "-d", "--net-host", "--env", &env, image, &c.id],
        )
        .unwrap();
        c
    }
}

impl Container {
    /// Runs `args` inside the running container (as root, beside the app); its stdout.
    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let exec_id = unique("exec");
        let mut all = vec!["tasks", "exec", "--exec-id", &exec_id, &self.id];
        all.extend_from_slice(args);
        ctr(&self.namespace, &all)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let ns = &self.namespace;
        let _ = ctr(ns, &["tasks", "kill", "-s", "SIGKILL", &self.id]);
        for _ in 0..50 {
            if ctr(ns, &["tasks", "delete", &self.id]).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = ctr(ns, &["containers", "delete", &self.id]);
        // `--sync` waits for containerd's garbage collection, which frees the snapshots: a
        // namespace that still holds any cannot be removed.
        let _ = ctr(ns, &["images", "rm", "--sync", &self.image]);
        for _ in 0..30 {
            if ctr("default", &["namespaces", "rm", ns]).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// GET http://127.0.0.1:port/ until it answers (up to `secs`); returns (status line, body).
pub async fn http_get(port: u16, secs: u64) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n").await?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
        };
        match attempt.await {
            Ok(text) if !text.is_empty() => {
                let status = text.lines().next().unwrap_or_default().to_owned();
                let body = text
                    .split_once("\r\n\r\n")
                    .map(|(_, b)| b.to_owned())
                    .unwrap_or_default();
                return (status, body);
            }
            _ if tokio::time::Instant::now() > deadline => {
                panic!("nothing answered HTTP on 127.0.0.1:{port} within {secs}s")
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}
