//! A project's repository webhook and pull-request previews (#17) against a real control plane
//! and PostgreSQL, with recording fakes of the daemons (and the real tonic clients for the build
//! request): a pull request opened makes the preview `pr-<n>` (a copy of the template with its
//! services, a fresh database, deployments queued, the repository's services at the head),
//! synchronize deploys the new head, closed tears it down; forks, the preview limit, forged,
//! replayed and wrong-repository deliveries; an environment copy queues its deployments; a
//! project's git credentials reach buildd inside the build request only.

mod common;

use std::time::Duration;

use common::fakes::{Call, Fakes};
use common::grpc_fakes::Daemons;
use common::{Harness, fake_clients};
use control::crypto::github_signature;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(20);
const REPO: &str = "file:///srv/git/shop.git";
const HEAD_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HEAD_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

struct Shop {
    project: String,
    secret: String,
    web: String,
}

/// Project `shop` of organization `org-a` (local sources allowed): production has a web
/// service built from [`REPO`] and a managed PostgreSQL; the project's webhook secret made.
async fn shop(h: &Harness, token: &str) -> Shop {
    let (status, p) = h
        .call("POST", "/projects", token, Some(json!({ "name": "shop" })))
        .await;
    assert_eq!(status, 201, "{p}");
    let project = p["id"].as_str().unwrap().to_owned();
    let mut ids = vec![];
    for body in [
        json!({ "name": "web", "git": { "url": REPO } }),
        json!({ "name": "db", "kind": "database", "engine": "postgres" }),
    ] {
        let (status, s) = h
            .call(
                "POST",
                &format!("/projects/{project}/services"),
                token,
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{s}");
        ids.push(s["id"].as_str().unwrap().to_owned());
    }
    let (status, w) = h
        .call(
            "PATCH",
            &format!("/projects/{project}/webhook"),
            token,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{w}");
    assert_eq!(
        w["webhook_url"],
        format!("/webhooks/github/projects/{project}")
    );
    Shop {
        project,
        secret: w["webhook_secret"].as_str().unwrap().to_owned(),
        web: ids[0].clone(),
    }
}

fn repo(full_name: &str, clone_url: &str) -> Value {
    json!({ "full_name": full_name, "clone_url": clone_url })
}

fn pull_request(action: &str, n: i32, sha: &str, head_repo: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "action": action,
        "number": n,
        "pull_request": {
            "head": { "sha": sha, "ref": "feature/x", "repo": repo(head_repo, REPO) },
            "base": { "sha": HEAD_B, "ref": "main", "repo": repo("acme/shop", REPO) },
            "merged": action == "closed",
        },
        "repository": repo("acme/shop", REPO),
    }))
    .unwrap()
}

fn push(branch: &str, sha: &str, clone_url: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": format!("refs/heads/{branch}"), "after": sha,
        "repository": repo("acme/shop", clone_url),
    }))
    .unwrap()
}

