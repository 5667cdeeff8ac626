//! `stackpad tokens`, `members`, `services show|set|delete --purge`, `scale`, `init` and `up`
//! against a real control plane on 127.0.0.1:0 and PostgreSQL (pipeline behind recording fakes
//! of the daemons); `init` and `up` in a real git repository pushed to a bare one of the
//! test's own.

#[path = "../../control/tests/common/mod.rs"]
mod common;
mod runner;

use std::path::Path;

use cli::exit;
use common::{Harness, fake_clients, fakes::Fakes};
use runner::{json_of, ok, stackpad};

/// A control plane with one organization logged in; (harness, fakes, login file, its dir).
async fn logged_in(
    org: &str,
) -> anyhow::Result<(Harness, Fakes, std::path::PathBuf, tempfile::TempDir)> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, token) = h.org(org).await;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cli.json");
    ok(&config, &["login", "--url", &h.url, "--token", &token]).await;
    Ok((h, fakes, config, dir))
}

#[tokio::test]
async fn tokens_and_members_are_listed_created_and_removed_by_name() -> anyhow::Result<()> {
    let (h, _fakes, config, _dir) = logged_in("access-org").await?;
    let c = config.as_path();
    let created = json_of(
        c,
        &[
            "tokens",
            "create",
            "--name",
            "ci",
            "--role",
            "deployer",
            "--expires",
            &(chrono::Utc::now() + chrono::TimeDelta::days(7)).to_rfc3339(),
        ],
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    let out = ok(c, &["tokens", "list"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("initial") && lines[0].contains("owner"),
        "{out}"
    );
    assert!(
        lines[1].contains("ci") && lines[1].contains("deployer") && lines[1].contains("never used"),
        "{out}"
    );
    assert!(!out.contains(&secret), "no secret in the list: {out}");
    let listed = json_of(c, &["tokens", "list"]).await;
    assert_eq!(listed[1]["name"], "ci", "{listed}");
    assert!(listed[1].get("secret").is_none(), "{listed}");

    // Revoking asks unless --yes; a wrong name gets the close match.
    let (code, out) = stackpad(c, &["tokens", "revoke", "ci"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(out.contains("pass --yes"), "{out}");
    let (code, out) = stackpad(c, &["tokens", "revoke", "cj", "--yes"]).await;
    assert_eq!(code, exit::NOT_FOUND, "{out}");
    assert!(out.contains("did you mean ci?"), "{out}");
    let out = ok(c, &["tokens", "revoke", "ci", "--yes"]).await;
    assert!(out.contains("revoked"), "{out}");
    let temporary = json_of(
        c,
        &["tokens", "create", "--name", "tmp", "--role", "read_only"],
    )
    .await;
    let revoked = json_of(c, &["tokens", "revoke", "tmp", "--yes"]).await;
    assert_eq!(revoked["revoked"]["name"], "tmp", "{revoked}");
    assert_eq!(
        revoked["revoked"]["id"], temporary["token"]["id"],
        "{revoked}"
    );
    assert_eq!(
        json_of(c, &["tokens", "list"])
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, _) = h.call("GET", "/organization", &secret, None).await;
    assert_eq!(status, 401, "a revoked token stops working");

    // Members by email.
    let out = ok(c, &["members", "list"]).await;
    assert_eq!(out.trim(), "no members");
    let added = json_of(
        c,
        &["members", "add", "ada@shop.example", "--role", "developer"],
    )
    .await;
    assert_eq!(added["role"], "developer", "{added}");
    let (code, out) = stackpad(c, &["members", "add", "bob@shop.example", "--role", "king"]).await;
    assert_eq!(code, exit::REFUSED, "{out}");
    assert!(
        out.contains("role: must be"),
        "the API's message with its field: {out}"
    );
    let out = ok(c, &["members", "list"]).await;
    assert!(
        out.contains("ada@shop.example") && out.contains("developer"),
        "{out}"
    );
    let (code, out) = stackpad(c, &["members", "remove", "ada@shop.example"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    let removed = json_of(c, &["members", "remove", "ada@shop.example", "--yes"]).await;
    assert_eq!(removed["removed"]["email"], "ada@shop.example", "{removed}");
    assert_eq!(
        json_of(c, &["members", "list"]).await,
        serde_json::json!([])
    );
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn services_are_shown_set_and_scaled_and_refusals_name_the_flag() -> anyhow::Result<()> {
    let (h, fakes, config, dir) = logged_in("settings-org").await?;
    let c = config.as_path();
    ok(c, &["projects", "create", "shop"]).await;
    let worker = json_of(
        c,
        &[
            "services",
            "create",
            "--project",
            "shop",
            "--name",
            "jobs",
            "--kind",
            "worker",
            "--image",
            "jobs:v1",
            "--cpu",
            "250m",
            "--memory",
            "128Mi",
            "--volume",
            "data:/data:64Mi",
        ],
    )
    .await;
    assert_eq!(worker["kind"], "worker", "{worker}");
    assert_eq!(worker["resources"]["cpu_millis"], 250, "{worker}");
    assert_eq!(worker["volumes"][0]["size_bytes"], 64 << 20, "{worker}");
    let out = ok(c, &["services", "show", "--service", "shop/jobs"]).await;
    for want in [
        "service shop/production/jobs",
        "kind          worker",
        "source        jobs:v1",
        "cpu 250m, memory 128Mi",
        "volume        data at /data (64Mi)",
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }
    // A volume keeps a service on one replica: the API's refusal, with the flag.
    let (code, out) = stackpad(c, &["scale", "2", "--service", "shop/jobs"]).await;
    assert_eq!(code, exit::REFUSED, "{out}");
    assert!(
        out.contains("replicas:") && out.contains("(--replicas)"),
        "{out}"
    );

    ok(
        c,
        &[
            "services",
            "create",
            "--project",
            "shop",
            "--name",
            "web",
            "--image",
            "shop:v1",
            "--health-path",
            "/healthz",
        ],
    )
    .await;
    let linked = dir.path().join("app");
    std::fs::create_dir(&linked)?;
    let l = linked.to_str().unwrap();
    ok(c, &["-C", l, "link", "--service", "shop/web"]).await;
    let (code, out) = stackpad(c, &["-C", l, "services", "set"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    let set = json_of(
        c,
        &[
            "-C",
            l,
            "services",
            "set",
            "--cpu",
            "0.5",
            "--memory",
            "512Mi",
            "--health-deadline-ms",
            "60000",
        ],
    )
    .await;
    assert_eq!(set["resources"]["cpu_millis"], 500, "{set}");
    assert_eq!(set["resources"]["memory_bytes"], 512u64 << 20, "{set}");
    assert_eq!(
        set["health_check"]["path"], "/healthz",
        "the path given at create is kept: {set}"
    );
    assert_eq!(set["health_check"]["deadline_ms"], 60000, "{set}");
    let (code, out) = stackpad(c, &["-C", l, "services", "set", "--cpu", "0.001"]).await;
    assert_eq!(code, exit::REFUSED, "{out}");
    assert!(
        out.contains("resources.cpu_millis") && out.contains("(--cpu)"),
        "{out}"
    );
    let (code, out) = stackpad(c, &["-C", l, "services", "set", "--memory", "lots"]).await;
    assert_eq!(code, exit::USAGE, "{out}");

    // Not deployed yet: the count is stored for the first deployment.
    let out = ok(c, &["-C", l, "scale", "3"]).await;
    assert!(
        out.contains("scaled to 3") && out.contains("next one starts"),
        "{out}"
    );
    let out = ok(c, &["-C", l, "deploy"]).await;
    assert!(out.contains("is ready"), "{out}");
    // Deployed: the running version is deployed again with the new count, followed.
    let out = ok(c, &["-C", l, "scale", "2"]).await;
    assert!(
        out.contains("queued with 2 replicas") && out.contains("is ready"),
        "{out}"
    );
    let shown = json_of(c, &["-C", l, "services", "show"]).await;
    assert_eq!(shown["replicas"], 2, "{shown}");
    // With --json: the deployment with the count as it ended (3, then back to 2).
    for count in ["3", "2"] {
        let scaled = json_of(c, &["-C", l, "scale", count]).await;
        assert_eq!(scaled["state"], "ready", "{scaled}");
        let shown = json_of(c, &["-C", l, "services", "show"]).await;
        assert_eq!(shown["replicas"].to_string(), count, "{shown}");
    }
    let (code, out) = stackpad(c, &["-C", l, "scale", "0"]).await;
    assert_eq!(code, exit::REFUSED, "{out}");

    // Volumes after create: two replicas cannot share one (the API says to send one replica).
    let (code, out) = stackpad(
        c,
        &["-C", l, "services", "set", "--volume", "/var/lib/data:16Mi"],
    )
    .await;
    assert_eq!(code, exit::REFUSED, "{out}");
    assert!(
        out.contains("replicas: 1") && out.contains("(--volume)"),
        "{out}"
    );
    let set = json_of(
        c,
        &[
            "-C",
            l,
            "services",
            "set",
            "--volume",
            "/var/lib/data:16Mi",
            "--replicas",
            "1",
        ],
    )
    .await;
    assert_eq!(set["replicas"], 1, "{set}");
    assert_eq!(
        set["volumes"][0]["name"], "data",
        "named after its path: {set}"
    );
    assert!(
        set["note"].as_str().unwrap().contains("next deployment"),
        "{set}"
    );
    let out = ok(
        c,
        &["-C", l, "services", "set", "--volume", "cache:/cache:16Mi"],
    )
    .await;
    for want in [
        "volume        data at /var/lib/data (16Mi)",
        "volume        cache at /cache (16Mi)",
        "note: volumes change at the next deployment",
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }
    // Removing one deletes its data: only with --purge; an unknown one lists those there are.
    let (code, out) = stackpad(
        c,
        &["-C", l, "services", "set", "--remove-volume", "/cache"],
    )
    .await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(out.contains("add --purge"), "{out}");
    let (code, out) = stackpad(
        c,
        &[
            "-C",
            l,
            "services",
            "set",
            "--remove-volume",
            "/nope",
            "--purge",
        ],
    )
    .await;
    assert_eq!(code, exit::NOT_FOUND, "{out}");
    assert!(
        out.contains("/var/lib/data") && out.contains("/cache"),
        "{out}"
    );
    let set = json_of(
        c,
        &[
            "-C",
            l,
            "services",
            "set",
            "--remove-volume",
            "/cache",
            "--purge",
        ],
    )
    .await;
    let paths: Vec<&str> = set["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["mount_path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/var/lib/data"], "{set}");
    // The kind is what the service is: the refusal says what to do instead, with the flag.
    let (code, out) = stackpad(c, &["-C", l, "services", "set", "--kind", "worker"]).await;
    assert_eq!(code, exit::REFUSED, "{out}");
    assert!(
        out.contains("fixed at create")
            && out.contains("stackpad backups restore --into")
            && out.contains("(--kind)"),
        "{out}"
    );

    // Deleting with --purge asks first, naming what goes, then its volumes go now: the node
    // was asked to remove them and no deletion waits for the grace period.
    let (code, out) = stackpad(c, &["-C", l, "services", "delete", "--purge"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(
        out.contains("volumes' data and backups") && out.contains("pass --yes"),
        "{out}"
    );
    let id = set["id"].as_str().unwrap().to_owned();
    let out = ok(c, &["-C", l, "services", "delete", "--purge", "--yes"]).await;
    assert!(
        out.contains("deleted service shop/production/web")
            && out.contains("deleted now (--purge)"),
        "{out}"
    );
    assert!(
        fakes
            .calls()
            .iter()
            .any(|call| matches!(call, common::fakes::Call::RemoveVolumes { service, .. } if *service == id)),
        "{:?}",
        fakes.calls()
    );
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM volume_deletions WHERE service_id = $1::uuid")
            .bind(&id)
            .fetch_one(&h.store().pool)
            .await?;
    assert_eq!(
        waiting, 0,
        "the purged volumes still wait for the grace period"
    );
    h.stop().await;
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git runs (the tests need git installed)");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn init_detects_creates_and_links_and_up_deploys_head() -> anyhow::Result<()> {
    // The harness lets org-a build from local repositories (file://).
    let (h, fakes, config, dir) = logged_in("org-a").await?;
    h.register_node("b1", "build", "http://127.0.0.1:9").await;
    let c = config.as_path();
    // A repository with an Express app in apps/api, pushed to a bare repository.
    let repo = dir.path().join("shop");
    let app = repo.join("apps/api");
    std::fs::create_dir_all(&app)?;
    std::fs::write(
        app.join("package.json"),
        r#"{ "name": "api", "dependencies": { "express": "^4.19.2" }, "scripts": { "start": "node server.js" } }"#,
    )?;
    std::fs::write(app.join("server.js"), "require('express')().listen(3000)\n")?;
    let bare = dir.path().join("shop.git");
    git(
        dir.path(),
        &["init", "--quiet", "--bare", bare.to_str().unwrap()],
    );
    git(&repo, &["init", "--quiet", "--initial-branch", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "api"]);
    let url = format!("file://{}", bare.display());
    git(&repo, &["remote", "add", "origin", &url]);
    git(&repo, &["push", "--quiet", "origin", "main"]);
    let a = app.to_str().unwrap();

    // Detection only: nothing created.
    let out = ok(c, &["-C", a, "init", "--dry-run"]).await;
    assert!(
        out.contains("detected express") && out.contains("installs with npm"),
        "{out}"
    );
    assert!(out.contains("would create service api building"), "{out}");
    assert!(!app.join(".stackpad.json").exists());
    let (code, out) = stackpad(c, &["-C", a, "init", "--project", "shop"]).await;
    assert_eq!(
        code,
        exit::NOT_FOUND,
        "no such project without --create-project: {out}"
    );

    let out = ok(
        c,
        &["-C", a, "init", "--project", "shop", "--create-project"],
    )
    .await;
    for want in [
        "detected express",
        "starts with `node server.js`",
        "created project shop",
        "created service shop/production/api building",
        "(apps/api)",
        "linked ",
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }
    let shown = json_of(c, &["-C", a, "services", "show"]).await;
    assert_eq!(shown["git_url"], url.as_str(), "{shown}");
    assert_eq!(shown["git_subdirectory"], "apps/api", "{shown}");
    // A directory that is not an app is refused with buildd's own reason.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty)?;
    let (code, out) = stackpad(c, &["-C", empty.to_str().unwrap(), "init"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(out.contains("cannot detect how to build"), "{out}");

    // `up` deploys HEAD of its branch and follows it to the URL.
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let out = ok(c, &["-C", a, "up"]).await;
    assert!(
        out.contains(&format!(
            "deploying {} of main to shop/production/api",
            &head[..12]
        )),
        "{out}"
    );
    assert!(
        out.contains("is ready") && out.contains("https://api-shop-"),
        "{out}"
    );
    let deployments = json_of(c, &["-C", a, "deployments"]).await;
    assert_eq!(deployments[0]["git_commit"], head.as_str(), "{deployments}");
    assert_eq!(deployments[0]["git_ref"], "main", "{deployments}");
    assert!(
        fakes
            .calls()
            .iter()
            .any(|c| matches!(c, common::fakes::Call::Build { repo, .. } if *repo == url)),
        "the build fetched the repository"
    );
    // An image service is not deployed by `up`.
    ok(
        c,
        &[
            "services",
            "create",
            "--project",
            "shop",
            "--name",
            "img",
            "--image",
            "x:1",
        ],
    )
    .await;
    let (code, out) = stackpad(c, &["-C", a, "up", "--service", "shop/img"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(out.contains("runs an image"), "{out}");
    h.stop().await;
    Ok(())
}
