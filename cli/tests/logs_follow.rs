//! `stackpad logs --follow` against a real control plane whose log search reads a ClickHouse
//! database of the test's own: the latest lines first, then each new line as it is written,
//! none twice; with `--json` one object per line.

#[path = "../../control/tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use cli::{Cli, run};
use common::log_rows::{log_row, write_container_logs};
use common::{Harness, fake_clients, fakes::Fakes};
use serde_json::{Value, json};
use stackpad_tests::db::ClickHouseDb;

/// What a command running in a task has printed so far.
#[derive(Clone, Default)]
struct Printed(Arc<Mutex<Vec<u8>>>);

impl Write for Printed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Printed {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Waits until `what` has been printed (fails the test after 15 s).
    async fn wait_for(&self, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !self.text().contains(what) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what:?} not printed: {}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs `stackpad ARGS...` in a task until aborted (a follow does not end by itself).
fn start(args: &[&str]) -> (Printed, tokio::task::JoinHandle<()>) {
    let cli = Cli::try_parse_from(args).expect("arguments parse");
    let printed = Printed::default();
    let mut w = printed.clone();
    let task = tokio::spawn(async move {
        let result = run(cli, &mut w).await;
        let _ = writeln!(w, "ENDED: {result:?}");
    });
    (printed, task)
}

/// Aborts the command's task when the test ends, however it ends.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap()
}

#[tokio::test]
async fn logs_follow_prints_the_latest_lines_then_new_ones_once_each() -> anyhow::Result<()> {
    let log_db = ClickHouseDb::create("cli_follow").await?;
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.clickhouse_url = log_db.url().to_owned();
    config.clickhouse_database = log_db.name().to_owned();
    config.log_retention_interval_ms = 0;
    let h = Harness::start_with(db, &config, fake_clients(&Fakes::new())).await?;
    let (org, token) = h.org("follow-a").await;
    let (project, service) = h
        .service(&token, json!({ "name": "web", "image": "x:1" }))
        .await;
    let t0 = now_ns();
    write_container_logs(
        &log_db,
        &[
            log_row(t0 - 2_000_000_000, 1, &org, &service, 1, "before one"),
            log_row(t0 - 1_000_000_000, 2, &org, &service, 1, "before two"),
        ],
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cli.json");
    let c = config.to_str().unwrap();
    let login = Cli::try_parse_from([
        "stackpad", "--config", c, "login", "--url", &h.url, "--token", &token,
    ])?;
    assert_eq!(run(login, &mut Vec::new()).await?, 0);

    // By name, in human form.
    let (_, p) = h
        .call("GET", &format!("/projects/{project}"), &token, None)
        .await;
    let project_name = p["name"].as_str().unwrap().to_owned();
    let target = format!("{project_name}/web");
    let (human, task) = start(&[
        "stackpad",
        "--config",
        c,
        "logs",
        "--follow",
        "--service",
        &target,
    ]);
    let human_task = Abort(task);
    let (json_out, task) = start(&[
        "stackpad",
        "--config",
        c,
        "--json",
        "logs",
        "-f",
        "--service",
        &target,
    ]);
    let json_task = Abort(task);
    human.wait_for("before two").await;
    json_out.wait_for("before two").await;
    write_container_logs(
        &log_db,
        &[log_row(now_ns(), 3, &org, &service, 2, "after one")],
    )
    .await?;
    human.wait_for("after one").await;
    write_container_logs(
        &log_db,
        &[log_row(now_ns(), 4, &org, &service, 1, "after two")],
    )
    .await?;
    human.wait_for("after two").await;
    json_out.wait_for("after two").await;

    let text = human.text();
    let order: Vec<usize> = ["before one", "before two", "after one", "after two"]
        .iter()
        .map(|l| {
            assert_eq!(text.matches(l).count(), 1, "{l:?} once: {text}");
            text.find(l).unwrap()
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {text}"
    );
    assert!(!text.contains("ENDED"), "still following: {text}");
    let lines: Vec<Value> = json_out
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let texts: Vec<&str> = lines.iter().map(|l| l["line"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        ["before one", "before two", "after one", "after two"]
    );
    assert!(
        lines
            .iter()
            .all(|l| l["cursor"].is_string() && l["stream"].is_string())
    );
    drop((human_task, json_task));
    h.stop().await;
    Ok(())
}
