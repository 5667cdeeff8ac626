//! Build logs: every line a build prints, stored in ClickHouse (`logstore::build_logs`) while
//! the pipeline watches the build, and read back by `GET /deployments/{id}/build-logs`.
//!
//! The writer is a [`Recorder`] per build: lines come from the build client numbered by their
//! place in the build's log (a watch taken again replays from line 1, and lines already seen
//! are skipped; the table keeps one row per number anyway), known secret values are replaced
//! by [`REDACTED`] (`tenant::redact`) before anything is kept, rows are inserted in batches (every
//! [`FLUSH_EVERY`] or [`BATCH_LINES`] lines, and once more when the build ends, before the
//! pipeline records the end, so a follower that sees the deployment past `building` has every
//! line), and the last lines are kept in memory for a failed build's message. Without a
//! ClickHouse the recorder still keeps that tail. Reads are scoped by organization and
//! deployment and paged by line number.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use logstore::build_logs::{self, BuildLogRow, columns as col};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

pub use tenant::redact::{REDACTED, Redactor};

use crate::clients::BuildLogLine;

/// How often a running build's lines are inserted.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Lines that make an insert before [`FLUSH_EVERY`].
pub const BATCH_LINES: usize = 1000;
/// Lines kept back when ClickHouse does not take them; older ones are dropped (and counted).
const MAX_PENDING: usize = 100_000;
/// Lines a failed build's message shows.
pub const TAIL_LINES: usize = 15;
/// The step buildd reports how a build ended under.
const RESULT_STEP: &str = "result";
/// The longest line kept (bytes); longer ones are cut at a character boundary.
const MAX_LINE: usize = 16 * 1024;

/// Who a build's lines belong to (stamped on every row).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildLabels {
    pub organization_id: String,
    pub project_id: String,
    pub environment_id: String,
    pub service_id: String,
    pub deployment_id: String,
    pub build_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildLogError {
    #[error("build log store (ClickHouse at {url}): {source}")]
    ClickHouse {
        url: String,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("build log store (ClickHouse at {url}): {source}")]
    Schema {
        url: String,
        #[source]
        source: logstore::SchemaError,
    },
}

/// The `build_logs` table: the pipeline writes it, the API reads it. Cheap to clone.
#[derive(Clone)]
pub struct BuildLogStore {
    client: clickhouse::Client,
    url: String,
    database: String,
    retention_days: u16,
    schema: Arc<OnceCell<()>>,
}

impl std::fmt::Debug for BuildLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildLogStore")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("retention_days", &self.retention_days)
            .finish()
    }
}

/// One line as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct BuildLogEntry {
    /// Place in the build's log, from 1; `?after=` takes the lines after it.
    pub line_number: u32,
    pub timestamp_ns: i64,
    pub step: String,
    pub stream: u8,
    pub line: String,
}

/// A page of a deployment's build log, oldest line first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Lines after this number (0 = from the first).
    pub after: u32,
    /// 1..=1000.
    pub limit: u32,
    /// The last `limit` lines instead (`after` still bounds them from below).
    pub tail: bool,
}

impl BuildLogStore {
    pub fn new(url: &str, database: &str, retention_days: u16) -> Self {
        Self {
            client: clickhouse::Client::default()
                .with_url(url)
                .with_validation(false),
            url: url.to_owned(),
            database: database.to_owned(),
            retention_days,
            schema: Arc::new(OnceCell::new()),
        }
    }

    fn error(&self, source: clickhouse::error::Error) -> BuildLogError {
        BuildLogError::ClickHouse {
            url: self.url.clone(),
            source,
        }
    }

    /// Creates the table once per process (the pipeline writes it first).
    async fn ensure_schema(&self) -> Result<(), BuildLogError> {
        self.schema
            .get_or_try_init(|| async {
                build_logs::ensure_schema(&self.client, &self.database)
                    .await
                    .map_err(|source| BuildLogError::Schema {
                        url: self.url.clone(),
                        source,
                    })
            })
            .await
            .map(|_| ())
    }

