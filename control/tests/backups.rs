//! Backups of managed services (#14) through the API and the scheduler, on a real PostgreSQL.
//! The pipeline deploys through the recording fakes; dumps, loads and the verification
//! container go through the real tonic client to an in-process node agent whose engine is a
//! byte buffer per container (`grpc_fakes::Daemons::engine_data`: EngineDump streams it, EngineLoad
//! replaces it; the real engines' dump and load are `runtime --test backup`). Objects go to a
//! local directory and, in one test, to the real S3-compatible server of `scripts/services`.
//!
//! Proven: a backup is stored compressed and encrypted (the dump's bytes are not in the
//! object), completes with its checksum, is verified by a restore into a throwaway container
//! that is removed afterwards; a restore into the same service keeps the current data as a
//! `pre_restore` backup first and brings the backed-up bytes back; a restore into another
//! service leaves the source untouched; a flipped byte in the stored object fails the
//! verification and the restore, and nothing is loaded; an unreachable object store fails the
//! backup with a clear error; the scheduler takes due backups, fails stale running ones, and
//! retention keeps the newest; `/metrics`' backup families.

mod common;

use std::time::{Duration, Instant};

use common::grpc_fakes::Daemons;
use common::{Harness, fake_clients, fakes::Fakes};
use control::backups::{BackupSettings, Backups};
use serde_json::{Value, json};
use uuid::Uuid;

const PROXY_TOKEN: &str = "proxy-admin-token";
const LIMIT: Duration = Duration::from_secs(20);

struct Setup {
    h: Harness,
    daemons: Daemons,
    token: String,
    project: String,
    dir: tempfile::TempDir,
}

fn settings(dir: &std::path::Path) -> BackupSettings {
    BackupSettings {
        store: dir.display().to_string(),
        interval_ms: 0,
        ..BackupSettings::default()
    }
}

async fn setup(org: &str) -> anyhow::Result<Setup> {
    let daemons = Daemons::default();
    let address = daemons.serve(PROXY_TOKEN).await?;
    let dir = tempfile::tempdir()?;
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.backups = settings(dir.path());
    let h = Harness::start_with(db, &config, fake_clients(&Fakes::new())).await?;
    h.register_node("n1", "compute", &address).await;
    let (_, token) = h.org(org).await;
    let (status, p) = h
        .call("POST", "/projects", &token, Some(json!({ "name": "shop" })))
        .await;
    assert_eq!(status, 201, "{p}");
    let project = p["id"].as_str().unwrap().to_owned();
    Ok(Setup {
        h,
        daemons,
        token,
        project,
        dir,
    })
}

impl Setup {
    /// A managed service whose serving deployment runs (on the fake agent) with `data`.
    async fn engine(&self, name: &str, engine: &str, data: &[u8]) -> (String, String) {
        let kind = if engine == "redis" {
            "cache"
        } else {
            "database"
        };
        let (status, s) = self
            .h
            .call(
                "POST",
                &format!("/projects/{}/services", self.project),
                &self.token,
                Some(json!({ "name": name, "kind": kind, "engine": engine })),
            )
            .await;
        assert_eq!(status, 201, "{s}");
        let id = s["id"].as_str().unwrap().to_owned();
        let d = self.h.deploy(&self.token, &id, json!({})).await;
        let v = self.h.wait_terminal(&self.token, &d, LIMIT).await;
        assert_eq!(v["state"], "ready", "{v}");
        let container = format!("c-{d}");
        self.daemons
            .engine_data
            .lock()
            .unwrap()
            .insert(container.clone(), data.to_vec());
        (id, container)
    }

    fn data(&self, container: &str) -> Vec<u8> {
        self.daemons.engine_data.lock().unwrap()[container].clone()
    }

