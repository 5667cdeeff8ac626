//! What goes wrong with backups, as events on the service and on control's real `/metrics`
//! listener (#14 items 7 and 8), and the objects of a deleted service's backups (#14), on a
//! real PostgreSQL with the in-process node agent of `grpc_fakes` (its engine is a byte buffer
//! per container; a container missing there fails a dump like a node that is down).
//!
//! Proven: a scheduled run against a node that cannot dump is a failed backup and a
//! `backup_failed` event on the service; WAL shipping that fails is one `wal_shipping_failed`
//! event (not one per pass) and `wal_shipping_resumed` once it works again; a service without a
//! backup for its interval and a grace is one `backup_missed` event per stretch, cleared by the
//! next backup; all of it in `GET /services/{id}/backups`' `events` and on `/metrics` with the
//! volumes' use as the node reports it. A deleted service's backup and WAL objects stay in the
//! store for the keep time, then the scheduler removes them (local directory and the real S3
//! server of `scripts/services`).

mod common;

use std::time::Duration;

use common::grpc_fakes::Daemons;
use common::{Harness, fake_clients, fakes::Fakes};
use control::backups::{BackupSettings, Backups};
use object_store::ObjectStore;
use proto::node::v1 as n;
use serde_json::{Value, json};
use uuid::Uuid;

const PROXY_TOKEN: &str = "proxy-admin-token";
const LIMIT: Duration = Duration::from_secs(20);

struct Setup {
    h: Harness,
    daemons: Daemons,
    token: String,
    project: String,
    metrics: String,
    _dir: tempfile::TempDir,
    settings: BackupSettings,
}

async fn setup(org: &str, store: Option<BackupSettings>) -> anyhow::Result<Setup> {
    let daemons = Daemons::default();
    let address = daemons.serve(PROXY_TOKEN).await?;
    let dir = tempfile::tempdir()?;
    let settings = store.unwrap_or_else(|| BackupSettings {
        store: dir.path().display().to_string(),
        interval_ms: 0,
        ..BackupSettings::default()
    });
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.backups = settings.clone();
    let free = std::net::TcpListener::bind("127.0.0.1:0")?;
    let metrics_at = free.local_addr()?;
    drop(free);
    config.metrics_listen = Some(metrics_at);
    // Deploys and ListVolumes reach the in-process agent through the real gRPC client (the
    // volume gauges ask the node the way `GET /services/{id}/volumes` does).
    let mut clients = fake_clients(&Fakes::new());
    clients.node = std::sync::Arc::new(control::clients::grpc::GrpcNode::with_tls(None));
    let h = Harness::start_with(db, &config, clients).await?;
    h.register_node("n1", "compute", &address).await;
    let (_, token) = h.org(org).await;
    let (status, p) = h
        .call("POST", "/projects", &token, Some(json!({ "name": "shop" })))
        .await;
    assert_eq!(status, 201, "{p}");
    Ok(Setup {
        h,
        daemons,
        token,
        project: p["id"].as_str().unwrap().to_owned(),
        metrics: format!("http://{metrics_at}/metrics"),
        _dir: dir,
        settings,
    })
}

impl Setup {
    /// A managed service whose serving deployment runs on the fake agent with `data`.
    async fn engine(&self, name: &str, engine: &str, data: &[u8]) -> (String, String) {
        let (status, s) = self
            .h
            .call(
                "POST",
                &format!("/projects/{}/services", self.project),
                &self.token,
                Some(json!({ "name": name, "kind": "database", "engine": engine })),
            )
            .await;
        assert_eq!(status, 201, "{s}");
        let id = s["id"].as_str().unwrap().to_owned();
        let d = self.h.deploy(&self.token, &id, json!({})).await;
        let v = self.h.wait_terminal(&self.token, &d, LIMIT).await;
        assert_eq!(v["state"], "ready", "{v}");
        let container: String =
            sqlx::query_scalar("SELECT container_id FROM deployments WHERE id = $1::uuid")
                .bind(&d)
                .fetch_one(&self.h.store().pool)
                .await
                .unwrap();
        self.set_data(&container, Some(data));
        (id, container)
    }

    fn set_data(&self, container: &str, data: Option<&[u8]>) {
        let mut map = self.daemons.engine_data.lock().unwrap();
        match data {
            Some(d) => map.insert(container.to_owned(), d.to_vec()),
            None => map.remove(container),
        };
    }

    fn backups(&self) -> Backups {
        Backups::new(
            self.h.store(),
            self.settings.clone(),
            "127.0.0.1:5000",
            None,
        )
        .unwrap()
    }

