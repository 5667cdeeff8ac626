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
//! Each is measured `ROUNDS` times with the sides alternating (peer first in odd rounds,
//! Stackpad first in even ones: two rounds are ABBA), each round printed with the load, so a
//! drift of the shared machine's load weighs on both sides alike; every restored copy is
//! counted and then dropped (the peer's database, Stackpad's new service with its volume).
//! Prints a table of the medians (every round's time beside them), the ratios of the medians
//! (peer time / Stackpad time: 1.0 = as fast, the target is >= 0.9) as `target` lines, what
//! each side stored, and the CPU seconds each side's processes used. Everything it makes lives
//! in the platform (removed at the end, even on failure).
//!
//! Env: SIZE_MB (default 1024, 64..=4096), ROUNDS (default 3, 1..=9), BENCH_MINUTES (the whole
//! run's bound, default 40), PROFILE=1 (pg_dump's parts on their own first).

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
use harness::{Options, Platform, Role, Tenant};

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

/// CPU seconds (user + system) of process `pid` so far, with its children it waited for
/// (`/proc/<pid>/stat`; `children_only` counts only those, for the bench itself: its own
/// waited-for children are the peer's pg_dump and zstd). Linux's user clock: 100 ticks a second.
fn cpu_seconds(pid: &str, children_only: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's `(...)`: state is the first field, utime the 12th, then stime,
    // cutime, cstime.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    let ticks = if children_only {
        at(12) + at(13)
    } else {
        at(10) + at(11) + at(12) + at(13)
    };
    ticks as f64 / 100.0
}

/// Removes the WAL the engine archived: it archives every load's (about the data's size), and
/// with the scheduler off nothing ships it; rounds of it filled the machine's disk.
async fn drop_archived_wal(platform: &Platform, container: &str) -> anyhow::Result<()> {
    let out = in_container(platform, container, "rm -f \"$PGDATA\"/stackpad_wal/*")
        .await?
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "removing the archived WAL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The 1-minute load average now.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

/// The daemons a Stackpad backup runs through (their CPU is Stackpad's side of a round).
#[derive(Clone, Copy)]
struct Daemons {
    control: u32,
    node: u32,
}

impl Daemons {
    fn cpu(self) -> Cpu {
        Cpu {
            control: cpu_seconds(&self.control.to_string(), false),
            agent: cpu_seconds(&self.node.to_string(), false),
        }
    }
}

/// CPU seconds of control and of the agent (with the engine commands it waited for).
#[derive(Clone, Copy)]
struct Cpu {
    control: f64,
    agent: f64,
}

impl Cpu {
    fn total(self) -> f64 {
        self.control + self.agent
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            control: self.control - o.control,
            agent: self.agent - o.agent,
        }
    }
}

impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} s: control {:.1} + agent {:.1}",
            self.total(),
            self.control,
            self.agent
        )
    }
}

/// One side's times over the rounds.
#[derive(Default)]
struct Side {
    times: Vec<Duration>,
    cpu: Vec<f64>,
}

impl Side {
    fn add(&mut self, t: Duration, cpu: f64) {
        self.times.push(t);
        self.cpu.push(cpu);
    }

    fn median(&self) -> Duration {
        median(self.times.clone())
    }

