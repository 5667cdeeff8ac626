//! The managed engines' dump, check and load (#14 backups): Stackpad's fixed commands, run
//! inside a service's running container through the same `nsenter` exec as the engines'
//! probes ([`super::exec::nsenter`]). Nothing here takes a command from a caller: the caller
//! names an engine and one of these operations.
//!
//! - dump: `pg_dump -Fc -Z0` (one consistent snapshot, not compressed by pg_dump),
//!   `mariadb-dump --single-transaction`, `redis-cli --rdb -` (the RDB the server produces
//!   for a replica); stdout is the dump. [`pump`] reads it on a blocking thread in pieces of
//!   [`CHUNK`] and, when the caller asks, compresses it with zstd where it is made (the
//!   stream a backup object holds: control only frames, seals and hashes it).
//! - a load's data may arrive as that zstd stream: [`inflate`] decompresses it on a blocking
//!   thread before it reaches the engine or the spool file, and refuses a stream cut short.
//! - check: one `name value` line per fact (`tables`, `rows`, `keys`; MariaDB also `table
//!   <name> <rows>` per base table, compared by control with the rows counted in the dump):
//!   what a verification restore is judged by.
//! - load: the dump is first spooled to a file of the agent (so an upload cut short changes
//!   nothing), then fed to `pg_restore --clean --if-exists --single-transaction`, to `mariadb`
//!   after the database is dropped and created again, or for Redis checked with
//!   `redis-check-rdb`, put in place of `dump.rdb` with snapshots turned off, and the container
//!   killed (SIGKILL, so Redis does not save over it): its restart policy starts it again and
//!   Redis loads the file. The load returns when the container is healthy again.
//!   A PostgreSQL dump into a target with nothing to keep (a new service, a verification
//!   container; the caller says so) is not spooled: [`Agent::engine_load_stream`] feeds
//!   pg_restore as the upload arrives, one piece behind it, so pg_restore cannot reach the
//!   dump's end (and commit) before the upload's `end` came; an upload cut short kills it
//!   inside its single transaction. pg_restore reads the custom format from a pipe (no `-j`).
//!
//! PostgreSQL continuous archiving (point-in-time recovery): the image's entrypoint runs with
//! `archive_mode=on` and an `archive_command` copying each finished WAL file into
//! `$PGDATA/stackpad_wal` (on the volume). `BaseBackup` streams `pg_basebackup -Ft -X none`
//! (one tar, returned once the WAL it needs is archived); `WalList`, `WalRead` and `WalRemove`
//! let control ship the archived files and remove each one it stored. A restore to a time is
//! staged in `$PGDATA/stackpad_restore` while the engine still runs (the base backup untarred,
//! then each WAL file), and [`LoadKind::PgRecover`] writes the target time and
//! `recovery.signal` there, marks the staging ready and kills the container: the entrypoint
//! swaps the staging in and replays the WAL to the target in its single-user step (which
//! promotes) before the server starts. Until that last step the current data is untouched.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::record::State;
use super::{Agent, task};

/// The engines the fixed commands are written for (the images of `scripts/base-images`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mariadb,
    Redis,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mariadb => "mariadb",
            Engine::Redis => "redis",
        }
    }
}

/// What a dump stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpCommand {
    Dump,
    Check,
    /// PostgreSQL: a physical base backup (a tar).
    BaseBackup,
    /// PostgreSQL: the archived WAL files not yet shipped, `name mtime size` per line.
    WalList,
    /// PostgreSQL: one archived WAL file.
    WalRead(String),
    /// PostgreSQL: removes one archived WAL file (stored elsewhere).
    WalRemove(String),
    /// PostgreSQL: a transaction committed, the WAL switched and the segment archived; its name.
    WalSwitch,
}

/// What an upload is loaded as (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadKind {
    Dump,
    PgBase,
    PgWal(String),
    /// The target time, checked by [`recovery_target_ok`].
    PgRecover(String),
}

/// A WAL file name the archive may hold: a segment (24 upper-case hex digits), a timeline
/// history (`00000002.history`) or a backup label (`<segment>.<8 hex>.backup`).
pub fn wal_name_ok(name: &str) -> bool {
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    };
    match name.split('.').collect::<Vec<_>>().as_slice() {
        [seg] => hex(seg, 24),
        [tli, "history"] => hex(tli, 8),
        [seg, off, "backup"] => hex(seg, 24) && hex(off, 8),
        _ => false,
    }
}

