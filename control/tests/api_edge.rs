//! The tenant boundary at the API edge, against a real control plane and PostgreSQL: every
//! vector of issue #13 that a request body, path or query can carry is refused with the JSON
//! error shape naming the field, and nothing is stored. Host names are resolved through
//! pebble-challtestsrv, which answers 127.0.0.1 for every name.

mod common;

use common::{Harness, fake_clients, fakes::Fakes};
use serde_json::{Value, json};
use stackpad_tests::acme::ChallTestSrv;

/// The operator's demo organization in these tests (`local_sources_organizations`).
const OPERATOR_ORG: &str = "edge-operator";

async fn start(egress_allow: &[&str]) -> anyhow::Result<Harness> {
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.local_sources_organizations = vec![OPERATOR_ORG.into()];
    config.dns_resolver = ChallTestSrv::default().dns;
    config.egress_allow = egress_allow.iter().map(|s| s.to_string()).collect();
    Harness::start_with(db, &config, fake_clients(&Fakes::new())).await
}

/// Asserts the JSON error shape: `{"error": {"status", "message", "field"?}}`.
fn assert_error(status: u16, v: &Value, want_status: u16, want_field: Option<&str>, what: &str) {
    assert_eq!(status, want_status, "{what}: {v}");
    let e = &v["error"];
    assert_eq!(e["status"], want_status, "{what}: {v}");
    assert!(e["message"].is_string(), "{what}: {v}");
    if let Some(field) = want_field {
        assert_eq!(e["field"], field, "{what}: {v}");
    }
}

async fn count(h: &Harness, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&h.store().pool)
        .await
        .unwrap()
}

