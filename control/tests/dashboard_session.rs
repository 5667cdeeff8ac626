//! Dashboard sessions (#18) against a real control plane and PostgreSQL: a token exchanged for
//! a cookie with the right flags, calls made with the cookie act as the token, changes need the
//! session's CSRF token, another organization's resources stay 404, revoking the token or
//! signing out ends the session; and the dashboard's page is served with a strict policy.

mod common;

use common::{ADMIN, Harness, fake_clients, fakes::Fakes};
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

/// Signs in with `token`; returns the cookie pair (`stackpad_session=...`) and the session.
async fn sign_in(h: &Harness, token: &str) -> (String, Value) {
    let r = h
        .http
        .post(format!("{}/session", h.url))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "the session cookie lacks {flag}: {set}");
    }
    let pair = set.split(';').next().unwrap().to_owned();
    assert!(pair.starts_with("stackpad_session=sp_"), "{pair}");
    (pair, r.json().await.unwrap())
}

async fn with_cookie(
    h: &Harness,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = h
        .http
        .request(method, format!("{}{path}", h.url))
        .header(COOKIE, cookie);
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_session_acts_as_its_token_and_changes_need_the_csrf_token() -> anyhow::Result<()> {
    use reqwest::Method;
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (org_a, token_a) = h.org("org-a").await;
    let (_, token_b) = h.org("org-b").await;
    let (status, p) = h
        .call(
            "POST",
            "/projects",
            &token_b,
            Some(json!({ "name": "secret-shop" })),
        )
        .await;
    assert_eq!(status, 201, "{p}");
    let other_project = p["id"].as_str().unwrap().to_owned();

    let (cookie, session) = sign_in(&h, &token_a).await;
    assert_eq!(session["kind"], "organization");
    assert_eq!(session["organization"]["id"], org_a.as_str());
    assert_eq!(session["role"], "owner");
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    assert!(csrf.len() >= 32);

    let (status, me) = with_cookie(&h, Method::GET, "/session", &cookie, None, None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["csrf_token"], csrf.as_str());

    // Reads need no CSRF token; changes do, and a forged one is refused like a missing one.
    let (status, list) = with_cookie(&h, Method::GET, "/projects", &cookie, None, None).await;
    assert_eq!(status, 200, "{list}");
    let body = json!({ "name": "shop" });
    for bad in [None, Some("forged")] {
        let (status, v) = with_cookie(
            &h,
            Method::POST,
            "/projects",
            &cookie,
            bad,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 403, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("x-csrf-token"),
            "{v}"
        );
    }
    let (status, v) = with_cookie(&h, Method::GET, "/projects", &cookie, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        v["items"].as_array().unwrap().len(),
        0,
        "nothing was created: {v}"
    );
    let (status, created) = with_cookie(
        &h,
        Method::POST,
        "/projects",
        &cookie,
        Some(&csrf),
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{created}");

    // Another organization's project is not found through this session.
    let (status, v) = with_cookie(
        &h,
        Method::GET,
        &format!("/projects/{other_project}"),
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(status, 404, "{v}");

    // A made-up cookie, an unknown token: 401.
    let (status, _) = with_cookie(
        &h,
        Method::GET,
        "/projects",
        "stackpad_session=sp_nope",
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    let r = h
        .http
        .post(format!("{}/session", h.url))
        .json(&json!({ "token": "sp_wrong" }))
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(SET_COOKIE).is_none());

    // Sign out: the cookie is cleared and the session is gone.
    let (status, _) = with_cookie(&h, Method::DELETE, "/session", &cookie, None, None).await;
    assert_eq!(status, 403, "signing out needs the CSRF token too");
    let r = h
        .http
        .delete(format!("{}/session", h.url))
        .header(COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    assert!(r.headers()[SET_COOKIE].to_str()?.contains("Max-Age=0"));
    let (status, _) = with_cookie(&h, Method::GET, "/projects", &cookie, None, None).await;
    assert_eq!(status, 401);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn revoking_the_token_ends_its_sessions_and_the_operator_signs_in_too() -> anyhow::Result<()>
{
    use reqwest::Method;
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, owner) = h.org("org-a").await;
    let (status, t) = h
        .call(
            "POST",
            "/tokens",
            &owner,
            Some(json!({ "name": "browser", "role": "read_only" })),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    let secret = t["secret"].as_str().unwrap().to_owned();
    let token_id = t["token"]["id"].as_str().unwrap().to_owned();
    let (cookie, session) = sign_in(&h, &secret).await;
    assert_eq!(session["role"], "read_only");
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    // The session has the token's role: a read-only one cannot create.
    let (status, v) = with_cookie(
        &h,
        Method::POST,
        "/projects",
        &cookie,
        Some(&csrf),
        Some(json!({ "name": "x" })),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    let (status, _) = h
        .call("DELETE", &format!("/tokens/{token_id}"), &owner, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = with_cookie(&h, Method::GET, "/projects", &cookie, None, None).await;
    assert_eq!(status, 401, "a revoked token's session is over");

    let (op_cookie, op) = sign_in(&h, ADMIN).await;
    assert_eq!(op["kind"], "operator");
    let (status, nodes) = with_cookie(&h, Method::GET, "/nodes", &op_cookie, None, None).await;
    assert_eq!(status, 200, "{nodes}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_dashboard_page_is_served_with_a_strict_policy() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = no_redirect.get(format!("{}/", h.url)).send().await?;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/dashboard/");
    let r = h.http.get(format!("{}/dashboard/", h.url)).send().await?;
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str()?.to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let page = r.text().await?;
    let script = page
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page loads its bundle");
    assert!(script.starts_with("/dashboard/assets/"), "{script}");
    let r = h.http.get(format!("{}{script}", h.url)).send().await?;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()?
            .starts_with("text/javascript")
    );
    assert!(r.headers()["cache-control"].to_str()?.contains("immutable"));
    let r = h
        .http
        .get(format!("{}/dashboard/nope.js", h.url))
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    h.stop().await;
    Ok(())
}