/// `YYYY-MM-DD HH:MM:SS[.f{1,6}]+00`, the only form of a recovery target time.
pub fn recovery_target_ok(t: &str) -> bool {
    let b = t.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if b.len() < 22 || !t.ends_with("+00") {
        return false;
    }
    let fixed = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b' '
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    let rest = &t[19..t.len() - 3];
    fixed
        && (rest.is_empty()
            || (rest.len() >= 2
                && rest.len() <= 7
                && rest.starts_with('.')
                && rest[1..].bytes().all(|c| c.is_ascii_digit())))
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("container {0} not found")]
    NotFound(String),
    #[error("container {container_id} is not running ({state})")]
    NotRunning { container_id: String, state: String },
    #[error("{} {what} failed: {reason}", engine.name())]
    Command {
        engine: Engine,
        what: &'static str,
        reason: String,
    },
    #[error("spool file {path}: {source}")]
    Spool {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Exec(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Bytes read from the command's stdout per chunk.
pub const CHUNK: usize = 1 << 20;

/// How a dump's output is sent, or an upload's data arrives (`Compression` in the proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// One zstd stream: what a backup object holds, so control only frames and seals it.
    Zstd,
}

/// The zstd level of a dump: 1. Level 3 (`pg_dump | zstd`'s default, and what control used
/// before the agent compressed) made ~3.4% smaller objects of bench/backup's 1 GB dump (268
/// against 277 MB) for ~1 s more CPU per GB, and on a loaded node a backup's CPU is its wall
/// time. Restore reads either (one zstd stream; the level is not recorded).
const ZSTD_LEVEL: i32 = 1;

/// zstd worker threads per dump: the node's cores, at most 4 (a dump must not take every
/// core of a large node; its databases keep serving meanwhile).
fn zstd_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u32)
}

/// Reads a command's output to its end in pieces of [`CHUNK`] (pg_dump writes 4 KiB at a
/// time: a message per write cost a gRPC message per 4 KiB), compressed when asked (zstd's
/// own workers compress while this reads), and hands each piece to `send` (`false`: the
/// receiver went away, stop). Blocking: run it on a blocking thread, not on the runtime.
/// Returns the output's bytes before compression, `None` when the receiver went away.
pub fn pump(
    mut out: impl std::io::Read,
    compression: Compression,
    mut send: impl FnMut(Vec<u8>) -> bool,
) -> std::io::Result<Option<u64>> {
    use std::io::{Read, Write};
    let mut encoder = match compression {
        Compression::None => None,
        Compression::Zstd => {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
            e.multithread(zstd_workers())?;
            Some(e)
        }
    };
    let mut raw = 0u64;
    loop {
        let mut data = Vec::with_capacity(CHUNK);
        let n = (&mut out).take(CHUNK as u64).read_to_end(&mut data)?;
        raw += n as u64;
        let piece = match &mut encoder {
            None => data,
            Some(e) => {
                e.write_all(&data)?;
                if e.get_ref().len() >= CHUNK {
                    std::mem::take(e.get_mut())
                } else {
                    Vec::new()
                }
            }
        };
        if !send_bounded(piece, &mut send) {
            return Ok(None);
        }
        if n < CHUNK {
            break;
        }
    }
    if let Some(e) = encoder
        && !send_bounded(e.finish()?, &mut send)
    {
        return Ok(None);
    }
    Ok(Some(raw))
}

/// Sends `piece` (nothing when empty) in messages of at most 2 x [`CHUNK`]: zstd's workers
/// hand their output over in bursts (a 1 GB dump gave one of 16.8 MB, past control's 16 MiB
/// message limit), and one write's output can be anything up to that.
fn send_bounded(piece: Vec<u8>, send: &mut impl FnMut(Vec<u8>) -> bool) -> bool {
    if piece.len() <= 2 * CHUNK {
        return piece.is_empty() || send(piece);
    }
    piece.chunks(CHUNK).all(|c| send(c.to_vec()))
}

/// What [`inflate`] hands on.
#[derive(Debug)]
pub enum Inflated<E> {
    Data(Vec<u8>),
    /// The input ended whole and so did its zstd stream; the time spent decompressing.
    End(Duration),
    /// The input broke (handed on as it came).
    Broken(E),
    /// The input does not decompress, or its zstd stream is cut short.
    Corrupt(String),
}

