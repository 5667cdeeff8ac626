//! Private repositories: credentials reach git over real smart HTTPS with Basic auth (git
//! http-backend behind a test server with a test CA, reached through the fetch sandbox's egress
//! proxy) and never show up in logs or errors.

mod common;

use std::sync::Arc;

use buildd::source::{FetchSettings, GitSource, SourceError, checkout};
use common::fetch::{ARecord, GitServer, TestCa, settings, unique_name};
use common::*;

#[tokio::test]
async fn a_private_repository_is_cloned_with_the_request_credentials_never_logged() {
    let (repo, sha) = fixture_repo("dockerfile");
    let name = unique_name("private");
    let _record = ARecord::add(&name, "127.0.0.2");
    let ca = TestCa::new(&name);
    let password = unique("pw-secret");
    let root = repo.path().parent().unwrap();
    let _server = GitServer::start(
        "127.0.0.2".parse().unwrap(),
        &ca,
        root,
        &["--auth", "deployer", &password],
    );
    let url = format!(
        "https://{name}:{}/{}",
        _server.port,
        repo.path().file_name().unwrap().to_str().unwrap()
    );
    let settings = Arc::new(FetchSettings {
        ca_file: Some(ca.ca()),
        ..settings(&[], &["127.0.0.2/32"])
    });

    let dest = tempfile::tempdir().unwrap();
    let source = GitSource {
        url: url.clone(),
        commit: sha.clone(),
        username: "deployer".into(),
        password: password.clone(),
        ..GitSource::default()
    };
    let mut lines = Vec::new();
    let co = checkout(&settings, &source, &dest.path().join("ok"), &mut |l| {
        lines.push(l)
    })
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
    let err = checkout(&settings, &wrong, &dest.path().join("bad"), &mut |l| {
        lines.push(l)
    })
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
    let err = checkout(
        &settings,
        &anonymous,
        &dest.path().join("anon"),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
