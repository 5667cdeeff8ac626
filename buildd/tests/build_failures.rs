//! Builds that must fail, stop or wait, through the daemon against the real BuildKit.

mod common;

use std::time::Duration;

use common::*;
use proto::build::v1 as pb;

fn busybox() -> String {
    format!("FROM {}/stackpad/busybox:1\n", registry())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_fails_the_build_and_the_log_shows_the_step() {
    let mut d = daemon(4).await;
    let nonce = unique("n");
    let dockerfile = format!(
        "{}RUN echo before-failure-{nonce} && echo complaint-{nonce} >&2 && exit 3\n",
        busybox()
    );
    let (repo, sha) = repo_with(&[("Dockerfile", &dockerfile)]);
    let id = unique("failing-run");
    let req = d.start_request(&id, repo.path(), &sha);
    let events = run_to_end(&mut d, req).await;
    let status = final_status(&events);
    assert_eq!(status.state(), pb::BuildState::Failed);
    assert!(
        status.failure_reason.contains("RUN echo before-failure"),
        "{}",
        status.failure_reason
    );
    assert!(
        status.failure_reason.contains("exit code: 3"),
        "{}",
        status.failure_reason
    );
    let logs = log_lines(&events);
    let line = logs
        .iter()
        .find(|l| l.line.contains(&format!("before-failure-{nonce}")) && l.step != "result")
        .unwrap_or_else(|| panic!("the step's output is not in the log: {logs:#?}"));
    assert!(line.step.contains("RUN echo"), "{line:?}");
    // Each line says which output it came from.
    assert_eq!(line.stream(), pb::LogStream::Stdout, "{line:?}");
    let complaint = logs
        .iter()
        .find(|l| l.line == format!("complaint-{nonce}"))
        .unwrap_or_else(|| panic!("the step's stderr is not in the log: {logs:#?}"));
    assert_eq!(complaint.stream(), pb::LogStream::Stderr, "{complaint:?}");
    let result = logs.iter().find(|l| l.step == "result").unwrap();
    assert_eq!(result.stream(), pb::LogStream::Stderr, "{result:?}");
    let failed: Vec<_> = steps(&events)
        .into_iter()
        .filter(|s| !s.error.is_empty())
        .collect();
    assert!(
        failed.iter().any(|s| s.name.contains("RUN echo")),
        "{failed:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_syntax_error_fails_with_the_line() {
    let mut d = daemon(4).await;
    let dockerfile = format!("{}RUNN echo nope\n", busybox());
    let (repo, sha) = repo_with(&[("Dockerfile", &dockerfile)]);
    let id = unique("syntax");
    let req = d.start_request(&id, repo.path(), &sha);
    let events = run_to_end(&mut d, req).await;
    let status = final_status(&events);
    assert_eq!(status.state(), pb::BuildState::Failed);
    assert!(
        status.failure_reason.contains("RUNN"),
        "{}",
        status.failure_reason
    );
    assert!(
        status.failure_reason.contains("line 2"),
        "{}",
        status.failure_reason
    );
    assert!(
        log_lines(&events)
            .iter()
            .any(|l| l.step == "result" && l.line.contains("RUNN"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_fail_with_clear_reasons() {
    let mut d = daemon(4).await;
    // Unreachable repository.
    let missing = tempfile::tempdir().unwrap();
    let url = missing.path().join("gone");
    let id = unique("unreachable");
    let req = d.start_request(&id, &url, "");
    let events = run_to_end(&mut d, req).await;
    let reason = final_status(&events).failure_reason;
    assert!(
        reason.contains("is unreachable") && reason.contains("gone"),
        "{reason}"
    );

    // Unknown commit.
    let (repo, _) = fixture_repo("dockerfile");
    let id = unique("unknown-commit");
    let req = d.start_request(&id, repo.path(), "1111111111111111111111111111111111111111");
    let events = run_to_end(&mut d, req).await;
    let reason = final_status(&events).failure_reason;
    assert!(
        reason.contains("commit 1111111111111111111111111111111111111111 not found"),
        "{reason}"
    );

    // Neither package.json nor Dockerfile.
    let (repo, sha) = repo_with(&[("README.md", "hi\n")]);
    let id = unique("nothing");
    let req = d.start_request(&id, repo.path(), &sha);
    let events = run_to_end(&mut d, req).await;
    let status = final_status(&events);
    assert_eq!(status.state(), pb::BuildState::Failed);
    assert!(
        status
            .failure_reason
            .contains("no Dockerfile and no package.json"),
        "{}",
        status.failure_reason
    );
    assert_eq!(
        status.commit, sha,
        "the commit is reported even when detection fails"
    );

    // A request that cannot be a build at all is refused up front.
    let mut bad = d.start_request("bad id", repo.path(), &sha);
    bad.image = "nope".into();
    let err = d.client.start_build(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("build_id"), "{}", err.message());
    let err = d
        .client
        .get_build(pb::GetBuildRequest {
            build_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

/// `sleep` processes started by BuildKit for this test's RUN step.
fn sleeping(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| {
            String::from_utf8_lossy(c)
                .replace('\0', " ")
                .contains(marker)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_solve() {
    let mut d = daemon(4).await;
    // A unique duration marks this test's process.
    let secs = 100_000 + u32::from_str_radix(&unique("s")[2..6], 16).unwrap();
    let marker = format!("sleep {secs}");
    let (repo, sha) = repo_with(&[("Dockerfile", &format!("{}RUN {marker}\n", busybox()))]);
    let id = unique("cancel");
    d.client
        .start_build(d.start_request(&id, repo.path(), &sha))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sleeping(&marker) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the RUN step never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = d
        .client
        .cancel_build(pb::CancelBuildRequest {
            build_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state(), pb::BuildState::Cancelled, "{status:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sleeping(&marker) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "BuildKit's RUN process outlived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fails_with_a_message() {
    let mut d = daemon(4).await;
    let secs = 200_000 + u32::from_str_radix(&unique("s")[2..6], 16).unwrap();
    let (repo, sha) = repo_with(&[("Dockerfile", &format!("{}RUN sleep {secs}\n", busybox()))]);
    let id = unique("timeout");
    let mut req = d.start_request(&id, repo.path(), &sha);
    req.timeout_seconds = 3;
    let events = run_to_end(&mut d, req).await;
    let status = final_status(&events);
    assert_eq!(status.state(), pb::BuildState::Failed);
    assert_eq!(
        status.failure_reason,
        format!("build {id} reached its time limit of 3s and was cancelled")
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sleeping(&format!("sleep {secs}")) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the solve outlived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_builds_at_once_never_more_than_four_run_and_all_finish() {
    let mut d = daemon(4).await;
    let mut repos = Vec::new();
    let mut ids = Vec::new();
    for i in 0..6u32 {
        // A unique file makes each build do real work (no cache hit) for about two seconds.
        let dockerfile = format!("{}COPY nonce /nonce\nRUN sleep 2\n", busybox());
        let (repo, sha) = repo_with(&[("Dockerfile", &dockerfile), ("nonce", &unique("n"))]);
        let id = unique(&format!("six-{i}"));
        let accepted = d
            .client
            .start_build(d.start_request(&id, repo.path(), &sha))
            .await
            .unwrap()
            .into_inner();
        // The first four take the free slots; the fifth and sixth wait, in order.
        if i < 4 {
            assert!(
                accepted.started_at_unix_ms > 0,
                "build {i} should start: {accepted:?}"
            );
        } else {
            assert_eq!(accepted.state(), pb::BuildState::Queued);
            assert_eq!(
                accepted.started_at_unix_ms, 0,
                "build {i} should wait: {accepted:?}"
            );
            assert_eq!(accepted.queue_position, i - 4, "{accepted:?}");
        }
        repos.push(repo);
        ids.push(id);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let mut statuses = Vec::new();
    for id in &ids {
        let events = tokio::time::timeout_at(deadline, watch_all(&mut d.client, id))
            .await
            .expect("builds did not finish in time");
        let s = final_status(&events);
        assert_eq!(
            s.state(),
            pb::BuildState::Succeeded,
            "{id}: {}",
            s.failure_reason
        );
        statuses.push(s);
    }
    // The daemon's own start/finish times: the most builds whose runs overlap at one instant.
    let max_active = statuses
        .iter()
        .map(|a| {
            statuses
                .iter()
                .filter(|b| {
                    b.started_at_unix_ms <= a.started_at_unix_ms
                        && a.started_at_unix_ms < b.finished_at_unix_ms
                })
                .count()
        })
        .max()
        .unwrap();
    assert_eq!(
        max_active, 4,
        "at most four at once, and four did run together: {statuses:#?}"
    );
    let last_two_waited = statuses[4..].iter().all(|s| {
        statuses[..4]
            .iter()
            .any(|f| f.finished_at_unix_ms <= s.started_at_unix_ms)
    });
    assert!(
        last_two_waited,
        "the fifth and sixth builds start only after an earlier one ended"
    );
}
