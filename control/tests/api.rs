//! The REST API against a real control plane on loopback and a real PostgreSQL database.

mod common;

use common::{ADMIN, Harness, fake_clients, fakes::Fakes};
use control::crypto::github_signature;
use serde_json::json;

#[tokio::test]
async fn an_organization_never_sees_another_ones_objects() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("org-a").await;
    let (_, b) = h.org("org-b").await;
    let (project, service) = h
        .service(&a, json!({ "name": "web", "image": "x:1" }))
        .await;
    let deployment = h.deploy(&a, &service, json!({})).await;
    let (_, env) = h
        .call(
            "GET",
            &format!("/projects/{project}/environments"),
            &a,
            None,
        )
        .await;
    let env = env["items"][0]["id"].as_str().unwrap().to_owned();

    let reads = [
        format!("/projects/{project}"),
        format!("/projects/{project}/environments"),
        format!("/projects/{project}/services"),
        format!("/environments/{env}"),
        format!("/services/{service}"),
        format!("/services/{service}/deployments"),
        format!("/deployments/{deployment}"),
    ];
    for path in &reads {
        let (status, _) = h.call("GET", path, &a, None).await;
        assert_eq!(status, 200, "org A reads its own {path}");
        let (status, v) = h.call("GET", path, &b, None).await;
        assert_eq!(status, 404, "org B must get 404 on {path}: {v}");
    }
    let writes = [
        (
            "PATCH",
            format!("/services/{service}"),
            Some(json!({ "port": 81 })),
        ),
        (
            "POST",
            format!("/services/{service}/deployments"),
            Some(json!({})),
        ),
        ("POST", format!("/deployments/{deployment}/rollback"), None),
        ("POST", format!("/deployments/{deployment}/cancel"), None),
        (
            "POST",
            format!("/projects/{project}/services"),
            Some(json!({ "name": "x", "image": "i" })),
        ),
        (
            "POST",
            format!("/projects/{project}/environments"),
            Some(json!({ "name": "x", "branch": "b" })),
        ),
        ("DELETE", format!("/services/{service}"), None),
        ("DELETE", format!("/projects/{project}"), None),
    ];
    for (method, path, body) in writes {
        let (status, v) = h.call(method, &path, &b, body).await;
        assert_eq!(status, 404, "org B must get 404 on {method} {path}: {v}");
    }
    let (_, list) = h.call("GET", "/projects", &b, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    // Still there for A.
    let (status, _) = h
        .call("GET", &format!("/services/{service}"), &a, None)
        .await;
    assert_eq!(status, 200);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn tokens_are_required_and_roles_are_separate() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("org-a").await;
    let resp = h.http.get(format!("{}/projects", h.url)).send().await?;
    assert_eq!(resp.status(), 401);
    let (status, v) = h.call("GET", "/projects", "sp_not_a_token", None).await;
    assert_eq!(status, 401, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("token"));
    let (status, _) = h
        .call("POST", "/organizations", &a, Some(json!({ "name": "x" })))
        .await;
    assert_eq!(
        status, 403,
        "an organization token cannot create organizations"
    );
    let (status, _) = h.call("GET", "/projects", ADMIN, None).await;
    assert_eq!(status, 403, "the operator token has no organization");
    // A second token works; a revoked one does not.
    let (status, t) = h
        .call("POST", "/tokens", &a, Some(json!({ "name": "ci" })))
        .await;
    assert_eq!(status, 201);
    let ci = t["secret"].as_str().unwrap();
    assert_eq!(h.call("GET", "/organization", ci, None).await.0, 200);
    let tid = t["token"]["id"].as_str().unwrap();
    assert_eq!(
        h.call("DELETE", &format!("/tokens/{tid}"), &a, None)
            .await
            .0,
        204
    );
    assert_eq!(h.call("GET", "/organization", ci, None).await.0, 401);
    // Only the hash is stored.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_sha256 FROM api_tokens")
        .fetch_all(&h.store().pool)
        .await?;
    assert!(stored.iter().all(|h| h.len() == 32));
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_naming_the_field() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("org-a").await;
    let raw = |body: &'static str| {
        h.http
            .post(format!("{}/projects", h.url))
            .bearer_auth(&a)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = raw("{\"name\": ").await?;
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await?;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON"),
        "{v}"
    );

    let cases = [
        (json!({}), "name"),
        (json!({ "name": "ok", "colour": "red" }), "colour"),
        (json!({ "name": 5 }), "name"),
        (json!({ "name": "Not OK" }), "name"),
    ];
    for (body, field) in cases {
        let (status, v) = h.call("POST", "/projects", &a, Some(body.clone())).await;
        assert_eq!(status, 422, "{body} -> {v}");
        assert_eq!(v["error"]["field"], field, "{body} -> {v}");
    }
    let (_, p) = h
        .call("POST", "/projects", &a, Some(json!({ "name": "app" })))
        .await;
    let pid = p["id"].as_str().unwrap();
    let service_cases = [
        (json!({ "name": "web" }), "image"),
        (
            json!({ "name": "web", "image": "i", "git": { "url": "u" } }),
            "image",
        ),
        (
            json!({ "name": "web", "image": "i", "port": 70000 }),
            "port",
        ),
        (
            json!({ "name": "web", "image": "i", "env": { "1BAD": "x" } }),
            "env",
        ),
        (
            json!({ "name": "web", "image": "i", "kind": "gpu" }),
            "kind",
        ),
        (
            json!({ "name": "web", "image": "i", "domains": ["Bad Domain"] }),
            "domains",
        ),
        (
            json!({ "name": "web", "image": "i", "health_check": { "path": "healthz" } }),
            "health_check.path",
        ),
        (
            json!({ "name": "web", "git": { "branch": "x" } }),
            "git.branch",
        ),
        (json!({ "name": "web", "git": {} }), "git.url"),
    ];
    for (body, field) in service_cases {
        let (status, v) = h
            .call(
                "POST",
                &format!("/projects/{pid}/services"),
                &a,
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 422, "{body} -> {v}");
        assert_eq!(v["error"]["field"], field, "{body} -> {v}");
    }
    let (status, v) = h
        .call("POST", "/projects", &a, Some(json!({ "name": "app" })))
        .await;
    assert_eq!(status, 409, "duplicate name: {v}");
    let (status, v) = h.call("GET", "/projects?limit=0", &a, None).await;
    assert_eq!((status, v["error"]["field"].as_str()), (422, Some("limit")));
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn lists_paginate_and_creates_are_idempotent() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("org-a").await;
    for i in 0..5 {
        h.call(
            "POST",
            "/projects",
            &a,
            Some(json!({ "name": format!("p{i}") })),
        )
        .await;
    }
    let mut names = vec![];
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = after
            .as_ref()
            .map(|a| format!("&after={a}"))
            .unwrap_or_default();
        let (_, page) = h
            .call("GET", &format!("/projects?limit=2{q}"), &a, None)
            .await;
        pages += 1;
        for p in page["items"].as_array().unwrap() {
            names.push(p["name"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
    assert_eq!(pages, 3);

    let post = |key: &'static str, name: &'static str| {
        h.http
            .post(format!("{}/projects", h.url))
            .bearer_auth(&a)
            .header("idempotency-key", key)
            .json(&json!({ "name": name }))
            .send()
    };
    let first: serde_json::Value = post("k1", "idem").await?.json().await?;
    let again = post("k1", "idem").await?;
    assert_eq!(again.status(), 201);
    let again: serde_json::Value = again.json().await?;
    assert_eq!(
        first["id"], again["id"],
        "a retried create returns the first result"
    );
    let other = post("k1", "different").await?;
    assert_eq!(other.status(), 422);
    let v: serde_json::Value = other.json().await?;
    assert_eq!(v["error"]["field"], "Idempotency-Key");
    let (_, list) = h.call("GET", "/projects?limit=100", &a, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 6);

    // The same key sent five times at once creates one project.
    let racing = futures::future::join_all((0..5).map(|_| post("k2", "race"))).await;
    let mut ids = vec![];
    for r in racing {
        let r = r?;
        let status = r.status().as_u16();
        assert!(status == 201 || status == 409, "{status}");
        if status == 201 {
            ids.push(r.json::<serde_json::Value>().await?["id"].clone());
        }
    }
    assert!(
        !ids.is_empty() && ids.iter().all(|i| *i == ids[0]),
        "{ids:?}"
    );
    // A create that failed (duplicate name) frees its key: the retry runs again.
    assert_eq!(post("k3", "race").await?.status(), 409);
    assert_eq!(post("k3", "race").await?.status(), 409);
    let (_, list) = h.call("GET", "/projects?limit=100", &a, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 7);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_masked() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("org-a").await;
    let (_, service) = h
        .service(
            &a,
            json!({ "name": "web", "image": "i", "env": { "MODE": "prod" }, "secrets": { "API_KEY": "hunter2-secret" } }),
        )
        .await;
    let (_, s) = h
        .call("GET", &format!("/services/{service}"), &a, None)
        .await;
    assert_eq!(
        s["env"]["MODE"],
        json!({ "value": "prod", "secret": false })
    );
    assert_eq!(
        s["env"]["API_KEY"],
        json!({ "value": null, "secret": true })
    );
    let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT value_enc FROM service_env")
        .fetch_all(&h.store().pool)
        .await?;
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert!(
            !r.windows(7)
                .any(|w| w == b"hunter2" || w.starts_with(b"prod")),
            "stored in clear"
        );
    }
    let env = h.store().service_env(service.parse()?).await?;
    assert_eq!(env["API_KEY"], ("hunter2-secret".to_owned(), true));
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn openapi_is_public_and_every_route_exists_and_mutations_are_audited() -> anyhow::Result<()>
{
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("org-a").await;
    let doc: serde_json::Value = h
        .http
        .get(format!("{}/openapi.json", h.url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(doc["openapi"], "3.1.0");
    let id = uuid::Uuid::new_v4();
    for (method, path) in control::api::ROUTES {
        let path = path.replace("{id}", &id.to_string());
        let (status, v) = h
            .call(&method.to_uppercase(), &path, &a, Some(json!({})))
            .await;
        assert_ne!(status, 405, "{method} {path}");
        assert_ne!(
            v["error"]["message"], "no such route",
            "{method} {path} is not routed"
        );
    }
    h.call("POST", "/projects", &a, Some(json!({ "name": "audited" })))
        .await;
    let (_, audit) = h.call("GET", "/audit", &a, None).await;
    let entries = audit["items"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["path"] == "/projects" && e["method"] == "POST" && e["status"] == 201),
        "{audit}"
    );
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn github_webhook_queues_a_push_to_the_branch_once() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    let (_, a) = h.org("org-a").await;
    let (_, service) = h
        .service(&a, json!({ "name": "web", "git": { "url": "file:///srv/app.git" }, "webhook_secret": "It's a Secret to Everybody, 32 characters or more" }))
        .await;
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let body = serde_json::to_vec(
        &json!({ "ref": "refs/heads/main", "after": commit, "repository": { "full_name": "acme/app" } }),
    )?;
    let send = |body: Vec<u8>, sig: String, delivery: &'static str| {
        h.http
            .post(format!("{}/webhooks/github/{service}", h.url))
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
    };
    let secret = b"It's a Secret to Everybody, 32 characters or more";
    // Builds take an hour: the webhook must answer long before one ends.
    *fakes.builder.delay.lock().unwrap() = std::time::Duration::from_secs(3600);
    let resp = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        send(body.clone(), github_signature(secret, &body), "d-1"),
    )
    .await
    .expect("the webhook waited for the build")?;
    assert_eq!(resp.status(), 202);
    let v: serde_json::Value = resp.json().await?;
    assert_eq!(v["status"], "queued", "{v}");
    let id = v["deployment_id"].as_str().unwrap().to_owned();

    let dup = send(body.clone(), github_signature(secret, &body), "d-1").await?;
    assert_eq!(dup.status(), 200);
    let bad = send(body.clone(), github_signature(b"wrong", &body), "d-2").await?;
    assert_eq!(bad.status(), 401);
    let unsigned = h
        .http
        .post(format!("{}/webhooks/github/{service}", h.url))
        .header("x-github-delivery", "d-3")
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(unsigned.status(), 401);
    let other = serde_json::to_vec(&json!({ "ref": "refs/heads/feature", "after": commit }))?;
    let resp = send(other.clone(), github_signature(secret, &other), "d-4").await?;
    assert_eq!(resp.status(), 202);
    let v: serde_json::Value = resp.json().await?;
    assert!(v["status"].as_str().unwrap().contains("ignored"), "{v}");

    let (_, list) = h
        .call("GET", &format!("/services/{service}/deployments"), &a, None)
        .await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "one deployment for one push: {list}"
    );
    let d = h
        .call("GET", &format!("/deployments/{id}"), &a, None)
        .await
        .1;
    assert_eq!(d["git_commit"], commit);
    assert_eq!(d["git_ref"], "main");
    h.stop().await;
    Ok(())
}
