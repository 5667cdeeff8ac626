//! Private repositories: credentials reach git over real smart HTTP with Basic auth (git
//! http-backend behind a loopback server) and never show up in logs or errors.

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use buildd::source::{GitSource, SourceError, checkout};
use common::*;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves the repositories under `root` with Basic auth; returns the server and its port.
fn serve(root: &std::path::Path, user: &str, password: &str) -> (Server, u16) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/git_http_auth.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(root)
        .args([user, password])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the git smart-HTTP test server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("port");
    (Server(child), port)
}

#[tokio::test]
async fn a_private_repository_is_cloned_with_the_request_credentials_never_logged() {
    let (repo, sha) = fixture_repo("dockerfile");
    // The server exports exactly this one repository (its project root).
    let password = unique("pw-secret");
    let (_server, port) = serve(repo.path(), "deployer", &password);
    let url = format!("http://127.0.0.1:{port}/");

    let dest = tempfile::tempdir().unwrap();
    let source = GitSource {
        url: url.clone(),
        commit: sha.clone(),
        username: "deployer".into(),
        password: password.clone(),
        ..GitSource::default()
    };
    let mut lines = Vec::new();
    let co = checkout(&source, &dest.path().join("ok"), &mut |l| lines.push(l))
        .await
        .expect("clone with credentials");
    assert_eq!(co.commit, sha);
    assert!(co.app_dir.join("Dockerfile").exists());
    let shown = format!("{lines:?} {source:?}");
    assert!(!shown.contains(&password), "password leaked: {shown}");
    // Nothing of the password is stored in the checkout's git config either.
    let config = std::fs::read_to_string(co.repo.join(".git/config")).unwrap();
    assert!(!config.contains(&password), "{config}");

    // A wrong password fails as unreachable (authentication), and says nothing of the password.
    let wrong = GitSource {
        password: format!("{password}-wrong"),
        ..source.clone()
    };
    let mut lines = Vec::new();
    let err = checkout(&wrong, &dest.path().join("bad"), &mut |l| lines.push(l))
        .await
        .unwrap_err();
    let text = format!("{err} {err:?} {lines:?}");
    assert!(matches!(err, SourceError::Unreachable { .. }), "{text}");
    assert!(!text.contains(&password), "password leaked: {text}");

    // Without credentials git does not prompt; it fails at once.
    let anonymous = GitSource {
        password: String::new(),
        username: String::new(),
        ..source
    };
    let started = std::time::Instant::now();
    let err = checkout(&anonymous, &dest.path().join("anon"), &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