/// Decompresses one zstd stream arriving in pieces and hands the output on in pieces; the
/// input channel closing is its end, which must also end the zstd stream. Blocking: run it
/// on a blocking thread. Returns early when the receiver went away.
pub fn inflate<E>(
    input: &mut tokio::sync::mpsc::Receiver<Result<Vec<u8>, E>>,
    out: &tokio::sync::mpsc::Sender<Inflated<E>>,
) {
    use std::io::Write;
    let mut decoder = match zstd::stream::write::Decoder::new(Vec::with_capacity(CHUNK)) {
        Ok(d) => d,
        Err(e) => {
            let _ = out.blocking_send(Inflated::Corrupt(format!("zstd: {e}")));
            return;
        }
    };
    let mut busy = Duration::ZERO;
    while let Some(piece) = input.blocking_recv() {
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                let _ = out.blocking_send(Inflated::Broken(e));
                return;
            }
        };
        // A quarter of CHUNK compressed is about CHUNK of dump (pg_dump's ~4x).
        for part in piece.chunks(CHUNK / 4) {
            let t = std::time::Instant::now();
            let wrote = decoder.write_all(part).and_then(|()| decoder.flush());
            busy += t.elapsed();
            if let Err(e) = wrote {
                let _ = out.blocking_send(Inflated::Corrupt(format!(
                    "the upload does not decompress (zstd): {e}"
                )));
                return;
            }
            let data = std::mem::replace(decoder.get_mut(), Vec::with_capacity(CHUNK));
            if !data.is_empty() && out.blocking_send(Inflated::Data(data)).is_err() {
                return;
            }
        }
    }
    let t = std::time::Instant::now();
    let rest = decoder.finish();
    busy += t.elapsed();
    let last = match rest {
        Ok(rest) => {
            if !rest.is_empty() && out.blocking_send(Inflated::Data(rest)).is_err() {
                return;
            }
            Inflated::End(busy)
        }
        Err(e) => Inflated::Corrupt(format!("the upload's zstd stream is cut short: {e}")),
    };
    let _ = out.blocking_send(last);
}
/// The size of the pipes between the agent and an engine's dump or restore (Linux's limit for
/// unprivileged processes; the agent is root, but no more is needed): 64 KiB is drained or
/// filled in a few ms, and on a busy machine the agent's next turn may come later than that
/// (bench/backup).
const PIPE: i32 = 1 << 20;

/// Enlarges the pipe `fd` is one end of to [`PIPE`] (a warning when the kernel refuses).
fn enlarge_pipe(fd: &impl std::os::fd::AsFd, container_id: &str) {
    if let Err(e) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE)) {
        tracing::warn!(container_id, error = %e, "cannot enlarge the engine's pipe");
    }
}

const PG: &str = "-h /run/postgresql -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\"";
const MARIA: &str = "-uroot -S /run/mysqld/mysqld.sock";
/// The staging of a point-in-time restore, inside the data directory (on the volume).
const STAGE: &str = "s=\"$PGDATA/stackpad_restore\"";

