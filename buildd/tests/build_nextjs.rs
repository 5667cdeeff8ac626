//! The generator-made Next.js app (`examples/nextjs`) built for real, with its dependencies from
//! the npm registry, run in containerd and asked for its page. About 90 s on 2 cores: not in the
//! default suite (`cargo test -p stackpad-buildd --features full-tests`, `scripts/test --full`).

mod common;

use common::apps::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nextjs_example_builds_and_serves_its_page() {
    let mut d = daemon_configured(4, "session", allow_npm_registry).await;
    let (repo, sha) = example_repo("nextjs");
    let req = d.start_request(&unique("nextjs"), repo.path(), &sha);
    let image_repo = req.image.clone();
    let started = std::time::Instant::now();
    let events = run_to_end(&mut d, req).await;
    let status = succeeded(&events);
    eprintln!(
        "nextjs clean build: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        (status.framework.as_str(), status.container_port),
        ("nextjs", 3000)
    );
    eprintln!(
        "nextjs image: {} bytes compressed",
        pushed_size(&image_repo, &status.image_digest)
    );
    let port = free_port();
    let _c = Container::run(&format!("{image_repo}@{}", status.image_digest), port);
    let (line, body) = http_get(port, 30).await;
    assert!(line.contains("200"), "{line}\n{body}");
    assert!(body.contains("Hello world!"), "{body}");
    assert!(body.contains("<title>Create Next App</title>"), "{body}");
}
