//! buildd runs as root on the host and touches the tenant's checkout after the sandboxed fetch:
//! nothing it writes or reads there may follow a tenant's symlink out of the checkout.

mod common;

use std::path::Path;

use common::*;
use proto::build::v1 as pb;

/// A repository with `files` and `links` (name, target) committed as symlinks; returns (dir, sha).
fn repo_with_links(files: &[(&str, &str)], links: &[(&str, &Path)]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    for (name, target) in links {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
    }
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "test"]);
    let sha = git(dir.path(), &["rev-parse", "HEAD"]);
    (dir, sha)
}

const NODE_APP: &[(&str, &str)] = &[
    ("package.json", r#"{"name": "a", "main": "server.js"}"#),
    ("server.js", "console.log('hi')\n"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_generated_dockerfile_symlink_does_not_make_buildd_write_a_host_file() {
    let host = tempfile::tempdir().unwrap();
    let target = host.path().join("zz.sh");
    let (repo, sha) = repo_with_links(NODE_APP, &[("Dockerfile.stackpad", &target)]);
    for transport in ["session", "http"] {
        let mut d = daemon_with(1, transport).await;
        let id = unique("gen-link");
        let events = run_to_end(&mut d, start_request(&id, repo.path(), &sha)).await;
        assert!(
            std::fs::symlink_metadata(&target).is_err(),
            "{transport}: buildd wrote the host file {} through the tenant's symlink",
            target.display()
        );
        succeeded(&events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_dependency_with_a_newline_fails_the_build_naming_the_dependency() {
    let pkg = r#"{"name": "a", "main": "server.js", "dependencies": {"evil": "file:x\nRUN touch /pwned"}}"#;
    let (repo, sha) = repo_with(&[("package.json", pkg), ("server.js", "1\n")]);
    let mut d = daemon(1).await;
    let id = unique("dep-newline");
    let events = run_to_end(&mut d, start_request(&id, repo.path(), &sha)).await;
    let status = final_status(&events);
    assert_eq!(status.state(), pb::BuildState::Failed);
    assert!(
        status.failure_reason.contains("dependency \"evil\"")
            && status.failure_reason.contains("control character"),
        "{}",
        status.failure_reason
    );
}