fn script(engine: Engine, what: &str) -> String {
    match (engine, what) {
        // No compression of pg_dump's own (its zlib was ~85% of a backup's time, measured by
        // bench/backup): the stream is compressed with zstd ([`pump`]). Older backups were dumped
        // with zlib; pg_restore reads either from the archive's header.
        (Engine::Postgres, "dump") => format!("exec pg_dump -Fc -Z0 --no-password {PG}"),
        (Engine::Postgres, "check") => format!(
            "exec psql -X -q -tA --no-password {PG} -v ON_ERROR_STOP=1 -c \"\
             SELECT 'tables ' || count(*) || chr(10) || 'rows ' || coalesce(sum((xpath('/row/c/text()', \
             query_to_xml(format('SELECT count(*) AS c FROM %I.%I', schemaname, tablename), false, true, '')))[1]::text::bigint), 0) \
             FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')\""
        ),
        (Engine::Postgres, "base") => "exec pg_basebackup --no-password -h /run/postgresql \
             -U \"$POSTGRES_USER\" -Ft -X none -c fast -D -"
            .into(),
        (Engine::Postgres, "wal_list") => "d=\"$PGDATA/stackpad_wal\"; [ -d \"$d\" ] || exit 0; cd \"$d\"; \
             for f in *; do case $f in '*' | *.tmp) continue ;; esac; stat -c '%n %Y %s' \"$f\"; done"
            .into(),
        (Engine::Postgres, "wal_read") => "exec cat \"$PGDATA/stackpad_wal/$1\"".into(),
        (Engine::Postgres, "wal_remove") => "exec rm -f \"$PGDATA/stackpad_wal/$1\"".into(),
        (Engine::Postgres, "wal_switch") => format!(
            "set -e; p=\"psql -X -q -tA --no-password {PG} -v ON_ERROR_STOP=1\"; \
             $p -c 'SELECT pg_current_xact_id()' >/dev/null; \
             n=$($p -c 'SELECT pg_walfile_name(pg_switch_wal())'); i=0; \
             while [ ! -f \"$PGDATA/stackpad_wal/$n\" ]; do i=$((i+1)); \
             [ $i -lt 600 ] || {{ echo \"segment $n not archived within 60 s\" >&2; exit 1; }}; sleep 0.1; done; \
             echo \"$n\""
        ),
        (Engine::Postgres, "stage_base") => format!(
            "set -e; {STAGE}; rm -rf \"$s\"; mkdir -p \"$s\"; tar -x -f - -C \"$s\"; \
             rm -rf \"$s/stackpad_wal\" \"$s/stackpad_restore\" \"$s/stackpad_restore_wal\" \"$s/postmaster.pid\" \
             \"$s/stackpad_ready\" \"$s/recovery.signal\" \"$s/standby.signal\" \"$s/stackpad_recovery_target\"; \
             [ -s \"$s/PG_VERSION\" ] || {{ echo 'not a base backup (no PG_VERSION)' >&2; exit 1; }}; \
             mkdir \"$s/stackpad_restore_wal\"; chown -R postgres:postgres \"$s\"; chmod 700 \"$s\""
        ),
        (Engine::Postgres, "stage_wal") => format!(
            "set -e; {STAGE}; [ -d \"$s/stackpad_restore_wal\" ] || {{ echo 'no base backup is staged' >&2; exit 1; }}; \
             cat > \"$s/stackpad_restore_wal/$1.tmp\"; chown postgres:postgres \"$s/stackpad_restore_wal/$1.tmp\"; \
             mv \"$s/stackpad_restore_wal/$1.tmp\" \"$s/stackpad_restore_wal/$1\""
        ),
        (Engine::Postgres, "stage_recover") => format!(
            "set -e; {STAGE}; [ -s \"$s/PG_VERSION\" ] || {{ echo 'no base backup is staged' >&2; exit 1; }}; \
             printf '%s\\n' \"$1\" > \"$s/stackpad_recovery_target\"; : > \"$s/recovery.signal\"; \
             chown postgres:postgres \"$s/stackpad_recovery_target\" \"$s/recovery.signal\"; : > \"$s/stackpad_ready\""
        ),
        (Engine::Postgres, _) => format!(
            "exec pg_restore --clean --if-exists --no-owner --exit-on-error --single-transaction --no-password {PG}"
        ),
        (Engine::Mariadb, "dump") => format!(
            "exec mariadb-dump --single-transaction --routines --triggers --events {MARIA} \"$MARIADB_DATABASE\""
        ),
        // Every base table's exact row count (one statement built from the catalogue, each
        // name quoted with its backticks doubled), then `tables`, `rows` and `table <name>
        // <rows>` lines: control compares the last with the rows counted in the dump.
        (Engine::Mariadb, "check") => format!(
            "set -e; m() {{ mariadb {MARIA} -N -B \"$MARIADB_DATABASE\" \"$@\"; }}; \
             u=$(m -r -e \"SET SESSION group_concat_max_len = 4294967295; \
             SELECT IFNULL(GROUP_CONCAT(CONCAT('SELECT ', QUOTE(table_name), ' AS n, COUNT(*) AS c FROM ', \
             CHAR(96), REPLACE(table_name, CHAR(96), CONCAT(CHAR(96), CHAR(96))), CHAR(96)) SEPARATOR ' UNION ALL '), \
             'SELECT CAST(NULL AS CHAR(64)) AS n, 0 AS c FROM DUAL WHERE 1 = 0') \
             FROM information_schema.tables WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'\"); \
             m -e \"CREATE TEMPORARY TABLE stackpad_counts AS $u; \
             SELECT CONCAT('tables ', COUNT(*)) FROM stackpad_counts; \
             SELECT CONCAT('rows ', IFNULL(SUM(c), 0)) FROM stackpad_counts; \
             SELECT CONCAT('table ', n, ' ', c) FROM stackpad_counts ORDER BY n\""
        ),
        (Engine::Mariadb, _) => format!(
            "set -e; {{ printf 'DROP DATABASE IF EXISTS `%s`; CREATE DATABASE `%s`; USE `%s`;\\n' \
             \"$MARIADB_DATABASE\" \"$MARIADB_DATABASE\" \"$MARIADB_DATABASE\"; cat; }} | mariadb {MARIA}"
        ),
        // A replica's sync waits `repl-diskless-sync-delay` (5 s) for more replicas: not here.
        (Engine::Redis, "dump") => "export REDISCLI_AUTH=\"$REDIS_PASSWORD\"; \
             redis-cli -h 127.0.0.1 --no-auth-warning config set repl-diskless-sync-delay 0 >/dev/null; \
             exec redis-cli -h 127.0.0.1 --no-auth-warning --rdb -"
            .into(),
        (Engine::Redis, "check") => "export REDISCLI_AUTH=\"$REDIS_PASSWORD\"; \
             printf 'keys %s\\n' \"$(redis-cli -h 127.0.0.1 --no-auth-warning dbsize)\""
            .into(),
        (Engine::Redis, _) => "set -e; d=\"${REDIS_DATA:-/var/lib/redis}\"; \
             cat > \"$d/restore.rdb\"; redis-check-rdb \"$d/restore.rdb\" >&2; \
             chown redis:redis \"$d/restore.rdb\"; export REDISCLI_AUTH=\"$REDIS_PASSWORD\"; \
             redis-cli -h 127.0.0.1 --no-auth-warning config set save '' >/dev/null; \
             redis-cli -h 127.0.0.1 --no-auth-warning config set appendonly no >/dev/null; \
             mv \"$d/restore.rdb\" \"$d/dump.rdb\""
            .into(),
    }
}

fn argv(engine: Engine, what: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script(engine, what)]
}

