//! Backups of managed databases through the shipped daemons (#14): the real control (its
//! backup scheduler every half second), node agent, containerd and `stackpad/postgres:15` or
//! `stackpad/mariadb:10.11`.
//!
//! - Point in time: the scheduler's first run takes a dump and a base backup, each verified
//!   in a throwaway container (the base backup by a recovery of it and its WAL); A is inserted,
//!   the time noted, B inserted and the WAL switched inside the engine; the scheduler ships
//!   it (the window reaches past B); a restore to the time into a NEW service has A and not B
//!   while the source still has both; a restore to the time in place leaves A and not B.
//! - Rows: a MariaDB table of 20,000 rows backed up on demand; its verification restores it in
//!   a throwaway container and finds the rows the dump held; the table dropped, the backup
//!   restored into the same service: the rows are back (`rows_back_after_a_drop`, by engine).
//! - Crashes mid-backup: a database big enough that its dump takes a while; kill -9 of the
//!   engine, of the node agent and of control while a backup streams. Each backup ends
//!   `failed` with its reason (control's, after its restart, through the stale heartbeat), no
//!   partial one is listed as completed, and the next scheduled one completes and is verified
//!   (about a minute: with `scripts/test --full`).

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::harness::{Options, Platform, Tenant};

const DEPLOY: Duration = Duration::from_secs(180);

/// A managed database engine as these tests reach it: its API name and its client, run inside
/// the engine's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mariadb,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mariadb => "mariadb",
        }
    }

    /// The engine's client running `sql` in the service's database, answers unadorned (as
    /// its own user over its socket: psql as `app`, mariadb as root).
    fn client(self, sql: &str) -> Vec<String> {
        let argv: &[&str] = match self {
            Engine::Postgres => &[
                "psql",
                "-X",
                "-q",
                "-tA",
                "-h",
                "/run/postgresql",
                "-U",
                "app",
                "-d",
                "app",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
            ],
            Engine::Mariadb => &[
                "mariadb",
                "-uroot",
                "-S",
                "/run/mysqld/mysqld.sock",
                "-N",
                "-B",
                "app",
                "-e",
            ],
        };
        argv.iter()
            .copied()
            .chain([sql])
            .map(str::to_owned)
            .collect()
    }

    /// A table `t` of `n` rows, each with text that quotes, commas and parentheses (what a
    /// dump's row counter must get past).
    fn fill(self, n: u32) -> String {
        match self {
            Engine::Postgres => format!(
                "create table t as select g as id, 'it''s (' || g || '), ok;' || md5(g::text) as v \
                 from generate_series(1, {n}) g"
            ),
            // The sequence engine's `seq_1_to_N` (recursion stops at 1000 rows by default).
            Engine::Mariadb => format!(
                "create table t (id int primary key, v text); \
                 insert into t (id, v) select seq, concat('it''s (', seq, '), ok;', md5(seq)) \
                 from seq_1_to_{n}"
            ),
        }
    }
}

/// A managed PostgreSQL `name` of `project`, deployed and ready; its id.
async fn postgres(
    platform: &Platform,
    tenant: &Tenant,
    project: &str,
    name: &str,
) -> anyhow::Result<String> {
    postgres_with(platform, tenant, project, name, json!({})).await
}

/// [`postgres`] with more fields of the create request (`volumes`, `resources`).
pub async fn postgres_with(
    platform: &Platform,
    tenant: &Tenant,
    project: &str,
    name: &str,
    extra: Value,
) -> anyhow::Result<String> {
    managed_with(platform, tenant, project, name, Engine::Postgres, extra).await
}

