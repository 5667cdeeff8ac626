//! Image references at the API edge, against a real control plane and PostgreSQL: the platform's
//! registry serves an organization only its own builds (`<registry>/<org id>/...`), and any other
//! registry must pass the address policy the compute node's pull would be held to. Host names are
//! resolved through pebble-challtestsrv, which answers 127.0.0.1 for every name.

mod common;

use common::{Harness, fake_clients, fakes::Fakes};
use serde_json::{Value, json};
use stackpad_tests::acme::ChallTestSrv;

async fn start() -> anyhow::Result<Harness> {
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.dns_resolver = ChallTestSrv::default().dns;
    Harness::start_with(db, &config, fake_clients(&Fakes::new())).await
}

fn assert_refused(status: u16, v: &Value, what: &str) {
    assert_eq!(status, 422, "{what}: {v}");
    assert_eq!(v["error"]["field"], "image", "{what}: {v}");
}

#[tokio::test]
async fn images_from_another_tenant_or_a_private_registry_are_refused() -> anyhow::Result<()> {
    let h = start().await?;
    let (a_id, a) = h.org("img-a").await;
    let (b_id, _) = h.org("img-b").await;
    let (pid, service) = h
        .service(&a, json!({ "name": "web", "image": "nginx:1" }))
        .await;
    let own = format!("127.0.0.1:5000/{a_id}/{service}:0123abc");
    let others = format!("127.0.0.1:5000/{b_id}/{service}:0123abc");
    let refused = [
        (others.as_str(), "another organization's build"),
        (
            "127.0.0.1:5000/app:v1",
            "the platform registry outside the org",
        ),
        ("10.1.2.3:5000/a/b:1", "a private registry"),
        ("169.254.169.254:80/a/b", "the metadata address"),
        ("[::1]:5000/a/b", "an IPv6 loopback registry"),
        ("registry.example.com/a/b:1", "a name resolving to loopback"),
        ("localhost:5000/a/b", "localhost"),
    ];
    let create = format!("/projects/{pid}/services");
    let path = format!("/services/{service}");
    let deploy = format!("/services/{service}/deployments");
    for (image, what) in refused {
        let body = json!({ "name": "x", "image": image });
        let (status, v) = h.call("POST", &create, &a, Some(body)).await;
        assert_refused(status, &v, &format!("create: {what}"));
        let body = json!({ "image": image });
        let (status, v) = h.call("PATCH", &path, &a, Some(body.clone())).await;
        assert_refused(status, &v, &format!("patch: {what}"));
        let (status, v) = h.call("POST", &deploy, &a, Some(body)).await;
        assert_refused(status, &v, &format!("deploy: {what}"));
    }
    let message = {
        let (_, v) = h
            .call("PATCH", &path, &a, Some(json!({ "image": others })))
            .await;
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(message.contains("own builds"), "{message}");
    assert!(
        !message.contains(&b_id),
        "the refusal echoes the other org: {message}"
    );

    // The organization's own builds and Docker Hub names are fine.
    for image in [own.as_str(), "nginx:1.27", "library/redis:7"] {
        let (status, v) = h
            .call("PATCH", &path, &a, Some(json!({ "image": image })))
            .await;
        assert_eq!(status, 200, "{image}: {v}");
        h.deploy(&a, &service, json!({ "image": image })).await;
    }
    h.stop().await;
    Ok(())
}

/// An image stored before the registry rules is refused when deployed again, not pulled.
#[tokio::test]
async fn a_stored_image_that_fails_the_rules_is_not_deployed() -> anyhow::Result<()> {
    let h = start().await?;
    let (_, a) = h.org("img-stored-a").await;
    let (b_id, _) = h.org("img-stored-b").await;
    let (_, service) = h
        .service(&a, json!({ "name": "web", "image": "nginx:1" }))
        .await;
    let deploy = format!("/services/{service}/deployments");
    for stored in [
        format!("127.0.0.1:5000/{b_id}/x:1"),
        "169.254.169.254:80/a/b".to_owned(),
    ] {
        sqlx::query("UPDATE services SET image = $1 WHERE id = $2::uuid")
            .bind(&stored)
            .bind(&service)
            .execute(&h.store().pool)
            .await?;
        let (status, v) = h.call("POST", &deploy, &a, Some(json!({}))).await;
        assert_refused(status, &v, &stored);
        // A ready deployment that ran it is not rolled back to either.
        let ready = h.deploy(&a, &service, json!({ "image": "nginx:1" })).await;
        h.wait_terminal(&a, &ready, std::time::Duration::from_secs(30))
            .await;
        sqlx::query("UPDATE deployments SET image = $1, ready_at = now() WHERE id = $2::uuid")
            .bind(&stored)
            .bind(&ready)
            .execute(&h.store().pool)
            .await?;
        let count = || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM deployments")
                .fetch_one(&h.store().pool)
                .await
        };
        let before = count().await?;
        let (status, v) = h
            .call("POST", &format!("/deployments/{ready}/rollback"), &a, None)
            .await;
        assert_refused(status, &v, &format!("rollback to {stored}"));
        assert_eq!(count().await?, before, "a refused rollback was stored");
    }
    h.stop().await;
    Ok(())
}
