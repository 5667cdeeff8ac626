//! `stackpad projects deploy-key`, against a real control plane on 127.0.0.1:0 and PostgreSQL:
//! the first call makes the project's key and prints its public half, the next shows the same
//! key, `--rotate` makes a new one; the private half is never printed.

#[path = "../../control/tests/common/mod.rs"]
mod common;
mod runner;

use common::{Harness, fake_clients, fakes::Fakes};
use runner::{json_of, ok};

#[tokio::test]
async fn a_projects_deploy_key_is_made_shown_and_rotated() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    let (_, token) = h.org("org-keys").await;
    let dir = tempfile::tempdir()?;
    let login = dir.path().join("cli.json");
    let c = login.as_path();
    ok(c, &["login", "--url", &h.url, "--token", &token]).await;
    ok(c, &["projects", "create", "shop"]).await;

    let printed = ok(c, &["projects", "deploy-key", "shop"]).await;
    assert!(printed.starts_with("ssh-ed25519 AAAA"), "{printed}");
    assert!(printed.contains("fingerprint SHA256:"), "{printed}");
    assert!(printed.contains("deploy key"), "{printed}");
    assert!(!printed.contains("PRIVATE"), "{printed}");
    let first = json_of(c, &["projects", "deploy-key", "shop"]).await;
    assert_eq!(
        first["public_key"].as_str(),
        printed.lines().next(),
        "the second call shows the same key"
    );
    let rotated = json_of(c, &["projects", "deploy-key", "shop", "--rotate"]).await;
    assert_ne!(rotated["public_key"], first["public_key"]);
    assert!(!rotated.to_string().contains("PRIVATE"), "{rotated}");
    h.stop().await;
    Ok(())
}
