//! `stackpad environments` and `stackpad webhook deliveries` against a real control plane on
//! 127.0.0.1:0 (daemons behind recording fakes): a staging copy of production with its own
//! variables, changed, shown, deleted (its service taken off the proxy), and the deliveries a
//! project's webhooks received with what became of each.

#[path = "../../control/tests/common/mod.rs"]
mod common;
mod runner;

use cli::exit;
use common::fakes::{Call, Fakes};
use common::{Harness, fake_clients};
use runner::{json_of, ok, stackpad};
use serde_json::{Value, json};

#[tokio::test]
async fn a_staging_copy_is_created_changed_shown_and_deleted() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    let (_, token) = h.org("acme").await;
    let dir = tempfile::tempdir()?;
    let c = dir.path().join("cli.json");
    ok(&c, &["login", "--url", &h.url, "--token", &token]).await;
    ok(&c, &["projects", "create", "shop"]).await;
    ok(
        &c,
        &[
            "services",
            "create",
            "--project",
            "shop",
            "--name",
            "web",
            "--image",
            "app:v1",
        ],
    )
    .await;

    let out = ok(
        &c,
        &[
            "environments",
            "create",
            "staging",
            "--branch",
            "develop",
            "--from",
            "production",
            "--env",
            "MODE=staging",
            "--secret",
            "TOKEN=t0ken",
            "--project",
            "shop",
        ],
    )
    .await;
    assert!(out.contains("a copy of production"), "{out}");
    let out = ok(&c, &["environments", "list", "--project", "shop"]).await;
    assert!(
        out.contains("production") && out.contains("staging"),
        "{out}"
    );
    let out = ok(
        &c,
        &[
            "environments",
            "set",
            "staging",
            "LOG=debug",
            "--unset",
            "MODE",
            "--branch",
            "release",
            "--project",
            "shop",
        ],
    )
    .await;
    assert!(out.contains("branch release"), "{out}");
    assert!(out.contains("LOG=debug") && !out.contains("MODE="), "{out}");
    assert!(out.contains("TOKEN=********  (secret)"), "{out}");
    assert!(!out.contains("t0ken"), "{out}");
    let (code, out) = stackpad(&c, &["environments", "set", "staging", "--project", "shop"]).await;
    assert_eq!(
        code,
        exit::USAGE,
        "nothing to change is a usage error: {out}"
    );
    let out = ok(
        &c,
        &[
            "--json",
            "environments",
            "show",
            "staging",
            "--project",
            "shop",
        ],
    )
    .await;
    let v: Value = serde_json::from_str(&out)?;
    assert_eq!(v["env"]["LOG"]["value"], "debug", "{v}");

    let (_, list) = h.call("GET", "/projects", &token, None).await;
    let project = list["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, services) = h
        .call(
            "GET",
            &format!("/projects/{project}/services"),
            &token,
            None,
        )
        .await;
    let copy = services["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["environment_id"] == v["id"])
        .expect("the copy of web")["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (code, out) = stackpad(
        &c,
        &["environments", "delete", "staging", "--project", "shop"],
    )
    .await;
    assert_eq!(code, exit::USAGE, "no terminal: --yes is needed: {out}");
    let out = ok(
        &c,
        &[
            "environments",
            "delete",
            "staging",
            "--project",
            "shop",
            "--yes",
        ],
    )
    .await;
    assert!(out.contains("deleted environment shop/staging"), "{out}");
    assert!(
        fakes.calls().contains(&Call::Unroute {
            route_id: format!("{copy}/default")
        }),
        "{:?}",
        fakes.calls()
    );
    let out = ok(&c, &["environments", "list", "--project", "shop"]).await;
    assert!(!out.contains("staging"), "{out}");

    // create, set and delete with --json print the API's objects.
    let qa = json_of(
        &c,
        &[
            "environments",
            "create",
            "qa",
            "--branch",
            "qa",
            "--env",
            "MODE=qa",
            "--project",
            "shop",
        ],
    )
    .await;
    assert_eq!(qa["name"], "qa", "{qa}");
    let set = json_of(
        &c,
        &[
            "environments",
            "set",
            "qa",
            "LOG=trace",
            "--project",
            "shop",
        ],
    )
    .await;
    assert_eq!(set["id"], qa["id"], "{set}");
    assert_eq!(set["env"]["LOG"]["value"], "trace", "{set}");
    assert_eq!(set["env"]["MODE"]["value"], "qa", "{set}");
    let deleted = json_of(
        &c,
        &["environments", "delete", "qa", "--project", "shop", "--yes"],
    )
    .await;
    assert_eq!(deleted["deleted"]["id"], qa["id"], "{deleted}");
    assert_eq!(deleted["deleted"]["name"], "qa", "{deleted}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn webhook_deliveries_show_what_became_of_each_push() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, token) = h.org("org-a").await;
    let secret = "correct horse battery staple 2024!";
    let (_, service) = h
        .service(
            &token,
            json!({ "name": "web", "git": { "url": "file:///srv/app.git" }, "webhook_secret": secret }),
        )
        .await;
    let body = serde_json::to_vec(&json!({
        "ref": "refs/heads/feature", "after": "0123456789abcdef0123456789abcdef01234567" }))?;
    let status = h
        .http
        .post(format!("{}/webhooks/github/{service}", h.url))
        .header("x-github-event", "push")
        .header("x-github-delivery", "d-1")
        .header(
            "x-hub-signature-256",
            control::crypto::github_signature(secret.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await?
        .status();
    assert_eq!(status, 202);
    let dir = tempfile::tempdir()?;
    let c = dir.path().join("cli.json");
    ok(&c, &["login", "--url", &h.url, "--token", &token]).await;
    let (_, s) = h
        .call("GET", &format!("/services/{service}"), &token, None)
        .await;
    let (_, p) = h
        .call(
            "GET",
            &format!("/projects/{}", s["project_id"].as_str().unwrap()),
            &token,
            None,
        )
        .await;
    let project = p["name"].as_str().unwrap();
    let out = ok(&c, &["webhook", "deliveries", "--project", project]).await;
    assert!(
        out.contains(
            "web  push  ignored  push to refs/heads/feature ignored: the environment deploys main"
        ),
        "{out}"
    );
    let out = ok(
        &c,
        &[
            "webhook",
            "deliveries",
            "--service",
            &format!("{project}/web"),
            "--limit",
            "1",
        ],
    )
    .await;
    assert_eq!(out.trim().lines().count(), 1, "{out}");
    let listed = json_of(&c, &["webhook", "deliveries", "--project", project]).await;
    assert_eq!(listed[0]["service_name"], "web", "{listed}");
    assert_eq!(listed[0]["event"], "push", "{listed}");
    assert_eq!(listed[0]["outcome"], "ignored", "{listed}");
    h.stop().await;
    Ok(())
}
