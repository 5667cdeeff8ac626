//! Real builds of the fixtures through the daemon's gRPC API, dockerd's BuildKit and the
//! registry; the pushed images run in containerd and answer HTTP.

mod common;

use common::*;
use proto::build::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_builds_runs_and_a_source_change_reuses_the_dependency_layer() {
    let mut d = daemon(4).await;
    let (repo, sha) = fixture_repo("express");
    let id = unique("express");
    let req = d.start_request(&id, repo.path(), &sha);
    let image_repo = req.image.clone();
    let events = run_to_end(&mut d, req).await;
    let status = succeeded(&events);
    assert_eq!(status.framework, "express");
    assert_eq!(status.container_port, 3000);
    assert_eq!(status.commit, sha);
    assert_eq!(status.image, format!("{image_repo}:{sha}"));
    assert!(status.image_digest.starts_with("sha256:"), "{status:?}");
    // Log lines carry a timestamp and their step.
    let logs = log_lines(&events);
    assert!(
        logs.iter()
            .any(|l| l.step == "clone" && l.timestamp_unix_nanos > 0)
    );
    assert!(
        logs.iter()
            .any(|l| l.step == "dockerfile" && l.line.contains("npm ci --omit=dev"))
    );

    let port = free_port();
    let pushed = format!("{image_repo}@{}", status.image_digest);
    {
        let _c = Container::run(&pushed, port);
        let (line, body) = http_get(port, 20).await;
        assert!(line.contains("200"), "{line}");
        assert_eq!(body, "hello from express");
    }

    // Same repository, one source file changed: the install step comes from the cache.
    // Unique per run, so no earlier run's cache can hold it.
    let greeting = format!("hello again from express {}", unique("run"));
    let sha2 = commit_change(
        repo.path(),
        "greeting.js",
        &format!("exports.greeting = () => {greeting:?};\n"),
    );
    let id2 = unique("express-warm");
    let mut req2 = d.start_request(&id2, repo.path(), &sha2);
    req2.image = image_repo.clone();
    let events2 = run_to_end(&mut d, req2).await;
    let status2 = succeeded(&events2);
    let install: Vec<_> = steps(&events2)
        .into_iter()
        .filter(|s| s.name.contains("npm ci") && s.completed_at_unix_ms > 0)
        .collect();
    assert!(
        !install.is_empty(),
        "no completed install step in {:#?}",
        steps(&events2)
    );
    assert!(
        install.iter().all(|s| s.cached),
        "install step not cached: {install:#?}"
    );
    let copy_source = steps(&events2)
        .into_iter()
        .filter(|s| s.name.contains("COPY --chown=1000:1000 . .") && s.completed_at_unix_ms > 0)
        .collect::<Vec<_>>();
    assert!(
        copy_source.iter().any(|s| !s.cached),
        "the changed source must be copied again"
    );
    assert!(
        status2.cached_steps > 0 && status2.cached_steps < status2.total_steps,
        "{status2:?}"
    );

    let port2 = free_port();
    let _c = Container::run(&format!("{image_repo}@{}", status2.image_digest), port2);
    let (_, body) = http_get(port2, 20).await;
    assert_eq!(body, greeting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_dockerfile_is_used_and_its_image_answers() {
    let mut d = daemon(4).await;
    let (repo, sha) = fixture_repo("dockerfile");
    let id = unique("dockerfile");
    let req = d.start_request(&id, repo.path(), &sha);
    let image_repo = req.image.clone();
    let events = run_to_end(&mut d, req).await;
    let status = succeeded(&events);
    assert_eq!(
        (status.framework.as_str(), status.container_port),
        ("dockerfile", 8080)
    );
    assert!(
        !log_lines(&events).iter().any(|l| l.step == "dockerfile"),
        "nothing generated"
    );
    let port = free_port();
    let _c = Container::run(&format!("{image_repo}@{}", status.image_digest), port);
    let (line, body) = http_get(port, 20).await;
    assert!(line.contains("200"), "{line}");
    assert_eq!(body.trim(), "hello from dockerfile");

    // GetBuild after the end, and /metrics.
    let got = d
        .client
        .get_build(pb::GetBuildRequest {
            build_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.image_digest, status.image_digest);
    let metrics = reqwest_get(d.daemon.metrics_addr).await;
    assert!(
        metrics.contains("stackpad_buildd_builds_total{outcome=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stackpad_buildd_cache_hit_ratio"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_context_transport_builds_too() {
    // Contexts as tarballs on buildd's loopback listener (the path for buildkitd nodes).
    let mut d = daemon_with(4, "http").await;
    let (repo, sha) = fixture_repo("express");
    let id = unique("express-http");
    let req = d.start_request(&id, repo.path(), &sha);
    let image_repo = req.image.clone();
    let events = run_to_end(&mut d, req).await;
    let status = succeeded(&events);
    assert!(
        steps(&events)
            .iter()
            .any(|s| s.name == "[internal] load remote build context"),
        "the context came over HTTP"
    );
    let port = free_port();
    let _c = Container::run(&format!("{image_repo}@{}", status.image_digest), port);
    let (_, body) = http_get(port, 20).await;
    assert_eq!(body, "hello from express");
}

async fn reqwest_get(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerignore_keeps_files_out_of_the_context() {
    // Through the session (the default). The HTTP tarball transport does not apply
    // .dockerignore: this same build fails there (checked by hand).
    let mut d = daemon(4).await;
    let dockerfile = format!(
        "FROM {}/stackpad/busybox:1\nCOPY . /ctx/\nRUN test -e /ctx/keep.txt && test ! -e /ctx/secret.env && test ! -e /ctx/tmp/x\n",
        registry()
    );
    let nonce = unique("n");
    let (repo, sha) = repo_with(&[
        ("Dockerfile", &dockerfile),
        (".dockerignore", "*.env\ntmp\n"),
        ("keep.txt", &nonce),
        ("secret.env", "TOKEN=1\n"),
        ("tmp/x", "x\n"),
    ]);
    let id = unique("dockerignore");
    let req = d.start_request(&id, repo.path(), &sha);
    let events = run_to_end(&mut d, req).await;
    succeeded(&events);
}
