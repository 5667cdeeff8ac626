//! Managed databases and caches through the API and the pipeline (#14), on PostgreSQL with
//! recording fakes of the daemons: the engine picked and checked against the kind, generated
//! credentials sealed and masked, the engine's exec probe and memory handed to the node, a web
//! service's `${{ db.DATABASE_URL }}` resolved at deploy, rotation reaching both on their next
//! deploy, bad references failing the deployment with a reason naming them.

mod common;

use std::time::Duration;

use common::fakes::{Call, Fakes};
use common::{Harness, fake_clients};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(20);

/// The env of the last Deploy call of `deployment`.
fn deploy_env(fakes: &Fakes, deployment: &str) -> Vec<(String, String)> {
    fakes
        .calls()
        .into_iter()
        .rev()
        .find_map(|c| match c {
            Call::Deploy {
                deployment: d, env, ..
            } if d == deployment => Some(env),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no deploy of {deployment}"))
}

fn var<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{name} not in {env:?}"))
}

async fn ready(h: &Harness, token: &str, deployment: &str) -> Value {
    let d = h.wait_terminal(token, deployment, LIMIT).await;
    assert_eq!(d["state"], "ready", "{d}");
    d
}

#[tokio::test]
async fn a_web_service_gets_its_databases_url_and_a_rotated_password_on_its_next_deploy()
-> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, a) = h.org("org-a").await;
    let (project, db) = h
        .service(
            &a,
            json!({ "name": "db", "kind": "database", "engine": "postgres" }),
        )
        .await;
    let (status, view) = h.call("GET", &format!("/services/{db}"), &a, None).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["engine"], "postgres");
    assert_eq!(view["engine_version"], "15");
    assert_eq!(view["internal_host"], "db.production.internal");
    assert_eq!(view["hosts"], json!([]));
    assert_eq!(view["port"], 5432);
    assert!(
        view["image"]
            .as_str()
            .unwrap()
            .ends_with("/stackpad/postgres:15"),
        "{view}"
    );
    assert_eq!(view["health_check"]["exec"][0], "pg_isready");
    // Generated, sealed, never shown.
    assert_eq!(
        view["env"]["POSTGRES_PASSWORD"],
        json!({ "value": null, "secret": true })
    );
    assert_eq!(view["env"]["POSTGRES_USER"]["value"], "app");

    let (status, web) = h
        .call(
            "POST",
            &format!("/projects/{project}/services"),
            &a,
            Some(json!({ "name": "web", "image": "app:v1",
                "env": { "DATABASE_URL": "${{ db.DATABASE_URL }}", "MODE": "x" } })),
        )
        .await;
    assert_eq!(status, 201, "{web}");
    assert_eq!(web["uses"], json!(["db"]));
    let web = web["id"].as_str().unwrap().to_owned();

    let d1 = h.deploy(&a, &db, json!({})).await;
    let v = ready(&h, &a, &d1).await;
    // No route, no traffic switch for a database.
    assert!(!v.to_string().contains("switching"), "{v}");
    let env = deploy_env(&fakes, &d1);
    let first = var(&env, "POSTGRES_PASSWORD").to_owned();
    assert_eq!(first.len(), 32);
    assert_eq!(
        var(&env, "STACKPAD_MEMORY_LIMIT_BYTES"),
        (512u64 << 20).to_string()
    );

    let w1 = h.deploy(&a, &web, json!({})).await;
    ready(&h, &a, &w1).await;
    let env = deploy_env(&fakes, &w1);
    assert_eq!(
        var(&env, "DATABASE_URL"),
        format!("postgres://app:{first}@db.production.internal:5432/app")
    );
    assert_eq!(var(&env, "MODE"), "x");

    // Rotation: a new sealed password, a deployment of the engine queued with it.
    let (status, r) = h
        .call(
            "POST",
            &format!("/services/{db}/credentials/rotate"),
            &a,
            None,
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let d2 = r["deployment"]["id"].as_str().unwrap().to_owned();
    ready(&h, &a, &d2).await;
    let second = var(&deploy_env(&fakes, &d2), "POSTGRES_PASSWORD").to_owned();
    assert_ne!(second, first);
    let w2 = h.deploy(&a, &web, json!({})).await;
    ready(&h, &a, &w2).await;
    assert!(var(&deploy_env(&fakes, &w2), "DATABASE_URL").contains(&second));

    // A web service is not managed: nothing to rotate.
    let (status, e) = h
        .call(
            "POST",
            &format!("/services/{web}/credentials/rotate"),
            &a,
            None,
        )
        .await;
    assert_eq!(status, 409, "{e}");

    // A reference to a service that is not there fails the deployment, naming it.
    let (status, bad) = h
        .call(
            "POST",
            &format!("/projects/{project}/services"),
            &a,
            Some(
                json!({ "name": "worker", "kind": "worker", "image": "app:v1",
                "env": { "REDIS_URL": "${{ cache.REDIS_URL }}" } }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{bad}");
    let d = h.deploy(&a, bad["id"].as_str().unwrap(), json!({})).await;
    let d = h.wait_terminal(&a, &d, LIMIT).await;
    assert_eq!(d["state"], "failed", "{d}");
    assert!(
        d.to_string()
            .contains("env REDIS_URL: no service cache in this environment"),
        "{d}"
    );
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn engines_are_checked_against_their_kind_and_what_stackpad_picks_is_refused()
-> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("org-b").await;
    let (project, cache) = h
        .service(
            &a,
            json!({ "name": "cache", "kind": "cache", "engine": "redis" }),
        )
        .await;
    let create = |body: Value| {
        let h = &h;
        let a = a.clone();
        let project = project.clone();
        async move {
            h.call(
                "POST",
                &format!("/projects/{project}/services"),
                &a,
                Some(body),
            )
            .await
        }
    };
    let cases = [
        (
            json!({ "name": "x1", "kind": "cache", "engine": "postgres" }),
            "engine",
            "postgres is a database engine; a cache service takes redis",
        ),
        (
            json!({ "name": "x2", "kind": "database", "engine": "mongo" }),
            "engine",
            "mongo",
        ),
        (
            json!({ "name": "x3", "kind": "web", "engine": "redis" }),
            "engine",
            "a web service has no engine",
        ),
        (
            json!({ "name": "x4", "kind": "database", "engine": "mariadb", "image": "mariadb:11" }),
            "image",
            "Stackpad picks it",
        ),
        (
            json!({ "name": "x5", "kind": "database", "engine": "postgres", "domains": ["db.example.com"] }),
            "domains",
            "no domains",
        ),
        (
            json!({ "name": "x6", "kind": "database", "engine": "postgres", "port": 80 }),
            "port",
            "Stackpad picks it",
        ),
    ];
    for (body, field, text) in cases {
        let (status, e) = create(body.clone()).await;
        assert_eq!(status, 422, "{body}: {e}");
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
        assert!(e.to_string().contains(text), "{body}: {e}");
    }
    // A managed service changes only its resources.
    let (status, e) = h
        .call(
            "PATCH",
            &format!("/services/{cache}"),
            &a,
            Some(json!({ "env": {} })),
        )
        .await;
    assert_eq!(status, 422, "{e}");
    assert!(e.to_string().contains("credentials/rotate"), "{e}");
    let (status, s) = h
        .call(
            "PATCH",
            &format!("/services/{cache}"),
            &a,
            Some(json!({ "resources": { "memory_bytes": 134217728u64 } })),
        )
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["resources"]["memory_bytes"], 134217728u64);
    h.stop().await;
    Ok(())
}
