//! `stackpad previews list|enable|disable` and previews in `environments list|show`, against a
//! real control plane on 127.0.0.1:0 and PostgreSQL (pipeline behind recording fakes of the
//! daemons): a signed pull_request delivery to the project's webhook opens the preview.

#[path = "../../control/tests/common/mod.rs"]
mod common;
mod runner;

use std::time::Duration;

use cli::exit;
use common::{Harness, fake_clients, fakes::Fakes};
use control::crypto::github_signature;
use runner::{json_of, ok, stackpad};
use serde_json::{Value, json};

const REPO: &str = "file:///srv/git/shop.git";
const HEAD: &str = "abcdef1234567890abcdef1234567890abcdef12";

fn pull_request(action: &str, n: i32) -> Vec<u8> {
    let repo = json!({ "full_name": "acme/shop", "clone_url": REPO });
    serde_json::to_vec(&json!({
        "action": action,
        "number": n,
        "pull_request": {
            "head": { "sha": HEAD, "ref": "feature/x", "repo": repo },
            "base": { "sha": HEAD, "ref": "main", "repo": repo },
            "merged": false,
        },
        "repository": repo,
    }))
    .unwrap()
}

#[tokio::test]
async fn previews_are_enabled_listed_with_their_pull_request_and_disabled() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("b1", "build", "http://127.0.0.1:9").await;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    // org-a: the test config's organization that may build from local (file://) repositories.
    let (_, token) = h.org("org-a").await;
    let dir = tempfile::tempdir()?;
    let login = dir.path().join("cli.json");
    let c = login.as_path();
    ok(c, &["login", "--url", &h.url, "--token", &token]).await;
    let project = json_of(c, &["projects", "create", "shop"]).await;
    let project = project["id"].as_str().unwrap().to_owned();
    ok(
        c,
        &[
            "services",
            "create",
            "--project",
            "shop",
            "--name",
            "web",
            "--git",
            REPO,
        ],
    )
    .await;
    let (status, w) = h
        .call(
            "PATCH",
            &format!("/projects/{project}/webhook"),
            &token,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{w}");
    let secret = w["webhook_secret"].as_str().unwrap().to_owned();

    let out = ok(c, &["previews", "list", "--project", "shop"]).await;
    assert!(out.starts_with("previews off"), "{out}");
    assert!(out.contains("no open previews"), "{out}");
    // A wrong template name gets the close match before anything changes.
    let (code, out) = stackpad(
        c,
        &[
            "previews",
            "enable",
            "--template",
            "production",
            "--project",
            "shpo",
        ],
    )
    .await;
    assert_eq!(code, exit::NOT_FOUND, "{out}");
    assert!(out.contains("did you mean shop?"), "{out}");
    let (code, out) = stackpad(
        c,
        &[
            "previews",
            "enable",
            "--template",
            "prodution",
            "--project",
            "shop",
        ],
    )
    .await;
    assert_eq!(code, exit::NOT_FOUND, "{out}");
    assert!(out.contains("did you mean production?"), "{out}");
    let out = ok(
        c,
        &[
            "previews",
            "enable",
            "--template",
            "production",
            "--max",
            "2",
            "--project",
            "shop",
        ],
    )
    .await;
    assert!(
        out.starts_with("previews on: copies production, at most 2"),
        "{out}"
    );

    // A pull request opens pr-7; the CLI shows it with its status, head and URL.
    let body = pull_request("opened", 7);
    let resp = h
        .http
        .post(format!("{}/webhooks/github/projects/{project}", h.url))
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", "d-1")
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            github_signature(secret.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 202);
    let opened: Value = resp.json().await?;
    for d in opened["deployments"].as_array().unwrap() {
        let id = d["deployment_id"].as_str().unwrap();
        let done = h.wait_terminal(&token, id, Duration::from_secs(20)).await;
        assert_eq!(done["state"], "ready", "{done}");
    }
    let out = ok(c, &["previews", "list", "--project", "shop"]).await;
    let row = out.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("#7  pr-7  ready  abcdef1  https://pr-7-web-shop-org-a."),
        "{out}"
    );
    let listed = json_of(c, &["previews", "list", "--project", "shop"]).await;
    assert_eq!(listed["items"][0]["preview"]["number"], 7, "{listed}");
    assert_eq!(listed["items"][0]["preview"]["head_sha"], HEAD, "{listed}");
    let out = ok(c, &["environments", "list", "--project", "shop"]).await;
    assert!(
        out.contains("  preview of pull request #7: ready at abcdef1  https://pr-7-web-"),
        "{out}"
    );
    let out = ok(c, &["environments", "show", "pr-7", "--project", "shop"]).await;
    assert!(out.contains("preview of pull request #7"), "{out}");

    // Disabled: the settings are kept, the open preview stays.
    let out = ok(c, &["previews", "disable", "--project", "shop"]).await;
    assert!(out.starts_with("previews off"), "{out}");
    assert!(out.contains("#7  pr-7"), "{out}");
    let v = json_of(c, &["previews", "list", "--project", "shop"]).await;
    assert_eq!(
        (v["enabled"].as_bool(), v["max_previews"].as_i64()),
        (Some(false), Some(2)),
        "{v}"
    );
    // enable and disable with --json: the previews setting as the API answered it.
    let on = json_of(
        c,
        &[
            "previews",
            "enable",
            "--template",
            "production",
            "--max",
            "3",
            "--idle-seconds",
            "900",
            "--project",
            "shop",
        ],
    )
    .await;
    assert_eq!(
        (
            on["enabled"].as_bool(),
            on["max_previews"].as_i64(),
            on["idle_seconds"].as_i64()
        ),
        (Some(true), Some(3), Some(900)),
        "{on}"
    );
    let off = json_of(c, &["previews", "disable", "--project", "shop"]).await;
    assert_eq!(off["enabled"], false, "{off}");
    assert_eq!(off["template_id"], on["template_id"], "{off}");
    h.stop().await;
    Ok(())
}
