//! The fetch sandbox against the real kernel namespaces and real git: local sources only under
//! an operator root, option-looking values never read as options, no connection to private
//! addresses (by literal, by DNS name, by redirect), the positive control through the egress
//! proxy, what git can see in there, and the time and size bounds.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use buildd::source::{
    Checkout, FetchSettings, GitSource, Sandbox, SourceError, checkout, fetch_unchecked,
};
use common::fetch::{ARecord, Canary, GitServer, TestCa, settings, shared, unique_name};
use common::*;

/// A repository with two commits in `app/v.txt`; returns (dir, first sha, second sha).
fn two_commit_repo() -> (tempfile::TempDir, String, String) {
    let (dir, first) = repo_with(&[("app/v.txt", "one")]);
    let second = commit_change(dir.path(), "app/v.txt", "two");
    (dir, first, second)
}

async fn run(
    settings: &Arc<FetchSettings>,
    source: &GitSource,
) -> (
    tempfile::TempDir,
    Result<Checkout, SourceError>,
    Vec<String>,
) {
    let dest = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    let result = checkout(settings, source, &dest.path().join("src"), &mut |l| {
        lines.push(l)
    })
    .await;
    (dest, result, lines)
}

fn tmp_root() -> Arc<FetchSettings> {
    shared(settings(&[&std::env::temp_dir()], &[]))
}

fn mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

fn url_of(dir: &Path) -> String {
    dir.display().to_string()
}

#[tokio::test]
async fn a_local_source_under_the_root_checks_out_the_exact_commit_on_its_own_tmpfs() {
    let (repo, first, second) = two_commit_repo();
    let settings = tmp_root();
    let source = GitSource {
        url: url_of(repo.path()),
        commit: first.clone(),
        subdirectory: "app".into(),
        ..GitSource::default()
    };
    let (dest, result, lines) = run(&settings, &source).await;
    let co = result.unwrap();
    assert_eq!(co.commit, first);
    assert_eq!(
        std::fs::read_to_string(co.app_dir.join("v.txt")).unwrap(),
        "one"
    );
    let count = git(
        &co.repo,
        &["-c", "safe.directory=*", "rev-list", "--count", "HEAD"],
    );
    assert_eq!(count, "1", "shallow");
    assert!(lines.iter().any(|l| l.contains(&first)), "{lines:?}");
    // Written by the sandbox's uid, on a tmpfs of its own that goes with the checkout.
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(
        std::fs::metadata(co.repo.join("app/v.txt")).unwrap().uid(),
        65532
    );
    assert!(mounted(&co.repo));
    let path = co.repo.clone();
    drop(co);
    assert!(!mounted(&path), "the checkout's tmpfs is unmounted with it");
    drop(dest);

    // A branch through a file:// URL resolves to its commit.
    let source = GitSource {
        url: format!("file://{}", repo.path().display()),
        reference: "main".into(),
        ..GitSource::default()
    };
    let (_dest, result, _) = run(&settings, &source).await;
    assert_eq!(result.unwrap().commit, second);
}

