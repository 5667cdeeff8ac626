//! The managed engines' dump, check and load (#14 backups): Stackpad's fixed commands, run
//! inside a service's running container through the same `nsenter` exec as the engines'
//! probes ([`super::exec::nsenter`]). Nothing here takes a command from a caller: the caller
//! names an engine and one of these operations.
//!
//! - dump: `pg_dump -Fc` (one consistent snapshot), `mariadb-dump --single-transaction`,
//!   `redis-cli --rdb -` (the RDB the server produces for a replica); stdout is the dump.
//! - check: one `name value` line per fact (`tables`, `rows`, `keys`): what a verification
//!   restore is judged by.
//! - load: the dump is first spooled to a file of the agent (so an upload cut short changes
//!   nothing), then fed to `pg_restore --clean --if-exists --single-transaction`, to `mariadb`
//!   after the database is dropped and created again, or for Redis checked with
//!   `redis-check-rdb`, put in place of `dump.rdb` with snapshots turned off, and the container
//!   killed (SIGKILL, so Redis does not save over it): its restart policy starts it again and
//!   Redis loads the file. The load returns when the container is healthy again.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpCommand {
    Dump,
    Check,
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
}

/// Bytes read from the command's stdout per chunk.
pub const CHUNK: usize = 256 * 1024;

const PG: &str = "-h /run/postgresql -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\"";
const MARIA: &str = "-uroot -S /run/mysqld/mysqld.sock";

fn script(engine: Engine, what: &str) -> String {
    match (engine, what) {
        (Engine::Postgres, "dump") => format!("exec pg_dump -Fc --no-password {PG}"),
        (Engine::Postgres, "check") => format!(
            "exec psql -X -q -tA --no-password {PG} -v ON_ERROR_STOP=1 -c \"\
             SELECT 'tables ' || count(*) || chr(10) || 'rows ' || coalesce(sum((xpath('/row/c/text()', \
             query_to_xml(format('SELECT count(*) AS c FROM %I.%I', schemaname, tablename), false, true, '')))[1]::text::bigint), 0) \
             FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')\""
        ),
        (Engine::Postgres, _) => format!(
            "exec pg_restore --clean --if-exists --no-owner --exit-on-error --single-transaction --no-password {PG}"
        ),
        (Engine::Mariadb, "dump") => format!(
            "exec mariadb-dump --single-transaction --routines --triggers --events {MARIA} \"$MARIADB_DATABASE\""
        ),
        (Engine::Mariadb, "check") => format!(
            "exec mariadb {MARIA} -N -B -e \"SELECT CONCAT('tables ', count(*)) FROM information_schema.tables \
             WHERE table_schema = '$MARIADB_DATABASE'\""
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
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
    pub stdout: tokio::process::ChildStdout,
}

impl RunningDump {
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
                what: "dump",
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
        let pid = self.running_pid(container_id)?;
        let what = match command {
            DumpCommand::Dump => "dump",
            DumpCommand::Check => "check",
        };
        let mut cmd =
            super::exec::nsenter(self.containerd(), container_id, pid, &argv(engine, what))
                .await
                .map_err(DumpError::Exec)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| DumpError::Exec(format!("cannot run nsenter: {e}")))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = tokio::spawn(read_all(child.stderr.take().expect("piped stderr")));
        tracing::info!(container_id, ?engine, what, "engine dump started");
        Ok(RunningDump {
            engine,
            child,
            stderr,
            stdout,
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
        let pid = self.running_pid(container_id)?;
        let generation = self.status(container_id).map(|s| s.generation).unwrap_or(0);
        let spool_err = |source| DumpError::Spool {
            path: file.display().to_string(),
            source,
        };
        if engine == Engine::Mariadb {
            // `mariadb` is not one transaction: refuse a dump that is not whole before the
            // database is dropped (mariadb-dump writes a header and a last line).
            whole_mariadb_dump(file).map_err(|reason| DumpError::Command {
                engine,
                what: "restore",
                reason,
            })?;
        }
        let input = std::fs::File::open(file).map_err(spool_err)?;
        let mut cmd =
            super::exec::nsenter(self.containerd(), container_id, pid, &argv(engine, "load"))
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
        if engine == Engine::Redis {
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
                    "redis did not become healthy within {} s after the restore (state {})",
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
        assert!(script(Engine::Postgres, "dump").contains("pg_dump -Fc"));
        assert!(script(Engine::Mariadb, "dump").contains("--single-transaction"));
        assert!(script(Engine::Redis, "dump").contains("--rdb -"));
        assert!(script(Engine::Postgres, "load").contains("pg_restore --clean --if-exists"));
        assert!(script(Engine::Redis, "load").contains("redis-check-rdb"));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\n\nb\nc\nd\n"), "b | c | d");
        assert_eq!(tail(b""), "");
    }
}