    /// The service's events, newest first, as `step` names.
    async fn events(&self, service: &str) -> Vec<(String, String)> {
        let (status, list) = self
            .h
            .call(
                "GET",
                &format!("/services/{service}/backups"),
                &self.token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{list}");
        list["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e: &Value| {
                (
                    e["step"].as_str().unwrap().to_owned(),
                    e["detail"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    async fn scrape(&self) -> String {
        let r = reqwest::get(&self.metrics).await.expect("scrape /metrics");
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// Scrapes until `done` holds of the text (the volumes' figures come from control's
    /// background refresh, every 200 ms in tests); the last text.
    async fn scrape_until(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.scrape().await;
            if done(&text) || std::time::Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The value of the one line of `family` naming `service` (`None`: no such line).
fn value(text: &str, family: &str, service: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(service))
        .map(|l| l.rsplit(' ').next().unwrap().to_owned())
}

fn count(events: &[(String, String)], step: &str) -> usize {
    events.iter().filter(|(s, _)| s == step).count()
}

#[tokio::test]
async fn failed_missed_backups_and_wal_shipping_failures_are_service_events_and_metrics()
-> anyhow::Result<()> {
    let s = setup("bh-a", None).await?;
    let (db, container) = s.engine("db", "postgres", b"v1").await;
    let service = Uuid::parse_str(&db)?;
    let store = s.h.store();
    let pool = &store.pool;
    let backups = s.backups();
    // The node reports the service's data volume in use.
    s.daemons.volumes.lock().unwrap().push(n::VolumeStatus {
        service_id: db.clone(),
        name: "data".into(),
        size_bytes: 1 << 30,
        used_bytes: 52_428_800,
        held_by: container.clone(),
    });

    // The node cannot dump (its engine is gone): the scheduled run fails, the WAL is not
    // shipped, and the policy began two hours ago with no backup since: missed.
    s.set_data(&container, None);
    store.ensure_backup_policies().await?;
    sqlx::query(
        "UPDATE backup_policies SET interval_seconds = 3600, next_at = now() - interval '1 second', \
         created_at = now() - interval '2 hours' WHERE service_id = $1",
    )
    .bind(service)
    .execute(pool)
    .await?;
    assert_eq!(backups.pass().await?, 1);
    let events = s.events(&db).await;
    println!("events: {events:?}");
    assert_eq!(count(&events, "backup_failed"), 1, "{events:?}");
    assert_eq!(count(&events, "wal_shipping_failed"), 1, "{events:?}");
    assert_eq!(count(&events, "backup_missed"), 1, "{events:?}");
    let (_, missed) = events.iter().find(|(s, _)| s == "backup_missed").unwrap();
    assert!(
        missed.contains("no backup yet") && missed.contains("1 scheduled run(s) failed"),
        "{missed}"
    );
    assert!(
        missed.contains("is not running"),
        "the last error: {missed}"
    );

    let text = s
        .scrape_until(|t| value(t, "stackpad_control_volume_used_bytes", &db).is_some())
        .await;
    assert_eq!(
        value(&text, "stackpad_control_backup_missed", &db).as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        value(&text, "stackpad_control_backups_missed_total", &db).as_deref(),
        Some("1")
    );
    assert_eq!(
        value(&text, "stackpad_control_backups_failed_total", &db).as_deref(),
        Some("1")
    );
    assert_eq!(
        value(&text, "stackpad_control_wal_shipping_failures_total", &db).as_deref(),
        Some("1")
    );
    assert_eq!(
        value(&text, "stackpad_control_wal_shipping_failing", &db).as_deref(),
        Some("1")
    );
    assert_eq!(
        value(&text, "stackpad_control_volume_used_bytes", &db).as_deref(),
        Some("52428800"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "stackpad_control_volume_size_bytes{{organization=\"{}\",service=\"{db}\",volume=\"data\",node=\"n1\"}} 1073741824",
            store.engine_target(service).await?.organization_id
        )),
        "{text}"
    );
    stackpad_tests::prometheus::assert_conventions(&text);

    // Still failing on the next pass: counted, but no second event of either kind.
    sqlx::query(
        "UPDATE backup_policies SET next_at = now() - interval '1 second' WHERE service_id = $1",
    )
    .bind(service)
    .execute(pool)
    .await?;
    backups.pass().await?;
    let events = s.events(&db).await;
    assert_eq!(count(&events, "backup_failed"), 2, "{events:?}");
    assert_eq!(count(&events, "wal_shipping_failed"), 1, "{events:?}");
    assert_eq!(count(&events, "backup_missed"), 1, "{events:?}");
    let text = s.scrape().await;
    assert_eq!(
        value(&text, "stackpad_control_wal_shipping_failures_total", &db).as_deref(),
        Some("2")
    );

    // The engine is back: the next run completes, shipping works again, the stretch ends.
    s.set_data(&container, Some(b"v2"));
    sqlx::query(
        "UPDATE backup_policies SET next_at = now() - interval '1 second' WHERE service_id = $1",
    )
    .bind(service)
    .execute(pool)
    .await?;
    assert_eq!(backups.pass().await?, 1);
    let events = s.events(&db).await;
    assert_eq!(count(&events, "wal_shipping_resumed"), 1, "{events:?}");
    assert_eq!(
        events[0].0, "wal_shipping_resumed",
        "newest first: {events:?}"
    );
    let text = s.scrape().await;
    assert_eq!(
        value(&text, "stackpad_control_backup_missed", &db).as_deref(),
        Some("0"),
        "{text}"
    );
    assert_eq!(
        value(&text, "stackpad_control_wal_shipping_failing", &db).as_deref(),
        Some("0")
    );
    let missed_at: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT missed_at FROM backup_policies WHERE service_id = $1")
            .bind(service)
            .fetch_one(pool)
            .await?;
    assert_eq!(missed_at, None, "the stretch ended with the backup");
    Ok(())
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

/// A backup and a WAL file of a postgres service, its deletion through the API, the objects
/// kept, then removed once the keep time passed; `exists` asks the store.
async fn deleted_service_objects(s: &Setup) -> anyhow::Result<()> {
    let (db, _) = s.engine("db", "postgres", b"keep me").await;
    let service = Uuid::parse_str(&db)?;
    let store = s.h.store();
    let backups = s.backups();
    let (b, r) = backups.begin(service, ::api::BackupTrigger::Manual).await?;
    let done = backups.take(&b, &r).await?;
    assert_eq!(done.state, ::api::BackupState::Completed);
    // A shipped WAL file (stored and recorded the way pitr.rs does).
    let wal_key = format!(
        "org/{}/service/{db}/wal/000000010000000000000001-{}.spwal",
        done.organization_id,
        Uuid::new_v4()
    );
    let wal_path = if s.settings.store.starts_with("s3://") {
        object_store::path::Path::from(format!("backups/{wal_key}"))
    } else {
        object_store::path::Path::from(wal_key.as_str())
    };
    backups
        .objects()
        .put(&wal_path, b"sealed wal".to_vec().into())
        .await?;
    store
        .insert_wal(&control::store::backups::WalFile {
            id: Uuid::new_v4(),
            organization_id: done.organization_id,
            service_id: service,
            name: "000000010000000000000001".into(),
            object_key: wal_key.clone(),
            archived_at: chrono::Utc::now(),
            size_bytes: 10,
            wal_bytes: 10,
            sha256: "0".repeat(64),
        })
        .await?;
    let backup_path = backups.object_path(&done).await;
    let exists = |p: object_store::path::Path| {
        let objects = backups.objects().clone();
        async move { objects.head(&p).await.is_ok() }
    };
    assert!(exists(backup_path.clone()).await && exists(wal_path.clone()).await);

    let (status, v) =
        s.h.call("DELETE", &format!("/services/{db}"), &s.token, None)
            .await;
    assert_eq!(status, 204, "{v}");
    // Kept for the keep time: a pass with a week's keep removes nothing.
    let week = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(backups.sweep_deleted_objects(week).await?, 0);
    assert!(exists(backup_path.clone()).await && exists(wal_path.clone()).await);
    // Once it passed (here: a keep of zero), both go, and the next pass has nothing to do.
    assert_eq!(backups.sweep_deleted_objects(Duration::ZERO).await?, 2);
    assert!(!exists(backup_path).await, "backup object left");
    assert!(!exists(wal_path).await, "WAL object left");
    assert_eq!(backups.sweep_deleted_objects(Duration::ZERO).await?, 0);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM deleted_backup_objects")
        .fetch_one(&store.pool)
        .await?;
    assert_eq!(left, 0);
    Ok(())
}

#[tokio::test]
async fn a_deleted_services_backup_and_wal_objects_go_after_the_keep_time_local()
-> anyhow::Result<()> {
    let s = setup("bh-b", None).await?;
    deleted_service_objects(&s).await?;
    let files = walk(std::path::Path::new(&s.settings.store));
    assert!(files.is_empty(), "{files:?}");
    Ok(())
}

#[tokio::test]
async fn a_deleted_services_backup_and_wal_objects_go_after_the_keep_time_s3() -> anyhow::Result<()>
{
    let common::S3Bucket {
        endpoint,
        name: bucket,
        settings,
    } = common::s3_bucket("bh").await?;
    let s = setup("bh-c", Some(settings)).await?;
    deleted_service_objects(&s).await?;
    let listing = reqwest::get(format!("{endpoint}/{bucket}?list-type=2"))
        .await?
        .text()
        .await?;
    assert!(!listing.contains("<Key>"), "{listing}");
    Ok(())
}
