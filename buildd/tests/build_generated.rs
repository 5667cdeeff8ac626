//! Real builds of apps made by the frameworks' own generators (`examples/`), with their
//! dependencies from the npm registry: fetched in the fetch sandbox (whose only way out is an
//! egress proxy serving the registry's host), installed offline by BuildKit (`RUN` steps keep
//! network `none`), run in containerd and asked for their pages. Also how a build with bad
//! dependencies or scripts fails.

mod common;

use common::apps::*;
use common::*;
use proto::build::v1 as pb;

/// GET `path` on 127.0.0.1:`port` (the app answers already); returns (status line, body).
async fn get(port: u16, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn dependency_log(events: &[pb::build_event::Event]) -> Vec<String> {
    log_lines(events)
        .into_iter()
        .filter(|l| l.step == "dependencies")
        .map(|l| l.line)
        .collect()
}

/// The script the page loads (`/assets/index-<hash>.js`).
fn script_of(index: &str) -> String {
    let start = index
        .find("src=\"/assets/")
        .expect("a script in index.html")
        + 5;
    let end = start + index[start..].find('"').unwrap();
    index[start..end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vite_example_builds_with_registry_dependencies_and_serves_its_app_and_a_rebuild_downloads_nothing()
 {
    let mut d = daemon_configured(4, "session", allow_npm_registry).await;
    let (repo, sha) = example_repo("vite-react");
    let req = d.start_request(&unique("vite"), repo.path(), &sha);
    let image_repo = req.image.clone();
    let events = run_to_end(&mut d, req).await;
    let status = succeeded(&events);
    assert_eq!(
        (status.framework.as_str(), status.container_port),
        ("vite", 8080)
    );
    let deps = dependency_log(&events);
    assert!(deps.iter().any(|l| l.starts_with("fetching ")), "{deps:#?}");

    let size = pushed_size(&image_repo, &status.image_digest);
    eprintln!("vite image: {size} bytes compressed");
    let port = free_port();
    {
        let _c = Container::run(&format!("{image_repo}@{}", status.image_digest), port);
        let (line, index) = http_get(port, 20).await;
        assert!(line.contains("200"), "{line}");
        assert!(index.contains("<title>vite-react</title>"), "{index}");
        assert!(index.contains("<div id=\"root\"></div>"), "{index}");
        // The app's own code, built by Vite from the generator's App.tsx.
        let (line, js) = get(port, &script_of(&index)).await;
        assert!(line.contains("200"), "{line}");
        assert!(
            js.contains("Get started"),
            "the bundle holds the page's text"
        );
        // A client-side route gets the app (SPA fallback); a missing asset is a 404.
        let (line, deep) = get(port, "/some/client/route").await;
        assert!(line.contains("200") && deep == index, "{line}");
        let (line, _) = get(port, "/assets/missing-file.js").await;
        assert!(line.contains("404"), "{line}");
    }

    // A source change: the lock file is the same, so nothing is downloaded and the install
    // step comes from BuildKit's cache; the new text is served.
    let nonce = unique("changed");
    let app = std::fs::read_to_string(repo.path().join("src/App.tsx")).unwrap();
    let events2 = rebuild(
        &mut d,
        repo.path(),
        &image_repo,
        "src/App.tsx",
        &app.replace("Get started", &nonce),
    )
    .await;
    let status2 = succeeded(&events2);
    let deps2 = dependency_log(&events2);
    assert!(
        deps2.iter().any(|l| l.contains("nothing downloaded")),
        "{deps2:#?}"
    );
    let install = cached_steps(&events2, "npm ci --offline");
    assert!(
        !install.is_empty() && install.iter().all(|c| *c),
        "install step not cached: {:#?}",
        steps(&events2)
    );
    let port2 = free_port();
    let _c = Container::run(&format!("{image_repo}@{}", status2.image_digest), port2);
    let (_, index) = http_get(port2, 20).await;
    let (_, js) = get(port2, &script_of(&index)).await;
    assert!(js.contains(&nonce), "the changed text is served");
}

/// The failure reason and the log of a build that must fail.
async fn failed(d: &mut TestDaemon, files: &[(&str, &str)]) -> (String, Vec<pb::LogLine>) {
    let (repo, sha) = repo_with(files);
    let req = d.start_request(&unique("bad"), repo.path(), &sha);
    let events = run_to_end(d, req).await;
    let status = final_status(&events);
    assert_eq!(
        status.state(),
        pb::BuildState::Failed,
        "{status:?}\n{:#?}",
        log_lines(&events)
    );
    (status.failure_reason, log_lines(&events))
}

const MS_LOCK: &str = r#"{
  "name": "app", "lockfileVersion": 3, "requires": true,
  "packages": {
    "": {"name": "app", "dependencies": {"ms": "2.1.3"}},
    "node_modules/ms": {"version": "2.1.3", "resolved": "RESOLVED", "integrity": "sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlg=="}
  }
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_dependencies_and_scripts_fail_naming_the_cause() {
    let mut d = daemon_configured(4, "session", allow_npm_registry).await;
    let server = "require('http').createServer((q, s) => s.end('hi')).listen(process.env.PORT);\n";

    // package.json and the lock file disagree.
    let (reason, _) = failed(
        &mut d,
        &[
            (
                "package.json",
                r#"{"name": "app", "scripts": {"start": "node server.js"}, "dependencies": {"ms": "2.1.3", "left-pad": "1.3.0"}}"#,
            ),
            (
                "package-lock.json",
                &MS_LOCK.replace("RESOLVED", "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz"),
            ),
            ("server.js", server),
        ],
    )
    .await;
    assert!(
        reason.contains("lock file mismatch") && reason.contains("left-pad@1.3.0"),
        "{reason}"
    );

    // A package from somewhere else than the registry (here: the platform's PostgreSQL port).
    let (reason, _) = failed(
        &mut d,
        &[
            (
                "package.json",
                r#"{"name": "app", "scripts": {"start": "node server.js"}, "dependencies": {"ms": "2.1.3"}}"#,
            ),
            (
                "package-lock.json",
                &MS_LOCK.replace("RESOLVED", "http://127.0.0.1:5432/ms.tgz"),
            ),
            ("server.js", server),
        ],
    )
    .await;
    assert!(
        reason.contains("ms comes from http://127.0.0.1:5432/ms.tgz")
            && reason.contains("not the package registry"),
        "{reason}"
    );

    // The build script fails: its own output is in the log, the failure names the step.
    let (reason, logs) = failed(
        &mut d,
        &[
            (
                "package.json",
                r#"{"name": "app", "scripts": {"build": "node -e \"console.error('the build broke: missing config'); process.exit(3)\"", "start": "node server.js"}}"#,
            ),
            ("server.js", server),
        ],
    )
    .await;
    assert!(
        reason.contains("the app's build script failed (`npm run build`")
            && reason.contains("RUN npm run build")
            && reason.contains("exit code: 3"),
        "{reason}"
    );
    // What the script printed on its stderr is kept as such.
    assert!(
        logs.iter()
            .any(|l| l.line.contains("the build broke: missing config")
                && l.stream() == pb::LogStream::Stderr),
        "{logs:#?}"
    );

    // A Node the platform does not build with.
    let (reason, _) = failed(
        &mut d,
        &[
            (
                "package.json",
                r#"{"name": "app", "engines": {"node": "^18.17"}, "scripts": {"start": "node server.js"}}"#,
            ),
            ("server.js", server),
        ],
    )
    .await;
    assert!(
        reason.contains("asks for Node.js \"^18.17\" (engines.node)")
            && reason.contains("builds with Node.js 20, 22 or 24"),
        "{reason}"
    );

    // An app of an npm workspace (monorepo) whose lock file is the workspace's, at the root.
    let (repo, sha) = repo_with(&[
        (
            "package.json",
            r#"{"name": "monorepo", "private": true, "workspaces": ["apps/*"]}"#,
        ),
        (
            "package-lock.json",
            &MS_LOCK.replace("RESOLVED", "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz"),
        ),
        (
            "apps/web/package.json",
            r#"{"name": "web", "scripts": {"start": "node server.js"}, "dependencies": {"ms": "2.1.3"}}"#,
        ),
        ("apps/web/server.js", server),
    ]);
    let mut req = d.start_request(&unique("bad"), repo.path(), &sha);
    if let Some(source) = req.source.as_mut() {
        source.subdirectory = "apps/web".into();
    }
    let status = final_status(&run_to_end(&mut d, req).await);
    assert_eq!(status.state(), pb::BuildState::Failed, "{status:?}");
    assert!(
        status
            .failure_reason
            .contains("the app in apps/web is a member of a workspace (monorepo)")
            && status
                .failure_reason
                .contains("the workspace's package-lock.json"),
        "{}",
        status.failure_reason
    );

    // Nothing says how to start the app.
    let (reason, _) = failed(
        &mut d,
        &[(
            "package.json",
            r#"{"name": "app", "scripts": {"build": "node -e 1"}}"#,
        )],
    )
    .await;
    assert!(
        reason.contains("cannot detect how to start") && reason.contains("no \"start\" script"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_registry_in_the_egress_policy_the_fetch_is_refused_with_the_reason() {
    // The default policy: public unicast only. Where the registry's address is special (as on
    // this test machine) the fetch is refused and says which address of which host; where it
    // is public, the fetch succeeds. Either way nothing but the registry is asked.
    let mut d = daemon_configured(4, "session", |_| {}).await;
    let public = registry_is_public();
    let (repo, sha) = repo_with(&[
        (
            "package.json",
            r#"{"name": "app", "scripts": {"start": "node server.js"}, "dependencies": {"ms": "2.1.3"}}"#,
        ),
        (
            "package-lock.json",
            &MS_LOCK.replace("RESOLVED", "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz"),
        ),
        (
            "server.js",
            "require('http').createServer((q, s) => s.end(require('ms')(60000))).listen(process.env.PORT);\n",
        ),
    ]);
    let req = d.start_request(&unique("refused"), repo.path(), &sha);
    let events = run_to_end(&mut d, req).await;
    let status = final_status(&events);
    if public {
        assert_eq!(status.state(), pb::BuildState::Succeeded, "{status:?}");
    } else {
        assert_eq!(status.state(), pb::BuildState::Failed, "{status:?}");
        assert!(
            status.failure_reason.contains("of registry.npmjs.org is")
                && status.failure_reason.contains("refused"),
            "{}",
            status.failure_reason
        );
        // The solve starts beside the fetch; the build still ends with the fetch's own error
        // and lines, not with BuildKit's failed request for the tarball it never got.
        assert!(
            status.failure_reason.contains(": dependencies: ")
                && !status.failure_reason.contains("503"),
            "{}",
            status.failure_reason
        );
        let fetch_log = dependency_log(&events);
        assert!(
            fetch_log.iter().any(|l| l.contains("in the fetch sandbox")),
            "{fetch_log:#?}"
        );
    }
}

/// Whether every address of the registry is public unicast (what the default policy allows).
fn registry_is_public() -> bool {
    use std::net::ToSocketAddrs as _;
    let addrs: Vec<_> = ("registry.npmjs.org", 443)
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default();
    !addrs.is_empty()
        && addrs
            .iter()
            .all(|a| tenant::address::special(a.ip()).is_none())
}

/// Builds `examples/<name>` (a pnpm or yarn app), runs it and returns (repo, image repository,
/// status, body of `/`).
async fn build_and_get(
    d: &mut TestDaemon,
    name: &str,
) -> (tempfile::TempDir, String, pb::BuildStatus, String) {
    let (repo, sha) = example_repo(name);
    let req = d.start_request(&unique(name), repo.path(), &sha);
    let image_repo = req.image.clone();
    let events = run_to_end(d, req).await;
    let status = succeeded(&events);
    let deps = dependency_log(&events);
    eprintln!("{name}: {deps:#?}");
    let port = free_port();
    let _c = Container::run(&format!("{image_repo}@{}", status.image_digest), port);
    let (line, body) = http_get(port, 20).await;
    assert!(line.contains("200"), "{line}");
    (repo, image_repo, status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pnpm_and_yarn_apps_install_with_their_pinned_manager_offline_and_a_rebuild_downloads_nothing()
 {
    let mut d = daemon_configured(4, "session", allow_npm_registry).await;

    // pnpm (packageManager pnpm@10.34.9): fastify, and esbuild as a dev dependency for the
    // build script.
    let (repo, image_repo, status, body) = build_and_get(&mut d, "pnpm-fastify").await;
    assert_eq!(
        (status.framework.as_str(), status.container_port),
        ("fastify", 3000)
    );
    assert_eq!(body, "hello from fastify, installed by pnpm");

    // A source change: the lock file is the same, so nothing is downloaded and pnpm's install
    // step comes from BuildKit's cache.
    let nonce = unique("changed");
    let events2 = rebuild(
        &mut d,
        repo.path(),
        &image_repo,
        "src/greeting.ts",
        &format!("export const greeting = (m: string): string => `{nonce} ${{m}}`;\n"),
    )
    .await;
    let status2 = succeeded(&events2);
    let deps2 = dependency_log(&events2);
    assert!(
        deps2.iter().any(|l| l.contains("nothing downloaded")),
        "{deps2:#?}"
    );
    let install = cached_steps(&events2, "pnpm install --frozen-lockfile --offline");
    assert!(
        !install.is_empty() && install.iter().all(|c| *c),
        "install step not cached: {:#?}",
        steps(&events2)
    );
    let port = free_port();
    {
        let _c = Container::run(&format!("{image_repo}@{}", status2.image_digest), port);
        let (_, body) = http_get(port, 20).await;
        assert_eq!(body, format!("{nonce} pnpm"));
    }

    // yarn 1 (packageManager yarn@1.22.22): its lock file names registry.yarnpkg.com; the
    // fetch asks the npm registry for the same packages.
    let (_repo, _, status, body) = build_and_get(&mut d, "yarn-express").await;
    assert_eq!(status.framework, "express");
    assert_eq!(body, "hello from express, installed by yarn");

    // package.json asks for what the lock file does not have: pnpm's frozen install fails in
    // the fetch sandbox, and the build says so.
    let pkg = std::fs::read_to_string(repo.path().join("package.json")).unwrap();
    let sha3 = commit_change(
        repo.path(),
        "package.json",
        &pkg.replace("\"fastify\": \"5.12.8\"", "\"fastify\": \"5.12.7\""),
    );
    let req3 = d.start_request(&unique("pnpm-bad"), repo.path(), &sha3);
    let events3 = run_to_end(&mut d, req3).await;
    let status3 = final_status(&events3);
    assert_eq!(status3.state(), pb::BuildState::Failed, "{status3:?}");
    assert!(
        status3.failure_reason.contains("lock file mismatch")
            && status3.failure_reason.contains("pnpm-lock.yaml"),
        "{}",
        status3.failure_reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_asking_for_node_22_builds_and_runs_on_the_node_22_image() {
    let mut d = daemon(4).await;
    let (repo, sha) = repo_with(&[
        (
            "package.json",
            r#"{"name": "app", "engines": {"node": "22.x"}, "scripts": {"start": "node server.js"}}"#,
        ),
        (
            "server.js",
            "require('http').createServer((q, s) => s.end(process.version)).listen(process.env.PORT);\n",
        ),
    ]);
    let req = d.start_request(&unique("node22"), repo.path(), &sha);
    let image_repo = req.image.clone();
    let events = run_to_end(&mut d, req).await;
    let status = succeeded(&events);
    let logs = log_lines(&events);
    assert!(
        logs.iter()
            .any(|l| l.step == "detect" && l.line == "node 22 (engines.node asks for \"22.x\")"),
        "{logs:#?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.step == "dockerfile" && l.line.ends_with("/stackpad/node:22 AS deps")),
        "{logs:#?}"
    );
    let port = free_port();
    let _c = Container::run(&format!("{image_repo}@{}", status.image_digest), port);
    let (line, body) = http_get(port, 20).await;
    assert!(line.contains("200"), "{line}");
    assert!(body.starts_with("v22."), "{body}");
}
