//! Real git against repositories the tests create.

use std::path::Path;

use super::*;

fn git(dir: &Path, args: &[&str]) -> String {
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

/// A repository with two commits; returns (dir, first sha, second sha).
fn two_commit_repo() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    std::fs::create_dir(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/v.txt"), "one").unwrap();
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "one"]);
    let first = git(dir.path(), &["rev-parse", "HEAD"]);
    std::fs::write(dir.path().join("app/v.txt"), "two").unwrap();
    git(dir.path(), &["commit", "-q", "-am", "two"]);
    let second = git(dir.path(), &["rev-parse", "HEAD"]);
    (dir, first, second)
}

async fn run(
    source: &GitSource,
) -> (
    tempfile::TempDir,
    Result<Checkout, SourceError>,
    Vec<String>,
) {
    let dest = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    let result = checkout(source, &dest.path().join("src"), &mut |l| lines.push(l)).await;
    (dest, result, lines)
}

#[tokio::test]
async fn checks_out_the_exact_older_commit_shallow() {
    let (repo, first, _second) = two_commit_repo();
    let source = GitSource {
        url: repo.path().display().to_string(),
        commit: first.clone(),
        subdirectory: "app".into(),
        ..GitSource::default()
    };
    let (_dest, result, lines) = run(&source).await;
    let co = result.unwrap();
    assert_eq!(co.commit, first);
    assert_eq!(
        std::fs::read_to_string(co.app_dir.join("v.txt")).unwrap(),
        "one"
    );
    assert_eq!(
        git(&co.repo, &["rev-list", "--count", "HEAD"]),
        "1",
        "shallow"
    );
    assert!(lines.iter().any(|l| l.contains(&first)), "{lines:?}");
}

#[tokio::test]
async fn a_branch_ref_and_file_urls_work() {
    let (repo, _first, second) = two_commit_repo();
    let source = GitSource {
        url: format!("file://{}", repo.path().display()),
        reference: "main".into(),
        ..GitSource::default()
    };
    let (_dest, result, _) = run(&source).await;
    assert_eq!(result.unwrap().commit, second);
}

#[tokio::test]
async fn unknown_commit_is_revision_not_found() {
    let (repo, _, _) = two_commit_repo();
    let source = GitSource {
        url: repo.path().display().to_string(),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        ..GitSource::default()
    };
    let (_dest, result, _) = run(&source).await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, SourceError::RevisionNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("commit 0123456789abcdef"), "{err}");
}

#[tokio::test]
async fn unreachable_repository_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-repo").display().to_string();
    let source = GitSource {
        url: missing.clone(),
        ..GitSource::default()
    };
    let (_dest, result, _) = run(&source).await;
    let err = result.unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-repo"), "{err}");
}

#[tokio::test]
async fn unreachable_https_host_on_loopback() {
    // A loopback port nobody listens on: connection refused, quickly.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let source = GitSource {
        url: format!("http://user:s3cret@127.0.0.1:{port}/repo.git"),
        password: "hunter2".into(),
        ..GitSource::default()
    };
    let (_dest, result, lines) = run(&source).await;
    let err = result.unwrap_err();
    let text = format!("{err} {err:?} {lines:?} {source:?}");
    assert!(matches!(err, SourceError::Unreachable { .. }), "{text}");
    assert!(
        !text.contains("s3cret") && !text.contains("hunter2"),
        "credentials leaked: {text}"
    );
}

#[tokio::test]
async fn bad_inputs_are_refused_before_git_runs() {
    let cases = [
        GitSource {
            url: "git@github.com:a/b.git".into(),
            ..GitSource::default()
        },
        GitSource {
            url: "/x".into(),
            commit: "abc".into(),
            ..GitSource::default()
        },
        GitSource {
            url: "/x".into(),
            subdirectory: "../etc".into(),
            ..GitSource::default()
        },
    ];
    for source in cases {
        let (_dest, result, _) = run(&source).await;
        assert!(
            matches!(
                result,
                Err(SourceError::UnsupportedUrl { .. }
                    | SourceError::InvalidCommit { .. }
                    | SourceError::InvalidSubdirectory { .. })
            ),
            "{source:?}: {result:?}"
        );
    }
}

#[tokio::test]
async fn missing_subdirectory_names_the_commit() {
    let (repo, _, second) = two_commit_repo();
    let source = GitSource {
        url: repo.path().display().to_string(),
        subdirectory: "web".into(),
        ..GitSource::default()
    };
    let (_dest, result, _) = run(&source).await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("\"web\"") && err.contains(&second), "{err}");
}

#[test]
fn urls_are_redacted() {
    assert_eq!(
        redact_url("https://u:p@host/x.git"),
        "https://<redacted>@host/x.git"
    );
    assert_eq!(redact_url("https://host/x.git"), "https://host/x.git");
}
