//! The framework examples (`examples/`: NestJS, fastify-cli, SvelteKit with adapter-node and
//! adapter-static, Astro static and with the Node adapter, Nuxt, React Router; see
//! examples/GENERATED.md) built for real through buildd, with their dependencies from the npm
//! registry, run in containerd and asked for their pages. 10 to 60 s of build each, about three
//! minutes for all of them two at a time on 2 cores: not in the default suite
//! (`cargo test -p stackpad-buildd --features full-tests --test build_frameworks`,
//! `scripts/test --full`).

mod common;

use common::apps::*;
use common::*;
use proto::build::v1 as pb;

/// A built example: its image (pushed by `daemon`, which removes it when dropped) and log.
struct Built {
    image: String,
    logs: Vec<pb::LogLine>,
    _daemon: TestDaemon,
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
        logs: log_lines(&events),
        _daemon: d,
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

/// The generated Dockerfile's line starting with `prefix` (buildd logs the Dockerfile).
fn dockerfile_line<'a>(built: &'a Built, prefix: &str) -> &'a str {
    built
        .logs
        .iter()
        .find(|l| l.step == "dockerfile" && l.line.starts_with(prefix))
        .map(|l| l.line.as_str())
        .unwrap_or_else(|| panic!("no {prefix} line in {:#?}", built.logs))
}

/// The detect step said the app builds on Node `major` because `package` asks for it.
fn built_on_node(built: &Built, major: u64, package: &str) {
    assert!(
        built.logs.iter().any(|l| l.step == "detect"
            && l.line.starts_with(&format!("node {major} ({package}@"))),
        "{:#?}",
        built.logs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastify_from_fastify_cli_generate_builds_and_serves() {
    let built = build("fastify", "fastify", 3000).await;
    // The generator's `fastify start -l info app.js`, run without npm in between.
    assert_eq!(
        dockerfile_line(&built, "CMD "),
        r#"CMD ["node_modules/.bin/fastify", "start", "-l", "info", "app.js"]"#
    );
    let (c, port, body) = serve(&built, 30).await;
    assert_eq!(body, r#"{"root":true}"#);
    let (line, body) = get(port, "/example").await;
    assert!(line.contains("200"), "{line}");
    assert_eq!(body, "this is an example");
    runs_unprivileged_without(&c, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sveltekit_from_sv_create_with_adapter_node_builds_and_serves() {
    let built = build("sveltekit", "sveltekit", 3000).await;
    let (c, _, body) = serve(&built, 30).await;
    assert!(body.contains("<h1>Welcome to SvelteKit</h1>"), "{body}");
    runs_unprivileged_without(
        &c,
        &["/app/node_modules/vite", "/app/node_modules/svelte-check"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn astro_static_site_builds_on_the_node_astro_needs_and_is_served_without_node() {
    let built = build("astro-static", "astro", 8080).await;
    // astro 7 needs Node >= 22.23.4 (its engines in the lock file); the app asks for nothing.
    built_on_node(&built, 24, "astro");
    assert_eq!(dockerfile_line(&built, "CMD "), r#"CMD ["/static-server"]"#);
    let (c, port, body) = serve(&built, 30).await;
    assert!(body.contains("<h1>Hello from Astro</h1>"), "{body}");
    let (line, body) = get(port, "/about").await;
    assert!(line.contains("200"), "{line}");
    assert!(body.contains("About this static site"), "{body}");
    // Not a single-page app: a page that is not there is a 404, not the home page.
    let (line, _) = get(port, "/no/such/page").await;
    assert!(line.contains("404"), "{line}");
    // The site and buildd's static server only, FROM scratch: no Node, no shell.
    assert!(
        built
            .logs
            .iter()
            .any(|l| l.step == "dockerfile" && l.line == "FROM scratch"),
        "{:#?}",
        built.logs
    );
    assert_eq!(dockerfile_line(&built, "USER "), "USER 1000:1000");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn astro_with_the_node_adapter_renders_each_request() {
    let built = build("astro-server", "astro", 4321).await;
    built_on_node(&built, 24, "astro");
    let (c, port, body) = serve(&built, 30).await;
    assert!(
        body.contains("Hello from Astro&#39;s server")
            || body.contains("Hello from Astro's server"),
        "{body}"
    );
    let (line, body) = get(port, "/").await;
    assert!(line.contains("200"), "{line}");
    assert!(
        body.contains("Rendered for / on request (stackpad-test)"),
        "{body}"
    );
    runs_unprivileged_without(&c, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nuxt_builds_and_its_nitro_server_renders_the_page_with_its_api() {
    let built = build("nuxt", "nuxt", 3000).await;
    built_on_node(&built, 24, "nuxt");
    let (c, port, body) = serve(&built, 30).await;
    assert!(body.contains("<h1>Hello from Nuxt</h1>"), "{body}");
    // The page fetched the server route while it rendered.
    assert!(body.contains("answered by the Nitro server"), "{body}");
    let (line, body) = get(port, "/api/hello").await;
    assert!(line.contains("200"), "{line}");
    assert!(body.contains("answered by the Nitro server"), "{body}");
    // Only Nitro's output is in the image, not the app's node_modules.
    runs_unprivileged_without(&c, &["/app/node_modules"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn react_router_framework_mode_builds_and_server_renders_its_loader_data() {
    let built = build("react-router", "react-router", 3000).await;
    assert_eq!(
        dockerfile_line(&built, "CMD "),
        r#"CMD ["node_modules/.bin/react-router-serve", "./build/server/index.js"]"#
    );
    let (c, _, body) = serve(&built, 30).await;
    assert!(
        body.contains("<title>New React Router App</title>"),
        "{body}"
    );
    assert!(body.contains("Hello from React Router"), "{body}");
    runs_unprivileged_without(
        &c,
        &[
            "/app/node_modules/@react-router/dev",
            "/app/node_modules/vite",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sveltekit_with_adapter_static_is_served_prerendered_without_node() {
    let built = build("sveltekit-static", "sveltekit", 8080).await;
    assert_eq!(dockerfile_line(&built, "CMD "), r#"CMD ["/static-server"]"#);
    let (_c, port, body) = serve(&built, 30).await;
    assert!(body.contains("<h1>Welcome to SvelteKit</h1>"), "{body}");
    // Prerendered as about.html, asked for as /about.
    let (line, body) = get(port, "/about").await;
    assert!(line.contains("200"), "{line}");
    assert!(body.contains("About this prerendered page"), "{body}");
    let (line, _) = get(port, "/no/such/page").await;
    assert!(line.contains("404"), "{line}");
}
