//! Contexts from real git checkouts, with and without submodules, served over loopback HTTP.

use std::path::Path;

use super::*;
use crate::source::{GitSource, checkout};

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(["-c", "protocol.file.allow=always"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tar_names(tar: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.tar");
    std::fs::write(&path, tar).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// (library repo, app repo with the library as submodule `lib` and an app in `web/`).
fn repos() -> (tempfile::TempDir, tempfile::TempDir) {
    let lib = tempfile::tempdir().unwrap();
    std::fs::write(lib.path().join("lib.js"), "module.exports = 1;\n").unwrap();
    git(lib.path(), &["init", "-q", "-b", "main"]);
    git(lib.path(), &["add", "."]);
    git(lib.path(), &["commit", "-q", "-m", "lib"]);
    let app = tempfile::tempdir().unwrap();
    std::fs::create_dir(app.path().join("web")).unwrap();
    std::fs::write(app.path().join("web/server.js"), "1\n").unwrap();
    git(app.path(), &["init", "-q", "-b", "main"]);
    git(
        app.path(),
        &[
            "submodule",
            "add",
            "-q",
            &lib.path().display().to_string(),
            "web/lib",
        ],
    );
    git(app.path(), &["add", "."]);
    git(app.path(), &["commit", "-q", "-m", "app"]);
    (lib, app)
}

async fn context_of(app: &Path, submodules: bool) -> Vec<String> {
    let dest = tempfile::tempdir().unwrap();
    let source = GitSource {
        url: app.display().to_string(),
        subdirectory: "web".into(),
        submodules,
        ..GitSource::default()
    };
    let settings = crate::source::tests::test_settings(&[&std::env::temp_dir()]);
    let co = checkout(&settings, &source, &dest.path().join("src"), &mut |_| {})
        .await
        .unwrap();
    let spec = ArchiveSpec {
        repo: &co.repo,
        subdirectory: "web",
        generated: Some(("Dockerfile.stackpad", "FROM scratch\n")),
        submodules,
        sandbox: &co.sandbox,
    };
    let mut names = tar_names(&archive(spec, dest.path()).await.unwrap());
    names.sort();
    names
}

#[tokio::test]
async fn submodules_are_in_the_context_only_when_asked() {
    let (_lib, app) = repos();
    let with = context_of(app.path(), true).await;
    assert!(with.contains(&"lib/lib.js".to_owned()), "{with:?}");
    assert!(
        with.contains(&"server.js".to_owned()) && with.contains(&"Dockerfile.stackpad".to_owned()),
        "{with:?}"
    );
    assert!(
        !with.iter().any(|n| n.contains(".git/") || n == ".git"),
        "{with:?}"
    );
    let without = context_of(app.path(), false).await;
    assert!(!without.contains(&"lib/lib.js".to_owned()), "{without:?}");
    assert!(
        without.contains(&"server.js".to_owned())
            && without.contains(&"Dockerfile.stackpad".to_owned()),
        "{without:?}"
    );
}

#[tokio::test]
async fn served_contexts_are_fetched_by_url_and_gone_after_drop() {
    let server = ContextServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let served = server.serve(Bytes::from_static(b"tar bytes"));
    let get = |url: String| async move {
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
        s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let ok = get(served.url.clone()).await;
    assert!(
        ok.starts_with("HTTP/1.0 200") && ok.ends_with("tar bytes"),
        "{ok}"
    );
    let url = served.url.clone();
    drop(served);
    assert!(get(url).await.starts_with("HTTP/1.0 404"));
}

#[tokio::test]
async fn git_archive_runs_in_the_sandbox_not_as_root_with_the_checkouts_config() {
    // A committed `.gitattributes` naming a filter, and (as if sandboxed code had written it)
    // the checkout's `.git/config` defining that filter's command.
    let host = tempfile::tempdir().unwrap();
    let marker = host.path().join("ran-as");
    let app = tempfile::tempdir().unwrap();
    std::fs::write(app.path().join(".gitattributes"), "* filter=x\n").unwrap();
    std::fs::write(app.path().join("server.js"), "1\n").unwrap();
    std::fs::write(app.path().join("Dockerfile.stackpad"), "FROM tenant\n").unwrap();
    git(app.path(), &["init", "-q", "-b", "main"]);
    git(app.path(), &["add", "."]);
    git(app.path(), &["commit", "-q", "-m", "app"]);
    let dest = tempfile::tempdir().unwrap();
    let source = GitSource {
        url: app.path().display().to_string(),
        ..GitSource::default()
    };
    let settings = crate::source::tests::test_settings(&[&std::env::temp_dir()]);
    let co = checkout(&settings, &source, &dest.path().join("src"), &mut |_| {})
        .await
        .unwrap();
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(co.repo.join(".git/config"))
        .unwrap();
    use std::io::Write as _;
    write!(
        config,
        "[filter \"x\"]\n\tsmudge = \"id -u > {} ; cat\"\n\tclean = cat\n",
        marker.display()
    )
    .unwrap();
    drop(config);
    let spec = ArchiveSpec {
        repo: &co.repo,
        subdirectory: "",
        generated: Some(("Dockerfile.stackpad", "FROM generated\n")),
        submodules: false,
        sandbox: &co.sandbox,
    };
    let tar = archive(spec, dest.path()).await.unwrap();
    assert!(
        !marker.exists(),
        "the checkout's filter ran on the host as uid {}",
        std::fs::read_to_string(&marker).unwrap_or_default().trim()
    );
    // The generated Dockerfile is in the context, the committed one of the same name is not.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.tar"), &tar).unwrap();
    let out = std::process::Command::new("tar")
        .args(["-xOf"])
        .arg(dir.path().join("c.tar"))
        .arg("Dockerfile.stackpad")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "FROM generated\n");
    assert!(tar_names(&tar).contains(&"server.js".to_owned()));
}

/// One raw HTTP/1.0 request to `url` with extra header lines; the whole answer.
async fn request(method: &str, url: &str, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(format!("{method} /{path} HTTP/1.0\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// [`request`] in a task of its own.
fn spawn_request(method: &'static str, url: &str) -> tokio::task::JoinHandle<String> {
    let url = url.to_owned();
    tokio::spawn(async move { request(method, &url, "").await })
}

fn etag_of(answer: &str) -> String {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap_or_else(|| panic!("no etag in {answer}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn stable_urls_answer_not_modified_to_the_entity_tag_they_gave() {
    let server = ContextServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deps.tar");
    std::fs::write(&path, "first").unwrap();
    let (served, ready) = server.serve_file("deps:a", path.clone(), "deps.tar");
    ready.ready();
    let first = request("GET", &served.url, "").await;
    assert!(
        first.starts_with("HTTP/1.0 200") && first.ends_with("first"),
        "{first}"
    );
    let tag = etag_of(&first);
    // What BuildKit does before fetching a URL again: HEAD, then GET, naming the tags it holds.
    for method in ["HEAD", "GET"] {
        let again = request(method, &served.url, &format!("If-None-Match: {tag}\r\n")).await;
        assert!(again.starts_with("HTTP/1.0 304"), "{method}: {again}");
        assert_eq!(etag_of(&again), tag);
        assert!(!again.ends_with("first"), "a 304 has no body: {again}");
    }
    let other = request("GET", &served.url, "If-None-Match: \"other\"\r\n").await;
    assert!(
        other.starts_with("HTTP/1.0 200") && other.ends_with("first"),
        "{other}"
    );
    // A new file at the path (written, then renamed into place) is a new entity.
    let next = dir.path().join("next.tar");
    std::fs::write(&next, "second").unwrap();
    std::fs::rename(&next, &path).unwrap();
    let changed = request("GET", &served.url, &format!("If-None-Match: {tag}\r\n")).await;
    assert!(
        changed.starts_with("HTTP/1.0 200") && changed.ends_with("second"),
        "{changed}"
    );
    assert_ne!(etag_of(&changed), tag);

    // Bytes served at a stable URL: tagged by their digest.
    let bytes = server.serve_bytes("static", Bytes::from_static(b"binary"), "static-server");
    let tag = etag_of(&request("GET", &bytes.url, "").await);
    let again = request(
        "GET",
        &bytes.url,
        &format!("If-None-Match: W/{tag}, \"x\"\r\n"),
    )
    .await;
    assert!(again.starts_with("HTTP/1.0 304"), "{again}");
    // A one-off context has no tag.
    let once = server.serve(Bytes::from_static(b"tar bytes"));
    let answer = request("GET", &once.url, "If-None-Match: *\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 200") && !answer.contains("etag:"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_file_served_before_it_is_made_is_answered_once_it_is_ready_or_503_if_it_never_is() {
    let server = ContextServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deps.tar");
    let (served, ready) = server.serve_file("deps:made", path.clone(), "deps.tar");
    let asked = spawn_request("GET", &served.url);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!asked.is_finished(), "answered before the file was made");
    std::fs::write(&path, "fetched").unwrap();
    ready.ready();
    let answer = asked.await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") && answer.ends_with("fetched"),
        "{answer}"
    );
    // Another build of the same key later: the file is there, nothing to wait for.
    let (again, _pending) = server.serve_file("deps:made", path.clone(), "deps.tar");
    let answer = request("GET", &again.url, "").await;
    assert!(answer.ends_with("fetched"), "{answer}");

    // The fetch fails: the waiting request gets a 503, not the file of another build.
    let (failing, ready) = server.serve_file("deps:failed", path.clone(), "deps.tar");
    let asked = spawn_request("HEAD", &failing.url);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(ready);
    let answer = asked.await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 503"), "{answer}");

    // Two builds make the same file; the first fails, the second's fetch makes it.
    let (first, first_ready) = server.serve_file("deps:two", path.clone(), "deps.tar");
    let (_second, second_ready) = server.serve_file("deps:two", path.clone(), "deps.tar");
    let asked = spawn_request("GET", &first.url);
    drop(first_ready);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !asked.is_finished(),
        "answered while the second build still fetches"
    );
    second_ready.ready();
    let answer = asked.await.unwrap();
    assert!(answer.ends_with("fetched"), "{answer}");
}
