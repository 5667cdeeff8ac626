//! Previews' deployment statuses sent to GitHub (#17), driven by the real pipeline events of a
//! real control plane and PostgreSQL (recording fakes of the daemons): GitHub itself is out of
//! reach, so a loopback server plays it and checks every call against the recorded contract in
//! `fixtures/github/` (written from GitHub's REST documentation): method, path, headers, the
//! documented parameters and their types, the request recorded for pull request 7, and it
//! answers GitHub's documented responses.
//!
//! opened -> a deployment of the head for `pr-7`, `in_progress` while it builds, `success` with
//! the preview's URL; synchronize -> a new deployment of the new head, the same again; closed
//! -> `inactive`; a failed build -> `failure`; a token GitHub refuses -> the refusal on the
//! webhook delivery, tried a bounded number of times, and the preview deploys anyway.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use common::fakes::Fakes;
use common::{Harness, config, database, fake_clients};
use control::crypto::github_signature;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(20);
const HEAD_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HEAD_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const TOKEN: &str = "github_pat_stackpad_test_0123456789";

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/github/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("JSON")
}

/// A call GitHub received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    body: Value,
}

#[derive(Default)]
struct GitHub {
    received: Mutex<Vec<Received>>,
    /// Calls that broke the contract, and why.
    violations: Mutex<Vec<String>>,
    next_id: Mutex<i64>,
}

impl GitHub {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn statuses(&self, repo: &str) -> Vec<(i64, Value)> {
        self.received()
            .into_iter()
            .filter_map(|r| {
                let rest = r
                    .path
                    .strip_prefix(&format!("/repos/{repo}/deployments/"))?;
                let id = rest.strip_suffix("/statuses")?.parse().ok()?;
                Some((id, r.body))
            })
            .collect()
    }

    fn deployments(&self, repo: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r.path == format!("/repos/{repo}/deployments"))
            .map(|r| r.body)
            .collect()
    }
}

/// Checks a call against the contract; `Err` says how it breaks it.
fn check(
    contract: &Value,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<&'static str, String> {
    let endpoint = {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["repos", _, _, "deployments"] => "create_deployment",
            ["repos", _, _, "deployments", id, "statuses"] if id.parse::<i64>().is_ok() => {
                "create_deployment_status"
            }
            _ => return Err(format!("{method} {path}: no such endpoint in the contract")),
        }
    };
    let c = &contract["endpoints"][endpoint];
    if method.as_str() != c["method"] {
        return Err(format!("{path}: method {method}, wanted {}", c["method"]));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    for name in ["accept", "x-github-api-version", "content-type"] {
        let wanted = contract["headers"][name].as_str().unwrap();
        if header(name) != Some(wanted) {
            return Err(format!(
                "{path}: header {name} {:?}, wanted {wanted}",
                header(name)
            ));
        }
    }
    if !header("authorization").is_some_and(|a| a.starts_with("Bearer ")) {
        return Err(format!("{path}: no Bearer authorization"));
    }
    if header("user-agent").is_none_or(str::is_empty) {
        return Err(format!("{path}: no user-agent"));
    }
    let Some(fields) = body.as_object() else {
        return Err(format!("{path}: the body is not a JSON object: {body}"));
    };
    for required in c["required"].as_array().unwrap() {
        if !fields.contains_key(required.as_str().unwrap()) {
            return Err(format!("{path}: {required} is missing"));
        }
    }
    for (name, value) in fields {
        let Some(kind) = c["parameters"][name].as_str() else {
            return Err(format!("{path}: {name} is not a documented parameter"));
        };
        let ok = match kind {
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if !ok {
            return Err(format!("{path}: {name} = {value} is not a {kind}"));
        }
        if let Some(allowed) = c["enums"][name].as_array()
            && !allowed.contains(value)
        {
            return Err(format!(
                "{path}: {name} = {value} is not one of {allowed:?}"
            ));
        }
        if let Some(max) = c["max_length"][name].as_u64()
            && value
                .as_str()
                .is_some_and(|s| s.chars().count() as u64 > max)
        {
            return Err(format!("{path}: {name} is longer than {max}"));
        }
    }
    Ok(endpoint)
}

async fn github(
    State(gh): State<Arc<GitHub>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let contract = fixture("contract.json");
    let path = uri.path().to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let endpoint = match check(&contract, &method, &path, &headers, &body) {
        Ok(e) => e,
        Err(why) => {
            gh.violations.lock().unwrap().push(why.clone());
            let answer =
                json!({ "message": why, "documentation_url": "https://docs.github.com/rest" });
            return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(answer)).into_response();
        }
    };
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        let e = &contract["errors"]["bad_credentials"];
        gh.received.lock().unwrap().push(Received { path, body });
        return (StatusCode::UNAUTHORIZED, axum::Json(e["body"].clone())).into_response();
    }
    gh.received.lock().unwrap().push(Received {
        path: path.clone(),
        body: body.clone(),
    });
    let mut answer = match endpoint {
        "create_deployment" => fixture("create_deployment.response.json"),
        _ => fixture("create_deployment_status.response.json"),
    };
    if endpoint == "create_deployment" {
        let mut next = gh.next_id.lock().unwrap();
        *next += 1;
        answer["id"] = json!(*next);
        answer["sha"] = body["ref"].clone();
        answer["ref"] = body["ref"].clone();
        answer["environment"] = body["environment"].clone();
    } else {
        answer["state"] = body["state"].clone();
    }
    let status =
        StatusCode::from_u16(contract["endpoints"][endpoint]["status"].as_u64().unwrap() as u16)
            .unwrap();
    (status, axum::Json(answer)).into_response()
}

