//! GitHub webhooks against a real control plane and PostgreSQL: secrets (refused when weak,
//! generated and shown once, rotated), replays, the rate limit of unauthenticated calls, the
//! audit log, and refs that git would read as options.

mod common;

use common::{Harness, fake_clients, fakes::Fakes};
use control::crypto::github_signature;
use serde_json::{Value, json};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn push(git_ref: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({ "ref": git_ref, "after": after, "repository": { "full_name": "acme/app" } }),
    )
    .unwrap()
}

async fn send(
    h: &Harness,
    service: &str,
    body: &[u8],
    signature: Option<String>,
    delivery: &str,
) -> (u16, Value) {
    let mut req = h
        .http
        .post(format!("{}/webhooks/github/{service}", h.url))
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .body(body.to_vec());
    if let Some(sig) = signature {
        req = req.header("x-hub-signature-256", sig);
    }
    let resp = req.send().await.expect("webhook request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn audit_rows(h: &Harness) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&h.store().pool)
        .await
        .unwrap()
}

async fn deployments(h: &Harness, token: &str, service: &str) -> usize {
    let (_, list) = h
        .call(
            "GET",
            &format!("/services/{service}/deployments"),
            token,
            None,
        )
        .await;
    list["items"].as_array().unwrap().len()
}

/// A git service in a new project; returns (service id, create answer).
async fn git_service(h: &Harness, token: &str, extra: Value) -> (u16, Value) {
    let project = stackpad_tests::unique_ident("p").replace('_', "-");
    let (status, p) = h
        .call("POST", "/projects", token, Some(json!({ "name": project })))
        .await;
    assert_eq!(status, 201, "{p}");
    let mut body = json!({ "name": "web", "git": { "url": "file:///srv/app.git" } });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    h.call(
        "POST",
        &format!("/projects/{}/services", p["id"].as_str().unwrap()),
        token,
        Some(body),
    )
    .await
}

#[tokio::test]
async fn weak_secrets_are_refused_and_a_generated_one_is_shown_once() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("org-a").await;
    for weak in ["", "short", "It's a Secret to Everybody", &"a".repeat(64)] {
        let (status, v) = git_service(&h, &a, json!({ "webhook_secret": weak })).await;
        assert_eq!(status, 422, "{weak:?} -> {v}");
        assert_eq!(v["error"]["field"], "webhook_secret", "{v}");
    }
    let (status, s) = git_service(&h, &a, json!({})).await;
    assert_eq!(status, 201, "{s}");
    let secret = s["webhook_secret"]
        .as_str()
        .expect("generated secret shown")
        .to_owned();
    assert_eq!(secret.len(), 64);
    let id = s["id"].as_str().unwrap();
    let (_, again) = h.call("GET", &format!("/services/{id}"), &a, None).await;
    assert!(
        again.get("webhook_secret").is_none(),
        "shown again: {again}"
    );
    assert_eq!(again["has_webhook_secret"], true);
    assert!(!again.to_string().contains(&secret));
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT webhook_secret_enc FROM services WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&h.store().pool)
            .await?;
    assert!(
        !stored.windows(16).any(|w| w == &secret.as_bytes()[..16]),
        "stored in clear"
    );
    // The generated secret signs a push that is queued.
    let body = push("refs/heads/main", COMMIT);
    let (status, v) = send(
        &h,
        id,
        &body,
        Some(github_signature(secret.as_bytes(), &body)),
        "g-1",
    )
    .await;
    assert_eq!((status, v["status"].as_str()), (202, Some("queued")), "{v}");
    // An image service gets no secret.
    let (_, img) = h
        .service(&a, json!({ "name": "img", "image": "x:1" }))
        .await;
    let (_, img) = h.call("GET", &format!("/services/{img}"), &a, None).await;
    assert_eq!(img["has_webhook_secret"], false);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn rotation_invalidates_the_old_secret() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("org-a").await;
    let (_, s) = git_service(&h, &a, json!({})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let old = s["webhook_secret"].as_str().unwrap().to_owned();

    let (status, v) = h
        .call(
            "PATCH",
            &format!("/services/{id}/webhook"),
            &a,
            Some(json!({ "secret": "too short" })),
        )
        .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (422, Some("secret")),
        "{v}"
    );
    let (status, r) = h
        .call(
            "PATCH",
            &format!("/services/{id}/webhook"),
            &a,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let new = r["webhook_secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);

    let body = push("refs/heads/main", COMMIT);
    let (status, _) = send(
        &h,
        &id,
        &body,
        Some(github_signature(old.as_bytes(), &body)),
        "r-1",
    )
    .await;
    assert_eq!(status, 401, "the old secret no longer signs");
    let (status, v) = send(
        &h,
        &id,
        &body,
        Some(github_signature(new.as_bytes(), &body)),
        "r-2",
    )
    .await;
    assert_eq!(status, 202, "{v}");

    // A given secret that passes the rules works the same way.
    let given = "correct horse battery staple, rotated 2026";
    let (status, r) = h
        .call(
            "PATCH",
            &format!("/services/{id}/webhook"),
            &a,
            Some(json!({ "secret": given })),
        )
        .await;
    assert_eq!(
        (status, r["webhook_secret"].as_str()),
        (200, Some(given)),
        "{r}"
    );
    let other = push("refs/heads/main", &COMMIT.replace('0', "f"));
    let (status, _) = send(
        &h,
        &id,
        &other,
        Some(github_signature(new.as_bytes(), &other)),
        "r-3",
    )
    .await;
    assert_eq!(status, 401);
    let (status, v) = send(
        &h,
        &id,
        &other,
        Some(github_signature(given.as_bytes(), &other)),
        "r-4",
    )
    .await;
    assert_eq!(status, 202, "{v}");

    // An image service has no webhook to rotate; another organization's service is not found.
    let (_, img) = h
        .service(&a, json!({ "name": "img", "image": "x:1" }))
        .await;
    let (status, _) = h
        .call(
            "PATCH",
            &format!("/services/{img}/webhook"),
            &a,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 409);
    let (_, b) = h.org("org-b").await;
    let (status, _) = h
        .call(
            "PATCH",
            &format!("/services/{id}/webhook"),
            &b,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_signed_body_is_processed_once_and_authenticated_calls_are_audited() -> anyhow::Result<()>
{
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("org-a").await;
    let (_, s) = git_service(&h, &a, json!({})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let secret = s["webhook_secret"].as_str().unwrap().as_bytes().to_vec();
    let body = push("refs/heads/main", COMMIT);
    let sig = || Some(github_signature(&secret, &body));

    let before = audit_rows(&h).await;
    let (status, v) = send(&h, &id, &body, sig(), "d-1").await;
    assert_eq!(status, 202, "{v}");
    let (status, v) = send(&h, &id, &body, sig(), "d-1").await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("duplicate delivery ignored"))
    );
    let (status, v) = send(&h, &id, &body, sig(), "d-2-replayed").await;
    assert_eq!(status, 409, "same body, new delivery id: {v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("replay"),
        "{v}"
    );
    assert_eq!(deployments(&h, &a, &id).await, 1);
    // Each of the three signed calls is audited under the organization.
    let (_, audit) = h.call("GET", "/audit", &a, None).await;
    let hooks: Vec<_> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"].as_str().unwrap().starts_with("/webhooks/"))
        .map(|e| e["status"].as_i64().unwrap())
        .collect();
    assert_eq!(hooks, [409, 200, 202], "{audit}");
    assert_eq!(audit_rows(&h).await, before + 3);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn anonymous_calls_write_no_audit_rows_and_hit_the_rate_limit() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("org-a").await;
    let (_, s) = git_service(&h, &a, json!({})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let body = push("refs/heads/main", COMMIT);
    let before = audit_rows(&h).await;
    let mut limited = 0;
    let mut first_limited = None;
    let started = std::time::Instant::now();
    for i in 0..200 {
        let sig =
            (i % 2 == 0).then(|| github_signature(b"not the secret at all, 32+ chars", &body));
        let resp = h
            .http
            .post(format!("{}/webhooks/github/{id}", h.url))
            .header("x-github-event", "push")
            .header("x-github-delivery", format!("anon-{i}"))
            .header("x-hub-signature-256", sig.unwrap_or_default())
            .body(body.clone())
            .send()
            .await?;
        match resp.status().as_u16() {
            401 => {}
            429 => {
                limited += 1;
                first_limited.get_or_insert(i);
                let retry: u64 = resp.headers()["retry-after"].to_str()?.parse()?;
                assert!((1..=60).contains(&retry), "Retry-After {retry}");
            }
            other => panic!("call {i}: {other}"),
        }
    }
    let elapsed = started.elapsed();
    println!(
        "200 anonymous calls in {elapsed:?}: {limited} limited, the first at call {first_limited:?}"
    );
    assert!(limited >= 150, "{limited} of 200 were limited");
    assert_eq!(
        audit_rows(&h).await,
        before,
        "anonymous calls wrote audit rows"
    );
    // A limited caller is answered before its body is read: a 2 MiB body gets 429, not 413.
    let (status, _) = send(&h, &id, &vec![b'x'; 2 << 20], None, "big").await;
    assert_eq!(status, 429);
    // Unknown services are limited the same way and write nothing either.
    let (status, _) = send(&h, &uuid::Uuid::new_v4().to_string(), &body, None, "x").await;
    assert_eq!(status, 429, "this source is over its budget");
    assert_eq!(audit_rows(&h).await, before);

    // Other sources (other loopback addresses) have budgets of their own, until the service's
    // budget (120 a minute) is used up; another service is still reachable then.
    let (_, other) = git_service(&h, &a, json!({})).await;
    let other = other["id"].as_str().unwrap().to_owned();
    let before = audit_rows(&h).await;
    let mut statuses = vec![];
    for n in 2..=6u8 {
        let from = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, n]))
            .build()?;
        let mut last = 0;
        for i in 0..30 {
            last = from
                .post(format!("{}/webhooks/github/{id}", h.url))
                .header("x-github-delivery", format!("src-{n}-{i}"))
                .body(body.clone())
                .send()
                .await?
                .status()
                .as_u16();
            if n == 2 && i == 0 {
                assert_eq!(last, 401, "127.0.0.2 is not limited by 127.0.0.1's calls");
            }
        }
        let to_other = from
            .post(format!("{}/webhooks/github/{other}", h.url))
            .body(body.clone())
            .send()
            .await?
            .status()
            .as_u16();
        statuses.push((n, last, to_other));
    }
    // 127.0.0.1 spent 30 of the service's 120: sources .2 to .4 spend the other 90, so .5 and
    // .6 find the service limited; each source's first call to the other service is refused
    // as unsigned (401) until that source's own budget is gone.
    assert_eq!(
        statuses,
        [
            (2, 401, 429),
            (3, 401, 429),
            (4, 401, 429),
            (5, 429, 401),
            (6, 429, 401)
        ],
        "(source, last call to the service, then a call to another service)"
    );
    // A source within its budget sending more than the API takes gets 413 (and it counts).
    let fresh = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 7]))
        .build()?;
    let resp = fresh
        .post(format!("{}/webhooks/github/{other}", h.url))
        .body(vec![b'x'; 2 << 20])
        .send()
        .await?;
    assert_eq!(resp.status(), 413);
    assert_eq!(audit_rows(&h).await, before);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_push_naming_an_option_like_ref_or_a_short_commit_is_refused() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("org-a").await;
    let (_, s) = git_service(&h, &a, json!({})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let secret = s["webhook_secret"].as_str().unwrap().as_bytes().to_vec();
    let cases = [
        (push("refs/heads/--upload-pack=x", COMMIT), "ref"),
        (push("refs/heads/-x", COMMIT), "ref"),
        (push("refs/heads/a..b", COMMIT), "ref"),
        (push("refs/heads/main", "0123456"), "after"),
        (
            push("refs/heads/main", "--upload-pack=touch /tmp/x"),
            "after",
        ),
    ];
    for (i, (body, field)) in cases.iter().enumerate() {
        let (status, v) = send(
            &h,
            &id,
            body,
            Some(github_signature(&secret, body)),
            &format!("bad-{i}"),
        )
        .await;
        assert_eq!(status, 422, "{v}");
        assert_eq!(v["error"]["field"], *field, "{v}");
    }
    assert_eq!(deployments(&h, &a, &id).await, 0, "nothing was queued");
    h.stop().await;
    Ok(())
}

