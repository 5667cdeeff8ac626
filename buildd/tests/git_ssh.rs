//! Private repositories over SSH: a real `sshd` on loopback (its own host key, an
//! `authorized_keys` holding only the deploy key's public half, logins forced into git-shell)
//! serves a bare repository; the checkout runs in the fetch sandbox with the deploy key, its
//! egress limited to that host and port, the host key checked strictly. The key never shows in
//! a log line, an error or the checkout.

mod common;

use std::process::Command;
use std::sync::Arc;

use buildd::source::{FetchSettings, GitSource, SourceError, checkout};
use common::fetch::{ARecord, settings, unique_name};
use stackpad_tests::sshd::{GitSshd, LOGIN, bare_repository};

/// An ed25519 key pair made by ssh-keygen: (private key, public key line).
fn key_pair(dir: &std::path::Path, name: &str) -> (String, String) {
    let file = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&file)
        .output()
        .expect("ssh-keygen (openssh-client) is needed");
    assert!(out.status.success(), "{out:?}");
    (
        std::fs::read_to_string(&file).unwrap(),
        std::fs::read_to_string(file.with_extension("pub")).unwrap(),
    )
}

/// The base64 body of a private key: what must never appear anywhere.
fn key_body(private_key: &str) -> String {
    private_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect()
}

