//! `GET /tokens` (the organization's tokens without a secret, to an owner only) and
//! `DELETE /members/{id}` against a real control plane and PostgreSQL.

mod common;

use common::{Harness, fake_clients, fakes::Fakes};
use serde_json::{Value, json};

fn names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn tokens_are_listed_without_secrets_and_a_revoked_one_is_gone() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, owner) = h.org("org-a").await;
    let (_, other) = h.org("org-b").await;
    let expires = (chrono::Utc::now() + chrono::TimeDelta::days(30)).to_rfc3339();
    let (status, ci) = h
        .call(
            "POST",
            "/tokens",
            &owner,
            Some(json!({ "name": "ci", "role": "deployer", "expires_at": expires })),
        )
        .await;
    assert_eq!(status, 201, "{ci}");
    let ci_secret = ci["secret"].as_str().unwrap().to_owned();
    let ci_id = ci["token"]["id"].as_str().unwrap().to_owned();

    let (status, list) = h.call("GET", "/tokens", &owner, None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(names(&list), ["initial", "ci"], "oldest first: {list}");
    let text = list.to_string();
    assert!(
        !text.contains(&ci_secret) && !text.contains(&owner) && !text.contains("sha256"),
        "no secret nor hash is listed: {text}"
    );
    let listed = &list["items"][1];
    assert_eq!(listed["id"], ci_id.as_str());
    assert_eq!(listed["role"], "deployer");
    assert_eq!(listed["expired"], false);
    assert!(listed["expires_at"].is_string(), "{listed}");
    assert!(listed["created_at"].is_string(), "{listed}");
    assert!(listed["last_used_at"].is_null(), "never used yet: {listed}");
    // The owner token has just been used (this very call).
    assert!(list["items"][0]["last_used_at"].is_string(), "{list}");
    assert!(list["items"][0]["expires_at"].is_null(), "{list}");

    // A use is recorded; another organization sees only its own.
    assert_eq!(
        h.call("GET", "/organization", &ci_secret, None).await.0,
        200
    );
    let (_, list) = h.call("GET", "/tokens", &owner, None).await;
    assert!(list["items"][1]["last_used_at"].is_string(), "{list}");
    // Who holds which token is the owner's to see: a deployer or read_only token is refused.
    let (_, reader) = h
        .call(
            "POST",
            "/tokens",
            &owner,
            Some(json!({ "name": "dash", "role": "read_only" })),
        )
        .await;
    let reader = reader["secret"].as_str().unwrap().to_owned();
    for (token, role) in [(&ci_secret, "deployer"), (&reader, "read_only")] {
        let (status, v) = h.call("GET", "/tokens", token, None).await;
        assert_eq!(status, 403, "{role}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("needs the owner role") && message.contains(role),
            "{message}"
        );
    }
    let (_, list) = h.call("GET", "/tokens", &owner, None).await;
    let reader_id = list["items"][2]["id"].as_str().unwrap().to_owned();
    let (status, _) = h
        .call("DELETE", &format!("/tokens/{reader_id}"), &owner, None)
        .await;
    assert_eq!(status, 204);
    let (_, theirs) = h.call("GET", "/tokens", &other, None).await;
    assert_eq!(names(&theirs), ["initial"], "{theirs}");

    // An expired token is still listed, marked; a revoked one is not.
    sqlx::query(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
    )
    .bind(&ci_id)
    .execute(&h.store().pool)
    .await?;
    let (_, list) = h.call("GET", "/tokens", &owner, None).await;
    assert_eq!(list["items"][1]["expired"], true, "{list}");
    let (status, _) = h
        .call("DELETE", &format!("/tokens/{ci_id}"), &owner, None)
        .await;
    assert_eq!(status, 204);
    let (_, list) = h.call("GET", "/tokens", &owner, None).await;
    assert_eq!(names(&list), ["initial"], "{list}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_member_is_removed_once_and_only_by_its_organization() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, owner) = h.org("org-a").await;
    let (_, other) = h.org("org-b").await;
    let (status, m) = h
        .call(
            "POST",
            "/members",
            &owner,
            Some(json!({ "email": "ada@shop.example", "role": "developer" })),
        )
        .await;
    assert_eq!(status, 201, "{m}");
    let path = format!("/members/{}", m["id"].as_str().unwrap());
    let (status, v) = h.call("DELETE", &path, &other, None).await;
    assert_eq!(status, 404, "another organization's member: {v}");
    let (status, _) = h.call("DELETE", &path, &owner, None).await;
    assert_eq!(status, 204);
    let (_, list) = h.call("GET", "/members", &owner, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    let (status, v) = h.call("DELETE", &path, &owner, None).await;
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("member"),
        "{v}"
    );
    h.stop().await;
    Ok(())
}
