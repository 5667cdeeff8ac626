//! The framework examples (`examples/`: NestJS, fastify-cli, SvelteKit, Astro static and server,
//! Nuxt, React Router; see examples/GENERATED.md) built for real through buildd, with their
//! dependencies from the npm registry, run in containerd and asked for their pages. One to
//! three minutes each on 2 cores: not in the default suite
//! (`cargo test -p stackpad-buildd --features full-tests --test build_frameworks`,
//! `scripts/test --full`).

mod common;

use common::apps::*;
use common::*;
use proto::build::v1 as pb;

/// What a built example is: its image, its status, and the log.
struct Built {
    image: String,
    status: pb::BuildStatus,
    logs: Vec<pb::LogLine>,
}

/// Builds `examples/<name>` and checks the framework and port detected.
async fn build(name: &str, framework: &str, port: u32) -> Built {
    let mut d = daemon_configured(4, "session", allow_npm_registry).await;
    let (repo, sha) = example_repo(name);
    let req = d.start_request(&unique(name), repo.path(), &sha);
    let image_repo = req.image.clone();
    let started = std::time::Instant::now();
    let events = run_to_end(&mut d, req).await;
    let status = succeeded(&events);
    eprintln!(
        "{name} clean build: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        (status.framework.as_str(), status.container_port),
        (framework, port)
    );
    eprintln!(
        "{name} image: {} bytes compressed",
        pushed_size(&image_repo, &status.image_digest)
    );
    Built {
        image: format!("{image_repo}@{}", status.image_digest),
        status,
        logs: log_lines(&events),
    }
}

/// GET `path` from the app on `port` (it answers already): (status line, body).
async fn get(port: u16, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: test\r\nUser-Agent: stackpad-test\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Runs the image and returns the container and the body of `/` (a 200).
async fn serve(built: &Built, secs: u64) -> (Container, u16, String) {
    let port = free_port();
    let c = Container::run(&built.image, port);
    let (line, body) = http_get(port, secs).await;
    assert!(line.contains("200"), "{line}\n{body}");
    (c, port, body)
}

/// The app runs as the unprivileged user, and `paths` (dev dependencies, build caches) are
/// not in the image.
fn runs_unprivileged_without(c: &Container, paths: &[&str]) {
    let status = c.exec(&["cat", "/proc/1/status"]).unwrap();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default()
        .to_owned();
    assert!(uid.split_whitespace().nth(1) == Some("1000"), "{uid}");
    for path in paths {
        assert!(
            c.exec(&["test", "-e", path]).is_err(),
            "{path} is in the image"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nestjs_from_nest_new_builds_and_serves() {
    let built = build("nestjs", "nestjs", 3000).await;
    let (c, _, body) = serve(&built, 30).await;
    assert_eq!(body, "Hello World!");
    runs_unprivileged_without(
        &c,
        &[
            "/app/node_modules/@nestjs/cli",
            "/app/node_modules/typescript",
        ],
    );
}
