//! The `stackpad` CLI against a real control plane on 127.0.0.1:0 (pipeline behind recording
//! fakes of the daemons).

#[path = "../../control/tests/common/mod.rs"]
mod common;

use clap::Parser;
use cli::{Cli, run};
use common::{Harness, fake_clients, fakes::Fakes};

async fn stackpad(config: &std::path::Path, args: &[&str]) -> (i32, String) {
    let mut argv = vec!["stackpad", "--config", config.to_str().unwrap()];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("arguments parse");
    let mut out = Vec::new();
    let code = match run(cli, &mut out).await {
        Ok(code) => code,
        Err(e) => {
            out.extend_from_slice(format!("error: {e}").as_bytes());
            2
        }
    };
    (code, String::from_utf8(out).unwrap())
}

fn id_in(output: &str) -> String {
    output
        .split(['(', ')', ' ', '\n'])
        .find(|w| uuid::Uuid::parse_str(w).is_ok())
        .unwrap_or_else(|| panic!("no id in {output:?}"))
        .to_owned()
}

#[tokio::test]
async fn login_create_deploy_list_and_rollback() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, token) = h.org("cli-org").await;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cli.json");

    let (code, out) = stackpad(&config, &["projects", "list"]).await;
    assert_eq!(code, 2);
    assert!(out.contains("not logged in"), "{out}");
    let (code, out) = stackpad(&config, &["login", "--url", &h.url, "--token", "sp_wrong"]).await;
    assert_eq!(code, 2, "a bad token is refused at login: {out}");
    let (code, out) = stackpad(&config, &["login", "--url", &h.url, "--token", &token]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cli-org"), "{out}");

    let (code, out) = stackpad(&config, &["projects", "create", "shop"]).await;
    assert_eq!(code, 0, "{out}");
    let project = id_in(&out);
    let (_, out) = stackpad(&config, &["projects", "list"]).await;
    assert!(out.contains("shop") && out.contains(&project), "{out}");

    let (code, out) = stackpad(
        &config,
        &[
            "services",
            "create",
            "--project",
            &project,
            "--name",
            "web",
            "--image",
            "shop:v1",
            "--port",
            "8080",
            "--health-path",
            "/healthz",
            "--env",
            "MODE=prod",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("https://web-shop."), "{out}");
    let service = id_in(&out);

    let (code, out) = stackpad(&config, &["deploy", "--service", &service]).await;
    assert_eq!(code, 0, "{out}");
    for step in ["queued", "starting", "switching", "stopping_old", "ready"] {
        assert!(out.contains(step), "timeline shows {step}: {out}");
    }
    let first = id_in(&out);
    let (code, out) = stackpad(
        &config,
        &["deploy", "--service", &service, "--image", "shop:unhealthy"],
    )
    .await;
    assert_eq!(code, 5, "a failed deployment exits 5: {out}");
    assert!(out.contains("failed") && out.contains("boom"), "{out}");

    let (_, out) = stackpad(&config, &["deployments", "--service", &service]).await;
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("failed") && out.contains("ready"), "{out}");

    let (code, out) = stackpad(&config, &["rollback", &first]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is ready"), "{out}");
    // This control plane has no ClickHouse: the CLI says so (tests/logs.rs covers search).
    let (code, out) = stackpad(&config, &["logs", "--service", &service]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("log search is not configured"), "{out}");
    h.stop().await;
    Ok(())
}