/// A managed database of `engine`, deployed and ready, with more fields of the create
/// request; its id.
pub async fn managed_with(
    platform: &Platform,
    tenant: &Tenant,
    project: &str,
    name: &str,
    engine: Engine,
    extra: Value,
) -> anyhow::Result<String> {
    let mut body = json!({ "name": name, "kind": "database", "engine": engine.name() });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let db = platform
        .expect(
            201,
            "POST",
            &format!("/projects/{project}/services"),
            &tenant.token,
            Some(body),
        )
        .await?;
    let id = db["id"].as_str().context("service id")?.to_owned();
    let d = platform
        .expect(
            201,
            "POST",
            &format!("/services/{id}/deployments"),
            &tenant.token,
            Some(json!({})),
        )
        .await?;
    let d = platform
        .wait_deployment(tenant, d["id"].as_str().context("deployment id")?, DEPLOY)
        .await?;
    ensure!(d["state"] == "ready", "{name} deployment: {d}");
    Ok(id)
}

/// The container serving a service now.
pub async fn container_of(
    platform: &Platform,
    tenant: &Tenant,
    service: &str,
) -> anyhow::Result<String> {
    let s = platform
        .expect(
            200,
            "GET",
            &format!("/services/{service}"),
            &tenant.token,
            None,
        )
        .await?;
    let d = s["current_deployment_id"]
        .as_str()
        .with_context(|| format!("service {service} has no current deployment: {s}"))?;
    let d = platform
        .expect(
            200,
            "GET",
            &format!("/deployments/{d}"),
            &tenant.token,
            None,
        )
        .await?;
    Ok(d["container_id"]
        .as_str()
        .with_context(|| format!("deployment without a container: {d}"))?
        .to_owned())
}

/// Runs SQL with `psql` inside the engine's container (as its own user, over its socket).
async fn psql(platform: &Platform, container: &str, sql: &str) -> anyhow::Result<String> {
    psql_within(platform, container, sql, Duration::from_secs(120)).await
}

/// [`psql`] given `within` to finish.
pub async fn psql_within(
    platform: &Platform,
    container: &str,
    sql: &str,
    within: Duration,
) -> anyhow::Result<String> {
    sql_within(platform, Engine::Postgres, container, sql, within).await
}

