//! A project's SSH deploy key (#17) against a real control plane and PostgreSQL, with the
//! daemons' recording fakes behind the real tonic clients: the key is made (ed25519, its public
//! half shown with a fingerprint and a comment naming the project), rotated and removed by the
//! owner only; its private half is sealed at rest, in no answer and no build log line, and goes
//! to buildd inside the build request of an SSH source only, with the project's known hosts. An
//! SSH repository is refused without a key, saying how to make one.

mod common;

use std::time::Duration;

use common::Harness;
use common::grpc_fakes::Daemons;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(20);
const HEAD: &str = "cccccccccccccccccccccccccccccccccccccccc";

async fn project(h: &Harness, token: &str) -> String {
    let name = stackpad_tests::unique_ident("keys").replace('_', "-");
    let (status, p) = h
        .call("POST", "/projects", token, Some(json!({ "name": name })))
        .await;
    assert_eq!(status, 201, "{p}");
    p["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_deploy_key_is_made_shown_rotated_and_sent_only_to_buildd() -> anyhow::Result<()> {
    let daemons = Daemons::default();
    let address = daemons.serve("proxy-token").await?;
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.proxy_address = address.clone();
    config.proxy_token = "proxy-token".into();
    // Names resolve through challtestsrv (127.0.0.1 for any name), opened as an operator would
    // open an internal git server.
    config.dns_resolver = stackpad_tests::acme::ChallTestSrv::default().dns;
    config.egress_allow = vec!["127.0.0.1/32".into()];
    let h = Harness::start_with(db, &config, control::daemon::grpc_clients(&config)).await?;
    h.register_node("b1", "build", &address).await;
    h.register_node("n1", "compute", &address).await;
    let (_, owner) = h.org("org-keys").await;
    let p = project(&h, &owner).await;
    let url = "ssh://git@git.deploy-keys.stackpad.test:2222/acme/shop.git";

    // No key yet: GET says how to make one; an SSH service is refused saying the same.
    let (status, v) = h
        .call("GET", &format!("/projects/{p}/deploy-key"), &owner, None)
        .await;
    assert_eq!(status, 404, "{v}");
    assert!(v.to_string().contains("deploy-key"), "{v}");
    let (status, v) = h
        .call(
            "POST",
            &format!("/projects/{p}/services"),
            &owner,
            Some(json!({ "name": "web", "git": { "url": url } })),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(v["error"]["field"], "git.url", "{v}");
    assert!(
        message.contains("deploy key") && message.contains("public half"),
        "{v}"
    );
    // A malformed SSH URL names what is wrong.
    let (status, v) = h
        .call(
            "POST",
            &format!("/projects/{p}/services"),
            &owner,
            Some(json!({ "name": "web", "git": { "url": "git.example.com:acme/shop.git" } })),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("login user"), "{v}");

    // A read-only token may look but not make one.
    let (status, t) = h
        .call(
            "POST",
            "/tokens",
            &owner,
            Some(json!({ "name": "reader", "role": "read_only" })),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    let reader = t["secret"].as_str().unwrap().to_owned();
    let (status, v) = h
        .call("POST", &format!("/projects/{p}/deploy-key"), &reader, None)
        .await;
    assert_eq!(status, 403, "{v}");

    let (status, made) = h
        .call("POST", &format!("/projects/{p}/deploy-key"), &owner, None)
        .await;
    assert_eq!(status, 201, "{made}");
    let public = made["public_key"].as_str().unwrap().to_owned();
    assert!(public.starts_with("ssh-ed25519 AAAA"), "{made}");
    assert!(public.contains("stackpad-deploy-key-keys"), "{made}");
    assert!(made["fingerprint"].as_str().unwrap().starts_with("SHA256:"));
    let (status, shown) = h
        .call("GET", &format!("/projects/{p}/deploy-key"), &reader, None)
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["public_key"], made["public_key"]);
    assert!(shown["created_at"].is_string(), "{shown}");

    // Known hosts: checked line by line.
    let (status, v) = h
        .call(
            "PUT",
            &format!("/projects/{p}/deploy-key/known-hosts"),
            &owner,
            Some(json!({ "known_hosts": "git.example.com ssh-ed25519 not-a-key" })),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["field"], "known_hosts", "{v}");
    let host_line = format!(
        "[git.deploy-keys.stackpad.test]:2222 {}",
        public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (status, v) = h
        .call(
            "PUT",
            &format!("/projects/{p}/deploy-key/known-hosts"),
            &owner,
            Some(json!({ "known_hosts": format!("# ours\n{host_line} comment\n") })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["known_hosts"], format!("{host_line}\n"));

    // With the key, the SSH service is accepted and its build request carries the key.
    let (status, s) = h
        .call(
            "POST",
            &format!("/projects/{p}/services"),
            &owner,
            Some(json!({ "name": "web", "git": { "url": url } })),
        )
        .await;
    assert_eq!(status, 201, "{s}");
    let service = s["id"].as_str().unwrap().to_owned();
    let d = h
        .deploy(&owner, &service, json!({ "git_commit": HEAD }))
        .await;
    assert_eq!(h.wait_terminal(&owner, &d, LIMIT).await["state"], "ready");
    let sent = daemons.recorded().builds[0].source.clone().unwrap();
    assert_eq!(sent.url, url);
    assert!(
        sent.ssh_private_key
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"),
        "no key in the build request"
    );
    assert_eq!(sent.ssh_known_hosts, format!("{host_line}\n"));
    let private = sent.ssh_private_key.clone();
    let body: String = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();

    // Sealed at rest; in no answer (not the key's, the service's, the deployment's or its
    // build log).
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT deploy_key_private_enc FROM projects WHERE id = $1::uuid")
            .bind(&p)
            .fetch_one(&h.store().pool)
            .await?;
    assert!(!String::from_utf8_lossy(&stored).contains("OPENSSH"));
    for path in [
        format!("/projects/{p}/deploy-key"),
        format!("/projects/{p}"),
        format!("/services/{service}"),
        format!("/deployments/{d}"),
        format!("/deployments/{d}/build-logs"),
    ] {
        let (_, v) = h.call("GET", &path, &owner, None).await;
        let text = v.to_string();
        assert!(
            !text.contains("PRIVATE KEY") && private.lines().skip(1).all(|l| !text.contains(l)),
            "{path}: {v}"
        );
    }
    assert!(!body.is_empty());

    // Rotation: a new pair (200), the old private key is no longer sent.
    let (status, rotated) = h
        .call("POST", &format!("/projects/{p}/deploy-key"), &owner, None)
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_ne!(rotated["public_key"], made["public_key"]);
    assert!(
        rotated["note"]
            .as_str()
            .unwrap()
            .contains("no longer works")
    );
    let d2 = h
        .deploy(&owner, &service, json!({ "git_commit": HEAD }))
        .await;
    h.wait_terminal(&owner, &d2, LIMIT).await;
    let sent = daemons.recorded().builds[1].source.clone().unwrap();
    assert!(!sent.ssh_private_key.is_empty());
    assert_ne!(sent.ssh_private_key, private);

    // Removed: the next build of the SSH service fails naming the missing key.
    let (status, _) = h
        .call("DELETE", &format!("/projects/{p}/deploy-key"), &owner, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = h
        .call("DELETE", &format!("/projects/{p}/deploy-key"), &owner, None)
        .await;
    assert_eq!(status, 404);
    let d3 = h
        .deploy(&owner, &service, json!({ "git_commit": HEAD }))
        .await;
    let failed: Value = h.wait_terminal(&owner, &d3, LIMIT).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(failed.to_string().contains("deploy key"), "{failed}");
    assert_eq!(daemons.recorded().builds.len(), 2);
    h.stop().await;
    Ok(())
}
