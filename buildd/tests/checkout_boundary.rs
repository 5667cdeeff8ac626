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
        let req = d.start_request(&id, repo.path(), &sha);
        let events = run_to_end(&mut d, req).await;
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
    let req = d.start_request(&id, repo.path(), &sha);
    let events = run_to_end(&mut d, req).await;
    let status = final_status(&events);
    assert_eq!(status.state(), pb::BuildState::Failed);
    assert!(
        status.failure_reason.contains("dependency \"evil\"")
            && status.failure_reason.contains("control character"),
        "{}",
        status.failure_reason
    );
}

/// A folder outside every checkout holding a buildable app (what a symlink would expose).
fn host_app() -> tempfile::TempDir {
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir(host.path().join("inner")).unwrap();
    for (name, content) in NODE_APP {
        std::fs::write(host.path().join("inner").join(name), content).unwrap();
    }
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subdirectory_through_a_symlink_is_refused_not_read_from_the_host() {
    let host = host_app();
    let (repo, sha) = repo_with_links(&[("README.md", "x\n")], &[("app", host.path())]);
    let mut d = daemon(1).await;
    for sub in ["app/inner", "app"] {
        let id = unique("sub-link");
        let mut req = d.start_request(&id, repo.path(), &sha);
        req.source.as_mut().unwrap().subdirectory = sub.into();
        let events = run_to_end(&mut d, req).await;
        let status = final_status(&events);
        assert_eq!(status.state(), pb::BuildState::Failed, "{sub}");
        assert!(
            status.failure_reason.contains("app is a symlink"),
            "{sub}: {}",
            status.failure_reason
        );
    }
    // A real subdirectory still builds.
    let (repo, sha) = repo_with(&[
        ("svc/package.json", NODE_APP[0].1),
        ("svc/server.js", NODE_APP[1].1),
    ]);
    let id = unique("sub-real");
    let mut req = d.start_request(&id, repo.path(), &sha);
    req.source.as_mut().unwrap().subdirectory = "svc".into();
    succeeded(&run_to_end(&mut d, req).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_does_not_follow_symlinks_out_of_the_checkout() {
    let host = host_app();
    let mut d = daemon(1).await;
    for (name, file) in [
        ("package.json", "package.json"),
        ("Dockerfile", "package.json"),
    ] {
        let target = host.path().join("inner").join(file);
        let (repo, sha) = repo_with_links(&[("server.js", "1\n")], &[(name, &target)]);
        let id = unique("detect-link");
        let req = d.start_request(&id, repo.path(), &sha);
        let events = run_to_end(&mut d, req).await;
        let status = final_status(&events);
        assert_eq!(status.state(), pb::BuildState::Failed, "{name}");
        assert!(
            status
                .failure_reason
                .contains(&format!("cannot read {name}"))
                && status
                    .failure_reason
                    .contains("is a symlink that points outside the checkout"),
            "{name}: {}",
            status.failure_reason
        );
    }
    // A symlink inside the checkout is fine.
    let (repo, sha) = repo_with_links(
        &[
            ("real/package.json", NODE_APP[0].1),
            ("server.js", NODE_APP[1].1),
        ],
        &[("package.json", Path::new("real/package.json"))],
    );
    let id = unique("detect-inner-link");
    let req = d.start_request(&id, repo.path(), &sha);
    succeeded(&run_to_end(&mut d, req).await);
}