/// The script's argv with `$1` set to `arg` (checked by the caller: a WAL name or a time).
fn argv_with(engine: Engine, what: &str, arg: &str) -> Vec<String> {
    let mut v = argv(engine, what);
    v.push("sh".into());
    v.push(arg.into());
    v
}

/// The operations of continuous archiving exist for PostgreSQL only.
fn postgres_only(engine: Engine, what: &'static str) -> Result<(), DumpError> {
    if engine == Engine::Postgres {
        Ok(())
    } else {
        Err(DumpError::Invalid {
            field: "engine",
            reason: format!("{what} is for postgres, not {}", engine.name()),
        })
    }
}

fn checked_wal_name(name: &str) -> Result<&str, DumpError> {
    if wal_name_ok(name) {
        Ok(name)
    } else {
        Err(DumpError::Invalid {
            field: "name",
            reason: format!(
                "{:?} is not a WAL segment, timeline history or backup label name",
                name.chars().take(64).collect::<String>()
            ),
        })
    }
}

/// The last lines of a command's stderr, for an error or a timeline (at most 500 characters).
pub fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(3);
    let joined = lines[start..].join(" | ");
    joined.chars().take(500).collect()
}

/// A running dump: read its stdout, then [`RunningDump::finish`].
#[derive(Debug)]
pub struct RunningDump {
    engine: Engine,
    what: &'static str,
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
    stdout: Option<tokio::process::ChildStdout>,
}

impl RunningDump {
    /// The command's stdout, in blocking mode (for [`pump`] on a blocking thread); once.
    pub fn take_output(&mut self) -> std::io::Result<std::fs::File> {
        let out = self
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("the dump's output was taken already"))?;
        Ok(std::fs::File::from(out.into_owned_fd()?))
    }

    /// Kills the command (its reader went away); [`RunningDump::finish`] then reports it.
    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Waits for the command; `Ok` only when it exited 0.
    pub async fn finish(mut self) -> Result<(), DumpError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| DumpError::Exec(format!("waiting for the dump: {e}")))?;
        let stderr = self.stderr.await.unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(DumpError::Command {
                engine: self.engine,
                what: self.what,
                reason: format!("{status}: {}", tail(&stderr)),
            })
        }
    }
}

async fn read_all(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = r.read_to_end(&mut buf).await;
    buf
}

impl Agent {
    fn running_pid(&self, container_id: &str) -> Result<u32, DumpError> {
        let status = self
            .status(container_id)
            .map_err(|_| DumpError::NotFound(container_id.to_owned()))?;
        if status.pid == 0 || !matches!(status.state, State::Healthy | State::Unhealthy) {
            return Err(DumpError::NotRunning {
                container_id: container_id.to_owned(),
                state: status.state.name().to_owned(),
            });
        }
        Ok(status.pid)
    }