    async fn insert(&self, rows: &[BuildLogRow]) -> Result<(), BuildLogError> {
        self.ensure_schema().await?;
        let mut insert = self
            .client
            .clone()
            .with_database(&self.database)
            .insert::<BuildLogRow>(build_logs::TABLE)
            .await
            .map_err(|e| self.error(e))?;
        for row in rows {
            insert.write(row).await.map_err(|e| self.error(e))?;
        }
        insert.end().await.map_err(|e| self.error(e))
    }

    /// A page of `deployment_id`'s build log (the caller checked it is `organization_id`'s).
    pub async fn page(
        &self,
        organization_id: &str,
        deployment_id: &str,
        page: PageRequest,
    ) -> Result<Vec<BuildLogEntry>, BuildLogError> {
        let sql = page_sql(&self.database, page);
        let result = self
            .client
            .query(&sql)
            .bind(organization_id)
            .bind(deployment_id)
            .bind(page.after)
            .fetch_all::<BuildLogEntry>()
            .await;
        let mut lines = match result {
            Ok(lines) => lines,
            // Nothing was ever written: no table yet reads as no lines.
            Err(clickhouse::error::Error::BadResponse(m))
                if m.contains("doesn't exist")
                    || m.contains("UNKNOWN_TABLE")
                    || m.contains("UNKNOWN_DATABASE") =>
            {
                Vec::new()
            }
            Err(e) => return Err(self.error(e)),
        };
        if page.tail {
            lines.reverse();
        }
        Ok(lines)
    }
}

/// The page query; binds: organization, deployment, `after` (pure, unit-tested).
fn page_sql(database: &str, page: PageRequest) -> String {
    let order = if page.tail { "DESC" } else { "ASC" };
    format!(
        "SELECT {n}, {ts} AS timestamp_ns, {step}, {stream}, {line} FROM {database}.{table} \
         WHERE {org} = ? AND {dep} = ? AND {n} > ? \
         ORDER BY {n} {order} LIMIT 1 BY {n} LIMIT {limit}",
        n = col::LINE_NUMBER,
        ts = col::TS_NS,
        step = col::STEP,
        stream = col::STREAM,
        line = col::LINE,
        table = build_logs::TABLE,
        org = col::ORGANIZATION_ID,
        dep = col::DEPLOYMENT_ID,
        limit = page.limit.clamp(1, 1000),
    )
}

/// Days since 1970-01-01 of a time in nanoseconds.
fn date_of(ts_ns: i64) -> u16 {
    u16::try_from(ts_ns.max(0) / 86_400_000_000_000).unwrap_or(u16::MAX)
}