    fn list(&self) -> String {
        self.times
            .iter()
            .map(|t| format!("{:.1}", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

struct Run {
    size: u64,
    rows: u64,
    rounds: usize,
    stored: Side,
    verified: Side,
    peer_dump: Side,
    restore_step: Side,
    restore_total: Side,
    peer_restore: Side,
    stackpad_bytes: u64,
    dump_bytes: u64,
    peer_bytes: u64,
    backup_events: Value,
    restore_events: Value,
}

/// Who goes first in round `i` (from 0): the peer in even rounds, Stackpad in odd ones, so
/// two rounds are peer, Stackpad, Stackpad, peer (ABBA) and a drift of the machine's load
/// weighs on both sides alike.
fn peer_first(i: usize) -> bool {
    i.is_multiple_of(2)
}

/// Stackpad's on-demand backup: (stored, verified, CPU of control and the agent until stored,
/// the backup).
async fn stackpad_backup(
    platform: &Platform,
    tenant: &Tenant,
    db: &str,
    daemons: Daemons,
) -> anyhow::Result<(Duration, Duration, Cpu, Value)> {
    let backups = format!("/services/{db}/backups");
    let cpu = daemons.cpu();
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
    let cpu = daemons.cpu() - cpu;
    ensure!(done["state"] == "completed", "backup: {done:#}");
    let done = until(platform, tenant, &one, LONG, "the backup verified", |b| {
        b["verification"] != "pending"
    })
    .await?;
    let verified = t.elapsed();
    ensure!(done["verification"] == "verified", "verification: {done:#}");
    Ok((stored, verified, cpu, done))
}

/// Stackpad's restore of `backup` into a new service `name` (deleted again after its rows
/// were counted): (from its deployment done to the restore completed, end to end, the CPU
/// of control and the agent, the restore).
async fn stackpad_restore(
    platform: &Platform,
    tenant: &Tenant,
    backup: &str,
    name: &str,
    rows_in: u64,
    daemons: Daemons,
) -> anyhow::Result<(Duration, Duration, Cpu, Value)> {
    let cpu = daemons.cpu();
    let t = Instant::now();
    let r = platform
        .expect(
            202,
            "POST",
            &format!("{backup}/restore"),
            &tenant.token,
            Some(json!({ "new_service": { "name": name } })),
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
    let total = t.elapsed();
    let cpu = daemons.cpu() - cpu;
    ensure!(r["state"] == "completed", "restore: {r:#}");
    let step = between(&r, "deployed", "completed")?;
    let copy = container_of(platform, tenant, &new).await?;
    let copy_rows = rows(platform, &copy, "app").await?;
    ensure!(
        copy_rows == rows_in,
        "stackpad restored {copy_rows} rows of {rows_in}"
    );
    // Its engine and volume would weigh on the next rounds.
    platform
        .expect(
            204,
            "DELETE",
            &format!("/services/{new}?purge=true"),
            &tenant.token,
            None,
        )
        .await?;
    Ok((step, total, cpu, r))
}

/// The `completed` event's detail of a timeline (where the time went).
fn completed(events: &Value) -> String {
    events
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["step"] == "completed")
        .and_then(|e| e["detail"].as_str())
        .unwrap_or("")
        .to_owned()
}

async fn bench(
    platform: &Platform,
    tenant: &Tenant,
    mb: u64,
    rounds: usize,
    daemons: Daemons,
) -> anyhow::Result<Run> {
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
    drop_archived_wal(platform, &c).await?;

    if std::env::var("PROFILE").is_ok_and(|v| v == "1") {
        profile(platform, &c).await?;
    }

    // Backups: each round the peer's dump and Stackpad's backup (until verified, so its
    // verification restore is not beside the next measurement), in alternating order.
    let file = platform.dir.path().join("peer.dump.zst");
    let (mut peer_dump_side, mut stored, mut verified) =
        (Side::default(), Side::default(), Side::default());
    let mut first_backup = None;
    let mut backup_events = Value::Null;
    for i in 0..rounds {
        let load_before = load();
        let mut line = Vec::new();
        for peer in [peer_first(i), !peer_first(i)] {
            if peer {
                let cpu = cpu_seconds("self", true);
                let t = peer_dump(platform, &c, &file).await?;
                let cpu = cpu_seconds("self", true) - cpu;
                peer_dump_side.add(t, cpu);
                line.push(format!("peer {} (pg_dump + zstd CPU {cpu:.1} s)", secs(t)));
            } else {
                let (s, v, cpu, b) = stackpad_backup(platform, tenant, &db, daemons).await?;
                stored.add(s, cpu.total());
                verified.add(v, 0.0);
                line.push(format!(
                    "stackpad stored {}, verified {} (CPU until stored {cpu}, pg_dump's in the agent's)",
                    secs(s),
                    secs(v)
                ));
                println!("  backup round {}: {}", i + 1, completed(&b["events"]));
                if first_backup.is_none() {
                    first_backup = b["id"].as_str().map(str::to_owned);
                    backup_events = b["events"].clone();
                }
            }
        }
        println!(
            "backup round {} (load {load_before} -> {}): {}",
            i + 1,
            load(),
            line.join("; ")
        );
    }
    let peer_bytes = std::fs::metadata(&file)?.len();
    let one = format!(
        "/services/{db}/backups/{}",
        first_backup.context("no backup")?
    );

    // Restores of the first backup: the peer into a fresh database of the engine, Stackpad
    // into a new service, in alternating order.
    let (mut peer_restore_side, mut step, mut total) =
        (Side::default(), Side::default(), Side::default());
    let mut restore_events = Value::Null;
    for i in 0..rounds {
        let load_before = load();
        let mut line = Vec::new();
        for peer in [peer_first(i), !peer_first(i)] {
            if peer {
                let name = format!("peer_restore_{i}");
                let t = peer_restore(platform, &c, &file, &name).await?;
                let peer_rows = rows(platform, &c, &name).await?;
                ensure!(
                    peer_rows == rows_in,
                    "the peer restored {peer_rows} rows of {rows_in}"
                );
                psql_within(
                    platform,
                    &c,
                    &format!("drop database {name}"),
                    Duration::from_secs(120),
                )
                .await?;
                drop_archived_wal(platform, &c).await?;
                peer_restore_side.add(t, 0.0);
                line.push(format!("peer {}", secs(t)));
            } else {
                let (s, all, cpu, r) = stackpad_restore(
                    platform,
                    tenant,
                    &one,
                    &format!("db-copy-{i}"),
                    rows_in,
                    daemons,
                )
                .await?;
                step.add(s, cpu.total());
                total.add(all, 0.0);
                line.push(format!(
                    "stackpad {} after its deployment, {} end to end (CPU {cpu}, pg_restore's in the agent's)",
                    secs(s),
                    secs(all)
                ));
                println!("  restore round {}: {}", i + 1, completed(&r["events"]));
                if restore_events.is_null() {
                    restore_events = r["events"].clone();
                }
            }
        }
        println!(
            "restore round {} (load {load_before} -> {}): {}",
            i + 1,
            load(),
            line.join("; ")
        );
    }

    let b = platform
        .expect(200, "GET", &one, &tenant.token, None)
        .await?;
    Ok(Run {
        size,
        rows: rows_in,
        rounds,
        stored,
        verified,
        peer_dump: peer_dump_side,
        restore_step: step,
        restore_total: total,
        peer_restore: peer_restore_side,
        stackpad_bytes: b["size_bytes"].as_u64().unwrap_or(0),
        dump_bytes: b["dump_bytes"].as_u64().unwrap_or(0),
        peer_bytes,
        backup_events,
        restore_events,
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
    let rounds = env_u64("ROUNDS", 3).clamp(1, 9) as usize;
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
    let daemons = Daemons {
        control: platform.pid(Role::Control),
        node: platform.pid(Role::Node),
    };
    let outcome = async {
        let tenant = platform.organization("bench").await?;
        let r = tokio::time::timeout(bound, bench(&platform, &tenant, mb, rounds, daemons))
            .await
            .with_context(|| format!("the bench took over {bound:?} (BENCH_MINUTES)"))??;
        println!();
        println!(
            "PostgreSQL 15, {} in {} rows (one table and its primary key); {} rounds each, \
             the sides alternating (peer first in odd rounds); medians, every round's time after them",
            mib(r.size),
            r.rows,
            r.rounds
        );
        println!("| | Stackpad | peer | ratio of the medians (peer / Stackpad time) |");
        println!("|---|---|---|---|");
        let ratio = |peer: Duration, ours: Duration| peer.as_secs_f64() / ours.as_secs_f64();
        let both = |s: &Side| format!("{} ({})", secs(s.median()), s.list());
        println!(
            "| backup, dump stored | {} | {} (`pg_dump -Fc -Z0 \\| zstd`) | {:.2} |",
            both(&r.stored),
            both(&r.peer_dump),
            ratio(r.peer_dump.median(), r.stored.median())
        );
        let peer_verified = r.peer_dump.median() + r.peer_restore.median();
        println!(
            "| backup, verified (restored and counted in a throwaway container) | {} | {} (dump + pg_restore medians) | {:.2} |",
            both(&r.verified),
            secs(peer_verified),
            ratio(peer_verified, r.verified.median())
        );
        println!(
            "| restore into a new service (after its deploy) | {} | {} (`zstd -dc \\| pg_restore` into a new database) | {:.2} |",
            both(&r.restore_step),
            both(&r.peer_restore),
            ratio(r.peer_restore.median(), r.restore_step.median())
        );
        println!(
            "| restore into a new service, end to end (service made and deployed) | {} | | |",
            both(&r.restore_total)
        );
        println!(
            "| stored bytes | {} (sealed; {} of dump) | {} | {:.2} |",
            mib(r.stackpad_bytes),
            mib(r.dump_bytes),
            mib(r.peer_bytes),
            r.peer_bytes as f64 / r.stackpad_bytes.max(1) as f64
        );
        let cpu = |s: &Side| {
            s.cpu
                .iter()
                .map(|c| format!("{c:.1}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "CPU seconds of a backup: Stackpad (control + agent + pg_dump) {}; peer (pg_dump + zstd) {}",
            cpu(&r.stored),
            cpu(&r.peer_dump)
        );
        println!(
            "CPU seconds of a restore: Stackpad (control + agent + pg_restore) {}",
            cpu(&r.restore_step)
        );
        println!();
        println!("backup timeline (round 1):");
        timeline(&r.backup_events);
        println!("restore timeline (round 1):");
        timeline(&r.restore_events);
        println!(
            "target backup_stored_speed_ratio {:.2} >= 0.9",
            ratio(r.peer_dump.median(), r.stored.median())
        );
        println!(
            "target restore_speed_ratio {:.2} >= 0.9",
            ratio(r.peer_restore.median(), r.restore_step.median())
        );
        anyhow::Ok(())
    }
    .await;
    platform.report(outcome)
}