    /// Starts the engine's dump (or check) in the container; its stdout is the dump.
    pub async fn engine_dump(
        &self,
        container_id: &str,
        engine: Engine,
        command: DumpCommand,
    ) -> Result<RunningDump, DumpError> {
        let (what, args) = match &command {
            DumpCommand::Dump => ("dump", argv(engine, "dump")),
            DumpCommand::Check => ("check", argv(engine, "check")),
            DumpCommand::BaseBackup => {
                postgres_only(engine, "a base backup")?;
                ("base backup", argv(engine, "base"))
            }
            DumpCommand::WalList => {
                postgres_only(engine, "the WAL archive")?;
                ("wal list", argv(engine, "wal_list"))
            }
            DumpCommand::WalRead(name) => {
                postgres_only(engine, "the WAL archive")?;
                (
                    "wal read",
                    argv_with(engine, "wal_read", checked_wal_name(name)?),
                )
            }
            DumpCommand::WalRemove(name) => {
                postgres_only(engine, "the WAL archive")?;
                (
                    "wal remove",
                    argv_with(engine, "wal_remove", checked_wal_name(name)?),
                )
            }
            DumpCommand::WalSwitch => {
                postgres_only(engine, "a WAL switch")?;
                ("wal switch", argv(engine, "wal_switch"))
            }
        };
        let pid = self.running_pid(container_id)?;
        let mut cmd = super::exec::nsenter(self.containerd(), container_id, pid, &args)
            .await
            .map_err(DumpError::Exec)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| DumpError::Exec(format!("cannot run nsenter: {e}")))?;
        let stdout = child.stdout.take().expect("piped stdout");
        enlarge_pipe(&stdout, container_id);
        let stderr = tokio::spawn(read_all(child.stderr.take().expect("piped stderr")));
        tracing::info!(container_id, ?engine, ?command, what, "engine dump started");
        Ok(RunningDump {
            engine,
            what,
            child,
            stderr,
            stdout: Some(stdout),
        })
    }

    /// Where uploads for [`Agent::engine_load`] are spooled.
    pub fn spool_path(&self, container_id: &str) -> PathBuf {
        self.config
            .state_dir
            .join("engine-loads")
            .join(format!("{container_id}-{}.dump", uuid_like()))
    }

    /// Feeds the spooled dump `file` to the engine in the container (see the module doc).
    /// Returns the restore's stderr tail (warnings).
    pub async fn engine_load(
        &self,
        container_id: &str,
        engine: Engine,
        file: &Path,
    ) -> Result<String, DumpError> {
        self.engine_load_kind(container_id, engine, &LoadKind::Dump, file)
            .await
    }

    /// [`Agent::engine_load`] for every [`LoadKind`].
    pub async fn engine_load_kind(
        &self,
        container_id: &str,
        engine: Engine,
        kind: &LoadKind,
        file: &Path,
    ) -> Result<String, DumpError> {
        let args = match kind {
            LoadKind::Dump => argv(engine, "load"),
            LoadKind::PgBase => {
                postgres_only(engine, "a base backup")?;
                argv(engine, "stage_base")
            }
            LoadKind::PgWal(name) => {
                postgres_only(engine, "a WAL file")?;
                argv_with(engine, "stage_wal", checked_wal_name(name)?)
            }
            LoadKind::PgRecover(time) => {
                postgres_only(engine, "a point-in-time recovery")?;
                if !recovery_target_ok(time) {
                    return Err(DumpError::Invalid {
                        field: "recovery_target_time",
                        reason: format!(
                            "{:?} is not YYYY-MM-DD HH:MM:SS[.ffffff]+00",
                            time.chars().take(64).collect::<String>()
                        ),
                    });
                }
                argv_with(engine, "stage_recover", time)
            }
        };
        let pid = self.running_pid(container_id)?;
        let generation = self.status(container_id).map(|s| s.generation).unwrap_or(0);
        let spool_err = |source| DumpError::Spool {
            path: file.display().to_string(),
            source,
        };
        if engine == Engine::Mariadb && *kind == LoadKind::Dump {
            // `mariadb` is not one transaction: refuse a dump that is not whole before the
            // database is dropped (mariadb-dump writes a header and a last line).
            whole_mariadb_dump(file).map_err(|reason| DumpError::Command {
                engine,
                what: "restore",
                reason,
            })?;
        }
        let input = std::fs::File::open(file).map_err(spool_err)?;
        let mut cmd = super::exec::nsenter(self.containerd(), container_id, pid, &args)
            .await
            .map_err(DumpError::Exec)?;
        cmd.stdin(Stdio::from(input))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = cmd
            .spawn()
            .map_err(|e| DumpError::Exec(format!("cannot run nsenter: {e}")))?
            .wait_with_output()
            .await
            .map_err(|e| DumpError::Exec(format!("waiting for the restore: {e}")))?;
        let detail = tail(&out.stderr);
        if !out.status.success() {
            return Err(DumpError::Command {
                engine,
                what: "restore",
                reason: format!("{}: {detail}", out.status),
            });
        }
        if let LoadKind::PgRecover(time) = kind {
            // The staging is ready: the entrypoint swaps it in and replays the WAL to the
            // target before the server starts (a large replay takes its time).
            task::kill(self.containerd(), container_id, 9)
                .await
                .map_err(|e| DumpError::Exec(format!("cannot restart postgres: {e}")))?;
            self.wait_restarted(container_id, generation, Duration::from_secs(30 * 60))
                .await?;
            tracing::info!(container_id, time, "postgres recovered to a point in time");
            return Ok(format!("recovered to {time}"));
        }
        if engine == Engine::Redis && *kind == LoadKind::Dump {
            // Redis reads dump.rdb at start: kill it (no save on SIGKILL), the restart policy
            // starts a new task, which loads the file; wait for its health.
            task::kill(self.containerd(), container_id, 9)
                .await
                .map_err(|e| DumpError::Exec(format!("cannot restart redis: {e}")))?;
            self.wait_restarted(container_id, generation, Duration::from_secs(60))
                .await?;
        }
        tracing::info!(container_id, ?engine, "engine load done");
        Ok(detail)
    }

    async fn wait_restarted(
        &self,
        container_id: &str,
        generation: u64,
        limit: Duration,
    ) -> Result<(), DumpError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let s = self
                .status(container_id)
                .map_err(|_| DumpError::NotFound(container_id.to_owned()))?;
            if s.generation != generation && s.state == State::Healthy {
                return Ok(());
            }
            if s.state == State::Failed {
                return Err(DumpError::NotRunning {
                    container_id: container_id.to_owned(),
                    state: format!("failed after the restore's restart: {}", s.message),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DumpError::Exec(format!(
                    "the engine did not become healthy within {} s after the restore (state {})",
                    limit.as_secs(),
                    s.state.name()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A mariadb-dump file has its header at the start and ends with its `-- Dump completed` line.
fn whole_mariadb_dump(file: &Path) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    // 10.11.8+ writes a sandbox-mode comment before the header.
    let mut head = [0u8; 200];
    let n = f.read(&mut head).map_err(|e| e.to_string())?;
    if !String::from_utf8_lossy(&head[..n]).contains("-- MariaDB dump") {
        return Err("not a mariadb-dump file (its header is missing)".into());
    }
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(256)))
        .map_err(|e| e.to_string())?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).map_err(|e| e.to_string())?;
    if !String::from_utf8_lossy(&tail).contains("-- Dump completed") {
        return Err("the mariadb-dump file is cut short (no `-- Dump completed` line)".into());
    }
    Ok(())
}

/// A PostgreSQL load fed as its upload arrives ([`Agent::engine_load_stream`]): write the
/// pieces, then [`StreamingLoad::finish`]. Dropped before that, it kills pg_restore, whose
/// single transaction then restores nothing.
#[derive(Debug)]
pub struct StreamingLoad {
    engine: Engine,
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stderr: Option<tokio::task::JoinHandle<Vec<u8>>>,
}

impl StreamingLoad {
    /// Feeds `data` to the engine's restore; when the restore stopped reading (it failed),
    /// its exit and stderr.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), DumpError> {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().expect("stdin until finish");
        if let Err(e) = stdin.write_all(data).await {
            self.stdin = None;
            let ended = self.wait().await;
            return Err(ended.err().unwrap_or_else(|| DumpError::Command {
                engine: self.engine,
                what: "restore",
                reason: format!("it stopped reading the dump ({e}) and exited 0"),
            }));
        }
        Ok(())
    }

    /// The upload is whole: ends the restore's input and waits for it; its stderr tail.
    pub async fn finish(mut self) -> Result<String, DumpError> {
        self.stdin = None;
        self.wait().await
    }

    async fn wait(&mut self) -> Result<String, DumpError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| DumpError::Exec(format!("waiting for the restore: {e}")))?;
        let stderr = match self.stderr.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let detail = tail(&stderr);
        if status.success() {
            Ok(detail)
        } else {
            Err(DumpError::Command {
                engine: self.engine,
                what: "restore",
                reason: format!("{status}: {detail}"),
            })
        }
    }
}