async fn project(h: &Harness, token: &str) -> String {
    let (status, p) = h
        .call("POST", "/projects", token, Some(json!({ "name": "edge" })))
        .await;
    assert_eq!(status, 201, "{p}");
    p["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn service_bodies_with_tenant_vectors_are_refused_and_store_nothing() -> anyhow::Result<()> {
    let h = start(&[]).await?;
    let (_, t) = h.org("tenant-a").await;
    let pid = project(&h, &t).await;
    let path = format!("/projects/{pid}/services");
    let git = |url: &str| json!({ "name": "web", "git": { "url": url } });
    let cases = [
        (
            git("file:///var/lib/stackpad/platform/demo/hello"),
            "git.url",
            "file:// from a tenant",
        ),
        (
            git("/srv/other-org.git"),
            "git.url",
            "absolute path from a tenant",
        ),
        (
            git("https://127.0.0.1/r.git"),
            "git.url",
            "https to loopback",
        ),
        (
            git("https://10.1.2.3/r.git"),
            "git.url",
            "https to a private address",
        ),
        (
            git("https://169.254.169.254/latest/meta-data"),
            "git.url",
            "https to the metadata address",
        ),
        (
            git("https://rebind.stackpad-edge.net/r.git"),
            "git.url",
            "a name resolving to loopback",
        ),
        (
            git("https://localhost/r.git"),
            "git.url",
            "localhost by name",
        ),
        (git("http://github.com/a/b.git"), "git.url", "plain http"),
        (git("ssh://git@github.com/a/b.git"), "git.url", "ssh"),
        (
            git("--upload-pack=touch /tmp/pwned"),
            "git.url",
            "an option as url",
        ),
        (
            json!({ "name": "web", "git": { "url": "https://rebind.stackpad-edge.net/r.git", "subdirectory": "../../etc" } }),
            "git.subdirectory",
            "subdirectory leaving the repository",
        ),
        (
            json!({ "name": "web", "image": "i", "health_check": { "path": "/h\r\nHost: evil" } }),
            "health_check.path",
            "CR/LF in the health path",
        ),
        (
            json!({ "name": "web", "image": "--help" }),
            "image",
            "an option as image",
        ),
        (
            json!({ "name": "web", "image": "Bad Image" }),
            "image",
            "not an image reference",
        ),
        (
            json!({ "name": "web", "image": "i", "resources": { "cpu_millis": 4e9 } }),
            "resources.cpu_millis",
            "cpu 4e9",
        ),
        (
            json!({ "name": "web", "image": "i", "resources": { "cpu_millis": 4_000_000_000u64 } }),
            "resources.cpu_millis",
            "cpu 4 billion",
        ),
        (
            json!({ "name": "web", "image": "i", "resources": { "memory_bytes": 1 } }),
            "resources.memory_bytes",
            "memory of 1 byte",
        ),
        (
            json!({ "name": "web", "image": "i", "build": { "timeout_seconds": 86_400 } }),
            "build.timeout_seconds",
            "a day-long build",
        ),
        (
            json!({ "name": "web", "image": "i", "port": 0 }),
            "port",
            "port 0",
        ),
        (
            json!({ "name": "web", "image": "i\u{0}x" }),
            "image",
            "NUL in the image",
        ),
        (
            json!({ "name": "web", "image": "i", "env": { "MODE": "a\u{0}b" } }),
            "env.MODE",
            "NUL in an env value",
        ),
        (
            json!({ "name": "web", "image": "i", "command": ["sh", "-c\u{0}"] }),
            "command[1]",
            "NUL in the command",
        ),
        (
            json!({ "name": "web", "image": "i", "env": { "X": "v".repeat(40_000) } }),
            "env.X",
            "a huge env value",
        ),
    ];
    for (body, field, what) in cases {
        let (status, v) = h.call("POST", &path, &t, Some(body)).await;
        assert_error(status, &v, 422, Some(field), what);
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.len() < 600,
            "{what}: the message is bounded: {}",
            message.len()
        );
    }
    // What the tenant was told does not describe what is behind an address.
    let (_, v) = h
        .call(
            "POST",
            &path,
            &t,
            Some(git("https://rebind.stackpad-edge.net/r.git")),
        )
        .await;
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("loopback") && message.contains("only public hosts"),
        "{v}"
    );
    assert!(
        !message.contains("refused") && !message.contains("connect"),
        "{v}"
    );

    let (_, list) = h.call("GET", &path, &t, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    assert_eq!(count(&h, "services").await, 0);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn local_sources_are_the_operators_setting() -> anyhow::Result<()> {
    let h = start(&[]).await?;
    let (_, operator) = h.org(OPERATOR_ORG).await;
    let (_, tenant) = h.org("tenant-b").await;
    for (token, want) in [(&tenant, 422), (&operator, 201)] {
        let pid = project(&h, token).await;
        for url in ["file:///srv/demo/hello", "/srv/demo/hello"] {
            let name = if url.starts_with('/') { "abs" } else { "file" };
            let (status, v) = h
                .call(
                    "POST",
                    &format!("/projects/{pid}/services"),
                    token,
                    Some(json!({ "name": name, "git": { "url": url } })),
                )
                .await;
            if want == 422 {
                assert_error(status, &v, 422, Some("git.url"), url);
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("operator setting"),
                    "{v}"
                );
            } else {
                assert_eq!(status, 201, "{url}: {v}");
                assert_eq!(v["git_url"], "file:///srv/demo/hello", "{v}");
            }
        }
    }
    assert_eq!(count(&h, "services").await, 2, "only the operator's two");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_https_name_on_an_allowed_block_is_accepted() -> anyhow::Result<()> {
    // The operator opened 127.0.0.1 (say, its own git server): the same name now passes.
    let h = start(&["127.0.0.1/32"]).await?;
    let (_, t) = h.org("tenant-c").await;
    let pid = project(&h, &t).await;
    let (status, v) = h
        .call(
            "POST",
            &format!("/projects/{pid}/services"),
            &t,
            Some(json!({ "name": "web", "git": { "url": "https://git.stackpad-edge.net/acme/app.git", "subdirectory": "apps/web" } })),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["git_subdirectory"], "apps/web");
    assert_eq!(
        v["resources"]["cpu_millis"], 500,
        "every container gets a CPU limit: {v}"
    );
    // A name with no address is the tenant's mistake, not a 5xx.
    let (status, v) = h
        .call(
            "POST",
            &format!("/projects/{pid}/services"),
            &t,
            Some(json!({ "name": "web2", "git": { "url": "https://10.0.0.1/r.git" } })),
        )
        .await;
    assert_error(
        status,
        &v,
        422,
        Some("git.url"),
        "an IP literal outside the allowed block",
    );
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn refs_branches_and_commits_are_git_grammar() -> anyhow::Result<()> {
    let h = start(&[]).await?;
    let (_, operator) = h.org(OPERATOR_ORG).await;
    let (pid, service) = h
        .service(
            &operator,
            json!({ "name": "web", "git": { "url": "file:///srv/app.git" } }),
        )
        .await;
    let deployments = format!("/services/{service}/deployments");
    let cases = [
        (
            json!({ "git_ref": "--upload-pack=touch /tmp/pwned" }),
            "git_ref",
        ),
        (json!({ "git_ref": "-b" }), "git_ref"),
        (json!({ "git_ref": "main..other" }), "git_ref"),
        (json!({ "git_ref": "feature/-x" }), "git_ref"),
        (json!({ "git_ref": "a\nb" }), "git_ref"),
        (json!({ "git_commit": "abcdef0" }), "git_commit"),
        (json!({ "git_commit": "--all" }), "git_commit"),
        (json!({ "git_commit": "g".repeat(40) }), "git_commit"),
        (json!({ "image": "--help" }), "image"),
    ];
    for (body, field) in cases {
        let (status, v) = h
            .call("POST", &deployments, &operator, Some(body.clone()))
            .await;
        assert_error(status, &v, 422, Some(field), &body.to_string());
    }
    let (status, v) = h
        .call(
            "POST",
            &format!("/projects/{pid}/environments"),
            &operator,
            Some(json!({ "name": "staging", "branch": "--orphan" })),
        )
        .await;
    assert_error(status, &v, 422, Some("branch"), "option-looking branch");
    let (_, list) = h.call("GET", &deployments, &operator, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    let (_, envs) = h
        .call(
            "GET",
            &format!("/projects/{pid}/environments"),
            &operator,
            None,
        )
        .await;
    assert_eq!(
        envs["items"].as_array().unwrap().len(),
        1,
        "production only: {envs}"
    );

    // What git accepts still works: a branch with a slash, a full commit.
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let (status, d) = h
        .call(
            "POST",
            &deployments,
            &operator,
            Some(json!({ "git_ref": "feature/x", "git_commit": commit.to_uppercase() })),
        )
        .await;
    assert_eq!(status, 201, "{d}");
    assert_eq!(
        (d["git_ref"].as_str(), d["git_commit"].as_str()),
        (Some("feature/x"), Some(commit))
    );
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn paths_queries_and_bodies_answer_json_errors() -> anyhow::Result<()> {
    let h = start(&[]).await?;
    let (_, t) = h.org("tenant-d").await;
    let pid = project(&h, &t).await;

    // Bad path and query values: JSON naming the parameter.
    let (status, v) = h.call("GET", "/services/not-a-uuid", &t, None).await;
    assert_error(status, &v, 422, Some("id"), "bad uuid in the path");
    let (status, v) = h
        .call(
            "DELETE",
            "/services/not-a-uuid/domains/x.example.com",
            &t,
            None,
        )
        .await;
    assert_error(status, &v, 422, Some("id"), "bad uuid before a domain");
    let (status, v) = h.call("GET", "/projects?limit=many", &t, None).await;
    assert_error(status, &v, 422, Some("limit"), "bad query value");
    let (status, v) = h.call("GET", "/projects?after=nope", &t, None).await;
    assert_error(status, &v, 422, Some("after"), "bad cursor");
    let (status, v) = h.call("GET", "/projects?colour=red", &t, None).await;
    assert_error(status, &v, 422, Some("colour"), "unknown query parameter");
    let (status, v) = h.call("GET", "/projects?after=%00", &t, None).await;
    assert_error(status, &v, 422, Some("after"), "NUL in a query value");

    // JSON syntax: 400 in the same shape. A 20 MB body: 413, not 400.
    let post = |body: Vec<u8>| {
        h.http
            .post(format!("{}/projects/{pid}/services", h.url))
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = post(b"{\"name\": ".to_vec()).await?;
    let status = resp.status().as_u16();
    assert_error(status, &resp.json().await?, 400, None, "JSON syntax");
    let mut huge = b"{\"name\": \"".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 20 << 20));
    huge.extend(b"\"}");
    let resp = post(huge).await?;
    let status = resp.status().as_u16();
    assert_error(status, &resp.json().await?, 413, None, "20 MB body");

    // A 1 MB invalid name (under the 1 MiB body limit): 422 with a short echo.
    let name = "N".repeat(1_000_000);
    let (status, v) = h
        .call("POST", "/projects", &t, Some(json!({ "name": name })))
        .await;
    assert_error(status, &v, 422, Some("name"), "1 MB name");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.len() < 300 && message.contains("..."), "{message}");

    // A NUL in a project name was a 500 with the database's text.
    let (status, v) = h
        .call("POST", "/projects", &t, Some(json!({ "name": "a\u{0}b" })))
        .await;
    assert_error(status, &v, 422, Some("name"), "NUL in a name");
    // A mistyped field deep inside names its path.
    let (status, v) = h
        .call(
            "POST",
            &format!("/projects/{pid}/services"),
            &t,
            Some(json!({ "name": "web", "image": "i", "health_check": { "interval_ms": "fast" } })),
        )
        .await;
    assert_error(
        status,
        &v,
        422,
        Some("health_check.interval_ms"),
        "mistyped nested field",
    );
    // Method not allowed: JSON too.
    let (status, v) = h.call("PUT", "/projects", &t, Some(json!({}))).await;
    assert_error(status, &v, 405, None, "PUT /projects");

    let (_, list) = h.call("GET", "/projects", &t, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(count(&h, "services").await, 0);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn services_from_before_the_default_get_a_cpu_limit() -> anyhow::Result<()> {
    let h = start(&[]).await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
        .fetch_all(&h.store().pool)
        .await?;
    assert!(applied.contains(&5), "{applied:?}");
    // A row as the API wrote it before: no CPU limit.
    let (_, t) = h.org("tenant-e").await;
    let (_, service) = h
        .service(&t, json!({ "name": "old", "image": "o/old:v1" }))
        .await;
    sqlx::query("UPDATE services SET resources = '{\"cpu_millis\": 0, \"memory_bytes\": 0}'")
        .execute(&h.store().pool)
        .await?;
    sqlx::raw_sql(include_str!("../migrations/0005_default_cpu_limit.sql"))
        .execute(&h.store().pool)
        .await?;
    let (_, v) = h
        .call("GET", &format!("/services/{service}"), &t, None)
        .await;
    assert_eq!(v["resources"]["cpu_millis"], 500, "{v}");
    h.stop().await;
    Ok(())
}

/// PATCH goes through the same parsers and bounds as create: every field it can change is
/// refused the same way, and the fields it cannot change (the git source) are refused by name.
#[tokio::test]
async fn patch_is_held_to_the_same_checks_as_create() -> anyhow::Result<()> {
    let h = start(&[]).await?;
    let (_, t) = h.org("edge-patch").await;
    let (_, service) = h
        .service(&t, json!({ "name": "web", "image": "nginx:1" }))
        .await;
    let path = format!("/services/{service}");
    let (_, before) = h.call("GET", &path, &t, None).await;
    let cases = [
        (json!({ "image": "--help" }), "image"),
        (
            json!({ "health_check": { "path": "/a\r\nHost: evil" } }),
            "health_check.path",
        ),
        (
            json!({ "resources": { "cpu_millis": 4e9 } }),
            "resources.cpu_millis",
        ),
        (
            json!({ "resources": { "cpu_millis": 4_000_000_000u64 } }),
            "resources.cpu_millis",
        ),
        (
            json!({ "git": { "url": "https://example.com/a.git", "subdirectory": "../../etc" } }),
            "git",
        ),
        (
            json!({ "git": { "url": "https://127.0.0.1/a.git" } }),
            "git",
        ),
        (json!({ "command": ["a\u{0}b"] }), "command[0]"),
        (json!({ "env": { "1BAD": "x" } }), "env"),
    ];
    for (body, field) in cases {
        let (status, v) = h.call("PATCH", &path, &t, Some(body.clone())).await;
        assert_error(status, &v, 422, Some(field), &body.to_string());
    }
    let (_, after) = h.call("GET", &path, &t, None).await;
    assert_eq!(before, after, "a refused PATCH changed the service");
    h.stop().await;
    Ok(())
}