#[tokio::test]
async fn revision_and_repository_errors_are_named() {
    let (repo, _, second) = two_commit_repo();
    let settings = tmp_root();
    let unknown = GitSource {
        url: url_of(repo.path()),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        ..GitSource::default()
    };
    let err = run(&settings, &unknown).await.1.unwrap_err();
    assert!(
        matches!(err, SourceError::RevisionNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("commit 0123456789abcdef"), "{err}");

    let gone = tempfile::tempdir().unwrap();
    let missing = GitSource {
        url: gone.path().join("no-such-repo").display().to_string(),
        ..GitSource::default()
    };
    let err = run(&settings, &missing).await.1.unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-repo"), "{err}");

    let no_subdir = GitSource {
        url: url_of(repo.path()),
        subdirectory: "web".into(),
        ..GitSource::default()
    };
    let err = run(&settings, &no_subdir).await.1.unwrap_err().to_string();
    assert!(err.contains("\"web\"") && err.contains(&second), "{err}");
}

#[tokio::test]
async fn local_sources_outside_every_root_are_refused() {
    let (repo, sha, _) = two_commit_repo();
    let elsewhere = tempfile::tempdir().unwrap();
    for roots in [vec![], vec![elsewhere.path()]] {
        let settings = shared(settings(&roots, &[]));
        for url in [
            url_of(repo.path()),
            format!("file://{}", repo.path().display()),
        ] {
            let source = GitSource {
                url,
                commit: sha.clone(),
                ..GitSource::default()
            };
            let (dest, result, _) = run(&settings, &source).await;
            let err = result.unwrap_err();
            assert!(
                matches!(err, SourceError::LocalNotAllowed { .. }),
                "{err:?}"
            );
            assert!(
                !dest.path().join("src").exists(),
                "refused before anything was set up"
            );
        }
    }
}

#[tokio::test]
async fn an_option_looking_value_that_reaches_git_is_not_an_option() {
    let (repo, _, _) = two_commit_repo();
    let settings = tmp_root();
    let dest = tempfile::tempdir().unwrap();
    let work = dest.path().join("src");
    let (sandbox, _mount) = Sandbox::open(settings, &work).unwrap();
    let init = sandbox.git(&["init", "-q"], &[], &[]).await.unwrap();
    assert!(init.status.success());
    let url = format!("file://{}", repo.path().display());
    let injected = "--upload-pack=touch /work/canary";

    // As the revision, and as the remote: git reads both as names, never as options.
    let as_want = fetch_unchecked(&sandbox, &url, injected).await.unwrap();
    assert!(!as_want.status.success());
    let as_remote = fetch_unchecked(&sandbox, injected, "main").await.unwrap();
    assert!(!as_remote.status.success());
    assert!(!work.join("canary").exists(), "the injected command ran");

    // The control: the same value in option position does run (so the canary would show it).
    let config = [("protocol.file.allow".to_owned(), "always".to_owned())];
    let _ = sandbox
        .git(&["fetch", injected, &url, "main"], &config, &[])
        .await
        .unwrap();
    assert!(
        work.join("canary").exists(),
        "control: --upload-pack in option position runs its command"
    );
}

#[tokio::test]
async fn https_to_private_address_literals_is_refused_before_any_connection() {
    let canary = Canary::new();
    let settings = shared(settings(&[], &[]));
    for url in [
        format!("https://127.0.0.1:{}/r.git", canary.port),
        format!("https://[::1]:{}/r.git", canary.port),
        "https://10.0.0.1/r.git".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://[::ffff:127.0.0.1]/r.git".to_owned(),
    ] {
        let source = GitSource {
            url: url.clone(),
            ..GitSource::default()
        };
        let (dest, result, _) = run(&settings, &source).await;
        let err = result.unwrap_err();
        assert!(
            matches!(err, SourceError::Refused { field: "url", .. }),
            "{url}: {err:?}"
        );
        assert!(!dest.path().join("src").exists(), "{url}: git was set up");
    }
    assert_eq!(canary.connections(), 0);
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_by_the_proxy() {
    // challtestsrv answers 127.0.0.1 for a name it has no record for.
    let canary = Canary::new();
    let name = unique_name("rebind");
    let settings = shared(settings(&[], &[]));
    let source = GitSource {
        url: format!("https://{name}:{}/r.git", canary.port),
        reference: "main".into(),
        ..GitSource::default()
    };
    let (_dest, result, _) = run(&settings, &source).await;
    let err = result.unwrap_err();
    assert!(matches!(err, SourceError::EgressRefused { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("address 127.0.0.1 of {name} is loopback: refused")),
        "{text}"
    );
    for leak in ["403", "proxy", "onnection refused", "timed out", "CONNECT"] {
        assert!(
            !text.contains(leak),
            "git's words reached the tenant: {text}"
        );
    }
    assert_eq!(canary.connections(), 0, "a connection reached the listener");
}

#[tokio::test]
async fn an_allowed_https_server_serves_a_shallow_fetch_and_its_redirect_to_loopback_is_refused() {
    let (repo, first, second) = two_commit_repo();
    let name = unique_name("git");
    let _record = ARecord::add(&name, "127.0.0.2");
    let ca = TestCa::new(&name);
    let root = repo.path().parent().unwrap();
    let repo_name = repo.path().file_name().unwrap().to_str().unwrap();
    let server = GitServer::start("127.0.0.2".parse().unwrap(), &ca, root, &[]);
    let allowed = Arc::new(FetchSettings {
        ca_file: Some(ca.ca()),
        ..settings(&[], &["127.0.0.2/32"])
    });

    // The positive control: through the sandbox and the proxy, the exact commit, shallow.
    let source = GitSource {
        url: format!("https://{name}:{}/{repo_name}", server.port),
        commit: first.clone(),
        subdirectory: "app".into(),
        ..GitSource::default()
    };
    let (_dest, result, lines) = run(&allowed, &source).await;
    let co = result.unwrap_or_else(|e| panic!("{e}\n{lines:?}"));
    assert_eq!(co.commit, first);
    assert_eq!(
        std::fs::read_to_string(co.app_dir.join("v.txt")).unwrap(),
        "one"
    );
    let count = git(
        &co.repo,
        &["-c", "safe.directory=*", "rev-list", "--count", "HEAD"],
    );
    assert_eq!(count, "1", "shallow");
    let by_ref = GitSource {
        reference: "main".into(),
        commit: String::new(),
        ..source.clone()
    };
    assert_eq!(run(&allowed, &by_ref).await.1.unwrap().commit, second);

    // The same allowed server answering 301 to a loopback listener of ours.
    let canary = Canary::new();
    let redirect_name = unique_name("redirect");
    let _record2 = ARecord::add(&redirect_name, "127.0.0.2");
    let redirect_ca = TestCa::new(&redirect_name);
    let target = format!("https://127.0.0.1:{}", canary.port);
    let redirector = GitServer::start(
        "127.0.0.2".parse().unwrap(),
        &redirect_ca,
        root,
        &["--redirect", &target],
    );
    let redirected = GitSource {
        url: format!("https://{redirect_name}:{}/{repo_name}", redirector.port),
        reference: "main".into(),
        ..GitSource::default()
    };
    let redirecting = Arc::new(FetchSettings {
        ca_file: Some(redirect_ca.ca()),
        ..settings(&[], &["127.0.0.2/32"])
    });
    let err = run(&redirecting, &redirected).await.1.unwrap_err();
    assert!(matches!(err, SourceError::EgressRefused { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("address 127.0.0.1 is loopback: refused"),
        "{err}"
    );
    assert_eq!(canary.connections(), 0, "the redirect reached the listener");
}

#[tokio::test]
async fn git_in_the_sandbox_is_unprivileged_and_sees_none_of_the_platform() {
    let stackpad = Path::new("/var/lib/stackpad");
    assert!(
        stackpad.exists(),
        "/var/lib/stackpad is missing on the host: run `scripts/services up` (the test shows it is hidden)"
    );
    let config_dir = tempfile::tempdir().unwrap();
    std::fs::write(config_dir.path().join("buildd.toml"), "secret = 1\n").unwrap();
    let settings = tmp_root();
    let dest = tempfile::tempdir().unwrap();
    let (sandbox, _mount) = Sandbox::open(settings, &dest.path().join("src")).unwrap();
    let probe = "!id -u; id -G; for p in /var/lib/stackpad /run/containerd /run/docker.sock \
                 /root /etc/shadow; do test -e $p && echo visible $p; done; \
                 grep -c : /proc/net/dev; grep -o '^ *lo:' /proc/net/dev; \
                 grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status; \
                 touch /usr/x 2>/dev/null && echo wrote-usr; echo done";
    let out = sandbox
        .git(&["-c", &format!("alias.probe={probe}"), "probe"], &[], &[])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines[0], "65532", "uid: {text}");
    assert_eq!(lines[1], "65532", "groups: {text}");
    assert!(!text.contains("visible"), "{text}");
    assert!(!text.contains("wrote-usr"), "{text}");
    // Only `lo` in the network namespace (one interface line in /proc/net/dev).
    assert!(lines[2] == "1" && lines[3].trim() == "lo:", "{text}");
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert_eq!(lines.last(), Some(&"done"), "{text}");
    // The config folder of this test is under /tmp, a local root here: shown read-only.
    let write = sandbox
        .git(
            &[
                "-c",
                &format!(
                    "alias.w=!echo x >> {}/buildd.toml",
                    config_dir.path().display()
                ),
                "w",
            ],
            &[],
            &[],
        )
        .await
        .unwrap();
    assert!(!write.status.success());
    assert_eq!(
        std::fs::read_to_string(config_dir.path().join("buildd.toml")).unwrap(),
        "secret = 1\n"
    );
}

#[tokio::test]
async fn a_fetch_that_hangs_is_killed_at_the_timeout() {
    // An allowed address that accepts TCP and never answers the TLS handshake.
    let silent = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let name = unique_name("silent");
    let _record = ARecord::add(&name, "127.0.0.2");
    let settings = Arc::new(FetchSettings {
        timeout: Duration::from_secs(3),
        ..settings(&[], &["127.0.0.2/32"])
    });
    let source = GitSource {
        url: format!("https://{name}:{port}/r.git"),
        ..GitSource::default()
    };
    let started = Instant::now();
    let (_dest, result, _) = run(&settings, &source).await;
    let err = result.unwrap_err();
    assert!(matches!(err, SourceError::TimedOut { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Nothing of that fetch is left running.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&name))
                    .unwrap_or(false)
            })
            .count();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} processes of the fetch left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_checkout_larger_than_the_limit_fails_and_leaves_nothing_mounted() {
    let random: String = (0..3 * 1024 * 1024 / 32)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let (repo, sha) = repo_with(&[("big.txt", &random)]);
    let small = Arc::new(FetchSettings {
        max_bytes: 1 << 20,
        ..settings(&[&std::env::temp_dir()], &[])
    });
    let source = GitSource {
        url: url_of(repo.path()),
        commit: sha,
        ..GitSource::default()
    };
    let (dest, result, _) = run(&small, &source).await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::Git { .. } | SourceError::Unreachable { .. }
        ),
        "{err:?}"
    );
    assert!(!mounted(&dest.path().join("src")));

    // The file count is bounded too: 300 files against 150 inodes.
    let files: Vec<(String, String)> = (0..300)
        .map(|i| (format!("f/{i}.txt"), format!("{i}\n")))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    let (many, sha) = repo_with(&refs);
    let few_files = Arc::new(FetchSettings {
        max_files: 150,
        ..settings(&[&std::env::temp_dir()], &[])
    });
    let source = GitSource {
        url: url_of(many.path()),
        commit: sha,
        ..GitSource::default()
    };
    let (dest, result, _) = run(&few_files, &source).await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::Git {
                step: "checkout",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!mounted(&dest.path().join("src")));
}

/// Removes a folder on drop.
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn the_demo_layout_works_a_root_under_the_hidden_platform_state() {
    // As scripts/demo: a root-owned repository under /var/lib/stackpad/platform/demo, the
    // operator root being that folder; everything else of /var/lib/stackpad stays hidden.
    let base = Path::new("/var/lib/stackpad").join(unique("buildd-test-demo"));
    let _cleanup = RemoveDir(base.clone());
    let demo = base.join("platform/demo");
    let hello = demo.join("hello");
    std::fs::create_dir_all(&hello).unwrap();
    std::fs::write(hello.join("server.js"), "1\n").unwrap();
    git(&hello, &["init", "-q", "-b", "main"]);
    git(&hello, &["add", "."]);
    git(&hello, &["commit", "-q", "-m", "hello"]);
    let sha = git(&hello, &["rev-parse", "HEAD"]);
    std::fs::write(base.join("secret"), "x").unwrap();

    let settings = shared(settings(&[&demo], &[]));
    let source = GitSource {
        url: hello.display().to_string(),
        commit: sha.clone(),
        ..GitSource::default()
    };
    let (_dest, result, _) = run(&settings, &source).await;
    let co = result.unwrap();
    assert_eq!(co.commit, sha);
    assert!(co.app_dir.join("server.js").exists());

    // The folder above the root is not a source.
    let above = GitSource {
        url: base.display().to_string(),
        ..GitSource::default()
    };
    let err = run(&settings, &above).await.1.unwrap_err();
    assert!(
        matches!(err, SourceError::LocalNotAllowed { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn submodule_urls_go_through_the_same_egress_and_file_is_off_for_https_sources() {
    // An HTTPS repository whose submodules point at a name resolving to loopback, and at a
    // local path.
    let canary = Canary::new();
    let loopback_name = unique_name("submodule");
    let (_lib, lib_sha) = repo_with(&[("lib.js", "1\n")]);
    let cases = [
        (
            format!("https://{loopback_name}:{}/lib.git", canary.port),
            "of ".to_owned() + &loopback_name + " is loopback: refused",
        ),
        (
            format!("file://{}", std::env::temp_dir().display()),
            "transport 'file' not allowed".to_owned(),
        ),
    ];
    for (url, expected) in cases {
        let (repo, _) = repo_with(&[(
            ".gitmodules",
            &format!("[submodule \"lib\"]\n\tpath = lib\n\turl = {url}\n"),
        )]);
        git(
            repo.path(),
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,{lib_sha},lib"),
            ],
        );
        git(repo.path(), &["commit", "-q", "-m", "submodule"]);
        let name = unique_name("super");
        let _record = ARecord::add(&name, "127.0.0.2");
        let ca = TestCa::new(&name);
        let server = GitServer::start(
            "127.0.0.2".parse().unwrap(),
            &ca,
            repo.path().parent().unwrap(),
            &[],
        );
        let settings = Arc::new(FetchSettings {
            ca_file: Some(ca.ca()),
            ..settings(&[], &["127.0.0.2/32"])
        });
        let source = GitSource {
            url: format!(
                "https://{name}:{}/{}",
                server.port,
                repo.path().file_name().unwrap().to_str().unwrap()
            ),
            reference: "main".into(),
            submodules: true,
            ..GitSource::default()
        };
        let err = run(&settings, &source).await.1.unwrap_err();
        assert!(err.to_string().contains(&expected), "{url}: {err}");
    }
    assert_eq!(
        canary.connections(),
        0,
        "a submodule fetch reached the listener"
    );
}

#[tokio::test]
async fn one_refused_address_refuses_the_name_even_beside_an_allowed_one() {
    let allowed = Canary::on("127.0.0.2");
    let name = unique_name("mixed");
    let _record = ARecord::add_all(&name, &["127.0.0.2", "127.0.0.1"]);
    let settings = shared(settings(&[], &["127.0.0.2/32"]));
    let source = GitSource {
        url: format!("https://{name}:{}/r.git", allowed.port),
        ..GitSource::default()
    };
    let err = run(&settings, &source).await.1.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("address 127.0.0.1 of {name} is loopback: refused")),
        "{err}"
    );
    assert_eq!(
        allowed.connections(),
        0,
        "connected to the allowed address anyway"
    );
}

#[tokio::test]
async fn a_deep_work_dir_still_fetches() {
    // The proxy's Unix socket path must stay short whatever the checkout's path is.
    let (repo, sha, _) = two_commit_repo();
    let dest = tempfile::tempdir().unwrap();
    let deep = dest
        .path()
        .join("d".repeat(120))
        .join("build-0123456789abcdef")
        .join("src");
    assert!(deep.as_os_str().len() > 108);
    let source = GitSource {
        url: url_of(repo.path()),
        commit: sha.clone(),
        ..GitSource::default()
    };
    let co = checkout(&tmp_root(), &source, &deep, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(co.commit, sha);
}