    /// Polls `path` until `done(view)`.
    async fn until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LIMIT;
        loop {
            let (status, v) = self.h.call("GET", path, &self.token, None).await;
            assert_eq!(status, 200, "{v}");
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{path} did not get there: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn backup(&self, service: &str) -> Value {
        let (status, b) = self
            .h
            .call(
                "POST",
                &format!("/services/{service}/backups"),
                &self.token,
                None,
            )
            .await;
        assert_eq!(status, 202, "{b}");
        assert_eq!(b["state"], "running");
        let id = b["id"].as_str().unwrap();
        self.until(&format!("/services/{service}/backups/{id}"), |v| {
            v["state"] != "running" && v["verification"] != "pending"
        })
        .await
    }

    fn object_file(&self, service: &str, backup: &str) -> std::path::PathBuf {
        let org = self.org_of(service);
        self.dir
            .path()
            .join(format!("org/{org}/service/{service}/{backup}.spbk"))
    }

    fn org_of(&self, _service: &str) -> String {
        // One organization per setup: read it from the object tree.
        let orgs = std::fs::read_dir(self.dir.path().join("org")).unwrap();
        orgs.into_iter()
            .next()
            .unwrap()
            .unwrap()
            .file_name()
            .into_string()
            .unwrap()
    }

    fn backups(&self) -> Backups {
        Backups::new(
            self.h.store(),
            settings(self.dir.path()),
            "127.0.0.1:5000",
            None,
        )
        .unwrap()
    }
}

/// A dump that compresses, with a marker that must not show in the stored object.
fn dump(marker: &str) -> Vec<u8> {
    let mut d = Vec::new();
    for i in 0..20_000 {
        d.extend(format!("INSERT INTO visits VALUES ({i}, '{marker}');\n").into_bytes());
    }
    d
}

#[tokio::test]
async fn backup_is_sealed_verified_and_restores_into_the_same_service_after_keeping_the_current_data()
-> anyhow::Result<()> {
    let s = setup("bk-a").await?;
    let v1 = dump("first-version");
    let (db, container) = s.engine("db", "postgres", &v1).await;

    let b = s.backup(&db).await;
    assert_eq!(b["state"], "completed", "{b}");
    assert_eq!(b["trigger"], "manual");
    assert_eq!(b["verification"], "verified", "{b}");
    assert_eq!(
        b["verification_detail"],
        format!("bytes {}", v1.len()),
        "the throwaway container holds the whole dump: {b}"
    );
    assert_eq!(b["dump_bytes"], v1.len());
    let steps: Vec<&str> = b["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["started", "completed", "verifying", "verified"],
        "{b}"
    );
    let id = b["id"].as_str().unwrap().to_owned();
    // Stored compressed and encrypted, with the recorded checksum.
    let object = std::fs::read(s.object_file(&db, &id))?;
    assert!(
        object.len() < v1.len() / 4,
        "not compressed: {}",
        object.len()
    );
    assert!(!object.windows(13).any(|w| w == b"first-version"));
    assert_eq!(b["size_bytes"], object.len());
    assert_eq!(
        b["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&object))
    );
    // The verification container was made on the service's node and removed.
    let rec = s.daemons.recorded();
    let verify = rec
        .deploys
        .iter()
        .find(|d| d.workload.as_ref().unwrap().deployment_id == format!("verify-{id}"))
        .expect("a verification container");
    assert!(verify.volumes.is_empty(), "the throwaway has no volume");
    assert!(verify.image.ends_with("/stackpad/postgres:15"));
    assert!(
        rec.removes.contains(&format!("sp-verify-{id}")),
        "{:?}",
        rec.removes
    );

    // One backup of a service at a time; a web service has none.
    let (list_status, list) =
        s.h.call("GET", &format!("/services/{db}/backups"), &s.token, None)
            .await;
    assert_eq!(list_status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

    // The data changes; restore the backup into the same service.
    s.daemons
        .engine_data
        .lock()
        .unwrap()
        .insert(container.clone(), dump("second-version"));
    let (status, r) =
        s.h.call(
            "POST",
            &format!("/services/{db}/backups/{id}/restore"),
            &s.token,
            None,
        )
        .await;
    assert_eq!(status, 202, "{r}");
    let rid = r["id"].as_str().unwrap();
    let r = s
        .until(&format!("/restores/{rid}"), |v| v["state"] != "running")
        .await;
    assert_eq!(r["state"], "completed", "{r}");
    assert_eq!(s.data(&container), v1, "the backed-up bytes are back");
    let steps: Vec<&str> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "started",
            "pre_restore_backup",
            "pre_restore_backup_completed",
            "restoring",
            "completed"
        ],
        "{r}"
    );
    // The replaced data was kept first.
    let pre = r["pre_restore_backup_id"].as_str().unwrap();
    let (_, kept) =
        s.h.call(
            "GET",
            &format!("/services/{db}/backups/{pre}"),
            &s.token,
            None,
        )
        .await;
    assert_eq!(kept["trigger"], "pre_restore", "{kept}");
    assert_eq!(kept["state"], "completed", "{kept}");
    assert_eq!(kept["dump_bytes"], dump("second-version").len());

    // Another organization sees none of it.
    let (_, other) = s.h.org("bk-other").await;
    let (status, _) =
        s.h.call("GET", &format!("/services/{db}/backups/{id}"), &other, None)
            .await;
    assert_eq!(status, 404);
    let (status, _) =
        s.h.call("GET", &format!("/restores/{rid}"), &other, None)
            .await;
    assert_eq!(status, 404);

    // Metrics: per service, the last backup's size and verification, no failures.
    let text = control::backups::metrics::render(&s.h.store().backup_summaries().await?);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains(&db))
            .unwrap_or_else(|| panic!("no {name} for {db} in\n{text}"))
            .to_owned()
    };
    assert!(line("stackpad_control_backup_age_seconds{").contains("engine=\"postgres\""));
    // The last completed backup is the pre-restore one.
    assert!(
        line("stackpad_control_backup_size_bytes{").ends_with(&format!(" {}", kept["size_bytes"]))
    );
    // (a pre-restore backup is not verified: it is kept for a restore to be undone)
    assert!(line("stackpad_control_backup_verification{").contains("result=\"pending\""));
    assert!(line("stackpad_control_backups_failed_total{").ends_with(" 0"));
    assert!(line("stackpad_control_backup_missed{").ends_with(" 0"));
    Ok(())
}

