//! `stackpad deployments logs` and `GET /deployments/{id}/build-logs` against a real control
//! plane whose build log store is a ClickHouse database of the test's own, filled as the
//! pipeline fills it (`logstore::build_logs` rows): every line once, oldest first, paged; the
//! step named when it changes; another organization's deployment is not found; `--follow`
//! ends by itself once the deployment has ended.

#[path = "../../control/tests/common/mod.rs"]
mod common;
mod runner;

use std::time::Duration;

use cli::exit;
use common::log_rows::{build_log_row, write_build_logs};
use common::{Harness, fake_clients, fakes::Fakes};
use runner::{ok, stackpad};
use serde_json::json;
use stackpad_tests::db::ClickHouseDb;

#[tokio::test]
async fn build_logs_are_paged_scoped_printed_and_followed_to_the_end() -> anyhow::Result<()> {
    let log_db = ClickHouseDb::create("cli_build_logs").await?;
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.clickhouse_url = log_db.url().to_owned();
    config.clickhouse_database = log_db.name().to_owned();
    config.log_retention_interval_ms = 0;
    let h = Harness::start_with(db, &config, fake_clients(&Fakes::new())).await?;
    let (org, token) = h.org("buildlogs-a").await;
    let (_, other_token) = h.org("buildlogs-b").await;
    let (_, service) = h
        .service(&token, json!({ "name": "web", "image": "x:1" }))
        .await;
    let d = h.deploy(&token, &service, json!({})).await;
    let done = h.wait_terminal(&token, &d, Duration::from_secs(30)).await;
    // This harness registers no compute node: the deployment ends failed, which is all the
    // follow needs (it ended).
    assert_eq!(done["state"], "failed", "{done}");
    let mut rows: Vec<_> = (1..=5)
        .map(|n| {
            build_log_row(
                &org,
                &d,
                n,
                "[build 1/2] RUN npm ci",
                &format!("installing {n}"),
            )
        })
        .collect();
    rows.push(build_log_row(
        &org,
        &d,
        6,
        "[build 2/2] RUN npm run build",
        "compiled",
    ));
    // A watch taken again after a lost connection stores lines again: each reads once.
    rows.push(build_log_row(
        &org,
        &d,
        3,
        "[build 1/2] RUN npm ci",
        "installing 3",
    ));
    write_build_logs(&log_db, &rows).await?;

    // The API: pages of 4 by line number, then the tail; another organization gets a 404.
    let (status, page) = h
        .call(
            "GET",
            &format!("/deployments/{d}/build-logs?limit=4"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let numbers: Vec<u64> = page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4], "{page}");
    assert_eq!(page["next_cursor"], 4);
    assert_eq!(page["state"], "failed");
    let (_, next) = h
        .call(
            "GET",
            &format!("/deployments/{d}/build-logs?limit=4&after=4"),
            &token,
            None,
        )
        .await;
    assert_eq!(next["lines"][1]["line"], "compiled", "{next}");
    assert!(next["next_cursor"].is_null(), "{next}");
    let (_, tail) = h
        .call(
            "GET",
            &format!("/deployments/{d}/build-logs?tail=true&limit=2"),
            &token,
            None,
        )
        .await;
    assert_eq!(tail["lines"][0]["line_number"], 5, "{tail}");
    assert_eq!(tail["lines"][1]["line_number"], 6, "{tail}");
    let (status, body) = h
        .call(
            "GET",
            &format!("/deployments/{d}/build-logs"),
            &other_token,
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = h
        .call(
            "GET",
            &format!("/deployments/{d}/build-logs?limit=0"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 422, "{body}");

    // The CLI.
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("cli.json");
    let c = cfg.as_path();
    ok(c, &["login", "--url", &h.url, "--token", &token]).await;
    let out = ok(c, &["deployments", "logs", &d]).await;
    assert_eq!(
        out,
        "==> [build 1/2] RUN npm ci\n    installing 1\n    installing 2\n    installing 3\n    \
         installing 4\n    installing 5\n==> [build 2/2] RUN npm run build\n    compiled\n"
    );
    // --follow: the lines, then the deployment's end, by itself (it is over already); exit 5 as
    // it did not end ready.
    let args = ["deployments", "logs", &d, "--follow"];
    let (code, out) = tokio::time::timeout(Duration::from_secs(20), stackpad(c, &args))
        .await
        .expect("--follow ends once the deployment has ended");
    assert_eq!(code, exit::DEPLOYMENT_FAILED, "{out}");
    assert_eq!(out.matches("installing 3").count(), 1, "{out}");
    assert!(
        out.contains(&format!("\ndeployment {d} failed: no compute node")),
        "{out}"
    );
    let (code, out) = stackpad(c, &["--json", "deployments", "logs", &d, "-f"]).await;
    assert_eq!(code, exit::DEPLOYMENT_FAILED, "{out}");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap())?;
    assert_eq!(first["line"], "installing 1", "{out}");
    h.stop().await;
    Ok(())
}
