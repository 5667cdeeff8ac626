//! The webhook delivery log (#17) against a real control plane and PostgreSQL: every delivery
//! to a known service is listed under its project, newest first, with what became of it
//! (deployed, ignored and why, refused and why), so a user can see why a push did nothing.

mod common;

use common::{Harness, fake_clients, fakes::Fakes};
use control::crypto::github_signature;
use serde_json::{Value, json};

const SECRET: &str = "correct horse battery staple 2024!";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

async fn send(h: &Harness, service: &str, event: &str, body: &[u8], signed: bool, id: &str) -> u16 {
    let mut req = h
        .http
        .post(format!("{}/webhooks/github/{service}", h.url))
        .header("x-github-event", event)
        .header("x-github-delivery", id)
        .body(body.to_vec());
    if signed {
        req = req.header(
            "x-hub-signature-256",
            github_signature(SECRET.as_bytes(), body),
        );
    }
    req.send().await.expect("webhook request").status().as_u16()
}

fn push(branch: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "ref": format!("refs/heads/{branch}"), "after": COMMIT })).unwrap()
}

#[tokio::test]
async fn every_delivery_is_listed_with_its_outcome_and_why() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("org-a").await;
    let (project, service) = h
        .service(
            &a,
            json!({ "name": "web", "git": { "url": "file:///srv/app.git" }, "webhook_secret": SECRET }),
        )
        .await;
    let sends = [
        ("push", push("main"), false, "d-1", 401),
        ("push", push("main"), true, "d-2", 202),
        ("push", push("feature"), true, "d-3", 202),
        ("push", push("main"), true, "d-2", 200),
        ("push", push("main"), true, "d-4", 409),
        ("pull_request", b"{}".to_vec(), true, "d-5", 202),
    ];
    for (event, body, signed, id, want) in &sends {
        let status = send(&h, &service, event, body, *signed, id).await;
        assert_eq!(status, *want, "delivery {id}");
    }
    let (status, log) = h
        .call(
            "GET",
            &format!("/projects/{project}/webhook-deliveries"),
            &a,
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    let items = log["items"].as_array().unwrap();
    let seen: Vec<(&str, &str, i64)> = items
        .iter()
        .map(|d| {
            (
                d["delivery_id"].as_str().unwrap(),
                d["outcome"].as_str().unwrap(),
                d["http_status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("d-5", "ignored", 202),
            ("d-4", "refused", 409),
            ("d-2", "ignored", 200),
            ("d-3", "ignored", 202),
            ("d-2", "deployed", 202),
            ("d-1", "refused", 401),
        ],
        "newest first: {log}"
    );
    let reason = |i: usize| items[i]["reason"].as_str().unwrap().to_owned();
    assert!(reason(0).contains("pull_request"), "{}", reason(0));
    assert!(reason(1).contains("replay"), "{}", reason(1));
    assert!(reason(2).contains("duplicate"), "{}", reason(2));
    assert!(
        reason(3).contains("refs/heads/feature") && reason(3).contains("deploys main"),
        "{}",
        reason(3)
    );
    assert!(reason(4).contains(COMMIT), "{}", reason(4));
    assert!(reason(5).contains("signature"), "{}", reason(5));
    let deployment = items[4]["deployment_id"].as_str().unwrap();
    let (status, d) = h
        .call("GET", &format!("/deployments/{deployment}"), &a, None)
        .await;
    assert_eq!(status, 200, "{d}");
    for item in items {
        assert_eq!(item["service_id"], service.as_str());
        assert_eq!(item["service_name"], "web");
        assert!(!item["event"].as_str().unwrap().is_empty());
    }

    // Of one service, the newest few.
    let (_, two) = h
        .call(
            "GET",
            &format!("/projects/{project}/webhook-deliveries?service={service}&limit=2"),
            &a,
            None,
        )
        .await;
    let ids: Vec<&str> = two["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d: &Value| d["delivery_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d-5", "d-4"]);
    let (status, _) = h
        .call(
            "GET",
            &format!("/projects/{project}/webhook-deliveries?limit=0"),
            &a,
            None,
        )
        .await;
    assert_eq!(status, 422);

    // Another organization sees nothing of it.
    let (_, b) = h.org("org-b").await;
    let (status, _) = h
        .call(
            "GET",
            &format!("/projects/{project}/webhook-deliveries"),
            &b,
            None,
        )
        .await;
    assert_eq!(status, 404);
    h.stop().await;
    Ok(())
}