#[tokio::test]
async fn a_flipped_byte_fails_verification_and_restore_and_nothing_is_loaded() -> anyhow::Result<()>
{
    let s = setup("bk-b").await?;
    let v1 = dump("kept");
    let (db, container) = s.engine("db", "redis", &v1).await;
    let b = s.backup(&db).await;
    assert_eq!(b["verification"], "verified", "{b}");
    let id = b["id"].as_str().unwrap().to_owned();

    let path = s.object_file(&db, &id);
    let mut object = std::fs::read(&path)?;
    let at = object.len() / 2;
    object[at] ^= 0x01;
    std::fs::write(&path, &object)?;

    // Verification again (as after each backup): caught, recorded with the reason.
    let backups = s.backups();
    let row =
        s.h.store()
            .backup(
                Uuid::parse_str(b["organization_id"].as_str().unwrap())?,
                Uuid::parse_str(&id)?,
            )
            .await?;
    let running = backups.running(row.service_id).await?;
    let loads_before = s.daemons.recorded().engine_loads.len();
    let verdict = backups.verify(&row, &running).await?;
    assert_eq!(verdict, ::api::BackupVerification::Failed);
    let (_, v) =
        s.h.call(
            "GET",
            &format!("/services/{db}/backups/{id}"),
            &s.token,
            None,
        )
        .await;
    assert_eq!(v["verification"], "failed", "{v}");
    let why = v["verification_detail"].as_str().unwrap();
    assert!(why.contains("does not decrypt"), "{why}");
    // The agent got a stream without its end: nothing was loaded anywhere.
    assert_eq!(s.daemons.recorded().engine_loads.len(), loads_before);

    // A restore of it fails the same way, and the service's data is untouched.
    s.daemons
        .engine_data
        .lock()
        .unwrap()
        .insert(container.clone(), b"current".to_vec());
    let (status, r) =
        s.h.call(
            "POST",
            &format!("/services/{db}/backups/{id}/restore"),
            &s.token,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 202, "{r}");
    let rid = r["id"].as_str().unwrap();
    let r = s
        .until(&format!("/restores/{rid}"), |v| v["state"] != "running")
        .await;
    assert_eq!(r["state"], "failed", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("does not decrypt"),
        "{r}"
    );
    assert_eq!(s.data(&container), b"current");
    // Restoring a backup that is not completed is refused.
    let (status, e) =
        s.h.call(
            "POST",
            &format!("/services/{db}/backups/{}/restore", Uuid::new_v4()),
            &s.token,
            None,
        )
        .await;
    assert_eq!(status, 404, "{e}");
    Ok(())
}

