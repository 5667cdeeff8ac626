//! Platform host names (#17) against a real control plane and a real PostgreSQL database: the
//! same project and service names in two organizations and in a staging environment never
//! share a host, and a service from before the scheme keeps its old host as an alias.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::fakes::{Call, Fakes};
use common::{Harness, database, fake_clients};
use serde_json::{Value, json};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(20);

/// Creates a project; returns its id and its production environment's id.
async fn project(h: &Harness, token: &str, name: &str) -> (String, String) {
    let (status, p) = h
        .call("POST", "/projects", token, Some(json!({ "name": name })))
        .await;
    assert_eq!(status, 201, "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    let (_, envs) = h
        .call("GET", &format!("/projects/{id}/environments"), token, None)
        .await;
    let prod = envs["items"][0]["id"].as_str().unwrap().to_owned();
    (id, prod)
}

async fn web(h: &Harness, token: &str, project: &str, env: Option<&str>, name: &str) -> Value {
    let mut body = json!({ "name": name, "image": "app:v1" });
    if let Some(env) = env {
        body["environment_id"] = json!(env);
    }
    let (status, s) = h
        .call(
            "POST",
            &format!("/projects/{project}/services"),
            token,
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{s}");
    s
}

fn hosts(s: &Value) -> Vec<String> {
    s["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect()
}

fn routed(fakes: &Fakes) -> Vec<(Vec<String>, Vec<String>)> {
    fakes
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Route {
                hosts,
                certificate_hosts,
            } => Some((hosts, certificate_hosts)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_same_names_in_two_organizations_and_a_staging_copy_never_share_a_host()
-> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let apps = "stackpad.localhost";
    let (_, acme) = h.org("acme").await;
    let (_, globex) = h.org("globex").await;
    let (acme_shop, _) = project(&h, &acme, "shop").await;
    let (globex_shop, _) = project(&h, &globex, "shop").await;
    let (status, staging) = h
        .call(
            "POST",
            &format!("/projects/{acme_shop}/environments"),
            &acme,
            Some(json!({ "name": "staging", "branch": "develop" })),
        )
        .await;
    assert_eq!(status, 201, "{staging}");
    let staging = staging["id"].as_str().unwrap();

    let services = [
        (&acme, web(&h, &acme, &acme_shop, None, "web").await),
        (&globex, web(&h, &globex, &globex_shop, None, "web").await),
        (
            &acme,
            web(&h, &acme, &acme_shop, Some(staging), "web").await,
        ),
        // Reads like `web` in staging: it gets the readable prefix and a hash of its id.
        (&acme, web(&h, &acme, &acme_shop, None, "web-staging").await),
    ];
    let platform: Vec<String> = services.iter().map(|(_, s)| hosts(s)[0].clone()).collect();
    assert_eq!(
        platform[..3],
        [
            format!("web-shop-acme.{apps}"),
            format!("web-shop-globex.{apps}"),
            format!("web-staging-shop-acme.{apps}"),
        ]
    );
    assert!(
        platform[3].starts_with("web-staging-shop-acme-")
            && platform[3].len() == format!("web-staging-shop-acme-12345678.{apps}").len(),
        "{platform:?}"
    );
    assert_eq!(
        platform.iter().collect::<BTreeSet<_>>().len(),
        platform.len(),
        "every host distinct: {platform:?}"
    );
    for (token, s) in &services {
        assert_eq!(hosts(s).len(), 1, "a new service has no legacy alias: {s}");
        let id = s["id"].as_str().unwrap();
        // Stable: the same on every read and after a deploy.
        let d = h.deploy(token, id, json!({})).await;
        assert_eq!(h.wait_terminal(token, &d, LIMIT).await["state"], "ready");
        let (_, again) = h.call("GET", &format!("/services/{id}"), token, None).await;
        assert_eq!(hosts(&again), hosts(s));
    }
    // Each deploy routed its service at its own host, and certificates may be ordered for it.
    let routes = routed(&fakes);
    for host in &platform {
        let with: Vec<_> = routes.iter().filter(|(h, _)| h.contains(host)).collect();
        assert!(!with.is_empty(), "{host} never routed: {routes:?}");
        assert!(
            with.iter().all(|(h, c)| h == &vec![host.clone()] && c == h),
            "{host} shared a route: {with:?}"
        );
    }
    h.stop().await;
    Ok(())
}

/// Rows as a control plane before #17 wrote them (the migrations up to 0007).
async fn old_service(pool: &sqlx::PgPool, org: &str, at: &str) -> anyhow::Result<(Uuid, Uuid)> {
    let (o, p, e, s) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    sqlx::query("INSERT INTO organizations (id, name) VALUES ($1, $2)")
        .bind(o)
        .bind(org)
        .execute(pool)
        .await?;
    sqlx::query("INSERT INTO projects (id, organization_id, name) VALUES ($1, $2, 'shop')")
        .bind(p)
        .bind(o)
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO environments (id, organization_id, project_id, name, branch) \
         VALUES ($1, $2, $3, 'production', 'main')",
    )
    .bind(e)
    .bind(o)
    .bind(p)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO services (id, organization_id, project_id, environment_id, name, kind, image, created_at) \
         VALUES ($1, $2, $3, $4, 'web', 'web', 'app:v1', $5::timestamptz)",
    )
    .bind(s)
    .bind(o)
    .bind(p)
    .bind(e)
    .bind(at)
    .execute(pool)
    .await?;
    Ok((o, s))
}

#[tokio::test]
async fn a_service_from_before_the_scheme_keeps_its_old_host_as_an_alias() -> anyhow::Result<()> {
    let db = database().await?;
    let pool = sqlx::PgPool::connect(db.url()).await?;
    control::store::MIGRATOR.run_to(7, &pool).await?;
    // Two organizations whose services had the same old host: the older one keeps it.
    let (acme, acme_web) = old_service(&pool, "acme", "2026-01-01T00:00:00Z").await?;
    let (globex, globex_web) = old_service(&pool, "globex", "2026-02-01T00:00:00Z").await?;
    pool.close().await;

    let fakes = Fakes::new();
    let h = Harness::start_on(db, fake_clients(&fakes)).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let store = h.store();
    let token = |org| {
        let store = store.clone();
        async move {
            let new = control::store::NewToken {
                name: "t",
                role: control::store::Role::Owner,
                expires_at: None,
            };
            store.create_token(org, &new).await.unwrap().1
        }
    };
    let (a, g) = (token(acme).await, token(globex).await);
    let apps = "stackpad.localhost";
    let (_, s) = h
        .call("GET", &format!("/services/{acme_web}"), &a, None)
        .await;
    assert_eq!(
        hosts(&s),
        [format!("web-shop-acme.{apps}"), format!("web-shop.{apps}")],
        "new host first, the old one kept: {s}"
    );
    let (_, s) = h
        .call("GET", &format!("/services/{globex_web}"), &g, None)
        .await;
    assert_eq!(hosts(&s), [format!("web-shop-globex.{apps}")], "{s}");

    // The deploy routes both, and certificates may be ordered for both.
    let d = h.deploy(&a, &acme_web.to_string(), json!({})).await;
    assert_eq!(h.wait_terminal(&a, &d, LIMIT).await["state"], "ready");
    let want = vec![format!("web-shop-acme.{apps}"), format!("web-shop.{apps}")];
    assert!(
        routed(&fakes).contains(&(want.clone(), want)),
        "{:?}",
        routed(&fakes)
    );

    // A service created now gets no alias, and cannot take the old host's label.
    let (status, p) = h
        .call("POST", "/projects", &g, Some(json!({ "name": "web" })))
        .await;
    assert_eq!(status, 201, "{p}");
    let pid = p["id"].as_str().unwrap();
    // `shop` in project `web` of globex reads `shop-web-globex`: no clash; the label rule
    // itself is what keeps the old `web-shop` one service's.
    let s = web(&h, &g, pid, None, "shop").await;
    assert_eq!(hosts(&s), [format!("shop-web-globex.{apps}")]);
    h.stop().await;
    Ok(())
}
