//! The `stackpad` CLI's files at rest: the login (API URL and token) is 0600 and replaced
//! atomically, whatever mode an older file had; the webhook secret is rotated from the CLI.

#[path = "../../control/tests/common/mod.rs"]
mod common;
mod runner;

use std::os::unix::fs::PermissionsExt;

use cli::exit;
use common::{Harness, fake_clients, fakes::Fakes};
use runner::{json_of, stackpad};
use serde_json::json;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn login_writes_the_token_0600_even_over_a_0644_file() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, token) = h.org("org-a").await;
    let dir = tempfile::tempdir()?;
    let fresh = dir.path().join("new/cli.json");
    let (code, out) = stackpad(&fresh, &["login", "--url", &h.url, "--token", &token]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(mode(&fresh), 0o600);

    let old = dir.path().join("cli.json");
    std::fs::write(&old, "{\"url\": \"http://old\", \"token\": \"sp_old\"}")?;
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644))?;
    assert_eq!(mode(&old), 0o644);
    let (code, out) = stackpad(&old, &["login", "--url", &h.url, "--token", &token]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        mode(&old),
        0o600,
        "the 0644 file was replaced by a 0600 one"
    );
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&old)?)?;
    assert_eq!(saved["token"], token.as_str());
    let left: Vec<_> = std::fs::read_dir(dir.path())?
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_cli_rotates_a_webhook_secret_and_mints_a_read_only_token() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, token) = h.org("org-a").await;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cli.json");
    assert_eq!(
        stackpad(&config, &["login", "--url", &h.url, "--token", &token])
            .await
            .0,
        0
    );
    let (project, _) = h
        .service(&token, json!({ "name": "seed", "image": "x:1" }))
        .await;
    let (code, out) = stackpad(
        &config,
        &[
            "services",
            "create",
            "--project",
            &project,
            "--name",
            "web",
            "--git",
            "file:///srv/app.git",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("shown once"),
        "the generated secret is shown: {out}"
    );
    let service = out
        .split(['(', ')'])
        .nth(1)
        .unwrap_or_else(|| panic!("no id in {out}"))
        .to_owned();
    let (code, out) = stackpad(&config, &["webhook", "rotate", "--service", &service]).await;
    assert_eq!(code, 0, "{out}");
    let secret = out
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .to_owned();
    assert_eq!(secret.len(), 64, "{out}");
    let (code, out) = stackpad(
        &config,
        &[
            "webhook",
            "rotate",
            "--service",
            &service,
            "--secret",
            "short",
        ],
    )
    .await;
    assert_eq!(code, exit::REFUSED, "{out}");
    assert!(out.contains("422") && out.contains("secret"), "{out}");
    let rotated = json_of(&config, &["webhook", "rotate", "--service", &service]).await;
    let again = rotated["webhook_secret"].as_str().unwrap();
    assert_eq!(again.len(), 64, "{rotated}");
    assert_ne!(again, secret, "a new secret each rotation");

    let (code, out) = stackpad(
        &config,
        &[
            "tokens",
            "create",
            "--name",
            "viewer",
            "--role",
            "read_only",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("role read_only"), "{out}");
    let viewer = out.rsplit(' ').next().unwrap().trim().to_owned();
    let (status, _) = h
        .call(
            "POST",
            "/projects",
            &viewer,
            Some(json!({ "name": "nope" })),
        )
        .await;
    assert_eq!(status, 403);
    h.stop().await;
    Ok(())
}
