//! A service's own variables changed one by one (`PATCH /services/{id}` with `env_set`,
//! `secrets_set`, `unset`) against a real control plane and PostgreSQL, with recording fakes of
//! the daemons: the others are kept, secrets are never shown but reach the container, bad
//! input names its field and changes nothing, and the replace form still replaces.

mod common;

use std::time::Duration;

use common::fakes::{Call, Fakes};
use common::{Harness, fake_clients};
use serde_json::{Value, json};

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
async fn variables_are_set_and_removed_one_by_one_and_secrets_stay_hidden() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, token) = h.org("vars").await;
    let (_, service) = h
        .service(
            &token,
            json!({ "name": "web", "image": "app:v1", "env": { "MODE": "prod", "OLD": "1" },
                    "secrets": { "API_KEY": "s3cret" } }),
        )
        .await;
    let path = format!("/services/{service}");

    let (status, v) = h
        .call(
            "PATCH",
            &path,
            &token,
            Some(json!({ "env_set": { "LEVEL": "debug", "MODE": "staging" },
                         "secrets_set": { "DB_PASSWORD": "hunter2" }, "unset": ["OLD"] })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["env"],
        json!({
            "API_KEY": { "value": null, "secret": true },
            "DB_PASSWORD": { "value": null, "secret": true },
            "LEVEL": { "value": "debug", "secret": false },
            "MODE": { "value": "staging", "secret": false },
        })
    );
    assert!(!v.to_string().contains("hunter2") && !v.to_string().contains("s3cret"));
    // A plain variable turned secret (and the other way) keeps one entry.
    let (status, v) = h
        .call(
            "PATCH",
            &path,
            &token,
            Some(json!({ "secrets_set": { "LEVEL": "quiet" } })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["env"]["LEVEL"], json!({ "value": null, "secret": true }));

    // The container gets the values, secrets included.
    let d = h.deploy(&token, &service, json!({})).await;
    let done = h.wait_terminal(&token, &d, Duration::from_secs(20)).await;
    assert_eq!(done["state"], "ready", "{done}");
    let env = deploy_env(&fakes, &d);
    for (k, want) in [
        ("API_KEY", "s3cret"),
        ("DB_PASSWORD", "hunter2"),
        ("LEVEL", "quiet"),
        ("MODE", "staging"),
    ] {
        assert!(
            env.iter().any(|(n, v)| n == k && v == want),
            "{k} is not {want}: {env:?}"
        );
    }
    assert!(!env.iter().any(|(n, _)| n == "OLD"), "{env:?}");

    // Bad input names its field and changes nothing.
    let before: Value = h.call("GET", &path, &token, None).await.1["env"].clone();
    for (body, field) in [
        (json!({ "env_set": { "1BAD": "x" } }), "env_set"),
        (
            json!({ "secrets_set": { "OK": "x" }, "env_set": { "OK": "y" } }),
            "secrets_set",
        ),
        (
            json!({ "unset": ["MODE"], "env_set": { "MODE": "x" } }),
            "unset",
        ),
        (json!({ "unset": ["no spaces"] }), "unset"),
        (json!({ "env": { "A": "1" }, "unset": ["MODE"] }), "env_set"),
    ] {
        let (status, e) = h.call("PATCH", &path, &token, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}: {e}");
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
    }
    let too_many: serde_json::Map<String, Value> =
        (0..200).map(|i| (format!("V{i}"), json!("x"))).collect();
    let (status, e) = h
        .call("PATCH", &path, &token, Some(json!({ "env_set": too_many })))
        .await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["field"], "env_set");
    assert_eq!(h.call("GET", &path, &token, None).await.1["env"], before);

    // The replace form still replaces everything.
    let (status, v) = h
        .call(
            "PATCH",
            &path,
            &token,
            Some(json!({ "env": { "ONLY": "1" } })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["env"],
        json!({ "ONLY": { "value": "1", "secret": false } })
    );
    Ok(())
}