/// Runs SQL with `engine`'s client inside its container, given `within` to finish; the answer.
pub async fn sql_within(
    platform: &Platform,
    engine: Engine,
    container: &str,
    sql: &str,
    within: Duration,
) -> anyhow::Result<String> {
    let c = platform.containerd().await?;
    let pid = platform.task_pid(container).await?;
    let mut cmd = runtime::agent::exec::nsenter(&c, container, pid, &engine.client(sql))
        .await
        .map_err(|e| anyhow::anyhow!("nsenter into {container}: {e}"))?;
    let out = tokio::time::timeout(within, cmd.output())
        .await
        .with_context(|| format!("{} took over {within:?}", engine.name()))??;
    ensure!(
        out.status.success(),
        "{} {sql:?} in {container}: {}: {}",
        engine.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// `GET path` until `done` holds; the last answer.
pub async fn until(
    platform: &Platform,
    tenant: &Tenant,
    path: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + within;
    loop {
        let v = platform
            .expect(200, "GET", path, &tenant.token, None)
            .await?;
        if done(&v) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what} not within {within:?}: {v}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until a restore has ended; fails unless it completed.
async fn restored(platform: &Platform, tenant: &Tenant, restore: &Value) -> anyhow::Result<Value> {
    let id = restore["id"].as_str().context("restore id")?;
    let r = until(
        platform,
        tenant,
        &format!("/restores/{id}"),
        Duration::from_secs(180),
        "the restore's end",
        |r| r["state"] != "running",
    )
    .await?;
    ensure!(r["state"] == "completed", "restore {id}: {r:#}");
    Ok(r)
}

fn steps(r: &Value) -> Vec<String> {
    r["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["step"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restores_to_a_time_into_a_new_service_and_in_place() -> anyhow::Result<()> {
    let mut platform = Platform::start_with(
        "e2e-pitr",
        Options {
            control_backups: "interval_ms = 500\n",
        },
    )
    .await?;
    let outcome = point_in_time(&platform).await;
    platform.report(outcome)
}

async fn point_in_time(platform: &Platform) -> anyhow::Result<()> {
    let tenant = platform.organization("e2e").await?;
    let project = platform.project(&tenant, "shop").await?;
    let started = Instant::now();
    let db = postgres(platform, &tenant, &project, "db").await?;
    let deployed = started.elapsed();
    let backups = format!("/services/{db}/backups");

    // The scheduler's first run: a dump (verified), then the base backup the window starts at.
    until(
        platform,
        &tenant,
        &backups,
        Duration::from_secs(120),
        "a completed base backup",
        |v| v["recovery_window"]["from"].is_string(),
    )
    .await?;
    let first_run = started.elapsed();

    let c = container_of(platform, &tenant, &db).await?;
    psql(
        platform,
        &c,
        "create table t (v text); insert into t values ('A')",
    )
    .await?;
    let at: DateTime<Utc> = Utc::now();
    // The window's end has one-second granularity (the archive time of a WAL file).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    psql(platform, &c, "insert into t values ('B')").await?;
    let b_at = Utc::now();
    // The engine closes its WAL segment; the scheduler ships it (no call to the agent here).
    psql(platform, &c, "select pg_switch_wal()").await?;
    let shipped = Instant::now();
    until(
        platform,
        &tenant,
        &backups,
        Duration::from_secs(30),
        "the WAL holding B shipped",
        |v| {
            v["recovery_window"]["until"]
                .as_str()
                .and_then(|u| DateTime::parse_from_rfc3339(u).ok())
                .is_some_and(|u| u.timestamp() >= b_at.timestamp())
        },
    )
    .await?;
    let shipped = shipped.elapsed();
    // Every backup of the scheduler's run is proven: the dump restored, the base backup
    // recovered with its WAL, each in a throwaway container.
    let list = until(
        platform,
        &tenant,
        &backups,
        Duration::from_secs(60),
        "the first run's backups verified",
        |v| {
            let items = v["items"].as_array().cloned().unwrap_or_default();
            ["dump", "base"].iter().all(|kind| {
                items
                    .iter()
                    .any(|b| b["kind"] == *kind && b["verification"] != "pending")
            })
        },
    )
    .await?;
    for b in list["items"].as_array().context("items")? {
        ensure!(b["verification"] == "verified", "not verified: {b:#}");
    }

    // Into a new service: A and not B there, the source untouched.
    let t = Instant::now();
    let r = platform
        .expect(
            202,
            "POST",
            &format!("{backups}/restore"),
            &tenant.token,
            Some(json!({ "to_time": at.to_rfc3339(), "new_service": { "name": "db-at-a" } })),
        )
        .await?;
    let new = r["new_service"]["id"]
        .as_str()
        .with_context(|| format!("no new_service in {r}"))?
        .to_owned();
    ensure!(r["service_id"] == new.as_str(), "{r}");
    let done = restored(platform, &tenant, &r).await?;
    let into_new = t.elapsed();
    let s = steps(&done);
    for step in [
        "new_service",
        "deploying",
        "deployed",
        "staging_base_backup",
        "recovering",
    ] {
        ensure!(s.iter().any(|x| x == step), "no {step} in {s:?}");
    }
    ensure!(
        !s.iter().any(|x| x == "pre_restore_backup"),
        "the source was backed up as if restored into: {s:?}"
    );
    let copy = container_of(platform, &tenant, &new).await?;
    let q = "select string_agg(v, ',' order by v) from t";
    ensure!(psql(platform, &copy, q).await? == "A", "the new service");
    ensure!(psql(platform, &c, q).await? == "A,B", "the source changed");
    let svc = platform
        .expect(200, "GET", &format!("/services/{new}"), &tenant.token, None)
        .await?;
    ensure!(
        svc["engine"] == "postgres" && svc["internal_host"] == "db-at-a.production.internal",
        "{svc}"
    );

    // In place: the current data kept first, then A and not B.
    let t = Instant::now();
    let r = platform
        .expect(
            202,
            "POST",
            &format!("{backups}/restore"),
            &tenant.token,
            Some(json!({ "to_time": at.to_rfc3339() })),
        )
        .await?;
    let done = restored(platform, &tenant, &r).await?;
    let in_place = t.elapsed();
    ensure!(done["pre_restore_backup_id"].is_string(), "{done}");
    let c = container_of(platform, &tenant, &db).await?;
    ensure!(psql(platform, &c, q).await? == "A", "in place");
    println!(
        "pitr e2e: deployed {deployed:?}, first scheduled dump+verify+base {:?}, WAL shipped by the scheduler {shipped:?}, \
         restore to the time into a new service {into_new:?} (deploy included), in place {in_place:?}",
        first_run - deployed
    );
    Ok(())
}

/// The rows of the dump backups' test: enough that mariadb-dump writes several INSERT
/// statements (about 1 MiB each).
const ROWS: u32 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_backup_with_rows_is_verified_and_restored_in_place() -> anyhow::Result<()> {
    let mut platform = Platform::start_with(
        "e2e-rows",
        Options {
            control_backups: "interval_ms = 500\n",
        },
    )
    .await?;
    let outcome = rows_back_after_a_drop(&platform, Engine::Mariadb).await;
    platform.report(outcome)
}

/// A database of `engine` with a table of [`ROWS`] rows, backed up on demand: its
/// verification restored and counted them; the table dropped, the backup restored into the
/// same service (the current data kept as a backup first): the rows are back.
async fn rows_back_after_a_drop(platform: &Platform, engine: Engine) -> anyhow::Result<()> {
    let tenant = platform.organization("e2e").await?;
    let project = platform.project(&tenant, "shop").await?;
    let started = Instant::now();
    let db = managed_with(platform, &tenant, &project, "db", engine, json!({})).await?;
    let deployed = started.elapsed();
    let backups = format!("/services/{db}/backups");
    // The scheduler's first run (of the empty database) first: one backup of a service at a
    // time, and the next scheduled one is a day away.
    until(
        platform,
        &tenant,
        &backups,
        Duration::from_secs(120),
        "the first scheduled backup verified",
        |v| {
            v["items"].as_array().into_iter().flatten().any(|b| {
                b["trigger"] == "scheduled" && b["kind"] == "dump" && b["verification"] != "pending"
            })
        },
    )
    .await?;
    let first_run = started.elapsed();

    let c = container_of(platform, &tenant, &db).await?;
    let sql = |q: String| {
        let c = c.clone();
        async move { sql_within(platform, engine, &c, &q, Duration::from_secs(120)).await }
    };
    sql(engine.fill(ROWS)).await?;
    let count = "select count(*) from t".to_owned();
    ensure!(
        sql(count.clone()).await? == ROWS.to_string(),
        "rows written"
    );

    let t = Instant::now();
    let b = platform
        .expect(202, "POST", &backups, &tenant.token, None)
        .await?;
    let id = b["id"].as_str().context("backup id")?.to_owned();
    let b = until(
        platform,
        &tenant,
        &format!("{backups}/{id}"),
        Duration::from_secs(120),
        "the backup verified or failed",
        |b| b["state"] == "failed" || b["verification"] != "pending",
    )
    .await?;
    let backed_up = t.elapsed();
    ensure!(
        b["state"] == "completed" && b["verification"] == "verified",
        "backup {id}: {b:#}"
    );
    let detail = b["verification_detail"].as_str().unwrap_or_default();
    ensure!(
        detail.contains(&format!("rows {ROWS}")),
        "the verification did not count the rows: {detail:?}"
    );
    if engine == Engine::Mariadb {
        // The rows per table counted in the dump as it passed, compared with the restore.
        ensure!(detail.contains("as in the dump"), "{detail:?}");
    }

    sql("drop table t".to_owned()).await?;
    let t = Instant::now();
    let r = platform
        .expect(
            202,
            "POST",
            &format!("{backups}/{id}/restore"),
            &tenant.token,
            Some(json!({})),
        )
        .await?;
    let done = restored(platform, &tenant, &r).await?;
    let restore = t.elapsed();
    ensure!(done["pre_restore_backup_id"].is_string(), "{done:#}");
    // A restore in place reloads the same container's data (no redeploy).
    let c = container_of(platform, &tenant, &db).await?;
    let back = sql_within(platform, engine, &c, &count, Duration::from_secs(60)).await?;
    ensure!(back == ROWS.to_string(), "rows after the restore: {back}");
    println!(
        "{} rows e2e: deployed {deployed:?}, first scheduled backup {:?}, {ROWS} rows backed up \
         and verified in {backed_up:?} ({detail}), restored in place in {restore:?}",
        engine.name(),
        first_run - deployed
    );
    Ok(())
}

/// The crash scenario: about a minute (deploy, first run, three kills, the next scheduled
/// backup verified), so it runs with `scripts/test --full` (feature `full-tests`).
#[cfg(feature = "full-tests")]
mod kills {
    use super::*;
    use crate::harness::Role;

    /// The host pid of the postmaster in a PostgreSQL container (the task itself, or its child
    /// named `postgres`).
    fn postmaster(task: u32) -> anyhow::Result<u32> {
        let comm =
            |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm(task).trim() == "postgres" {
            return Ok(task);
        }
        for e in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(task) && comm(pid).trim() == "postgres" {
                return Ok(pid);
            }
        }
        bail!("no postgres process under the container's task {task}")
    }

    /// Starts a backup on demand and waits until its dump streams (its `started` step, then a
    /// moment); the backup's id.
    async fn backup_streaming(
        platform: &Platform,
        tenant: &Tenant,
        service: &str,
    ) -> anyhow::Result<String> {
        let b = platform
            .expect(
                202,
                "POST",
                &format!("/services/{service}/backups"),
                &tenant.token,
                None,
            )
            .await?;
        let id = b["id"].as_str().context("backup id")?.to_owned();
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(id)
    }

    /// [`backup_streaming`] once the engine is up again: a backup refused at once because the
    /// agent still starts the container (its probe not passed yet) is tried again.
    async fn backup_streaming_when_up(
        platform: &Platform,
        tenant: &Tenant,
        service: &str,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let id = backup_streaming(platform, tenant, service).await?;
            let b = platform
                .expect(
                    200,
                    "GET",
                    &format!("/services/{service}/backups/{id}"),
                    &tenant.token,
                    None,
                )
                .await?;
            let refused = b["state"] == "failed"
                && b["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("not running"));
            if !refused {
                return Ok(id);
            }
            ensure!(
                Instant::now() < deadline,
                "the engine never took a backup again: {b:#}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until a backup has left `running`; it must be `failed` with a reason.
    async fn failed_with_reason(
        platform: &Platform,
        tenant: &Tenant,
        service: &str,
        id: &str,
        within: Duration,
    ) -> anyhow::Result<String> {
        let b = until(
            platform,
            tenant,
            &format!("/services/{service}/backups/{id}"),
            within,
            "the interrupted backup's end",
            |b| b["state"] != "running",
        )
        .await?;
        ensure!(
            b["state"] == "failed",
            "an interrupted backup is not failed (was the dump over before the kill?): {b:#}"
        );
        let reason = b["error"].as_str().unwrap_or_default().to_owned();
        ensure!(!reason.is_empty(), "failed without a reason: {b:#}");
        Ok(reason)
    }

    /// Waits until psql answers in the service's (possibly restarted) container.
    async fn engine_back(
        platform: &Platform,
        tenant: &Tenant,
        service: &str,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = match container_of(platform, tenant, service).await {
                Ok(c) => match psql(platform, &c, "select 1").await {
                    Ok(_) => return Ok(()),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            ensure!(
                Instant::now() < deadline,
                "the engine is not back: {last:#}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kill_9_mid_backup_leaves_no_good_partial_backup_and_the_next_one_runs()
    -> anyhow::Result<()> {
        // A running backup beats every 5 s: stale after 6 s; a failed scheduled run is retried
        // after 1 s.
        let mut platform = Platform::start_with(
        "e2e-bkill",
        Options {
            control_backups: "interval_ms = 500\nstale_after_ms = 6000\nretry_after_ms = 1000\n",
        },
    )
    .await?;
        let outcome = kills(&mut platform).await;
        platform.report(outcome)
    }

    async fn kills(platform: &mut Platform) -> anyhow::Result<()> {
        let tenant = platform.organization("e2e").await?;
        let project = platform.project(&tenant, "shop").await?;
        let db = postgres(platform, &tenant, &project, "db").await?;
        let backups = format!("/services/{db}/backups");
        // The scheduler's first run (no two backups of a service run at once).
        until(
            platform,
            &tenant,
            &backups,
            Duration::from_secs(120),
            "the first scheduled run",
            |v| v["recovery_window"]["from"].is_string(),
        )
        .await?;
        // Big enough that its dump takes a while.
        let c = container_of(platform, &tenant, &db).await?;
        let t = Instant::now();
        psql(
            platform,
            &c,
            "create table big as select g, md5(g::text) as h, repeat(md5(g::text), 4) as pad \
         from generate_series(1, 150000) g",
        )
        .await?;
        let size = psql(platform, &c, "select pg_database_size('app')").await?;
        println!(
            "backup kills: {size} bytes of database loaded in {:?}",
            t.elapsed()
        );

        // The engine: kill -9 of its postmaster while the dump streams.
        let id = backup_streaming(platform, &tenant, &db).await?;
        let pid = postmaster(platform.task_pid(&c).await?)?;
        let killed = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?;
        ensure!(status.success(), "kill -9 {pid}");
        let engine =
            failed_with_reason(platform, &tenant, &db, &id, Duration::from_secs(30)).await?;
        println!(
            "engine killed: failed after {:?}: {engine}",
            killed.elapsed()
        );
        engine_back(platform, &tenant, &db).await?;

        // The node agent.
        let id = backup_streaming_when_up(platform, &tenant, &db).await?;
        let killed = Instant::now();
        platform.kill9(Role::Node)?;
        let agent =
            failed_with_reason(platform, &tenant, &db, &id, Duration::from_secs(30)).await?;
        println!("agent killed: failed after {:?}: {agent}", killed.elapsed());
        platform.restart(Role::Node).await?;
        engine_back(platform, &tenant, &db).await?;

        // Control itself: the row stays running until the restarted control's scheduler finds
        // its heartbeat stale.
        let id = backup_streaming_when_up(platform, &tenant, &db).await?;
        let killed = Instant::now();
        platform.kill9(Role::Control)?;
        platform.restart(Role::Control).await?;
        let control =
            failed_with_reason(platform, &tenant, &db, &id, Duration::from_secs(30)).await?;
        println!(
            "control killed: failed after {:?}: {control}",
            killed.elapsed()
        );
        ensure!(control.contains("heartbeat"), "{control}");

        // The next scheduled backup (the stale one counted as a failed run: retried in 1 s)
        // completes and is verified.
        let next = until(
            platform,
            &tenant,
            &backups,
            Duration::from_secs(120),
            "the next scheduled backup verified",
            |v| {
                v["items"].as_array().into_iter().flatten().any(|b| {
                    b["trigger"] == "scheduled"
                        && b["kind"] == "dump"
                        && b["verification"] == "verified"
                        && b["started_at"].as_str() > Some(killed_at(&id, v).as_str())
                })
            },
        )
        .await?;
        // No interrupted backup is listed as good.
        let items = next["items"].as_array().context("items")?;
        let manual: Vec<&Value> = items.iter().filter(|b| b["trigger"] == "manual").collect();
        ensure!(manual.len() >= 3, "{next:#}");
        ensure!(
            manual
                .iter()
                .all(|b| b["state"] == "failed" && b["verification"] != "verified"),
            "{next:#}"
        );
        println!(
            "next scheduled backup verified {:?} after control's kill",
            killed.elapsed()
        );
        Ok(())
    }

    /// The `started_at` of backup `id` in a backup list.
    fn killed_at(id: &str, list: &Value) -> String {
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["id"] == id)
            .and_then(|b| b["started_at"].as_str())
            .unwrap_or_default()
            .to_owned()
    }
}