#[tokio::test]
async fn restore_into_another_service_leaves_the_source_untouched() -> anyhow::Result<()> {
    let s = setup("bk-c").await?;
    let v1 = dump("source");
    let (db, source) = s.engine("db", "postgres", &v1).await;
    let (copy, target) = s.engine("copy", "postgres", b"empty").await;
    let (cache, _) = s.engine("cache", "redis", b"x").await;
    let b = s.backup(&db).await;
    let id = b["id"].as_str().unwrap();
    s.daemons
        .engine_data
        .lock()
        .unwrap()
        .insert(source.clone(), b"source moved on".to_vec());

    // Another engine is refused, naming both.
    let (status, e) =
        s.h.call(
            "POST",
            &format!("/services/{db}/backups/{id}/restore"),
            &s.token,
            Some(json!({ "into_service": cache })),
        )
        .await;
    assert_eq!(status, 409, "{e}");
    assert!(e.to_string().contains("redis"), "{e}");

    let (status, r) =
        s.h.call(
            "POST",
            &format!("/services/{db}/backups/{id}/restore"),
            &s.token,
            Some(json!({ "into_service": copy })),
        )
        .await;
    assert_eq!(status, 202, "{r}");
    let rid = r["id"].as_str().unwrap();
    let r = s
        .until(&format!("/restores/{rid}"), |v| v["state"] != "running")
        .await;
    assert_eq!(r["state"], "completed", "{r}");
    assert!(r["pre_restore_backup_id"].is_null(), "{r}");
    assert_eq!(s.data(&target), v1);
    assert_eq!(s.data(&source), b"source moved on");
    Ok(())
}

