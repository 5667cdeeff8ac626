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

#[tokio::test]
async fn credentials_are_given_to_the_source_host_only_not_to_a_redirect_target() {
    let (repo, sha) = fixture_repo("dockerfile");
    let source_name = unique_name("source");
    let other_name = unique_name("elsewhere");
    let _records = (
        ARecord::add(&source_name, "127.0.0.2"),
        ARecord::add(&other_name, "127.0.0.2"),
    );
    let ca = common::fetch::TestCa::for_names(&[&source_name, &other_name]);
    let password = unique("pw-secret");
    let root = repo.path().parent().unwrap();
    let repo_name = repo.path().file_name().unwrap().to_str().unwrap();
    // The other host asks for the same credentials; the source host redirects there.
    let other = GitServer::start(
        "127.0.0.2".parse().unwrap(),
        &ca,
        root,
        &["--auth", "deployer", &password],
    );
    let redirect = format!("https://{other_name}:{}", other.port);
    let redirector = GitServer::start(
        "127.0.0.2".parse().unwrap(),
        &ca,
        root,
        &["--redirect", &redirect],
    );
    let settings = Arc::new(FetchSettings {
        ca_file: Some(ca.ca()),
        ..settings(&[], &["127.0.0.2/32"])
    });
    let source = GitSource {
        url: format!("https://{source_name}:{}/{repo_name}", redirector.port),
        commit: sha.clone(),
        username: "deployer".into(),
        password: password.clone(),
        ..GitSource::default()
    };
    let dest = tempfile::tempdir().unwrap();
    let err = checkout(&settings, &source, &dest.path().join("r"), &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    assert!(!err.to_string().contains(&password), "{err}");

    // The control: the same credentials straight to that host do work.
    let direct = GitSource {
        url: format!("https://{other_name}:{}/{repo_name}", other.port),
        ..source
    };
    let co = checkout(&settings, &direct, &dest.path().join("d"), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(co.commit, sha);
}
