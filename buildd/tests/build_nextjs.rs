//! The generator-made Next.js app (`examples/nextjs`) built for real, with its dependencies from
//! the npm registry, run in containerd and asked for its page; then a page change built again
//! from the build cache the first build kept. About 2-3 min on 2 cores: not in the default suite
//! (`cargo test -p stackpad-buildd --features full-tests`, `scripts/test --full`).

mod common;

use common::apps::*;
use common::*;

/// BuildKit's cache mounts on `target` (dockerd's `/system/df`; their descriptions name the
/// target but not the id): id -> (times used, bytes).
fn cache_mounts(target: &str) -> std::collections::HashMap<String, (u64, u64)> {
    let out = std::process::Command::new("curl")
        .args(["-fsS", "--unix-socket"])
        .arg(docker_socket())
        .arg("http://docker/system/df")
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "GET /system/df: {out:?}");
    let df: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let prefix = format!("cached mount {target} ");
    df["BuildCache"]
        .as_array()
        .expect("BuildCache in /system/df")
        .iter()
        .filter(|c| {
            c["Type"] == "exec.cachemount"
                && c["Description"]
                    .as_str()
                    .is_some_and(|d| d.starts_with(&prefix))
        })
        .map(|c| {
            let id = c["ID"].as_str().unwrap_or_default().to_owned();
            let used = c["UsageCount"].as_u64().unwrap_or(0);
            (id, (used, c["Size"].as_u64().unwrap_or(0)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nextjs_example_builds_and_serves_its_page_and_a_page_change_builds_from_its_build_cache()
 {
    let mut d = daemon_configured(4, "session", allow_npm_registry).await;
    let before = cache_mounts("/app/.next/cache");
    let (repo, sha) = example_repo("nextjs");
    let req = d.start_request(&unique("nextjs"), repo.path(), &sha);
    let image_repo = req.image.clone();
    let started = std::time::Instant::now();
    let events = run_to_end(&mut d, req).await;
    let status = succeeded(&events);
    eprintln!(
        "nextjs clean build: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        (status.framework.as_str(), status.container_port),
        ("nextjs", 3000)
    );
    eprintln!(
        "nextjs image: {} bytes compressed",
        pushed_size(&image_repo, &status.image_digest)
    );
    {
        let port = free_port();
        let c = Container::run(&format!("{image_repo}@{}", status.image_digest), port);
        let (line, body) = http_get(port, 30).await;
        assert!(line.contains("200"), "{line}\n{body}");
        assert!(body.contains("Hello world!"), "{body}");
        assert!(body.contains("<title>Create Next App</title>"), "{body}");
        // The build cache is in no layer: the image's .next/cache is empty, if there at all.
        let cache = c
            .exec(&["sh", "-c", "ls -A /app/.next/cache 2>/dev/null | wc -l"])
            .unwrap();
        assert_eq!(cache.trim(), "0", "files in the image's .next/cache");
    }
    // ... but kept for this app's next build: Turbopack's file-system cache and the type
    // check's tsbuildinfo, in the app's own cache mount.
    // (This build's: a cache mount new or used once more since the test began.)
    let after = cache_mounts("/app/.next/cache");
    let kept: u64 = after
        .iter()
        .filter(|(id, (used, _))| before.get(*id).is_none_or(|(was, _)| used > was))
        .map(|(_, (_, bytes))| bytes)
        .sum();
    eprintln!("nextjs build cache kept: {kept} bytes");
    assert!(
        kept > 1_000_000,
        "the build cache holds {kept} bytes: {after:?}"
    );
    let id = format!(
        "stackpad-build-{}-.next-cache",
        buildd::dockerfile::cache_key(&image_repo)
    );

    // A page change: the install is cached, the build runs with the cache the first one left,
    // and the new text is served.
    let nonce = unique("changed");
    let page = std::fs::read_to_string(repo.path().join("app/page.tsx")).unwrap();
    let started = std::time::Instant::now();
    let events2 = rebuild(
        &mut d,
        repo.path(),
        &image_repo,
        "app/page.tsx",
        &page.replace("Hello world!", &nonce),
    )
    .await;
    let status2 = succeeded(&events2);
    eprintln!("nextjs warm build: {:.1}s", started.elapsed().as_secs_f64());
    let all = steps(&events2);
    assert_eq!(
        cached_steps(&events2, "npm ci --offline"),
        [true],
        "{all:#?}"
    );
    assert_eq!(
        cached_steps(&events2, &format!("id={id},")),
        [false],
        "{all:#?}"
    );
    let port = free_port();
    let _c = Container::run(&format!("{image_repo}@{}", status2.image_digest), port);
    let (line, body) = http_get(port, 30).await;
    assert!(line.contains("200"), "{line}\n{body}");
    assert!(body.contains(&nonce), "{body}");
}