#[tokio::test]
async fn scheduler_takes_due_backups_fails_stale_ones_and_keeps_the_newest() -> anyhow::Result<()> {
    let s = setup("bk-d").await?;
    let (db, container) = s.engine("db", "mariadb", &dump("v")).await;
    let store = s.h.store();
    let pool = &store.pool;
    let service = Uuid::parse_str(&db)?;

    // Policy: defaults, then set through the API (bad values refused by field).
    let (status, p) =
        s.h.call(
            "GET",
            &format!("/services/{db}/backup-policy"),
            &s.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (p["interval_seconds"].clone(), p["keep"].clone()),
        (json!(86400), json!(7))
    );
    let (status, e) =
        s.h.call(
            "PUT",
            &format!("/services/{db}/backup-policy"),
            &s.token,
            Some(json!({ "interval_seconds": 5 })),
        )
        .await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["field"], "interval_seconds", "{e}");
    let (status, p) =
        s.h.call(
            "PUT",
            &format!("/services/{db}/backup-policy"),
            &s.token,
            Some(json!({ "interval_seconds": 3600, "keep": 2 })),
        )
        .await;
    assert_eq!(status, 200, "{p}");

    // A running backup whose control died: failed by the next pass.
    let org: Uuid = sqlx::query_scalar(
        "SELECT p.organization_id FROM services s JOIN projects p ON p.id = s.project_id WHERE s.id = $1",
    )
    .bind(service)
    .fetch_one(pool)
    .await?;
    let stale = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO backups (id, organization_id, service_id, engine, trigger, state, object_key, heartbeat_at) \
         VALUES ($1, $2, $3, 'mariadb', 'scheduled', 'running', 'x', now() - interval '1 hour')",
    )
    .bind(stale)
    .bind(org)
    .bind(service)
    .execute(pool)
    .await?;
    let backups = s.backups();
    // Three due runs: each pass takes the due backup (the policy moves one interval on).
    for round in 0..3 {
        sqlx::query("UPDATE backup_policies SET next_at = now() - interval '1 second' WHERE service_id = $1")
            .bind(service)
            .execute(pool)
            .await?;
        s.daemons
            .engine_data
            .lock()
            .unwrap()
            .insert(container.clone(), dump(&format!("round-{round}")));
        let taken = backups.pass().await?;
        assert_eq!(taken, 1, "round {round}");
        // Nothing is due right after.
        assert_eq!(backups.pass().await?, 0);
    }
    let row = store.backup(org, stale).await?;
    assert_eq!(row.state, ::api::BackupState::Failed);
    assert!(row.error.unwrap().contains("stopped"), "stale reason");
    let all = store.backups(service, 100).await?;
    let completed: Vec<_> = all
        .iter()
        .filter(|b| b.state == ::api::BackupState::Completed)
        .collect();
    assert_eq!(completed.len(), 2, "retention keeps 2: {all:?}");
    assert!(
        completed
            .iter()
            .all(|b| b.trigger == ::api::BackupTrigger::Scheduled
                && b.verification == ::api::BackupVerification::Verified)
    );
    // The newest two are kept, the oldest's object is gone.
    let files = walk(s.dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    for b in &completed {
        assert!(files.iter().any(|f| f.ends_with(&format!("{}.spbk", b.id))));
    }
    let text = control::backups::metrics::render(&store.backup_summaries().await?);
    assert!(
        text.lines()
            .any(|l| l.starts_with("stackpad_control_backups_failed_total{")
                && l.contains(&db)
                && l.ends_with(" 1")),
        "{text}"
    );
    Ok(())
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn s3_round_trip_on_the_real_server_and_an_unreachable_store_fails_clearly()
-> anyhow::Result<()> {
    let s = setup("bk-e").await?;
    let v1 = dump("s3");
    let (db, container) = s.engine("db", "postgres", &v1).await;
    let service = Uuid::parse_str(&db)?;

    // A bucket of the test's own on the real server.
    let common::S3Bucket {
        endpoint,
        name: bucket,
        settings: s3,
    } = common::s3_bucket("bk").await?;
    let backups = Backups::new(s.h.store(), s3.clone(), "127.0.0.1:5000", None)?;
    let (b, r) = backups.begin(service, ::api::BackupTrigger::Manual).await?;
    let done = backups.take_and_verify(b, r.clone()).await?;
    assert_eq!(done.state, ::api::BackupState::Completed);
    assert_eq!(
        done.verification,
        ::api::BackupVerification::Verified,
        "{done:?}"
    );
    // The object is in the bucket, under the prefix.
    let listing = reqwest::get(format!("{endpoint}/{bucket}?list-type=2"))
        .await?
        .text()
        .await?;
    assert!(
        listing.contains(&format!(
            "backups/org/{}/service/{db}/{}.spbk",
            done.organization_id, done.id
        )),
        "{listing}"
    );
    // Restore from S3 into the service.
    s.daemons
        .engine_data
        .lock()
        .unwrap()
        .insert(container.clone(), b"changed".to_vec());
    let (restore, b, r) = backups
        .begin_restore(done.organization_id, done.id, service)
        .await?;
    backups.restore(&restore, &b, &r).await?;
    assert_eq!(s.data(&container), v1);

    // Unreachable: a closed port. The backup fails with a clear error naming the store, and
    // the service's data and earlier backups are untouched.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = closed.local_addr()?.port();
    drop(closed);
    let down = BackupSettings {
        s3_endpoint: format!("http://127.0.0.1:{port}"),
        store_timeout_ms: 3_000,
        ..s3
    };
    let backups = Backups::new(s.h.store(), down, "127.0.0.1:5000", None)?;
    let started = Instant::now();
    let (b, r) = backups.begin(service, ::api::BackupTrigger::Manual).await?;
    let e = backups.take(&b, &r).await.unwrap_err().to_string();
    println!("unreachable store: {e} (after {:?})", started.elapsed());
    assert!(
        e.contains(&format!("object store s3://{bucket}/backups")),
        "{e}"
    );
    let row = s.h.store().backup(b.organization_id, b.id).await?;
    assert_eq!(row.state, ::api::BackupState::Failed);
    assert!(row.error.unwrap().contains("object store"));
    assert_eq!(s.data(&container), v1);
    let kept = s.h.store().backup(done.organization_id, done.id).await?;
    assert_eq!(kept.state, ::api::BackupState::Completed);
    Ok(())
}

/// Point-in-time restore (#14): `POST /services/{id}/backups/restore` with `to_time` is refused
/// with 422 naming `to_time` outside the recovery window (in the future; before any base
/// backup), 409 for an engine that is not PostgreSQL, 400 without a time; the backup list
/// answers the window (null bounds before the first base backup). The recovery itself is
/// proven on the real engine by `runtime --test backup` (point_in_time).
#[tokio::test]
async fn point_in_time_restore_is_refused_outside_the_recovery_window() -> anyhow::Result<()> {
    let s = setup("bk-pitr").await?;
    let (db, _) = s.engine("db", "postgres", &dump("now")).await;
    let (cache, _) = s.engine("cache", "redis", b"REDIS0011").await;
    let path = format!("/services/{db}/backups/restore");
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, e) =
        s.h.call("POST", &path, &s.token, Some(json!({ "to_time": future })))
            .await;
    assert_eq!(status, 422, "{e}");
    assert!(
        e.to_string().contains("to_time") && e.to_string().contains("future"),
        "{e}"
    );
    let past = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    let (status, e) =
        s.h.call("POST", &path, &s.token, Some(json!({ "to_time": past })))
            .await;
    assert_eq!(status, 422, "{e}");
    assert!(e.to_string().contains("no base backup"), "{e}");
    let (status, e) =
        s.h.call(
            "POST",
            &format!("/services/{cache}/backups/restore"),
            &s.token,
            Some(json!({ "to_time": past })),
        )
        .await;
    assert_eq!(status, 409, "{e}");
    assert!(e.to_string().contains("postgres"), "{e}");
    let (status, e) = s.h.call("POST", &path, &s.token, Some(json!({}))).await;
    assert_eq!(status, 400, "{e}");
    assert!(e.to_string().contains("to_time"), "{e}");
    let (status, list) =
        s.h.call("GET", &format!("/services/{db}/backups"), &s.token, None)
            .await;
    assert_eq!(status, 200, "{list}");
    assert!(list["recovery_window"]["from"].is_null(), "{list}");
    assert!(list["recovery_window"]["until"].is_null(), "{list}");
    Ok(())
}

