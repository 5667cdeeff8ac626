//! The backup benchmark (#14), run by `bench/backup/run`: on a platform of its own (the e2e
//! harness: the real control, node agent and containerd; its backup scheduler off, so only
//! what the bench asks for runs), a managed PostgreSQL 15 is filled with about `SIZE_MB` of
//! data made inside the engine (`generate_series`, random words, numbers, hashes and times:
//! it compresses like real data, not like zeros), then, on the same data and the same engine:
//!
//! - backup: Stackpad's on-demand backup (`POST /services/{id}/backups`) timed to the object
//!   stored (`completed`) and to its verification restore done (`verified`), against the peer
//!   `pg_dump -Fc -Z0 | zstd` (pg_dump run in the engine's container through the same nsenter
//!   as the agent's, zstd at its default level 3 on the host, into a file);
//! - restore: Stackpad's restore of that backup into a NEW service (timed from the new
//!   service's deployment done to the restore completed, and end to end) against the peer
//!   `zstd -dc | pg_restore` into a fresh database of the same engine.
//!
//! Prints a table, the ratios (peer time / Stackpad time: 1.0 = as fast, the target is >= 0.9)
//! as `target` lines, and what each side stored. Everything it makes lives in the platform
//! (removed at the end, even on failure).
//!
//! Env: SIZE_MB (default 1024, 64..=4096), BENCH_MINUTES (the whole run's bound, default 40).

#[allow(dead_code, unused_imports)]
#[path = "../tests/e2e/backups.rs"]
mod backups;
#[path = "../tests/e2e/harness.rs"]
mod harness;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use backups::{container_of, postgres_with, psql_within, until};
use harness::{Options, Platform, Tenant};

