//! `stackpad backups list|create|restore` against a real control plane on 127.0.0.1:0 and
//! PostgreSQL with backups stored in a folder of the test's own (sealed, checked and verified
//! by control's real backup code); the node agent's engine dump and load are the gRPC fakes'
//! (control/tests/common/grpc_fakes.rs), whose data the test reads back.

#[path = "../../control/tests/common/mod.rs"]
mod common;
mod runner;

use std::path::Path;
use std::time::Duration;

use cli::exit;
use common::grpc_fakes::Daemons;
use common::{Harness, fake_clients, fakes::Fakes};
use control::backups::BackupSettings;
use runner::{json_of, ok, stackpad};
use serde_json::json;

const PROXY_TOKEN: &str = "proxy-admin-token";

/// A PostgreSQL service `name` of project shop (created with the CLI) whose serving container
/// (on the fake agent) holds `data`; returns its container.
async fn engine(
    h: &Harness,
    daemons: &Daemons,
    c: &Path,
    token: &str,
    name: &str,
    data: &[u8],
) -> String {
    let s = json_of(
        c,
        &[
            "services",
            "create",
            "--project",
            "shop",
            "--name",
            name,
            "--kind",
            "database",
            "--engine",
            "postgres",
        ],
    )
    .await;
    let id = s["id"].as_str().unwrap();
    let d = h.deploy(token, id, json!({})).await;
    let v = h.wait_terminal(token, &d, Duration::from_secs(20)).await;
    assert_eq!(v["state"], "ready", "{v}");
    let container = format!("c-{d}");
    daemons
        .engine_data
        .lock()
        .unwrap()
        .insert(container.clone(), data.to_vec());
    container
}