/// A base backup (#14) is verified like a dump: a throwaway container of the engine gets it
/// staged, then the recovery (`PG_BASE`, `PG_RECOVER`), and its check; a flipped byte in its
/// object fails the verification with the reason, before anything is recovered. A restore of
/// a base backup as a dump is refused (it is restored to a time).
#[tokio::test]
async fn a_base_backup_is_verified_by_a_throwaway_recovery_and_a_flipped_byte_fails_it()
-> anyhow::Result<()> {
    let s = setup("bk-base").await?;
    let (db, _) = s.engine("db", "postgres", &dump("base")).await;
    let service = Uuid::parse_str(&db)?;
    let backups = s.backups();
    let loads_before = s.daemons.recorded().engine_loads.len();
    let b = backups
        .take_base(service, ::api::BackupTrigger::Manual)
        .await?;
    assert_eq!(b.kind, ::api::BackupKind::Base);
    assert_eq!(b.state, ::api::BackupState::Completed, "{b:?}");
    assert_eq!(b.verification, ::api::BackupVerification::Verified, "{b:?}");
    // The verification container got the base backup and the recovery (two loads), not the
    // service.
    let loads = s.daemons.recorded().engine_loads;
    assert_eq!(loads.len() - loads_before, 2, "{loads:?}");
    let (_, v) =
        s.h.call(
            "GET",
            &format!("/services/{db}/backups/{}", b.id),
            &s.token,
            None,
        )
        .await;
    let steps: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    for step in ["verifying", "staging_base_backup", "recovering", "verified"] {
        assert!(steps.contains(&step), "{step} missing: {steps:?}");
    }

    let path = s.object_file(&db, &b.id.to_string());
    let mut object = std::fs::read(&path)?;
    let at = object.len() / 2;
    object[at] ^= 0x01;
    std::fs::write(&path, &object)?;
    let running = backups.running(service).await?;
    let loads_before = s.daemons.recorded().engine_loads.len();
    let verdict = backups.verify(&b, &running).await?;
    assert_eq!(verdict, ::api::BackupVerification::Failed);
    let row = s.h.store().backup(b.organization_id, b.id).await?;
    assert_eq!(row.verification, ::api::BackupVerification::Failed);
    assert!(
        row.verification_detail.contains("does not decrypt"),
        "{}",
        row.verification_detail
    );
    assert_eq!(s.daemons.recorded().engine_loads.len(), loads_before);

    let (status, e) =
        s.h.call(
            "POST",
            &format!("/services/{db}/backups/{}/restore", b.id),
            &s.token,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 409, "{e}");
    assert!(e.to_string().contains("to_time"), "{e}");
    Ok(())
}

