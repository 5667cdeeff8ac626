//! `stackpad` by names against a real control plane on 127.0.0.1:0 (pipeline behind recording
//! fakes of the daemons): names and ids address the same service, unknown and ambiguous names
//! are answered with the close matches, a linked directory needs no flags, `--json` prints the
//! API's objects, and each failure class has its exit code (in-process and from the binary).

#[path = "../../control/tests/common/mod.rs"]
mod common;
mod runner;

use cli::exit;
use common::{Harness, fake_clients, fakes::Fakes};
use runner::{json_with, ok, stackpad};
use serde_json::Value;

/// A control plane with one organization logged in; returns (harness, login file, its dir).
async fn logged_in(org: &str) -> anyhow::Result<(Harness, std::path::PathBuf, tempfile::TempDir)> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, token) = h.org(org).await;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cli.json");
    let (code, out) = stackpad(&config, &["login", "--url", &h.url, "--token", &token]).await;
    assert_eq!(code, 0, "{out}");
    Ok((h, config, dir))
}

#[tokio::test]
async fn names_and_ids_address_the_same_service_and_wrong_names_get_close_matches()
-> anyhow::Result<()> {
    let (h, config, _dir) = logged_in("names-org").await?;
    let c = config.as_path();
    ok(c, &["projects", "create", "shop"]).await;
    ok(c, &["projects", "create", "blog"]).await;
    ok(
        c,
        &[
            "environments",
            "create",
            "staging",
            "--branch",
            "develop",
            "--project",
            "shop",
        ],
    )
    .await;
    let web = json_with(
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
        ],
        0,
    )
    .await;
    let web_id = web["id"].as_str().unwrap().to_owned();
    ok(
        c,
        &[
            "services",
            "create",
            "--project",
            "shop",
            "--environment",
            "staging",
            "--name",
            "web",
            "--image",
            "shop:v1",
        ],
    )
    .await;
    ok(
        c,
        &[
            "services",
            "create",
            "--project",
            "blog",
            "--name",
            "web",
            "--image",
            "blog:v1",
        ],
    )
    .await;
    ok(
        c,
        &[
            "services",
            "create",
            "--project",
            "blog",
            "--name",
            "worker",
            "--image",
            "w:1",
        ],
    )
    .await;

    // Deployed by path, listed by id and by flags: the same deployment.
    let out = ok(c, &["deploy", "--service", "shop/production/web"]).await;
    assert!(
        out.contains("of shop/production/web queued") && out.contains("is ready"),
        "{out}"
    );
    let by_id = ok(c, &["deployments", "--service", &web_id]).await;
    let by_flags = ok(
        c,
        &[
            "deployments",
            "--project",
            "shop",
            "--environment",
            "production",
            "--service",
            "web",
        ],
    )
    .await;
    let by_env_path = ok(
        c,
        &[
            "deployments",
            "--service",
            "shop/web",
            "--environment",
            "production",
        ],
    )
    .await;
    assert_eq!(by_id.lines().count(), 1, "{by_id}");
    assert_eq!(by_id, by_flags);
    assert_eq!(by_id, by_env_path);
    // A name unique across projects needs no project.
    ok(c, &["deployments", "--service", "worker"]).await;
    // Projects by id too.
    let projects = json_with(c, &["projects", "list"], 0).await;
    let shop_id = projects
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "shop")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = json_with(c, &["services", "list", "--project", &shop_id], 0).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let staging = json_with(
        c,
        &[
            "services",
            "list",
            "--project",
            "shop",
            "--environment",
            "staging",
        ],
        0,
    )
    .await;
    assert_eq!(staging.as_array().unwrap().len(), 1, "{staging}");

    // Ambiguous: every candidate named as a path, exit 2.
    let (code, out) = stackpad(c, &["deployments", "--service", "web"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    for path in [
        "shop/production/web",
        "shop/staging/web",
        "blog/production/web",
    ] {
        assert!(out.contains(path), "{path} offered: {out}");
    }
    let (code, out) = stackpad(c, &["deployments", "--service", "shop/web"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(
        out.contains("shop/production/web, shop/staging/web") && !out.contains("blog"),
        "{out}"
    );
    // Unknown: close matches, exit 4, never a parser's message.
    let (code, out) = stackpad(c, &["deployments", "--service", "blog/wbe"]).await;
    assert_eq!(code, exit::NOT_FOUND, "{out}");
    assert!(
        out.contains("no service named \"blog/wbe\"; did you mean web?"),
        "{out}"
    );
    let (code, out) = stackpad(c, &["deployments", "--service", "shpo/web"]).await;
    assert_eq!(code, exit::NOT_FOUND, "{out}");
    assert!(
        out.contains("no project named \"shpo\"; did you mean shop?"),
        "{out}"
    );
    let (code, out) = stackpad(c, &["deployments", "--service", "shop/prod/web"]).await;
    assert_eq!(code, exit::NOT_FOUND, "{out}");
    assert!(out.contains("did you mean production?"), "{out}");
    let (code, out) = stackpad(c, &["services", "list", "--project", "zzz"]).await;
    assert_eq!(code, exit::NOT_FOUND, "{out}");
    assert!(out.contains("there are: shop, blog"), "{out}");
    let (code, out) = stackpad(
        c,
        &[
            "deployments",
            "--service",
            "00000000-0000-4000-8000-000000000000",
        ],
    )
    .await;
    assert_eq!(code, exit::NOT_FOUND, "{out}");
    assert!(!out.to_lowercase().contains("uuid"), "{out}");
    let (code, out) = stackpad(
        c,
        &["deployments", "--service", "shop/web", "--project", "blog"],
    )
    .await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(out.contains("name different targets"), "{out}");
    let (code, out) = stackpad(c, &["deployments", "--service", "a/b/c/d"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    // Nothing named and no link (the temp dir is not linked).
    let (code, out) = stackpad(c, &["-C", "/", "deployments"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(out.contains("which service? pass --service"), "{out}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_linked_directory_and_those_below_it_need_no_flags() -> anyhow::Result<()> {
    let (h, config, _dir) = logged_in("link-org").await?;
    let c = config.as_path();
    ok(c, &["projects", "create", "shop"]).await;
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
        ],
    )
    .await;
    let app = tempfile::tempdir()?;
    let app_dir = app.path().to_str().unwrap();
    let below = app.path().join("src/handlers");
    std::fs::create_dir_all(&below)?;
    let below = below.to_str().unwrap();

    let (code, out) = stackpad(c, &["-C", app_dir, "link"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(
        out.contains("is not linked") && out.contains("projects: shop"),
        "{out}"
    );
    let out = ok(c, &["-C", app_dir, "link", "--service", "shop/web"]).await;
    assert!(out.contains("to shop/production/web"), "{out}");
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(app.path().join(".stackpad.json"))?)?;
    assert_eq!(file["project"]["name"], "shop");
    assert_eq!(file["environment"]["name"], "production");
    assert_eq!(file["service"]["name"], "web");
    let shown = json_with(c, &["-C", below, "link"], 0).await;
    assert_eq!(shown["service"], file["service"]);

    let out = ok(c, &["-C", below, "deploy"]).await;
    assert!(out.contains("is ready"), "{out}");
    assert!(
        out.contains("(+") && out.contains("s)"),
        "steps with durations: {out}"
    );
    assert!(
        out.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("  https://web-shop-"),
        "ends with the URL: {out}"
    );
    let listed = json_with(c, &["-C", below, "deployments"], 0).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    // A flag names another target than the link's.
    ok(
        c,
        &[
            "services",
            "create",
            "--project",
            "shop",
            "--name",
            "api",
            "--image",
            "api:v1",
        ],
    )
    .await;
    let listed = json_with(c, &["-C", below, "deployments", "--service", "api"], 0).await;
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
    let (code, out) = stackpad(c, &["-C", below, "deployments", "--service", "apj"]).await;
    assert_eq!(code, exit::NOT_FOUND, "{out}");
    assert!(
        out.contains("no service named \"shop/apj\"; did you mean api?"),
        "{out}"
    );

    // A project-only link: services are created in and looked up in it.
    ok(c, &["-C", app_dir, "link", "--project", "shop"]).await;
    ok(
        c,
        &[
            "-C", below, "services", "create", "--name", "jobs", "--image", "jobs:v1",
        ],
    )
    .await;
    let services = json_with(c, &["-C", below, "services", "list"], 0).await;
    assert_eq!(services.as_array().unwrap().len(), 3, "{services}");
    let (code, out) = stackpad(c, &["-C", below, "deployments"]).await;
    assert_eq!(code, exit::USAGE, "a project link names no service: {out}");
    ok(
        c,
        &["-C", below, "deploy", "--service", "jobs", "--no-wait"],
    )
    .await;

    let out = ok(c, &["-C", below, "unlink"]).await;
    assert!(out.contains(".stackpad.json"), "{out}");
    assert!(!app.path().join(".stackpad.json").exists());
    let (code, out) = stackpad(c, &["-C", below, "services", "list"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(out.contains("which project? pass --project"), "{out}");
    let (code, _) = stackpad(c, &["-C", below, "unlink"]).await;
    assert_eq!(code, exit::USAGE);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn json_output_is_the_apis_objects_and_exit_codes_follow_the_failure_class()
-> anyhow::Result<()> {
    let (h, config, _dir) = logged_in("json-org").await?;
    let c = config.as_path();
    let project = json_with(c, &["projects", "create", "shop"], 0).await;
    assert_eq!(project["name"], "shop");
    assert!(
        project["id"].is_string() && project["created_at"].is_string(),
        "{project}"
    );
    let service = json_with(
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
            "--env",
            "MODE=prod",
        ],
        0,
    )
    .await;
    assert_eq!(service["name"], "web");
    assert_eq!(service["env"]["MODE"]["value"], "prod", "{service}");
    let ready = json_with(c, &["deploy", "--service", "shop/web"], 0).await;
    assert_eq!(ready["state"], "ready", "{ready}");
    assert_eq!(ready["service_id"], service["id"]);
    let failed = json_with(
        c,
        &[
            "deploy",
            "--service",
            "shop/web",
            "--image",
            "shop:unhealthy",
        ],
        exit::DEPLOYMENT_FAILED,
    )
    .await;
    assert_eq!(failed["state"], "failed", "{failed}");
    let list = json_with(c, &["deployments", "--service", "shop/web"], 0).await;
    let states: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "ready"]);
    // One deployment with its timeline; a finished one cannot be cancelled (refused: 3).
    let failed_id = failed["id"].as_str().unwrap();
    let out = ok(c, &["deployments", failed_id]).await;
    assert!(
        out.contains("failed") && out.contains("failure: ") && out.contains("boom"),
        "{out}"
    );
    let shown = json_with(c, &["deployments", failed_id], 0).await;
    assert_eq!(shown["timeline"][0]["phase"], "queued", "{shown}");
    let (code, out) = stackpad(c, &["cancel", ready["id"].as_str().unwrap()]).await;
    assert_eq!(code, exit::REFUSED, "{out}");
    let envs = json_with(c, &["environments", "list", "--project", "shop"], 0).await;
    assert_eq!(envs[0]["name"], "production", "{envs}");

    // Refused by the API (400 invalid name, 409 taken): 3. Usage (clap's own): 2.
    let (code, out) = stackpad(c, &["projects", "create", "Not_A_Name"]).await;
    assert_eq!(code, exit::REFUSED, "{out}");
    let (code, out) = stackpad(c, &["projects", "create", "shop"]).await;
    assert_eq!(code, exit::REFUSED, "{out}");
    let (code, out) = stackpad(c, &["deploy", "--image", "a", "--ref", "main"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    // Delete asks unless --yes (no terminal here: refused), then goes.
    let (code, out) = stackpad(c, &["services", "delete", "--service", "shop/web"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(out.contains("pass --yes"), "{out}");

    // The binary: exit codes and a JSON error on stderr.
    let bin = env!("CARGO_BIN_EXE_stackpad");
    let cfg = config.to_str().unwrap().to_owned();
    let runs = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let o = std::process::Command::new(bin)
                .args(["--config", &cfg])
                .args(args)
                .env("NO_COLOR", "1")
                .output()
                .expect("stackpad runs");
            (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        };
        vec![
            run(&["--json", "deployments", "--service", "shop/wb"]),
            run(&[
                "deploy",
                "--service",
                "shop/web",
                "--image",
                "shop:unhealthy",
            ]),
            run(&["no-such-command"]),
            run(&["projects", "create", "shop"]),
            run(&["deployments", "--service", "shop/web"]),
        ]
    })
    .await?;
    let (code, _, err) = &runs[0];
    assert_eq!(*code, exit::NOT_FOUND, "{err}");
    let err: Value = serde_json::from_str(err.trim())?;
    assert_eq!(err["error"]["exit_code"], exit::NOT_FOUND);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean"),
        "{err}"
    );
    assert_eq!(runs[1].0, exit::DEPLOYMENT_FAILED, "{:?}", runs[1]);
    assert!(
        runs[1].1.contains("failed") && !runs[1].1.contains('\x1b'),
        "{:?}",
        runs[1]
    );
    assert_eq!(runs[2].0, exit::USAGE, "{:?}", runs[2]);
    assert_eq!(runs[3].0, exit::REFUSED, "{:?}", runs[3]);
    assert!(
        runs[3].2.starts_with("stackpad: the API answered 409"),
        "{:?}",
        runs[3]
    );
    assert_eq!(runs[4].0, exit::OK, "{:?}", runs[4]);

    let deleted = json_with(
        c,
        &["services", "delete", "--service", "shop/web", "--yes"],
        0,
    )
    .await;
    assert_eq!(deleted["deleted"]["name"], "web", "{deleted}");
    let (code, out) = stackpad(c, &["deployments", "--service", "shop/web"]).await;
    assert_eq!(code, exit::NOT_FOUND, "{out}");
    let deleted = json_with(c, &["projects", "delete", "shop", "--yes"], 0).await;
    assert_eq!(deleted["deleted"]["name"], "shop", "{deleted}");
    assert!(deleted["services_deleted"].is_u64(), "{deleted}");
    let projects = json_with(c, &["projects", "list"], 0).await;
    assert_eq!(projects, serde_json::json!([]));
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn env_vars_are_listed_with_secrets_masked_set_and_unset_without_losing_a_secret()
-> anyhow::Result<()> {
    let (h, config, _dir) = logged_in("env-org").await?;
    let c = config.as_path();
    ok(c, &["projects", "create", "shop"]).await;
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
            "--env",
            "MODE=prod",
        ],
    )
    .await;
    let t = ["--service", "shop/web"];
    let out = ok(
        c,
        &[&["env", "set", "LOG=info", "MODE=dev"][..], &t].concat(),
    )
    .await;
    assert!(
        out.contains("LOG=info\nMODE=dev\n") && out.contains("next deployment"),
        "{out}"
    );
    let out = ok(
        c,
        &[&["env", "set", "--secret", "API_KEY=s3cret"][..], &t].concat(),
    )
    .await;
    assert!(
        out.contains("API_KEY=********  (secret)") && !out.contains("s3cret"),
        "{out}"
    );
    let listed = json_with(c, &[&["env", "list"][..], &t].concat(), 0).await;
    assert_eq!(
        listed["API_KEY"],
        serde_json::json!({ "value": null, "secret": true })
    );
    assert_eq!(listed["MODE"]["value"], "dev");
    // Changing a plain var would have to resend the secret: refused, nothing changed.
    let (code, out) = stackpad(c, &[&["env", "unset", "LOG"][..], &t].concat()).await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(out.contains("drop the secrets API_KEY"), "{out}");
    let (code, out) = stackpad(c, &[&["env", "unset", "MOD"][..], &t].concat()).await;
    assert_eq!(code, exit::NOT_FOUND, "{out}");
    assert!(out.contains("did you mean MODE?"), "{out}");
    let out = ok(c, &[&["env", "unset", "API_KEY", "LOG"][..], &t].concat()).await;
    assert_eq!(out.lines().next(), Some("MODE=dev"), "{out}");
    let listed = json_with(c, &[&["env", "list"][..], &t].concat(), 0).await;
    assert_eq!(
        listed,
        serde_json::json!({ "MODE": { "value": "dev", "secret": false } })
    );
    let (code, out) = stackpad(c, &[&["env", "set", "NOEQUALS"][..], &t].concat()).await;
    assert_eq!(code, exit::USAGE, "{out}");
    // The human list and the --json forms of set and unset (the whole map after the change).
    assert_eq!(
        ok(c, &[&["env", "list"][..], &t].concat()).await,
        "MODE=dev\n"
    );
    let set = json_with(c, &[&["env", "set", "LOG=debug"][..], &t].concat(), 0).await;
    assert_eq!(
        set,
        serde_json::json!({
            "LOG": { "value": "debug", "secret": false },
            "MODE": { "value": "dev", "secret": false },
        })
    );
    let unset = json_with(c, &[&["env", "unset", "LOG"][..], &t].concat(), 0).await;
    assert_eq!(
        unset,
        serde_json::json!({ "MODE": { "value": "dev", "secret": false } })
    );
    h.stop().await;
    Ok(())
}