/// Sends a delivery to the project's webhook, signed with `secret` (unsigned when `None`).
async fn deliver(
    h: &Harness,
    project: &str,
    secret: Option<&str>,
    event: &str,
    id: &str,
    body: &[u8],
) -> (u16, Value) {
    let mut req = h
        .http
        .post(format!("{}/webhooks/github/projects/{project}", h.url))
        .header("x-github-event", event)
        .header("x-github-delivery", id)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(secret) = secret {
        req = req.header(
            "x-hub-signature-256",
            github_signature(secret.as_bytes(), body),
        );
    }
    let resp = req.send().await.expect("webhook request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn environments(h: &Harness, token: &str, project: &str) -> Vec<Value> {
    let (status, envs) = h
        .call(
            "GET",
            &format!("/projects/{project}/environments"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{envs}");
    envs["items"].as_array().unwrap().clone()
}

async fn wait_all(h: &Harness, token: &str, answer: &Value) {
    for d in answer["deployments"].as_array().unwrap() {
        let id = d["deployment_id"].as_str().unwrap();
        let done = h.wait_terminal(token, id, LIMIT).await;
        assert_eq!(done["state"], "ready", "{done}");
    }
}

fn deployment_of<'a>(answer: &'a Value, service: &str) -> Option<&'a str> {
    answer["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["service"] == service)
        .map(|d| d["deployment_id"].as_str().unwrap())
}

#[tokio::test]
async fn a_pull_request_opens_updates_and_closes_its_preview() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("b1", "build", "http://127.0.0.1:9").await;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, a) = h.org("org-a").await;
    let shop = shop(&h, &a).await;
    let p = &shop.project;
    let secret = Some(shop.secret.as_str());

    // Previews off: a pull request opens nothing.
    let (status, v) = deliver(
        &h,
        p,
        secret,
        "pull_request",
        "d-0",
        &pull_request("opened", 6, HEAD_A, "acme/shop"),
    )
    .await;
    assert_eq!(
        (status, v["status"].as_str()),
        (202, Some("previews are off for this project")),
        "{v}"
    );
    let (status, v) = h
        .call(
            "PUT",
            &format!("/projects/{p}/previews"),
            &a,
            Some(json!({ "enabled": true, "template": "production", "max_previews": 1 })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["enabled"].as_bool(), v["max_previews"].as_i64()),
        (Some(true), Some(1))
    );

    // Opened: pr-7, a copy of production, every service deployed, web at the head.
    let (status, opened) = deliver(
        &h,
        p,
        secret,
        "pull_request",
        "d-1",
        &pull_request("opened", 7, HEAD_A, "acme/shop"),
    )
    .await;
    assert_eq!(status, 202, "{opened}");
    let web_a = deployment_of(&opened, "web")
        .expect("web deployed")
        .to_owned();
    assert!(
        deployment_of(&opened, "db").is_some(),
        "a fresh database: {opened}"
    );
    let (_, d) = h
        .call("GET", &format!("/deployments/{web_a}"), &a, None)
        .await;
    assert_eq!(
        (d["git_commit"].as_str(), d["git_ref"].as_str()),
        (Some(HEAD_A), Some("feature/x")),
        "{d}"
    );
    wait_all(&h, &a, &opened).await;
    let envs = environments(&h, &a, p).await;
    let preview = envs
        .iter()
        .find(|e| e["name"] == "pr-7")
        .expect("pr-7 listed");
    assert_eq!(preview["preview"]["number"], 7);
    assert_eq!(preview["preview"]["head_sha"], HEAD_A);
    assert_eq!(preview["preview"]["status"], "ready", "{preview}");
    let url = preview["preview"]["urls"][0].as_str().unwrap();
    assert!(url.starts_with("https://pr-7-web-shop-org-a."), "{url}");
    let production = envs.iter().find(|e| e["name"] == "production").unwrap();
    assert!(production["preview"].is_null());
    let env_id = preview["id"].as_str().unwrap().to_owned();
    let (_, services) = h
        .call("GET", &format!("/projects/{p}/services"), &a, None)
        .await;
    let in_preview: Vec<&str> = services["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["environment_id"] == env_id.as_str())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(in_preview, ["web", "db"]);
    // The copy's database password is its own.
    let (_, g) = h
        .call("GET", &format!("/environments/{env_id}"), &a, None)
        .await;
    assert_eq!(g["preview"]["number"], 7, "{g}");

    // Synchronize: the new head is deployed (web only; the database stays).
    let (status, synced) = deliver(
        &h,
        p,
        secret,
        "pull_request",
        "d-2",
        &pull_request("synchronize", 7, HEAD_B, "acme/shop"),
    )
    .await;
    assert_eq!(status, 202, "{synced}");
    assert!(deployment_of(&synced, "db").is_none(), "{synced}");
    let web_b = deployment_of(&synced, "web")
        .expect("web redeployed")
        .to_owned();
    let (_, d) = h
        .call("GET", &format!("/deployments/{web_b}"), &a, None)
        .await;
    assert_eq!(d["git_commit"], HEAD_B);
    wait_all(&h, &a, &synced).await;
    let (_, g) = h
        .call("GET", &format!("/environments/{env_id}"), &a, None)
        .await;
    assert_eq!(g["preview"]["head_sha"], HEAD_B);

    // A second pull request is over the limit of 1: refused, and said why.
    let (status, v) = deliver(
        &h,
        p,
        secret,
        "pull_request",
        "d-3",
        &pull_request("opened", 8, HEAD_A, "acme/shop"),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_previews 1"),
        "{v}"
    );
    // A fork's pull request is not built by default (whatever the limit).
    h.call(
        "PUT",
        &format!("/projects/{p}/previews"),
        &a,
        Some(json!({ "enabled": true, "template": "production" })),
    )
    .await;
    let (status, v) = deliver(
        &h,
        p,
        secret,
        "pull_request",
        "d-4",
        &pull_request("opened", 9, HEAD_A, "mallory/shop"),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    assert!(
        v["status"].as_str().unwrap().contains("fork mallory/shop"),
        "{v}"
    );
    assert!(
        environments(&h, &a, p)
            .await
            .iter()
            .all(|e| e["name"] != "pr-9" && e["name"] != "pr-8")
    );

    // Closed (merged): every service of pr-7 taken off the nodes and the proxy, then deleted.
    let (status, v) = deliver(
        &h,
        p,
        secret,
        "pull_request",
        "d-5",
        &pull_request("closed", 7, HEAD_B, "acme/shop"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("merged"), "{v}");
    assert!(
        environments(&h, &a, p)
            .await
            .iter()
            .all(|e| e["name"] != "pr-7")
    );
    let removed: Vec<String> = fakes
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Remove { deployment, .. } => Some(deployment),
            _ => None,
        })
        .collect();
    for d in [&web_a, &web_b] {
        assert!(removed.contains(d), "{d} not removed: {removed:?}");
    }
    assert!(
        fakes
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Unroute { .. })),
        "the preview's route is dropped"
    );
    // Production was never touched.
    let (status, web) = h
        .call("GET", &format!("/services/{}", shop.web), &a, None)
        .await;
    assert_eq!(status, 200, "{web}");

    // The log says what became of each delivery.
    let (_, log) = h
        .call(
            "GET",
            &format!("/projects/{p}/webhook-deliveries"),
            &a,
            None,
        )
        .await;
    let seen: Vec<(&str, &str)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["delivery_id"].as_str().unwrap(),
                d["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("d-5", "removed"),
            ("d-4", "ignored"),
            ("d-3", "refused"),
            ("d-2", "deployed"),
            ("d-1", "deployed"),
            ("d-0", "ignored"),
        ]
    );
    let refused = &log["items"][2];
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("previews open"),
        "{refused}"
    );
    assert_eq!(refused["service_name"], "");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn forged_replayed_and_wrong_repository_deliveries_are_refused_and_pushes_deploy()
-> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("b1", "build", "http://127.0.0.1:9").await;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, a) = h.org("org-a").await;
    let shop = shop(&h, &a).await;
    let p = &shop.project;
    let secret = Some(shop.secret.as_str());
    let body = push("main", HEAD_A, REPO);

    let (status, _) = deliver(&h, p, None, "push", "f-1", &body).await;
    assert_eq!(status, 401, "unsigned");
    let forged = "another secret of at least thirty-two characters";
    let (status, _) = deliver(&h, p, Some(forged), "push", "f-2", &body).await;
    assert_eq!(status, 401, "signed with another secret");
    let (status, _) = deliver(
        &h,
        &uuid::Uuid::new_v4().to_string(),
        secret,
        "push",
        "f-3",
        &body,
    )
    .await;
    assert_eq!(status, 401, "an unknown project looks like a bad signature");

    // A push to main deploys production's web at the pushed commit (not the database).
    let (status, v) = deliver(&h, p, secret, "push", "p-1", &body).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["deployments"].as_array().unwrap().len(), 1, "{v}");
    let d = deployment_of(&v, "web").unwrap();
    let (_, d) = h.call("GET", &format!("/deployments/{d}"), &a, None).await;
    assert_eq!(
        (d["service_id"].as_str(), d["git_commit"].as_str()),
        (Some(shop.web.as_str()), Some(HEAD_A))
    );
    // The same id again is a duplicate; the same body under a new id a replay.
    let (status, _) = deliver(&h, p, secret, "push", "p-1", &body).await;
    assert_eq!(status, 200);
    let (status, v) = deliver(&h, p, secret, "push", "p-2", &body).await;
    assert_eq!(status, 409, "{v}");
    // Another repository: refused, even signed.
    let (status, v) = deliver(
        &h,
        p,
        secret,
        "push",
        "p-3",
        &push("main", HEAD_B, "file:///srv/git/other.git"),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not the source"),
        "{v}"
    );
    let (status, v) = deliver(&h, p, secret, "push", "p-4", &push("develop", HEAD_B, REPO)).await;
    assert_eq!(status, 202, "{v}");
    assert!(
        v["status"].as_str().unwrap().contains("no environment"),
        "{v}"
    );

    // The old secret stops at rotation.
    let (_, w) = h
        .call(
            "PATCH",
            &format!("/projects/{p}/webhook"),
            &a,
            Some(json!({})),
        )
        .await;
    let (status, _) = deliver(&h, p, secret, "push", "p-5", &push("main", HEAD_B, REPO)).await;
    assert_eq!(status, 401);
    let (status, _) = deliver(
        &h,
        p,
        w["webhook_secret"].as_str(),
        "push",
        "p-6",
        &push("main", HEAD_B, REPO),
    )
    .await;
    assert_eq!(status, 202);

    let (_, log) = h
        .call(
            "GET",
            &format!("/projects/{p}/webhook-deliveries"),
            &a,
            None,
        )
        .await;
    let outcomes: Vec<(&str, &str)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["delivery_id"].as_str().unwrap(),
                d["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("p-6", "deployed"),
            ("p-5", "refused"),
            ("p-4", "ignored"),
            ("p-3", "refused"),
            ("p-2", "refused"),
            ("p-1", "ignored"),
            ("p-1", "deployed"),
            ("f-2", "refused"),
            ("f-1", "refused"),
        ]
    );
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_environment_copy_queues_a_deployment_of_each_service() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("b1", "build", "http://127.0.0.1:9").await;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, a) = h.org("org-a").await;
    let shop = shop(&h, &a).await;
    let (status, staging) = h
        .call(
            "POST",
            &format!("/projects/{}/environments", shop.project),
            &a,
            Some(json!({ "name": "staging", "branch": "develop", "from": "production" })),
        )
        .await;
    assert_eq!(status, 201, "{staging}");
    let web = deployment_of(&staging, "web").expect("web queued");
    let (_, d) = h
        .call("GET", &format!("/deployments/{web}"), &a, None)
        .await;
    assert_eq!(
        d["git_ref"], "develop",
        "the copy deploys its own branch: {d}"
    );
    assert!(deployment_of(&staging, "db").is_some(), "{staging}");
    wait_all(&h, &a, &staging).await;
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn git_credentials_reach_buildd_in_the_build_request_only() -> anyhow::Result<()> {
    let daemons = Daemons::default();
    let address = daemons.serve("proxy-token").await?;
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.proxy_address = address.clone();
    config.proxy_token = "proxy-token".into();
    let h = Harness::start_on(db, control::daemon::grpc_clients(&config)).await?;
    h.register_node("b1", "build", &address).await;
    h.register_node("n1", "compute", &address).await;
    let (_, a) = h.org("org-a").await;
    let (project, service) = h
        .service(&a, json!({ "name": "web", "git": { "url": REPO } }))
        .await;
    let token = "ghp_private-token-0123456789";
    for bad in [
        json!({ "token": "short" }),
        json!({ "token": "has space in it" }),
        json!({ "token": token, "username": "a:b" }),
    ] {
        let (status, v) = h
            .call(
                "PUT",
                &format!("/projects/{project}/git-credentials"),
                &a,
                Some(bad),
            )
            .await;
        assert_eq!(status, 422, "{v}");
        assert!(!v.to_string().contains(token));
    }
    let (status, v) = h
        .call(
            "PUT",
            &format!("/projects/{project}/git-credentials"),
            &a,
            Some(json!({ "token": token })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["git_username"], "x-access-token");
    assert!(!v.to_string().contains(token), "{v}");
    let d1 = h
        .deploy(&a, &service, json!({ "git_commit": HEAD_A }))
        .await;
    assert_eq!(h.wait_terminal(&a, &d1, LIMIT).await["state"], "ready");
    let source = daemons.recorded().builds[0].source.clone().unwrap();
    assert_eq!(
        (source.username.as_str(), source.password.as_str()),
        ("x-access-token", token)
    );
    // Never shown by the API: not the settings, the service, the deployment or its logs.
    for path in [
        format!("/projects/{project}/previews"),
        format!("/projects/{project}"),
        format!("/services/{service}"),
        format!("/deployments/{d1}"),
    ] {
        let (_, v) = h.call("GET", &path, &a, None).await;
        assert!(!v.to_string().contains(token), "{path}: {v}");
    }
    let (_, v) = h
        .call("GET", &format!("/projects/{project}/previews"), &a, None)
        .await;
    assert_eq!(v["git_username"], "x-access-token");
    // Sealed at rest.
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT git_token_enc FROM projects WHERE id = $1::uuid")
            .bind(&project)
            .fetch_one(&h.store().pool)
            .await?;
    assert!(!String::from_utf8_lossy(&stored).contains(token));

    let (status, _) = h
        .call(
            "DELETE",
            &format!("/projects/{project}/git-credentials"),
            &a,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let d2 = h
        .deploy(&a, &service, json!({ "git_commit": HEAD_B }))
        .await;
    assert_eq!(h.wait_terminal(&a, &d2, LIMIT).await["state"], "ready");
    let source = daemons.recorded().builds[1].source.clone().unwrap();
    assert_eq!(
        (source.username.as_str(), source.password.as_str()),
        ("", "")
    );
    h.stop().await;
    Ok(())
}
