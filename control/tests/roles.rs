//! Token roles and expiry against a real control plane and PostgreSQL: every route of
//! `api::ROUTES` called with each role, minting limits, expired tokens.

mod common;

use common::{ADMIN, Harness, fake_clients, fakes::Fakes};
use serde_json::json;

/// Routes a deployer may call besides every GET (the spec of the matrix, written apart from
/// `api::roles` on purpose).
const DEPLOYER: &[(&str, &str)] = &[
    ("post", "/services/{id}/deployments"),
    ("post", "/deployments/{id}/rollback"),
    ("post", "/deployments/{id}/cancel"),
    ("post", "/services/{id}/domains"),
    ("delete", "/services/{id}/domains/{domain}"),
    ("post", "/services/{id}/domains/{domain}/verify"),
];
/// Reads only an owner may make: who holds which token.
const OWNER_READS: &[(&str, &str)] = &[("get", "/tokens")];
const OPERATOR: &[(&str, &str)] = &[
    ("post", "/organizations"),
    ("get", "/nodes"),
    ("post", "/nodes"),
    ("delete", "/nodes/{id}"),
    ("post", "/nodes/{id}/drain"),
    ("post", "/nodes/{id}/heartbeat"),
    ("post", "/nodes/join-tokens"),
];
const PUBLIC: &[(&str, &str)] = &[
    ("get", "/openapi.json"),
    ("post", "/webhooks/github/{id}"),
    // A project's repository webhook (previews, #17): signed with the project's secret.
    ("post", "/webhooks/github/projects/{id}"),
    // Dashboard sign-in: a session cookie, not a bearer token (tests/dashboard_session.rs).
    ("get", "/session"),
    ("post", "/session"),
    ("delete", "/session"),
    // A node joining proves itself with a one-time join token instead (tests/join.rs).
    ("post", "/nodes/join"),
];