#[tokio::test]
async fn a_private_repository_is_fetched_over_ssh_with_the_deploy_key_only() {
    let keys = tempfile::tempdir().unwrap();
    let (private_key, public_key) = key_pair(keys.path(), "deploy");
    let (other_key, _) = key_pair(keys.path(), "rotated");
    let repos = tempfile::tempdir().unwrap();
    let (bare, sha) = bare_repository(
        repos.path(),
        "app",
        &[("Dockerfile", "FROM scratch\n"), ("web/index.html", "hi\n")],
    )
    .unwrap();
    let sshd = GitSshd::start("127.0.0.2".parse().unwrap(), &public_key)
        .expect("a loopback sshd (openssh-server, see scripts/services)");
    let name = unique_name("ssh");
    let _record = ARecord::add(&name, "127.0.0.2");
    let settings = Arc::new(FetchSettings {
        ..settings(&[], &["127.0.0.2/32"])
    });
    let source = GitSource {
        url: format!(
            "ssh://{LOGIN}@{name}:{}{}",
            sshd.addr.port(),
            bare.display()
        ),
        commit: sha.clone(),
        ssh_private_key: private_key.clone(),
        ssh_known_hosts: sshd.known_hosts_line(&name),
        ..GitSource::default()
    };
    let secret = key_body(&private_key);
    let dest = tempfile::tempdir().unwrap();

    let started = std::time::Instant::now();
    let mut lines = Vec::new();
    let co = checkout(&settings, &source, &dest.path().join("ok"), &mut |l| {
        lines.push(l)
    })
    .await
    .unwrap_or_else(|e| panic!("checkout over ssh: {e}\nsshd: {}", sshd.log()));
    eprintln!("checkout over ssh took {:?}", started.elapsed());
    assert_eq!(co.commit, sha);
    assert!(co.app_dir.join("web/index.html").exists());
    let config = std::fs::read_to_string(co.repo.join(".git/config")).unwrap();
    let shown = format!("{lines:?} {source:?} {config}");
    assert!(!shown.contains(&secret), "deploy key leaked: {shown}");
    assert!(
        sshd.log().contains("Accepted publickey for root"),
        "{}",
        sshd.log()
    );

    // The same repository with another key (a deploy key rotated but not pasted again): the
    // server refuses it, and the error names authentication.
    let rotated = GitSource {
        ssh_private_key: other_key.clone(),
        ..source.clone()
    };
    let err = checkout(
        &settings,
        &rotated,
        &dest.path().join("rotated"),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains(&key_body(&other_key)), "{text}");

    // Once that key is let in (pasted into the git host), it works and the old one stops.
    sshd.authorize(&std::fs::read_to_string(keys.path().join("rotated.pub")).unwrap())
        .unwrap();
    checkout(
        &settings,
        &rotated,
        &dest.path().join("pasted"),
        &mut |_| {},
    )
    .await
    .unwrap();

    // A host key nobody vouched for is never accepted on first use.
    let unknown_host = GitSource {
        ssh_known_hosts: String::new(),
        ..rotated.clone()
    };
    let err = checkout(
        &settings,
        &unknown_host,
        &dest.path().join("hk"),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("host key verification failed"),
        "{err}"
    );

    // Without a key an SSH source is refused before anything runs.
    let keyless = GitSource {
        ssh_private_key: String::new(),
        ..source.clone()
    };
    let err = checkout(&settings, &keyless, &dest.path().join("nokey"), &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::Refused {
                field: "ssh_private_key",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_ssh_source_reaches_its_own_host_and_port_only() {
    let keys = tempfile::tempdir().unwrap();
    let (private_key, public_key) = key_pair(keys.path(), "deploy");
    let sshd = GitSshd::start("127.0.0.2".parse().unwrap(), &public_key)
        .expect("a loopback sshd (openssh-server, see scripts/services)");
    let name = unique_name("ssh-private");
    // The name resolves to a loopback address the operator did not open: refused by the
    // address policy before anything connects.
    let _record = ARecord::add(&name, "127.0.0.2");
    let closed = Arc::new(settings(&[], &[]));
    let source = GitSource {
        url: format!("ssh://{LOGIN}@{name}:{}/srv/x.git", sshd.addr.port()),
        ssh_private_key: private_key,
        ssh_known_hosts: sshd.known_hosts_line(&name),
        ..GitSource::default()
    };
    let dest = tempfile::tempdir().unwrap();
    let err = checkout(&closed, &source, &dest.path().join("a"), &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::EgressRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(!sshd.log().contains("Accepted"), "{}", sshd.log());
}

/// The whole build through buildd's gRPC API (real BuildKit): the request carries the deploy
/// key, the host key is vouched for by the operator's `fetch_sandbox.ssh_known_hosts` file
/// only; the image is built and pushed, and no log line or status holds the key. A key the
/// server does not know fails the build naming authentication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_from_an_ssh_repository_never_logs_the_deploy_key() {
    let keys = tempfile::tempdir().unwrap();
    let (private_key, public_key) = key_pair(keys.path(), "deploy");
    let (other_key, _) = key_pair(keys.path(), "other");
    let sshd = GitSshd::start("127.0.0.2".parse().unwrap(), &public_key)
        .expect("a loopback sshd (openssh-server, see scripts/services)");
    let name = unique_name("ssh-build");
    let _record = ARecord::add(&name, "127.0.0.2");
    let (work, sha) = common::fixture_repo("dockerfile");
    let repos = tempfile::tempdir().unwrap();
    let bare = repos.path().join("app.git");
    common::git(
        repos.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.path().to_str().unwrap(),
            "app.git",
        ],
    );
    common::git(
        &bare,
        &["config", "uploadpack.allowReachableSHA1InWant", "true"],
    );
    let known_hosts = keys.path().join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts_line(&name)).unwrap();
    let mut d = common::daemon_configured(2, "session", |c| {
        c.egress_allow = vec!["127.0.0.2/32".into()];
        c.dns_resolver = common::fetch::challtestsrv_dns().to_string();
        c.fetch_sandbox.ssh_known_hosts = known_hosts.clone();
    })
    .await;
    let url = format!(
        "ssh://{LOGIN}@{name}:{}{}",
        sshd.addr.port(),
        bare.display()
    );
    let mut req = d.start_request(&common::unique("ssh"), work.path(), &sha);
    let source = req.source.as_mut().unwrap();
    source.url = url.clone();
    source.ssh_private_key = private_key.clone();
    let events = common::run_to_end(&mut d, req.clone()).await;
    let status = common::succeeded(&events);
    assert_eq!(status.commit, sha);
    assert!(!status.image_digest.is_empty());
    let shown = format!("{events:?}");
    for line in private_key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            !shown.contains(line),
            "a line of the key was logged: {line}"
        );
    }
    assert!(shown.contains("sandboxed"), "the fetch is logged: {shown}");

    let mut wrong = req;
    wrong.build_id = common::unique("ssh-wrong");
    wrong.source.as_mut().unwrap().ssh_private_key = other_key.clone();
    let events = common::run_to_end(&mut d, wrong).await;
    let status = common::final_status(&events);
    assert_eq!(
        status.state(),
        proto::build::v1::BuildState::Failed,
        "{status:?}"
    );
    assert!(
        status.failure_reason.contains("authentication failed"),
        "{}",
        status.failure_reason
    );
    let shown = format!("{events:?}");
    for line in other_key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            !shown.contains(line),
            "a line of the key was logged: {line}"
        );
    }
}
