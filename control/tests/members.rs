//! `PATCH /members/{id}` (a member's role) against a real control plane and PostgreSQL: the
//! role changes, a bad role is 422 naming `role`, another organization's member is 404, a
//! deployer is refused, and the organization's last owner can be neither demoted nor removed,
//! also when two owners demote each other at the same moment.

mod common;

use common::{Harness, fake_clients, fakes::Fakes};
use serde_json::{Value, json};

async fn add(h: &Harness, token: &str, email: &str, role: &str) -> String {
    let (status, m) = h
        .call(
            "POST",
            "/members",
            token,
            Some(json!({ "email": email, "role": role })),
        )
        .await;
    assert_eq!(status, 201, "{m}");
    m["id"].as_str().unwrap().to_owned()
}

async fn set(h: &Harness, token: &str, id: &str, role: &str) -> (u16, Value) {
    h.call(
        "PATCH",
        &format!("/members/{id}"),
        token,
        Some(json!({ "role": role })),
    )
    .await
}

#[tokio::test]
async fn a_members_role_changes_and_the_last_owner_stays() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, owner) = h.org("org-a").await;
    let (_, other) = h.org("org-b").await;
    let ada = add(&h, &owner, "ada@shop.example", "owner").await;
    let bob = add(&h, &owner, "bob@shop.example", "developer").await;

    let (status, m) = set(&h, &owner, &bob, "admin").await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(
        (m["email"].as_str(), m["role"].as_str()),
        (Some("bob@shop.example"), Some("admin"))
    );
    let (_, list) = h.call("GET", "/members", &owner, None).await;
    assert_eq!(list["items"][1]["role"], "admin", "{list}");

    // Ada is the only owner: she can be neither demoted nor removed.
    let (status, v) = set(&h, &owner, &ada, "developer").await;
    assert_eq!(status, 409, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("ada@shop.example") && message.contains("last owner"),
        "{message}"
    );
    let (status, v) = h
        .call("DELETE", &format!("/members/{ada}"), &owner, None)
        .await;
    assert_eq!(status, 409, "{v}");
    // An owner staying owner is no demotion.
    assert_eq!(set(&h, &owner, &ada, "owner").await.0, 200);

    // With Bob an owner too, Ada can step down; then Bob is the last one.
    assert_eq!(set(&h, &owner, &bob, "owner").await.0, 200);
    let (status, m) = set(&h, &owner, &ada, "viewer").await;
    assert_eq!((status, m["role"].as_str()), (200, Some("viewer")), "{m}");
    assert_eq!(set(&h, &owner, &bob, "admin").await.0, 409);

    // Refusals name what is wrong.
    let (status, v) = set(&h, &owner, &ada, "king").await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["field"], "role", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("king"),
        "{v}"
    );
    let (status, v) = set(&h, &other, &ada, "owner").await;
    assert_eq!(status, 404, "another organization's member: {v}");
    let (status, v) = set(&h, &owner, &uuid::Uuid::new_v4().to_string(), "owner").await;
    assert_eq!(status, 404, "{v}");
    let (status, t) = h
        .call(
            "POST",
            "/tokens",
            &owner,
            Some(json!({ "name": "ci", "role": "deployer" })),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    let deployer = t["secret"].as_str().unwrap();
    let (status, v) = set(&h, deployer, &ada, "owner").await;
    assert_eq!(status, 403, "a deployer changes no role: {v}");

    // Two owners demoting each other at once: one of them stays owner.
    assert_eq!(set(&h, &owner, &ada, "owner").await.0, 200);
    let (a, b) = tokio::join!(
        set(&h, &owner, &ada, "developer"),
        set(&h, &owner, &bob, "developer")
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let (_, list) = h.call("GET", "/members", &owner, None).await;
    let owners = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "owner")
        .count();
    assert_eq!(owners, 1, "{list}");
    h.stop().await;
    Ok(())
}
