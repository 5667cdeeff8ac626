//! Environment lifecycle (#17) against a real control plane and PostgreSQL, with recording
//! fakes of the daemons: a copy of production gets its services, settings, variables and
//! secrets (usable by the copy's containers, never shown), variables override per environment,
//! and deleting an environment or a project takes every service off the proxy and the nodes
//! first (409 while a deployment is on its way, nothing touched).

mod common;

use std::time::Duration;

use common::fakes::{Call, Fakes};
use common::{Harness, fake_clients};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(20);

struct Shop {
    project: String,
    production: String,
    web: String,
    jobs: String,
}

/// Project `shop` of a new organization `acme`: a web service (a variable and a secret) and a
/// worker in production, both deployed; production has a variable of its own.
async fn shop(h: &Harness, token: &str) -> Shop {
    let (status, p) = h
        .call("POST", "/projects", token, Some(json!({ "name": "shop" })))
        .await;
    assert_eq!(status, 201, "{p}");
    let project = p["id"].as_str().unwrap().to_owned();
    let (_, envs) = h
        .call(
            "GET",
            &format!("/projects/{project}/environments"),
            token,
            None,
        )
        .await;
    let production = envs["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, env) = h
        .call(
            "PATCH",
            &format!("/environments/{production}"),
            token,
            Some(json!({ "env": { "LEVEL": "info" } })),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    let mut ids = vec![];
    for body in [
        json!({ "name": "web", "image": "app:v1", "env": { "MODE": "prod" },
                "secrets": { "API_KEY": "s3cret" } }),
        json!({ "name": "jobs", "kind": "worker", "image": "jobs:v1" }),
    ] {
        let (status, s) = h
            .call(
                "POST",
                &format!("/projects/{project}/services"),
                token,
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{s}");
        let id = s["id"].as_str().unwrap().to_owned();
        let d = h.deploy(token, &id, json!({})).await;
        assert_eq!(h.wait_terminal(token, &d, LIMIT).await["state"], "ready");
        ids.push(id);
    }
    Shop {
        project,
        production,
        web: ids[0].clone(),
        jobs: ids[1].clone(),
    }
}

async fn services_of(h: &Harness, token: &str, project: &str, env: &str) -> Vec<Value> {
    let (_, list) = h
        .call("GET", &format!("/projects/{project}/services"), token, None)
        .await;
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["environment_id"] == env)
        .cloned()
        .collect()
}

fn deploy_env(fakes: &Fakes, deployment: &str) -> Vec<(String, String)> {
    fakes
        .calls()
        .into_iter()
        .find_map(|c| match c {
            Call::Deploy {
                deployment: d, env, ..
            } if d == deployment => Some(env),
            _ => None,
        })
        .unwrap_or_else(|| panic!("deployment {deployment} never reached a node"))
}

#[tokio::test]
async fn a_copy_of_production_gets_its_services_and_variables_and_its_delete_tears_them_down()
-> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, a) = h.org("acme").await;
    let shop = shop(&h, &a).await;

    let (status, staging) = h
        .call(
            "POST",
            &format!("/projects/{}/environments", shop.project),
            &a,
            Some(
                json!({ "name": "staging", "branch": "develop", "from": "production",
                         "env": { "DATABASE_URL": "postgres://staging" },
                         "secrets": { "STAGING_TOKEN": "t0ken" } }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{staging}");
    assert_eq!(staging["created_from"], shop.production.as_str());
    // The copy deploys each of its services at once.
    let mut copied: Vec<String> = staging["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deployment_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(copied.len(), 2, "{staging}");
    for d in &copied {
        assert_eq!(h.wait_terminal(&a, d, LIMIT).await["state"], "ready");
    }
    assert_eq!(
        staging["env"],
        json!({
            "DATABASE_URL": { "value": "postgres://staging", "secret": false },
            "LEVEL": { "value": "info", "secret": false },
            "STAGING_TOKEN": { "value": null, "secret": true },
        }),
        "production's variables copied, the given ones over them, secrets masked"
    );
    let staging = staging["id"].as_str().unwrap().to_owned();

    let copies = services_of(&h, &a, &shop.project, &staging).await;
    let names: Vec<_> = copies.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web", "jobs"], "{copies:?}");
    let web = &copies[0];
    assert_ne!(web["id"], shop.web.as_str());
    assert_eq!(web["image"], "app:v1");
    assert_eq!(web["kind"], "web");
    assert_eq!(copies[1]["kind"], "worker");
    assert_eq!(
        web["env"],
        json!({ "MODE": { "value": "prod", "secret": false },
                "API_KEY": { "value": null, "secret": true } }),
        "the service's own variables and secrets copied, the secret masked"
    );
    assert!(copied.contains(&web["current_deployment_id"].as_str().unwrap().to_owned()));
    let (_, web) = h
        .call(
            "GET",
            &format!("/services/{}", web["id"].as_str().unwrap()),
            &a,
            None,
        )
        .await;
    assert_eq!(
        web["hosts"],
        json!(["web-staging-shop-acme.stackpad.localhost"]),
        "{web}"
    );
    let web = web["id"].as_str().unwrap().to_owned();
    let jobs = copies[1]["id"].as_str().unwrap().to_owned();

    // Update: the branch, a variable set over the service's own, one removed.
    let (status, env) = h
        .call(
            "PATCH",
            &format!("/environments/{staging}"),
            &a,
            Some(json!({ "branch": "release", "env": { "MODE": "staging" }, "unset": ["LEVEL"] })),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["branch"], "release");
    assert!(env["env"].get("LEVEL").is_none(), "{env}");
    let (status, bad) = h
        .call(
            "PATCH",
            &format!("/environments/{staging}"),
            &a,
            Some(json!({ "env": { "1BAD": "x" } })),
        )
        .await;
    assert_eq!(status, 422, "{bad}");

    // The copy's container gets the copied secret in clear and the environment's variables
    // over the service's own.
    let d = h.deploy(&a, &web, json!({})).await;
    assert_eq!(h.wait_terminal(&a, &d, LIMIT).await["state"], "ready");
    let env = deploy_env(&fakes, &d);
    for (name, value) in [
        ("MODE", "staging"),
        ("API_KEY", "s3cret"),
        ("DATABASE_URL", "postgres://staging"),
        ("STAGING_TOKEN", "t0ken"),
    ] {
        assert!(
            env.contains(&(name.to_owned(), value.to_owned())),
            "{name}={value} missing: {env:?}"
        );
    }
    assert!(!env.iter().any(|(n, _)| n == "LEVEL"), "{env:?}");
    let d2 = h.deploy(&a, &jobs, json!({})).await;
    assert_eq!(h.wait_terminal(&a, &d2, LIMIT).await["state"], "ready");

    // A deployment on its way: 409, and nothing is taken off anything.
    sqlx::query("UPDATE deployments SET state = 'deploying' WHERE id = $1::uuid")
        .bind(&d2)
        .execute(&h.store().pool)
        .await?;
    let before = fakes.calls().len();
    let (status, body) = h
        .call("DELETE", &format!("/environments/{staging}"), &a, None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains(&d2), "{body}");
    assert_eq!(
        fakes.calls().len(),
        before,
        "{:?}",
        &fakes.calls()[before..]
    );
    sqlx::query("UPDATE deployments SET state = 'ready' WHERE id = $1::uuid")
        .bind(&d2)
        .execute(&h.store().pool)
        .await?;

    let (status, body) = h
        .call("DELETE", &format!("/environments/{staging}"), &a, None)
        .await;
    assert_eq!(status, 204, "{body}");
    let calls = fakes.calls()[before..].to_vec();
    assert!(
        calls.contains(&Call::Unroute {
            route_id: format!("{web}/default")
        }) && calls.contains(&Call::Disallow {
            domain: "web-staging-shop-acme.stackpad.localhost".into()
        }),
        "{calls:?}"
    );
    let removed: Vec<_> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Remove { deployment, .. } => Some(deployment.clone()),
            _ => None,
        })
        .collect();
    let mut removed = removed;
    removed.sort();
    copied.extend([d.clone(), d2.clone()]);
    copied.sort();
    assert_eq!(removed, copied, "every deployment of the copy: {calls:?}");
    assert!(
        !calls.iter().any(|c| *c
            == Call::Unroute {
                route_id: format!("{}/default", shop.web)
            }),
        "production untouched: {calls:?}"
    );
    let (status, _) = h
        .call("GET", &format!("/environments/{staging}"), &a, None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = h.call("GET", &format!("/services/{web}"), &a, None).await;
    assert_eq!(status, 404);
    let (status, _) = h
        .call("GET", &format!("/services/{}", shop.jobs), &a, None)
        .await;
    assert_eq!(status, 200, "production's services stay");

    let (status, body) = h
        .call(
            "DELETE",
            &format!("/environments/{}", shop.production),
            &a,
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_copy_from_another_project_or_an_unknown_environment_is_refused() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("acme").await;
    let shop = shop_without_deploys(&h, &a, "shop").await;
    let other = shop_without_deploys(&h, &a, "other").await;
    for from in [other.1.as_str(), "nope"] {
        let (status, body) = h
            .call(
                "POST",
                &format!("/projects/{}/environments", shop.0),
                &a,
                Some(json!({ "name": "staging", "branch": "main", "from": from })),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert!(body.to_string().contains("from"), "{body}");
    }
    h.stop().await;
    Ok(())
}

/// A project and its production environment's id.
async fn shop_without_deploys(h: &Harness, token: &str, name: &str) -> (String, String) {
    let (_, p) = h
        .call("POST", "/projects", token, Some(json!({ "name": name })))
        .await;
    let project = p["id"].as_str().unwrap().to_owned();
    let (_, envs) = h
        .call(
            "GET",
            &format!("/projects/{project}/environments"),
            token,
            None,
        )
        .await;
    (project, envs["items"][0]["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn deleting_a_project_tears_down_every_service_of_every_environment() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, a) = h.org("acme").await;
    let shop = shop(&h, &a).await;
    let (status, staging) = h
        .call(
            "POST",
            &format!("/projects/{}/environments", shop.project),
            &a,
            Some(json!({ "name": "staging", "branch": "develop", "from": shop.production })),
        )
        .await;
    assert_eq!(status, 201, "{staging}");
    // The copy deployed each of its services (web and worker).
    for d in staging["deployments"].as_array().unwrap() {
        let d = d["deployment_id"].as_str().unwrap();
        assert_eq!(h.wait_terminal(&a, d, LIMIT).await["state"], "ready");
    }
    let copies = services_of(&h, &a, &shop.project, staging["id"].as_str().unwrap()).await;
    let staging_web = copies[0]["id"].as_str().unwrap().to_owned();
    let d = h.deploy(&a, &staging_web, json!({})).await;
    assert_eq!(h.wait_terminal(&a, &d, LIMIT).await["state"], "ready");

    let before = fakes.calls().len();
    let (status, body) = h
        .call("DELETE", &format!("/projects/{}", shop.project), &a, None)
        .await;
    assert_eq!(status, 204, "{body}");
    let calls = fakes.calls()[before..].to_vec();
    for service in [&shop.web, &staging_web] {
        assert!(
            calls.contains(&Call::Unroute {
                route_id: format!("{service}/default")
            }),
            "route of {service} removed: {calls:?}"
        );
    }
    for host in ["web-shop-acme", "web-staging-shop-acme"] {
        assert!(
            calls.contains(&Call::Disallow {
                domain: format!("{host}.stackpad.localhost")
            }),
            "{calls:?}"
        );
    }
    let removed = calls
        .iter()
        .filter(|c| matches!(c, Call::Remove { .. }))
        .count();
    assert_eq!(
        removed, 5,
        "production's web and worker, staging's web (twice) and worker: {calls:?}"
    );
    let (status, _) = h
        .call("GET", &format!("/projects/{}", shop.project), &a, None)
        .await;
    assert_eq!(status, 404);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_copied_managed_database_gets_its_own_password() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, a) = h.org("acme").await;
    let (project, production) = shop_without_deploys(&h, &a, "shop").await;
    let (status, db) = h
        .call(
            "POST",
            &format!("/projects/{project}/services"),
            &a,
            Some(json!({ "name": "db", "kind": "database", "engine": "postgres" })),
        )
        .await;
    assert_eq!(status, 201, "{db}");
    let (status, staging) = h
        .call(
            "POST",
            &format!("/projects/{project}/environments"),
            &a,
            Some(json!({ "name": "staging", "branch": "main", "from": production })),
        )
        .await;
    assert_eq!(status, 201, "{staging}");
    let copy = services_of(&h, &a, &project, staging["id"].as_str().unwrap()).await;
    let copy = copy[0]["id"].as_str().unwrap().to_owned();
    let (_, shown) = h.call("GET", &format!("/services/{copy}"), &a, None).await;
    assert_eq!(shown["engine"], "postgres", "{shown}");
    assert_eq!(shown["internal_host"], "db.staging.internal", "{shown}");
    let password = |id: String| {
        let store = h.store();
        async move {
            let env = store.service_env(id.parse().unwrap()).await.unwrap();
            env["POSTGRES_PASSWORD"].0.clone()
        }
    };
    let (original, copied) = (
        password(db["id"].as_str().unwrap().to_owned()).await,
        password(copy).await,
    );
    assert_eq!(copied.len(), original.len());
    assert_ne!(
        copied, original,
        "a fresh database has a password of its own"
    );
    h.stop().await;
    Ok(())
}