/// Whether `role` (None = the operator token) may call `method route`.
fn allowed(role: Option<&str>, method: &str, route: &str) -> bool {
    let is = |t: &[(&str, &str)]| t.contains(&(method, route));
    if is(PUBLIC) {
        return true;
    }
    match role {
        None => is(OPERATOR),
        Some(_) if is(OPERATOR) => false,
        Some("owner") => true,
        Some(_) if is(OWNER_READS) => false,
        Some("deployer") => method == "get" || is(DEPLOYER),
        Some("read_only") => method == "get",
        Some(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn every_route_answers_each_role_as_the_matrix_says() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, owner) = h.org("org-a").await;
    let mut tokens = vec![("owner".to_owned(), Some("owner"))];
    for role in ["deployer", "read_only"] {
        let (status, t) = h
            .call(
                "POST",
                "/tokens",
                &owner,
                Some(json!({ "name": role, "role": role })),
            )
            .await;
        assert_eq!(status, 201, "{t}");
        assert_eq!(t["token"]["role"], role);
        tokens.push((t["secret"].as_str().unwrap().to_owned(), Some(role)));
    }
    tokens[0].0 = owner.clone();
    tokens.push((ADMIN.to_owned(), None));

    let id = uuid::Uuid::new_v4().to_string();
    let mut checked = 0;
    for (token, role) in &tokens {
        for (method, route) in control::api::ROUTES {
            let path = route
                .replace("{id}", &id)
                .replace("{domain}", "shop.example.com");
            let (status, v) = h
                .call(&method.to_uppercase(), &path, token, Some(json!({})))
                .await;
            let want = allowed(*role, method, route);
            let who = role.unwrap_or("operator");
            if want {
                assert_ne!(
                    status, 403,
                    "{who} must be let through {method} {route}: {v}"
                );
                if !PUBLIC.contains(&(method, route)) {
                    assert_ne!(status, 401, "{who} {method} {route}: {v}");
                }
            } else if role.is_some() && !OPERATOR.contains(&(method, route)) {
                assert_eq!(status, 403, "{who} must be refused {method} {route}: {v}");
                let message = v["error"]["message"].as_str().unwrap_or_default();
                let need = if DEPLOYER.contains(&(method, route)) {
                    "deployer"
                } else {
                    "owner"
                };
                assert!(
                    message.contains(&format!("needs the {need} role")) && message.contains(who),
                    "{who} {method} {route}: the 403 names the role needed: {message}"
                );
            } else {
                // The operator token on organization routes, org tokens on operator routes.
                assert_eq!(status, 403, "{who} must be refused {method} {route}: {v}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * control::api::ROUTES.len());
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_deployer_deploys_but_cannot_mint_tokens_add_members_or_change_config()
-> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, owner) = h.org("org-a").await;
    let (_, service) = h
        .service(&owner, json!({ "name": "web", "image": "x:1" }))
        .await;
    let (_, t) = h
        .call(
            "POST",
            "/tokens",
            &owner,
            Some(json!({ "name": "ci", "role": "deployer" })),
        )
        .await;
    let deployer = t["secret"].as_str().unwrap().to_owned();

    let d = h.deploy(&deployer, &service, json!({})).await;
    assert!(!d.is_empty());
    for (method, path, body) in [
        (
            "POST",
            "/tokens".to_owned(),
            json!({ "name": "x", "role": "read_only" }),
        ),
        (
            "POST",
            "/members".to_owned(),
            json!({ "email": "a@b.c", "role": "owner" }),
        ),
        (
            "PATCH",
            format!("/services/{service}"),
            json!({ "port": 81 }),
        ),
        ("PATCH", format!("/services/{service}/webhook"), json!({})),
        ("POST", "/projects".to_owned(), json!({ "name": "more" })),
    ] {
        let (status, v) = h.call(method, &path, &deployer, Some(body)).await;
        assert_eq!(status, 403, "{method} {path}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("owner"),
            "{v}"
        );
    }
    let (_, members) = h.call("GET", "/members", &owner, None).await;
    assert_eq!(members["items"].as_array().unwrap().len(), 0);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn tokens_expire_and_never_outrank_or_outlive_their_minter() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, owner) = h.org("org-a").await;
    let now = chrono::Utc::now();
    let at = |d: chrono::TimeDelta| (now + d).to_rfc3339();

    for (expires, why) in [
        (at(chrono::TimeDelta::seconds(-5)), "in the past"),
        (at(chrono::TimeDelta::days(400)), "beyond the maximum"),
    ] {
        let (status, v) = h
            .call(
                "POST",
                "/tokens",
                &owner,
                Some(json!({ "name": "x", "expires_at": expires })),
            )
            .await;
        assert_eq!(
            (status, v["error"]["field"].as_str()),
            (422, Some("expires_at")),
            "{why}: {v}"
        );
    }
    let (status, v) = h
        .call(
            "POST",
            "/tokens",
            &owner,
            Some(json!({ "name": "x", "role": "admin" })),
        )
        .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (422, Some("role")),
        "{v}"
    );

    // An owner token that expires in an hour.
    let (status, t) = h
        .call(
            "POST",
            "/tokens",
            &owner,
            Some(json!({ "name": "hour", "expires_at": at(chrono::TimeDelta::hours(1)) })),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    assert_eq!(t["token"]["role"], "owner");
    let hour = t["secret"].as_str().unwrap().to_owned();
    let hour_id = t["token"]["id"].as_str().unwrap().to_owned();
    // It cannot mint a token that outlives it; a token it mints inherits its expiry.
    let (status, v) = h
        .call(
            "POST",
            "/tokens",
            &hour,
            Some(json!({ "name": "y", "expires_at": at(chrono::TimeDelta::hours(2)) })),
        )
        .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (422, Some("expires_at")),
        "{v}"
    );
    let (status, child) = h
        .call(
            "POST",
            "/tokens",
            &hour,
            Some(json!({ "name": "child", "role": "read_only" })),
        )
        .await;
    assert_eq!(status, 201, "{child}");
    assert_eq!(child["token"]["expires_at"], t["token"]["expires_at"]);
    let child = child["secret"].as_str().unwrap().to_owned();
    assert_eq!(h.call("GET", "/organization", &hour, None).await.0, 200);
    assert_eq!(h.call("GET", "/organization", &child, None).await.0, 200);

    // Once past its expiry it is 401 (moved into the past rather than waited for).
    sqlx::query(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
    )
    .bind(&hour_id)
    .execute(&h.store().pool)
    .await?;
    let (status, v) = h.call("GET", "/organization", &hour, None).await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(
        h.call("POST", "/projects", &hour, Some(json!({ "name": "late" })))
            .await
            .0,
        401
    );
    assert_eq!(h.call("GET", "/organization", &owner, None).await.0, 200);
    h.stop().await;
    Ok(())
}