fn cut(line: &str) -> &str {
    if line.len() <= MAX_LINE {
        return line;
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// One build's lines on their way to the store; see the module's description.
#[derive(Debug)]
pub struct Recorder {
    store: Option<BuildLogStore>,
    labels: BuildLabels,
    redactor: Redactor,
    /// The next line number not seen yet.
    next: u32,
    pending: Vec<BuildLogRow>,
    tail: VecDeque<(String, String)>,
    dropped: u64,
}

impl Recorder {
    /// `store` `None`: nothing is stored, the tail is still kept.
    pub fn new(store: Option<BuildLogStore>, labels: BuildLabels, redactor: Redactor) -> Self {
        Self {
            store,
            labels,
            redactor,
            next: 1,
            pending: Vec::new(),
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Takes a line (redacted here); a number already seen (a replay) is skipped.
    pub fn push(&mut self, line: BuildLogLine) {
        if line.number < self.next {
            return;
        }
        self.next = line.number + 1;
        let text = self.redactor.redact(cut(&line.line)).into_owned();
        let step = self.redactor.redact(&line.step).into_owned();
        // `result` repeats the failure the message already starts with.
        if line.step != RESULT_STEP {
            self.tail.push_back((step.clone(), text.clone()));
            if self.tail.len() > TAIL_LINES {
                self.tail.pop_front();
            }
        }
        if let Some(store) = &self.store {
            if self.pending.len() >= MAX_PENDING {
                self.pending.remove(0);
                self.dropped += 1;
            }
            self.pending.push(BuildLogRow {
                date: date_of(line.timestamp_ns),
                ts_ns: line.timestamp_ns,
                organization_id: self.labels.organization_id.clone(),
                project_id: self.labels.project_id.clone(),
                environment_id: self.labels.environment_id.clone(),
                service_id: self.labels.service_id.clone(),
                deployment_id: self.labels.deployment_id.clone(),
                build_id: self.labels.build_id.clone(),
                line_number: line.number,
                step,
                stream: line.stream,
                line: text,
                retention_days: store.retention_days,
            });
        }
    }

    /// Enough lines wait for an insert before the next tick.
    pub fn due(&self) -> bool {
        self.pending.len() >= BATCH_LINES
    }

    /// Inserts the waiting lines. A failure keeps them for the next flush (bounded) and is
    /// logged: the build goes on without its log rather than fail for it.
    pub async fn flush(&mut self) {
        let Some(store) = &self.store else { return };
        if self.pending.is_empty() {
            return;
        }
        match store.insert(&self.pending).await {
            Ok(()) => self.pending.clear(),
            Err(e) => tracing::warn!(
                deployment = %self.labels.deployment_id,
                lines = self.pending.len(),
                error = %e,
                "storing build log lines failed; retrying with the next batch"
            ),
        }
        if self.dropped > 0 {
            tracing::warn!(deployment = %self.labels.deployment_id, dropped = self.dropped, "build log lines dropped (the store did not take them)");
            self.dropped = 0;
        }
    }

    /// The last lines (redacted) as a failed build's message shows them: `step | line`, the
    /// step named once per run of lines from it; empty when the build printed nothing.
    pub fn tail(&self) -> String {
        let mut out = String::new();
        let mut last_step: Option<&str> = None;
        for (step, line) in &self.tail {
            if last_step != Some(step.as_str()) {
                out.push_str(&format!("\n{step}:"));
                last_step = Some(step);
            }
            out.push_str("\n  ");
            out.push_str(line);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(number: u32, step: &str, text: &str) -> BuildLogLine {
        BuildLogLine {
            number,
            timestamp_ns: 1_790_000_000_000_000_000,
            step: step.into(),
            stream: build_logs::STREAM_STDOUT,
            line: text.into(),
        }
    }

    #[test]
    fn the_recorder_skips_replayed_lines_redacts_and_keeps_the_tail() {
        let mut rec = Recorder::new(None, BuildLabels::default(), Redactor::new(["s3cr3t!"]));
        for n in 1..=20 {
            rec.push(line(n, "[build 1/2] RUN make", &format!("line {n}")));
        }
        // A watch taken again replays from line 1: nothing twice.
        for n in 1..=21 {
            rec.push(line(
                n,
                "[build 2/2] RUN test",
                &format!("line {n} s3cr3t!"),
            ));
        }
        // How the build ended is the message itself: not repeated in the tail.
        rec.push(line(22, "result", "build failed"));
        let tail = rec.tail();
        assert!(
            tail.starts_with("\n[build 1/2] RUN make:\n  line 7\n"),
            "{tail}"
        );
        assert!(
            tail.ends_with("line 20\n[build 2/2] RUN test:\n  line 21 [redacted]"),
            "{tail}"
        );
        assert_eq!(tail.matches("\n  ").count(), TAIL_LINES);
    }

    #[test]
    fn pages_are_scoped_ordered_and_bounded() {
        let sql = page_sql(
            "logs",
            PageRequest {
                after: 5,
                limit: 5000,
                tail: false,
            },
        );
        assert_eq!(
            sql,
            "SELECT line_number, ts_ns AS timestamp_ns, step, stream, line FROM logs.build_logs \
             WHERE organization_id = ? AND deployment_id = ? AND line_number > ? \
             ORDER BY line_number ASC LIMIT 1 BY line_number LIMIT 1000"
        );
        let tail = page_sql(
            "logs",
            PageRequest {
                after: 0,
                limit: 20,
                tail: true,
            },
        );
        assert!(tail.ends_with("ORDER BY line_number DESC LIMIT 1 BY line_number LIMIT 20"));
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_LINE);
        let cut = cut(&long);
        assert!(cut.len() <= MAX_LINE && cut.len() > MAX_LINE - 2);
        assert_eq!(date_of(86_400_000_000_000 * 3 + 1), 3);
    }
}