/// Anonymous calls from many sources use up the service's budget, yet a correctly signed
/// delivery is still taken: the service's budget is only charged and checked for calls that
/// failed the signature check.
#[tokio::test]
async fn anonymous_calls_never_hold_up_a_signed_delivery() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("org-a").await;
    let (_, s) = git_service(&h, &a, json!({})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let secret = s["webhook_secret"].as_str().unwrap().as_bytes().to_vec();
    let body = push("refs/heads/main", COMMIT);
    let from = |n: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 1, n]))
            .build()
    };
    // 200 unsigned calls, 20 from each of ten sources (each within its own budget of 30).
    let mut limited = 0;
    for n in 1..=10u8 {
        let client = from(n)?;
        for i in 0..20 {
            let status = client
                .post(format!("{}/webhooks/github/{id}", h.url))
                .header("x-github-event", "push")
                .header("x-github-delivery", format!("flood-{n}-{i}"))
                .body(body.clone())
                .send()
                .await?
                .status()
                .as_u16();
            match status {
                401 => {}
                429 => limited += 1,
                other => panic!("unsigned call {n}/{i}: {other}"),
            }
        }
    }
    assert_eq!(limited, 80, "the service's budget is 120 a minute");
    // A fresh anonymous source finds the service limited...
    let status = from(11)?
        .post(format!("{}/webhooks/github/{id}", h.url))
        .body(body.clone())
        .send()
        .await?
        .status()
        .as_u16();
    assert_eq!(status, 429);
    // ...but the signed delivery goes through, and is processed.
    let sig = github_signature(&secret, &body);
    let resp = from(12)?
        .post(format!("{}/webhooks/github/{id}", h.url))
        .header("x-github-event", "push")
        .header("x-github-delivery", "genuine-1")
        .header("x-hub-signature-256", sig)
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 202, "{}", resp.text().await?);
    assert_eq!(deployments(&h, &a, &id).await, 1);
    h.stop().await;
    Ok(())
}

/// A secret stored before the rules (long enough but all one character) verifies nothing.
#[tokio::test]
async fn a_stored_legacy_secret_that_breaks_the_rules_is_not_accepted() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (org, a) = h.org("org-a").await;
    let (_, s) = git_service(&h, &a, json!({})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    // Written by the store directly, as before the API checked secrets.
    let weak = "a".repeat(40);
    h.store()
        .set_webhook_secret(org.parse()?, id.parse()?, &weak)
        .await?;
    let body = push("refs/heads/main", COMMIT);
    let (status, v) = send(
        &h,
        &id,
        &body,
        Some(github_signature(weak.as_bytes(), &body)),
        "legacy-1",
    )
    .await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(deployments(&h, &a, &id).await, 0);
    h.stop().await;
    Ok(())
}