#[tokio::test]
async fn backups_are_listed_created_and_restored_by_name_with_their_timeline() -> anyhow::Result<()>
{
    let daemons = Daemons::default();
    let address = daemons.serve(PROXY_TOKEN).await?;
    let store = tempfile::tempdir()?;
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.backups = BackupSettings {
        store: store.path().display().to_string(),
        interval_ms: 0,
        ..BackupSettings::default()
    };
    let h = Harness::start_with(db, &config, fake_clients(&Fakes::new())).await?;
    h.register_node("n1", "compute", &address).await;
    let (org, token) = h.org("backups-cli").await;
    let dir = tempfile::tempdir()?;
    let login = dir.path().join("cli.json");
    let c = login.as_path();
    ok(c, &["login", "--url", &h.url, "--token", &token]).await;
    ok(c, &["projects", "create", "shop"]).await;
    let container = engine(&h, &daemons, c, &token, "db", b"first version of the data").await;
    let copy = engine(&h, &daemons, c, &token, "db-copy", b"the copy's own data").await;

    let out = ok(c, &["backups", "list", "--service", "shop/db"]).await;
    assert_eq!(out.trim(), "no backups of shop/production/db", "{out}");

    // Create follows the backup until it is stored and verified, printing its timeline.
    let out = ok(c, &["backups", "create", "--service", "shop/db"]).await;
    assert!(out.contains("started"), "{out}");
    assert!(out.contains("stored ("), "{out}");
    assert!(out.contains("verified"), "{out}");
    let listed = json_of(c, &["backups", "list", "--service", "shop/db"]).await;
    let first = listed[0].clone();
    assert_eq!(first["state"], "completed", "{listed}");
    assert_eq!(first["verification"], "verified", "{listed}");
    let id = first["id"].as_str().unwrap().to_owned();
    let out = ok(c, &["backups", "list", "--service", "shop/db"]).await;
    let row = out.lines().next().unwrap();
    assert!(
        row.starts_with(&id[..8]) && row.contains("completed") && row.contains("manual"),
        "{out}"
    );

    // The data changes; restoring asks unless --yes, names are checked first.
    daemons
        .engine_data
        .lock()
        .unwrap()
        .insert(container.clone(), b"second version".to_vec());
    let (code, out) = stackpad(c, &["backups", "restore", "latest", "--service", "shop/db"]).await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(out.contains("pass --yes"), "{out}");
    let (code, out) = stackpad(
        c,
        &["backups", "restore", "abc", "--service", "shop/db", "--yes"],
    )
    .await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(out.contains("at least its first 8 characters"), "{out}");
    let (code, out) = stackpad(
        c,
        &[
            "backups",
            "restore",
            "ffffffff",
            "--service",
            "shop/db",
            "--yes",
        ],
    )
    .await;
    assert_eq!(code, exit::NOT_FOUND, "{out}");
    assert!(
        out.contains(&id[..8]),
        "the error lists the backups there are: {out}"
    );
    let (code, out) = stackpad(
        c,
        &[
            "backups",
            "restore",
            "latest",
            "--service",
            "shop/dbb",
            "--yes",
        ],
    )
    .await;
    assert_eq!(code, exit::NOT_FOUND, "{out}");
    assert!(out.contains("did you mean db"), "{out}");

    // Restore by its short id into the same service: followed to the end, the data is back and
    // the replaced data was backed up first (the timeline says so).
    let out = ok(
        c,
        &[
            "backups",
            "restore",
            &id[..8],
            "--service",
            "shop/db",
            "--yes",
        ],
    )
    .await;
    assert!(out.contains("pre_restore_backup"), "{out}");
    assert!(out.contains("completed"), "{out}");
    assert_eq!(
        daemons.engine_data.lock().unwrap()[&container],
        b"first version of the data"
    );
    let listed = json_of(c, &["backups", "list", "--service", "shop/db"]).await;
    assert_eq!(listed[0]["trigger"], "pre_restore", "{listed}");

    // Into another service (by its bare name, in the backup's project), as JSON for scripts;
    // the source keeps its data and nothing of it is backed up first.
    let r = json_of(
        c,
        &[
            "backups",
            "restore",
            &id,
            "--service",
            "shop/db",
            "--into",
            "db-copy",
            "--yes",
        ],
    )
    .await;
    assert_eq!(r["state"], "completed", "{r}");
    assert!(r["pre_restore_backup_id"].is_null(), "{r}");
    assert_eq!(
        daemons.engine_data.lock().unwrap()[&copy],
        b"first version of the data"
    );

    // To a point in time. The window runs from the first base backup to the newest archived
    // WAL: here the first backup stands for a base backup, and one WAL file is archived now.
    let pool = &h.store().pool;
    sqlx::query("UPDATE backups SET kind = 'base' WHERE id = $1::uuid")
        .bind(&id)
        .execute(pool)
        .await?;
    let db_id = json_of(c, &["services", "show", "--service", "shop/db"]).await["id"].clone();
    sqlx::query(
        "INSERT INTO backup_wal (id, organization_id, service_id, name, object_key, archived_at, \
         size_bytes, wal_bytes, sha256) VALUES (gen_random_uuid(), $1::uuid, $2::uuid, \
         '000000010000000000000001', 'wal/1', now(), 1, 1, '')",
    )
    .bind(&org)
    .bind(db_id.as_str().unwrap())
    .execute(pool)
    .await?;
    let out = ok(c, &["backups", "list", "--service", "shop/db"]).await;
    assert!(
        out.contains("restorable to any time from") && out.contains("(`backups restore --to`)"),
        "{out}"
    );
    // Asked like a backup's restore; the API's refusal of a time outside the window is shown
    // with its field (exit 3), and it names the time the CLI sent (in UTC).
    let (code, out) = stackpad(
        c,
        &[
            "backups",
            "restore",
            "--to",
            "2020-01-01T00:00:00Z",
            "--service",
            "shop/db",
        ],
    )
    .await;
    assert_eq!(code, exit::USAGE, "{out}");
    assert!(out.contains("pass --yes"), "{out}");
    let (code, out) = stackpad(
        c,
        &[
            "backups",
            "restore",
            "--to",
            "2020-01-01T01:00:00+01:00",
            "--service",
            "shop/db",
            "--into",
            "db-copy",
            "--yes",
        ],
    )
    .await;
    assert_eq!(code, exit::REFUSED, "{out}");
    assert!(
        out.contains("to_time:") && out.contains("2020-01-01T00:00:00+00:00"),
        "{out}"
    );
    let future = (chrono::Utc::now() + chrono::TimeDelta::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (code, out) = stackpad(
        c,
        &[
            "--json",
            "backups",
            "restore",
            "--to",
            &future,
            "--service",
            "shop/db",
            "--yes",
        ],
    )
    .await;
    assert_eq!(code, exit::REFUSED, "{out}");
    assert!(
        out.contains("to_time:") && out.contains("is in the future"),
        "{out}"
    );
    for args in [
        &[
            "backups",
            "restore",
            "--to",
            "yesterday",
            "--service",
            "shop/db",
        ][..],
        &[
            "backups",
            "restore",
            "latest",
            "--to",
            &future,
            "--service",
            "shop/db",
        ],
        &["backups", "restore", "--service", "shop/db"],
    ] {
        let (code, out) = stackpad(c, args).await;
        assert_eq!(code, exit::USAGE, "{args:?}: {out}");
    }
    // Create with --json: only the backup as it ended, stored and verified.
    let made = json_of(c, &["backups", "create", "--service", "shop/db-copy"]).await;
    assert_eq!(made["state"], "completed", "{made}");
    assert_eq!(made["verification"], "verified", "{made}");

    // A web service has no backups: the API's refusal, exit 3.
    ok(
        c,
        &[
            "services",
            "create",
            "--project",
            "shop",
            "--name",
            "web",
            "--image",
            "nginx:1",
        ],
    )
    .await;
    let (code, out) = stackpad(c, &["backups", "create", "--service", "shop/web"]).await;
    assert_eq!(code, exit::REFUSED, "{out}");
    h.stop().await;
    Ok(())
}