async fn start_github() -> (Arc<GitHub>, SocketAddr) {
    let gh = Arc::new(GitHub::default());
    let app = axum::Router::new()
        .fallback(github)
        .with_state(Arc::clone(&gh));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (gh, addr)
}

/// A project `name` of org-a whose web app is built from `repo` (`file:///srv/git/<repo>.git`),
/// with a managed PostgreSQL, its webhook secret and previews on; returns (project, secret).
async fn project(h: &Harness, token: &str, name: &str, repo: &str) -> (String, String) {
    let (status, p) = h
        .call("POST", "/projects", token, Some(json!({ "name": name })))
        .await;
    assert_eq!(status, 201, "{p}");
    let project = p["id"].as_str().unwrap().to_owned();
    for body in [
        json!({ "name": "web", "git": { "url": format!("file:///srv/git/{repo}.git") } }),
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
    let (status, v) = h
        .call(
            "PUT",
            &format!("/projects/{project}/previews"),
            token,
            Some(json!({ "enabled": true, "template": "production" })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    (project, w["webhook_secret"].as_str().unwrap().to_owned())
}

/// A signed `pull_request` delivery for pull request `n` of `acme/<repo>` at `sha`.
async fn pull_request(
    h: &Harness,
    (project, secret): &(String, String),
    repo: &str,
    delivery: &str,
    action: &str,
    n: i32,
    sha: &str,
) -> Value {
    let repository = json!({
        "full_name": format!("acme/{repo}"), "clone_url": format!("file:///srv/git/{repo}.git"),
    });
    let body = serde_json::to_vec(&json!({
        "action": action,
        "number": n,
        "pull_request": {
            "head": { "sha": sha, "ref": "feature/x", "repo": repository },
            "base": { "sha": HEAD_B, "ref": "main", "repo": repository },
            "merged": false,
        },
        "repository": repository,
    }))
    .unwrap();
    let resp = h
        .http
        .post(format!("{}/webhooks/github/projects/{project}", h.url))
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", delivery)
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            github_signature(secret.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{action}: {}", resp.status());
    resp.json().await.unwrap()
}

/// Waits until `done` holds of what GitHub received.
async fn until(gh: &GitHub, what: &str, done: impl Fn(&GitHub) -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !done(gh) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "GitHub never got {what}: {:?}; violations {:?}",
            gh.received(),
            gh.violations.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `github_status` of delivery `id` in the project's delivery log.
async fn github_status(h: &Harness, token: &str, project: &str, id: &str) -> Option<String> {
    let (status, log) = h
        .call(
            "GET",
            &format!("/projects/{project}/webhook-deliveries"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    log["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["delivery_id"] == id)
        .and_then(|d| d["github_status"].as_str().map(str::to_owned))
}

fn states(statuses: &[(i64, Value)], id: i64) -> Vec<String> {
    statuses
        .iter()
        .filter(|(d, _)| *d == id)
        .map(|(_, s)| s["state"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn previews_report_in_progress_success_failure_and_inactive_to_github() -> anyhow::Result<()>
{
    let (gh, addr) = start_github().await;
    let fakes = Fakes::new();
    // Builds take long enough for GitHub to see them in progress.
    *fakes.builder.delay.lock().unwrap() = Duration::from_millis(1500);
    let db = database().await?;
    let mut cfg = config(&db);
    cfg.github_api_url = format!("http://{addr}");
    cfg.github_status_interval_ms = 100;
    let h = Harness::start_with(db, &cfg, fake_clients(&fakes)).await?;
    h.register_node("b1", "build", "http://127.0.0.1:9").await;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, a) = h.org("org-a").await;

    let shop = project(&h, &a, "shop", "shop").await;
    let p = &shop.0;
    // No token yet: nothing is sent.
    let (status, bad) = h
        .call(
            "PUT",
            &format!("/projects/{p}/github-token"),
            &a,
            Some(json!({ "token": "a b" })),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    assert!(bad.to_string().contains("token"), "{bad}");
    let (status, set) = h
        .call(
            "PUT",
            &format!("/projects/{p}/github-token"),
            &a,
            Some(json!({ "token": TOKEN })),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    assert!(
        !set.to_string().contains(TOKEN),
        "the token is never shown: {set}"
    );
    let (_, previews) = h
        .call("GET", &format!("/projects/{p}/previews"), &a, None)
        .await;
    assert_eq!(previews["has_github_token"], true, "{previews}");
    assert!(!previews.to_string().contains(TOKEN));

    // Opened: a deployment of the head for pr-7, in_progress, then success with the URL.
    let opened = pull_request(&h, &shop, "shop", "d-1", "opened", 7, HEAD_A).await;
    until(&gh, "success for pr-7", |gh| {
        gh.statuses("acme/shop")
            .iter()
            .any(|(_, s)| s["state"] == "success")
    })
    .await;
    let deployments = gh.deployments("acme/shop");
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    assert_eq!(
        deployments[0],
        fixture("create_deployment.request.json"),
        "the recorded request"
    );
    let statuses = gh.statuses("acme/shop");
    assert_eq!(
        states(&statuses, 1),
        ["in_progress", "success"],
        "{statuses:?}"
    );
    let envs = h
        .call(
            "GET",
            &format!(
                "/environments/{}",
                opened["environment_id"].as_str().unwrap()
            ),
            &a,
            None,
        )
        .await
        .1;
    let url = envs["preview"]["urls"][0].as_str().unwrap().to_owned();
    let success = &statuses
        .iter()
        .find(|(_, s)| s["state"] == "success")
        .unwrap()
        .1;
    let mut recorded = fixture("create_deployment_status.request.json");
    recorded["environment_url"] = json!(url);
    assert_eq!(success, &recorded, "the recorded status request");
    let note = github_status(&h, &a, p, "d-1").await.unwrap_or_default();
    assert!(
        note.starts_with("success sent to GitHub (deployment 1 at https://pr-7-web-"),
        "{note}"
    );

    // Synchronize: a new deployment of the new head, in progress then success.
    pull_request(&h, &shop, "shop", "d-2", "synchronize", 7, HEAD_B).await;
    until(&gh, "success of the new head", |gh| {
        states(&gh.statuses("acme/shop"), 2).contains(&"success".to_owned())
    })
    .await;
    let deployments = gh.deployments("acme/shop");
    assert_eq!(deployments[1]["ref"], HEAD_B, "{deployments:?}");
    assert_eq!(
        states(&gh.statuses("acme/shop"), 2),
        ["in_progress", "success"]
    );

    // Closed: inactive, and nothing more is sent for it.
    pull_request(&h, &shop, "shop", "d-3", "closed", 7, HEAD_B).await;
    until(&gh, "inactive", |gh| {
        states(&gh.statuses("acme/shop"), 2).contains(&"inactive".to_owned())
    })
    .await;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while github_status(&h, &a, p, "d-3").await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "d-3 shows no github status"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        github_status(&h, &a, p, "d-3")
            .await
            .unwrap()
            .starts_with("inactive sent to GitHub"),
    );

    // A build that fails: failure.
    let broken = project(&h, &a, "broken", "broken").await;
    let (status, _) = h
        .call(
            "PUT",
            &format!("/projects/{}/github-token", broken.0),
            &a,
            Some(json!({ "token": TOKEN })),
        )
        .await;
    assert_eq!(status, 200);
    pull_request(&h, &broken, "broken", "d-4", "opened", 1, HEAD_A).await;
    until(&gh, "failure", |gh| {
        gh.statuses("acme/broken")
            .iter()
            .any(|(_, s)| s["state"] == "failure")
    })
    .await;
    assert_eq!(
        gh.statuses("acme/broken").last().unwrap().1["environment"],
        "pr-1"
    );

    // A token GitHub refuses: the refusal is on the delivery, a bounded number of tries, and
    // the preview deploys anyway.
    let api = project(&h, &a, "api", "api").await;
    let (status, _) = h
        .call(
            "PUT",
            &format!("/projects/{}/github-token", api.0),
            &a,
            Some(json!({ "token": "github_pat_revoked_000000000" })),
        )
        .await;
    assert_eq!(status, 200);
    let opened = pull_request(&h, &api, "api", "d-5", "opened", 3, HEAD_A).await;
    for d in opened["deployments"].as_array().unwrap() {
        let done = h
            .wait_terminal(&a, d["deployment_id"].as_str().unwrap(), LIMIT)
            .await;
        assert_eq!(done["state"], "ready", "{done}");
    }
    let deadline = tokio::time::Instant::now() + LIMIT;
    let note = loop {
        if let Some(note) = github_status(&h, &a, &api.0, "d-5").await {
            break note;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "d-5 shows no github status"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        note.contains("not sent to GitHub")
            && note.contains("401")
            && note.contains("Bad credentials"),
        "{note}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let tries = gh
        .received()
        .iter()
        .filter(|r| r.path == "/repos/acme/api/deployments")
        .count();
    assert_eq!(
        tries,
        control::github::MAX_ATTEMPTS as usize,
        "tries of a refused token"
    );

    // Removing the token: nothing is sent any more.
    let (status, _) = h
        .call("DELETE", &format!("/projects/{p}/github-token"), &a, None)
        .await;
    assert_eq!(status, 204);
    let (_, previews) = h
        .call("GET", &format!("/projects/{p}/previews"), &a, None)
        .await;
    assert_eq!(previews["has_github_token"], false);

    assert!(
        gh.violations.lock().unwrap().is_empty(),
        "{:?}",
        gh.violations.lock().unwrap()
    );
    h.stop().await;
    Ok(())
}