const LONG: Duration = Duration::from_secs(30 * 60);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The time between two steps of a timeline (`events`: `{step, at}`).
fn between(r: &Value, from: &str, to: &str) -> anyhow::Result<Duration> {
    let at = |step: &str| -> anyhow::Result<DateTime<Utc>> {
        let e = r["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["step"] == step)
            .with_context(|| format!("no {step} step in {r:#}"))?;
        Ok(e["at"].as_str().context("at")?.parse::<DateTime<Utc>>()?)
    };
    Ok((at(to)? - at(from)?).to_std().unwrap_or_default())
}

/// `argv` inside the engine's container (nsenter, as the container's user, with its
/// environment: the node agent's own way in).
async fn in_container(
    platform: &Platform,
    container: &str,
    script: &str,
) -> anyhow::Result<tokio::process::Command> {
    let c = platform.containerd().await?;
    let pid = platform.task_pid(container).await?;
    let argv = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
    runtime::agent::exec::nsenter(&c, container, pid, &argv)
        .await
        .map_err(|e| anyhow::anyhow!("nsenter into {container}: {e}"))
}

const PG: &str = "-h /run/postgresql -U \"$POSTGRES_USER\"";

/// The peer's backup: `pg_dump -Fc -Z0` in the container piped to `zstd` on the host into
/// `out`; its time.
async fn peer_dump(platform: &Platform, container: &str, out: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut dump = in_container(
        platform,
        container,
        &format!("exec pg_dump -Fc -Z0 --no-password {PG} -d \"$POSTGRES_DB\""),
    )
    .await?;
    let mut dump = dump
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("pg_dump")?;
    let stdout: Stdio = dump.stdout.take().context("pg_dump stdout")?.try_into()?;
    let zstd = tokio::process::Command::new("zstd")
        .args(["-q", "-f", "-o"])
        .arg(out)
        .stdin(stdout)
        .status();
    let (dumped, zstd) = tokio::join!(dump.wait_with_output(), zstd);
    let dumped = dumped?;
    ensure!(
        dumped.status.success(),
        "pg_dump: {}: {}",
        dumped.status,
        String::from_utf8_lossy(&dumped.stderr)
    );
    ensure!(zstd?.success(), "zstd failed");
    Ok(t.elapsed())
}

/// `PROFILE=1`: the parts of a dump on their own (output thrown away), before the two sides run.
async fn profile(platform: &Platform, container: &str) -> anyhow::Result<()> {
    for (what, script) in [
        (
            "pg_dump -Fc (zlib, its default) > /dev/null",
            format!("pg_dump -Fc --no-password {PG} -d \"$POSTGRES_DB\" > /dev/null"),
        ),
        (
            "pg_dump -Fc -Z0 > /dev/null",
            format!("pg_dump -Fc -Z0 --no-password {PG} -d \"$POSTGRES_DB\" > /dev/null"),
        ),
        (
            "pg_dump -Fc -Z0 | wc -c",
            format!("pg_dump -Fc -Z0 --no-password {PG} -d \"$POSTGRES_DB\" | wc -c"),
        ),
    ] {
        let t = Instant::now();
        let out = in_container(platform, container, &script)
            .await?
            .output()
            .await?;
        ensure!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "profile: {what}: {} {}",
            secs(t.elapsed()),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

/// The peer's restore: `zstd -dc file | pg_restore` into a new database `db` of the engine.
async fn peer_restore(
    platform: &Platform,
    container: &str,
    file: &Path,
    db: &str,
) -> anyhow::Result<Duration> {
    psql_within(
        platform,
        container,
        &format!("create database {db}"),
        Duration::from_secs(60),
    )
    .await?;
    let t = Instant::now();
    let mut unzstd = tokio::process::Command::new("zstd")
        .args(["-q", "-d", "-c"])
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()
        .context("zstd -d")?;
    let stdin: Stdio = unzstd.stdout.take().context("zstd stdout")?.try_into()?;
    let mut restore = in_container(
        platform,
        container,
        &format!("exec pg_restore --no-owner --exit-on-error --no-password {PG} -d {db}"),
    )
    .await?;
    let restore = restore
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("pg_restore")?;
    let (restored, unzstd) = tokio::join!(restore.wait_with_output(), unzstd.wait());
    let restored = restored?;
    ensure!(
        restored.status.success(),
        "pg_restore: {}: {}",
        restored.status,
        String::from_utf8_lossy(&restored.stderr)
    );
    ensure!(unzstd?.success(), "zstd -d failed");
    Ok(t.elapsed())
}

/// Fills the engine with about `mb` MiB (table and primary key), in steps of a few hundred
/// thousand rows; the database's size.
async fn fill(platform: &Platform, container: &str, mb: u64) -> anyhow::Result<u64> {
    psql_within(
        platform,
        container,
        "create table orders (id bigint primary key, placed_at timestamptz not null, \
         customer int not null, status text not null, amount numeric(12,2) not null, \
         sku text not null, note text not null)",
        Duration::from_secs(60),
    )
    .await?;
    // About 230 bytes per row on disk with its index entry.
    let step = 400_000u64;
    let mut next = 1u64;
    let started = Instant::now();
    loop {
        let size: u64 = psql_within(
            platform,
            container,
            "select pg_database_size(current_database())",
            Duration::from_secs(60),
        )
        .await?
        .parse()?;
        if size >= mb << 20 {
            return Ok(size);
        }
        ensure!(
            started.elapsed() < LONG / 2,
            "filling the database: {} of {mb} MiB after {:?}",
            size >> 20,
            started.elapsed()
        );
        let last = next + step - 1;
        psql_within(
            platform,
            container,
            &format!(
                "with w(a) as (select array['order','shipped','customer','paid','delivery', \
                 'return','gift','express','fragile','invoice','store','pickup','discount', \
                 'warehouse','coupon','priority','late','address','phone','note']) \
                 insert into orders select g, \
                 now() - (random() * 1000)::int * interval '1 day' - (random() * 86400)::int * interval '1 second', \
                 (random() * 200000)::int, \
                 (array['new','paid','shipped','delivered','returned'])[1 + (random() * 4)::int], \
                 round((random() * 5000)::numeric, 2), \
                 'SKU-' || upper(substr(md5(g::text), 1, 10)), \
                 (select string_agg(x, ' ') from (select a[1 + (random() * 19)::int] as x \
                    from generate_series(1, 6 + g % 18)) s) \
                 from w, generate_series({next}, {last}) g"
            ),
            Duration::from_secs(600),
        )
        .await?;
        next = last + 1;
    }
}

/// The rows of `orders` in database `db` of the container.
async fn rows(platform: &Platform, container: &str, db: &str) -> anyhow::Result<u64> {
    let c = in_container(
        platform,
        container,
        &format!("exec psql -X -q -tA --no-password {PG} -d {db} -c 'select count(*) from orders'"),
    )
    .await?
    .output();
    let out = tokio::time::timeout(Duration::from_secs(300), c)
        .await
        .context("count(*) took over 300 s")??;
    ensure!(
        out.status.success(),
        "count in {db}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

struct Run {
    size: u64,
    rows: u64,
    stored: Duration,
    verified: Duration,
    stackpad_bytes: u64,
    dump_bytes: u64,
    peer_dump: Duration,
    peer_bytes: u64,
    restore_step: Duration,
    restore_total: Duration,
    peer_restore: Duration,
    backup_events: Value,
    restore_events: Value,
}

async fn bench(platform: &Platform, tenant: &Tenant, mb: u64) -> anyhow::Result<Run> {
    let project = platform.project(tenant, "bench").await?;
    // Room for the data, its archived WAL and the peer's restored copy beside it.
    let volume = (mb.max(256) << 20) * 8;
    let db = postgres_with(
        platform,
        tenant,
        &project,
        "db",
        json!({ "volumes": [{ "name": "data", "mount_path": "/var/lib/postgresql/data", "size_bytes": volume }] }),
    )
    .await?;
    let c = container_of(platform, tenant, &db).await?;
    let t = Instant::now();
    let size = fill(platform, &c, mb).await?;
    let rows_in = rows(platform, &c, "app").await?;
    println!(
        "filled: {} in {rows_in} rows in {}",
        mib(size),
        secs(t.elapsed())
    );
    // A checkpoint now, so neither side pays for the load's.
    psql_within(platform, &c, "checkpoint", Duration::from_secs(300)).await?;

    if std::env::var("PROFILE").is_ok_and(|v| v == "1") {
        profile(platform, &c).await?;
    }
    // The peer first (each side reads the same data; the engine's cache is the same size).
    let file = platform.dir.path().join("peer.dump.zst");
    let peer_dump = peer_dump(platform, &c, &file).await?;
    let peer_bytes = std::fs::metadata(&file)?.len();
    println!(
        "peer pg_dump -Fc -Z0 | zstd: {} -> {}",
        secs(peer_dump),
        mib(peer_bytes)
    );

    // Stackpad: on demand, until stored, then until verified.
    let backups = format!("/services/{db}/backups");
    let t = Instant::now();
    let b = platform
        .expect(202, "POST", &backups, &tenant.token, None)
        .await?;
    let id = b["id"].as_str().context("backup id")?.to_owned();
    let one = format!("{backups}/{id}");
    let done = until(platform, tenant, &one, LONG, "the backup stored", |b| {
        b["state"] != "running"
    })
    .await?;
    let stored = t.elapsed();
    ensure!(done["state"] == "completed", "backup: {done:#}");
    let done = until(platform, tenant, &one, LONG, "the backup verified", |b| {
        b["verification"] != "pending"
    })
    .await?;
    let verified = t.elapsed();
    ensure!(done["verification"] == "verified", "verification: {done:#}");
    println!(
        "stackpad backup: stored {}, verified {}",
        secs(stored),
        secs(verified)
    );

    // Restores: the peer into a fresh database of the engine, Stackpad into a new service.
    let peer_restore = peer_restore(platform, &c, &file, "peer_restore").await?;
    let peer_rows = rows(platform, &c, "peer_restore").await?;
    ensure!(
        peer_rows == rows_in,
        "the peer restored {peer_rows} rows of {rows_in}"
    );
    psql_within(
        platform,
        &c,
        "drop database peer_restore",
        Duration::from_secs(120),
    )
    .await?;
    println!("peer zstd -dc | pg_restore: {}", secs(peer_restore));

    let t = Instant::now();
    let r = platform
        .expect(
            202,
            "POST",
            &format!("{one}/restore"),
            &tenant.token,
            Some(json!({ "new_service": { "name": "db-copy" } })),
        )
        .await?;
    let new = r["new_service"]["id"]
        .as_str()
        .with_context(|| format!("no new_service in {r}"))?
        .to_owned();
    let rid = r["id"].as_str().context("restore id")?;
    let r = until(
        platform,
        tenant,
        &format!("/restores/{rid}"),
        LONG,
        "the restore's end",
        |r| r["state"] != "running",
    )
    .await?;
    let restore_total = t.elapsed();
    ensure!(r["state"] == "completed", "restore: {r:#}");
    let restore_step = between(&r, "deployed", "completed")?;
    let copy = container_of(platform, tenant, &new).await?;
    let copy_rows = rows(platform, &copy, "app").await?;
    ensure!(
        copy_rows == rows_in,
        "stackpad restored {copy_rows} rows of {rows_in}"
    );
    println!(
        "stackpad restore into a new service: {} after its deployment, {} end to end",
        secs(restore_step),
        secs(restore_total)
    );

    let b = platform
        .expect(200, "GET", &one, &tenant.token, None)
        .await?;
    Ok(Run {
        size,
        rows: rows_in,
        stored,
        verified,
        stackpad_bytes: b["size_bytes"].as_u64().unwrap_or(0),
        dump_bytes: b["dump_bytes"].as_u64().unwrap_or(0),
        peer_dump,
        peer_bytes,
        restore_step,
        restore_total,
        peer_restore,
        backup_events: b["events"].clone(),
        restore_events: r["events"].clone(),
    })
}

fn timeline(events: &Value) {
    let list = events.as_array().cloned().unwrap_or_default();
    let first = list
        .first()
        .and_then(|e| e["at"].as_str())
        .and_then(|a| a.parse::<DateTime<Utc>>().ok());
    for e in &list {
        let at = e["at"]
            .as_str()
            .and_then(|a| a.parse::<DateTime<Utc>>().ok());
        let off = match (first, at) {
            (Some(f), Some(a)) => format!("{:>7.2} s", (a - f).num_milliseconds() as f64 / 1000.0),
            _ => "?".into(),
        };
        println!(
            "  {off}  {}: {}",
            e["step"].as_str().unwrap_or("?"),
            e["detail"].as_str().unwrap_or("")
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mb = env_u64("SIZE_MB", 1024).clamp(64, 4096);
    let bound = Duration::from_secs(60 * env_u64("BENCH_MINUTES", 40).clamp(5, 120));
    let which = |bin: &str| {
        std::process::Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !which("zstd") {
        bail!("zstd is not installed on this machine (apt-get install zstd): the peer needs it");
    }
    let mut platform = Platform::start_with(
        "bench-backup",
        Options {
            // No scheduler: only the bench's own backup runs (no WAL shipping meanwhile).
            control_backups: "interval_ms = 0\n",
        },
    )
    .await?;
    let outcome = async {
        let tenant = platform.organization("bench").await?;
        let r = tokio::time::timeout(bound, bench(&platform, &tenant, mb))
            .await
            .with_context(|| format!("the bench took over {bound:?} (BENCH_MINUTES)"))??;
        println!();
        println!(
            "PostgreSQL 15, {} in {} rows (one table and its primary key)",
            mib(r.size),
            r.rows
        );
        println!("| | Stackpad | peer | ratio (peer / Stackpad time) |");
        println!("|---|---|---|---|");
        let ratio = |peer: Duration, ours: Duration| peer.as_secs_f64() / ours.as_secs_f64();
        println!(
            "| backup, dump stored | {} | {} (`pg_dump -Fc -Z0 \\| zstd`) | {:.2} |",
            secs(r.stored),
            secs(r.peer_dump),
            ratio(r.peer_dump, r.stored)
        );
        println!(
            "| backup, verified (restored and counted in a throwaway container) | {} | {} (dump + pg_restore) | {:.2} |",
            secs(r.verified),
            secs(r.peer_dump + r.peer_restore),
            ratio(r.peer_dump + r.peer_restore, r.verified)
        );
        println!(
            "| restore into a new service (after its deploy) | {} | {} (`zstd -dc \\| pg_restore` into a new database) | {:.2} |",
            secs(r.restore_step),
            secs(r.peer_restore),
            ratio(r.peer_restore, r.restore_step)
        );
        println!(
            "| restore into a new service, end to end (service made and deployed) | {} | | |",
            secs(r.restore_total)
        );
        println!(
            "| stored bytes | {} (sealed; {} of dump) | {} | {:.2} |",
            mib(r.stackpad_bytes),
            mib(r.dump_bytes),
            mib(r.peer_bytes),
            r.peer_bytes as f64 / r.stackpad_bytes.max(1) as f64
        );
        println!();
        println!("backup timeline:");
        timeline(&r.backup_events);
        println!("restore timeline:");
        timeline(&r.restore_events);
        println!(
            "target backup_stored_speed_ratio {:.2} >= 0.9",
            ratio(r.peer_dump, r.stored)
        );
        println!(
            "target restore_speed_ratio {:.2} >= 0.9",
            ratio(r.peer_restore, r.restore_step)
        );
        anyhow::Ok(())
    }
    .await;
    platform.report(outcome)
}