/// `DELETE /services/{id}?purge=true` (#14): the deleted service's backup objects are due at
/// once and go without waiting for `deleted_keep_ms` (7 days) or a scheduler pass (none runs
/// here); a plain delete keeps another service's objects for the keep time.
#[tokio::test]
async fn a_purged_delete_removes_the_backup_objects_at_once_a_plain_one_keeps_them()
-> anyhow::Result<()> {
    let s = setup("bk-purge").await?;
    let (kept, _) = s.engine("kept", "postgres", &dump("kept")).await;
    let (purged, _) = s.engine("purged", "postgres", &dump("purged")).await;
    let kb = s.backup(&kept).await;
    let pb = s.backup(&purged).await;
    assert_eq!(kb["state"], "completed", "{kb}");
    assert_eq!(pb["state"], "completed", "{pb}");
    let kept_file = s.object_file(&kept, kb["id"].as_str().unwrap());
    let purged_file = s.object_file(&purged, pb["id"].as_str().unwrap());
    assert!(kept_file.is_file() && purged_file.is_file());

    let (status, v) =
        s.h.call("DELETE", &format!("/services/{kept}"), &s.token, None)
            .await;
    assert_eq!(status, 204, "{v}");
    let (status, v) =
        s.h.call(
            "DELETE",
            &format!("/services/{purged}?purge=true"),
            &s.token,
            None,
        )
        .await;
    assert_eq!(status, 204, "{v}");
    let deadline = Instant::now() + LIMIT;
    while purged_file.exists() {
        assert!(
            Instant::now() < deadline,
            "the purged service's backup object is still there after {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pool = &s.h.store().pool;
    let rows = |service: &str| {
        let service = Uuid::parse_str(service).unwrap();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM deleted_backup_objects WHERE service_id = $1",
            )
            .bind(service)
            .fetch_one(pool)
            .await
            .unwrap()
        }
    };
    let deadline = Instant::now() + LIMIT;
    while rows(&purged).await > 0 {
        assert!(Instant::now() < deadline, "the purged object's row is left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The plain delete's object waits for the keep time, also through a scheduler's sweep.
    let week = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(s.backups().sweep_deleted_objects(week).await?, 0);
    assert!(
        kept_file.is_file(),
        "a plain delete removed the backup object"
    );
    assert_eq!(rows(&kept).await, 1);
    Ok(())
}