impl Agent {
    /// Starts pg_restore in the container reading the dump from a pipe (a target with
    /// nothing to keep; see the module doc). PostgreSQL only: the other engines' loads need
    /// the whole file first.
    pub async fn engine_load_stream(
        &self,
        container_id: &str,
        engine: Engine,
    ) -> Result<StreamingLoad, DumpError> {
        postgres_only(engine, "a streamed load")?;
        let pid = self.running_pid(container_id)?;
        let mut cmd =
            super::exec::nsenter(self.containerd(), container_id, pid, &argv(engine, "load"))
                .await
                .map_err(DumpError::Exec)?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| DumpError::Exec(format!("cannot run nsenter: {e}")))?;
        let stdin = child.stdin.take();
        if let Some(pipe) = &stdin {
            enlarge_pipe(pipe, container_id);
        }
        let stderr = tokio::spawn(read_all(child.stderr.take().expect("piped stderr")));
        tracing::info!(container_id, ?engine, "engine load streamed");
        Ok(StreamingLoad {
            engine,
            child,
            stdin,
            stderr: Some(stderr),
        })
    }
}

/// A unique suffix for spool files (time and a counter: one agent process writes them).
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        super::record::now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates the spool file for one upload.
pub async fn spool_create(path: &Path) -> Result<tokio::fs::File, DumpError> {
    let err = |source| DumpError::Spool {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(err)?;
    }
    let mut o = tokio::fs::OpenOptions::new();
    o.write(true).create_new(true).mode(0o600);
    o.open(path).await.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_fixed_per_engine_and_operation() {
        assert!(script(Engine::Postgres, "dump").contains("pg_dump -Fc -Z0"));
        assert!(script(Engine::Mariadb, "dump").contains("--single-transaction"));
        assert!(script(Engine::Redis, "dump").contains("--rdb -"));
        assert!(script(Engine::Postgres, "load").contains("pg_restore --clean --if-exists"));
        assert!(script(Engine::Redis, "load").contains("redis-check-rdb"));
        assert!(script(Engine::Postgres, "base").contains("pg_basebackup"));
        assert!(script(Engine::Postgres, "wal_read").contains("stackpad_wal/$1"));
    }

    #[test]
    fn wal_names_are_only_archive_files() {
        assert!(wal_name_ok("000000010000000000000003"));
        assert!(wal_name_ok("00000002.history"));
        assert!(wal_name_ok("000000010000000000000002.00000028.backup"));
        for bad in [
            "",
            "../../etc/passwd",
            "00000001000000000000000",
            "000000010000000000000003.tmp",
            "00000001000000000000000g",
            "0000000100000000000000a3",
            "00000002.history/..",
            "000000010000000000000003 x",
        ] {
            assert!(!wal_name_ok(bad), "{bad}");
        }
    }

    #[test]
    fn recovery_targets_are_one_utc_form() {
        assert!(recovery_target_ok("2026-12-07 02:38:34+00"));
        assert!(recovery_target_ok("2026-12-07 02:38:34.325269+00"));
        for bad in [
            "2026-12-07T02:38:34Z",
            "2026-12-07 02:38:34",
            "2026-12-07 02:38:34.+00",
            "2026-12-07 02:38:34.1234567+00",
            "2026-12-07 02:38:34'; drop+00",
            "now",
        ] {
            assert!(!recovery_target_ok(bad), "{bad}");
        }
    }

    /// Bytes that compress, but not to nothing.
    fn output(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| {
                if i % 7 == 0 {
                    (i / 7 % 251) as u8
                } else {
                    b'x'
                }
            })
            .collect()
    }

    /// What [`pump`] sends of `out`, piece by piece, and what it returns.
    fn pumped(out: &[u8], compression: Compression) -> (Vec<Vec<u8>>, Option<u64>) {
        let mut pieces = Vec::new();
        let raw = pump(out, compression, |p| {
            pieces.push(p);
            true
        })
        .unwrap();
        (pieces, raw)
    }

    #[test]
    fn pump_sends_whole_pieces_plain_or_as_one_zstd_stream() {
        let out = output(3 * CHUNK + 123);
        let (plain, raw) = pumped(&out, Compression::None);
        assert_eq!(raw, Some(out.len() as u64));
        assert_eq!(
            plain.iter().map(Vec::len).collect::<Vec<_>>(),
            [CHUNK, CHUNK, CHUNK, 123]
        );
        let (zst, raw) = pumped(&out, Compression::Zstd);
        assert_eq!(raw, Some(out.len() as u64));
        let zst = zst.concat();
        assert!(zst.len() < out.len() / 2);
        assert_eq!(zstd::decode_all(&zst[..]).unwrap(), out);
        // An empty output is still one zstd stream; a receiver gone stops the pump.
        let (empty, _) = pumped(b"", Compression::Zstd);
        assert!(zstd::decode_all(&empty.concat()[..]).unwrap().is_empty());
        assert_eq!(pump(&out[..], Compression::None, |_| false).unwrap(), None);
    }

    #[test]
    fn no_piece_is_larger_than_two_chunks() {
        let mut pieces = Vec::new();
        assert!(send_bounded(vec![7; 5 * CHUNK + 1], &mut |p| {
            pieces.push(p.len());
            true
        }));
        assert_eq!(pieces, [CHUNK, CHUNK, CHUNK, CHUNK, CHUNK, 1]);
        // Barely compressible output through zstd's workers.
        let mut x = 0x9e37_79b9u32;
        let noise: Vec<u8> = (0..12 * CHUNK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let (zst, _) = pumped(&noise, Compression::Zstd);
        assert!(
            zst.iter().all(|p| p.len() <= 2 * CHUNK),
            "{:?}",
            zst.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!(zstd::decode_all(&zst.concat()[..]).unwrap(), noise);
    }

    fn inflated(pieces: Vec<Result<Vec<u8>, String>>) -> (Vec<u8>, Option<String>) {
        let (in_tx, mut in_rx) = tokio::sync::mpsc::channel(pieces.len() + 1);
        for p in pieces {
            in_tx.try_send(p).unwrap();
        }
        drop(in_tx);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(1024);
        inflate(&mut in_rx, &out_tx);
        drop(out_tx);
        let mut data = Vec::new();
        while let Ok(m) = out_rx.try_recv() {
            match m {
                Inflated::Data(d) => data.extend(d),
                Inflated::End(_) => return (data, None),
                Inflated::Broken(e) => return (data, Some(format!("broken: {e}"))),
                Inflated::Corrupt(e) => return (data, Some(e)),
            }
        }
        (data, Some("no end".into()))
    }

    #[test]
    fn inflate_needs_the_whole_zstd_stream() {
        let out = output(2 * CHUNK + 5);
        let zst = zstd::encode_all(&out[..], 3).unwrap();
        let pieces = |z: &[u8]| z.chunks(50_000).map(|c| Ok(c.to_vec())).collect();
        assert_eq!(inflated(pieces(&zst)), (out.clone(), None));
        let (_, e) = inflated(pieces(&zst[..zst.len() - 3]));
        assert!(e.unwrap().contains("cut short"));
        let mut bad = zst.clone();
        bad[0] ^= 0xff;
        let (data, e) = inflated(pieces(&bad));
        assert!(data.is_empty());
        assert!(e.unwrap().contains("does not decompress"));
        let (_, e) = inflated(vec![Ok(zst[..10].to_vec()), Err("cut".into())]);
        assert_eq!(e.unwrap(), "broken: cut");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\n\nb\nc\nd\n"), "b | c | d");
        assert_eq!(tail(b""), "");
    }
}
