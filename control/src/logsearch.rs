//! Search over container logs in ClickHouse (written by the node agents' shippers, see
//! `runtime::logship`): text match, time range, stream and deployment filters, newest first,
//! with a cursor for the next page and for following live.
//!
//! Rows may be stored twice (a shipper retries a batch whose answer was lost); every query
//! reads one row per `line_id`. Every query is scoped by the caller's organization. Table and
//! column names come from the log store's contract (`logstore`). The same store holds the
//! node agents' resource samples, read by [`usage`].

pub mod usage;

use logstore::container_logs::{self, STREAM_STDERR, columns as col};
use serde::{Deserialize, Serialize};

/// A position in a service's log: lines strictly older (pages) or newer (follow) than it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub ts_ns: i64,
    pub line_id: u64,
}

impl Cursor {
    /// `<ts_ns>-<line_id>`, as handed to API clients.
    pub fn encode(self) -> String {
        format!("{}-{}", self.ts_ns, self.line_id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (ts, id) = text.split_once('-')?;
        Some(Self {
            ts_ns: ts.parse().ok()?,
            line_id: id.parse().ok()?,
        })
    }
}

/// What to look for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    pub organization_id: String,
    pub service_id: String,
    /// Case-insensitive substring of the line.
    pub text: Option<String>,
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    /// 1 stdout, 2 stderr.
    pub stream: Option<u8>,
    pub deployment_id: Option<String>,
    pub limit: u32,
}

/// One line as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub timestamp_ns: i64,
    pub stream: &'static str,
    pub deployment_id: String,
    pub container_id: String,
    /// The bytes as UTF-8, invalid sequences replaced.
    pub line: String,
    pub truncated: bool,
    pub cursor: String,
}

/// The columns a search reads, in [`Row`]'s order.
const ROW_COLUMNS: [&str; 7] = [
    col::TS_NS,
    col::LINE_ID,
    col::STREAM,
    col::DEPLOYMENT_ID,
    col::CONTAINER_ID,
    col::LINE,
    col::TRUNCATED,
];

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Row {
    ts_ns: i64,
    line_id: u64,
    stream: u8,
    deployment_id: String,
    container_id: String,
    #[serde(with = "serde_bytes")]
    line: Vec<u8>,
    truncated: u8,
}

impl From<Row> for LogLine {
    fn from(r: Row) -> Self {
        Self {
            timestamp_ns: r.ts_ns,
            stream: if r.stream == STREAM_STDERR {
                "stderr"
            } else {
                "stdout"
            },
            deployment_id: r.deployment_id,
            container_id: r.container_id,
            line: String::from_utf8_lossy(&r.line).into_owned(),
            truncated: r.truncated != 0,
            cursor: Cursor {
                ts_ns: r.ts_ns,
                line_id: r.line_id,
            }
            .encode(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogSearchError {
    #[error("log store (ClickHouse at {url}): {source}")]
    ClickHouse {
        url: String,
        #[source]
        source: clickhouse::error::Error,
    },
}

/// The log store.
#[derive(Clone)]
pub struct LogSearch {
    client: clickhouse::Client,
    url: String,
    database: String,
}

impl std::fmt::Debug for LogSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSearch")
            .field("url", &self.url)
            .field("database", &self.database)
            .finish()
    }
}

/// Which direction from the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Newest first, older than the cursor (search pages).
    Older,
    /// Oldest first, newer than the cursor (follow).
    Newer,
}

impl LogSearch {
    pub fn new(url: &str, database: &str) -> Self {
        Self {
            client: clickhouse::Client::default()
                .with_url(url)
                .with_validation(false),
            url: url.to_owned(),
            database: database.to_owned(),
        }
    }

    /// Lines matching `query` on the given side of `cursor`.
    pub async fn search(
        &self,
        query: &LogQuery,
        cursor: Option<Cursor>,
        direction: Direction,
    ) -> Result<Vec<LogLine>, LogSearchError> {
        let (sql, binds) = build_sql(&self.database, query, cursor, direction);
        match self.bound(&sql, binds).fetch_all::<Row>().await {
            Ok(rows) => Ok(rows.into_iter().map(LogLine::from).collect()),
            Err(e) => self.empty_if_missing(e),
        }
    }

    /// No row was ever written: the table does not exist yet, which reads as nothing.
    pub(crate) fn empty_if_missing<T>(
        &self,
        error: clickhouse::error::Error,
    ) -> Result<Vec<T>, LogSearchError> {
        match error {
            clickhouse::error::Error::BadResponse(m)
                if m.contains("doesn't exist")
                    || m.contains("UNKNOWN_TABLE")
                    || m.contains("UNKNOWN_DATABASE") =>
            {
                Ok(Vec::new())
            }
            source => Err(LogSearchError::ClickHouse {
                url: self.url.clone(),
                source,
            }),
        }
    }

    pub(crate) fn database(&self) -> &str {
        &self.database
    }
}

/// What a log query needs to know of its table: its name and the columns it is scoped and
/// paged by, as the table's contract in `logstore` names them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogTable {
    pub(crate) name: &'static str,
    pub(crate) organization_id: &'static str,
    pub(crate) service_id: &'static str,
    pub(crate) deployment_id: &'static str,
    pub(crate) ts_ns: &'static str,
    /// Equal ids are the same row (stored twice by a retried batch).
    pub(crate) row_id: &'static str,
}

pub(crate) const CONTAINER_LOGS: LogTable = LogTable {
    name: container_logs::TABLE,
    organization_id: col::ORGANIZATION_ID,
    service_id: col::SERVICE_ID,
    deployment_id: col::DEPLOYMENT_ID,
    ts_ns: col::TS_NS,
    row_id: col::LINE_ID,
};

/// A value bound to a `?` of a log query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
    UInt(u64),
}

/// The `WHERE` conditions of a log query (container or access logs) and their values in order.
#[derive(Debug, Default)]
pub(crate) struct Filters {
    conditions: Vec<String>,
    pub(crate) binds: Vec<Bind>,
}

impl Filters {
    /// What every log query of `table` is limited to: the caller's organization and the
    /// service, and the time range and deployment when given.
    pub(crate) fn scoped(
        table: &LogTable,
        organization_id: &str,
        service_id: &str,
        since_ns: Option<i64>,
        until_ns: Option<i64>,
        deployment_id: Option<&str>,
    ) -> Self {
        let mut f = Self::default();
        f.push(
            format!("{} = ?", table.organization_id),
            [Bind::Text(organization_id.to_owned())],
        );
        f.push(
            format!("{} = ?", table.service_id),
            [Bind::Text(service_id.to_owned())],
        );
        if let Some(since) = since_ns {
            f.push(format!("{} >= ?", table.ts_ns), [Bind::Int(since)]);
        }
        if let Some(until) = until_ns {
            f.push(format!("{} < ?", table.ts_ns), [Bind::Int(until)]);
        }
        if let Some(deployment) = deployment_id {
            f.push(
                format!("{} = ?", table.deployment_id),
                [Bind::Text(deployment.to_owned())],
            );
        }
        f
    }

    /// Rows of `table` strictly older (`<`) or newer (`>`) than `cursor`.
    pub(crate) fn push_cursor(&mut self, table: &LogTable, op: &str, cursor: Cursor) {
        self.push(
            format!("({}, {}) {op} (?, ?)", table.ts_ns, table.row_id),
            [Bind::Int(cursor.ts_ns), Bind::UInt(cursor.line_id)],
        );
    }

    pub(crate) fn push(
        &mut self,
        condition: impl Into<String>,
        binds: impl IntoIterator<Item = Bind>,
    ) {
        self.conditions.push(condition.into());
        self.binds.extend(binds);
    }

    /// The conditions joined with `AND`.
    pub(crate) fn clause(&self) -> String {
        self.conditions.join(" AND ")
    }
}

impl LogSearch {
    /// `sql` with `binds` bound to its `?`s in order.
    pub(crate) fn bound(&self, sql: &str, binds: Vec<Bind>) -> clickhouse::query::Query {
        binds
            .into_iter()
            .fold(self.client.query(sql), |q, bind| match bind {
                Bind::Text(t) => q.bind(t),
                Bind::Int(i) => q.bind(i),
                Bind::UInt(u) => q.bind(u),
            })
    }
}

/// The query and its bound values (pure, unit-tested).
fn build_sql(
    database: &str,
    query: &LogQuery,
    cursor: Option<Cursor>,
    direction: Direction,
) -> (String, Vec<Bind>) {
    let table = &CONTAINER_LOGS;
    let mut f = Filters::scoped(
        table,
        &query.organization_id,
        &query.service_id,
        query.since_ns,
        query.until_ns,
        query.deployment_id.as_deref(),
    );
    if let Some(text) = query.text.as_ref().filter(|t| !t.is_empty()) {
        f.push(
            format!("positionCaseInsensitive({}, ?) > 0", col::LINE),
            [Bind::Text(text.clone())],
        );
    }
    if let Some(stream) = query.stream {
        f.push(
            format!("{} = ?", col::STREAM),
            [Bind::UInt(u64::from(stream))],
        );
    }
    let order = match direction {
        Direction::Older => "DESC",
        Direction::Newer => "ASC",
    };
    if let Some(c) = cursor {
        let op = if direction == Direction::Older {
            "<"
        } else {
            ">"
        };
        f.push_cursor(table, op, c);
    }
    let (ts, id) = (table.ts_ns, table.row_id);
    let sql = format!(
        "SELECT {} FROM {database}.{} WHERE {} \
         ORDER BY {ts} {order}, {id} {order} LIMIT 1 BY {id} LIMIT {}",
        ROW_COLUMNS.join(", "),
        table.name,
        f.clause(),
        query.limit.clamp(1, 1000)
    );
    (sql, f.binds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_scoped_filtered_and_paged() {
        let query = LogQuery {
            organization_id: "org".into(),
            service_id: "svc".into(),
            text: Some("error".into()),
            stream: Some(2),
            limit: 5000,
            ..Default::default()
        };
        let cursor = Cursor {
            ts_ns: 10,
            line_id: 7,
        };
        let (sql, binds) = build_sql("logs", &query, Some(cursor), Direction::Older);
        assert!(sql.starts_with("SELECT ts_ns, line_id"));
        assert!(sql.contains("organization_id = ? AND service_id = ?"));
        assert!(sql.contains("positionCaseInsensitive(line, ?) > 0"));
        assert!(sql.contains("(ts_ns, line_id) < (?, ?)"));
        assert!(sql.ends_with("ORDER BY ts_ns DESC, line_id DESC LIMIT 1 BY line_id LIMIT 1000"));
        assert_eq!(binds[0], Bind::Text("org".into()));
        assert_eq!(binds.last(), Some(&Bind::UInt(7)));
        let (follow, _) = build_sql("logs", &query, Some(cursor), Direction::Newer);
        assert!(follow.contains("(ts_ns, line_id) > (?, ?)") && follow.contains("ts_ns ASC"));
    }

    #[test]
    fn the_query_text_is_the_one_written_out_by_hand_before_the_contract_named_the_columns() {
        let query = LogQuery {
            organization_id: "org".into(),
            service_id: "svc".into(),
            text: Some("error".into()),
            since_ns: Some(1),
            until_ns: Some(2),
            stream: Some(2),
            deployment_id: Some("d".into()),
            limit: 10,
        };
        let cursor = Cursor {
            ts_ns: 10,
            line_id: 7,
        };
        let (sql, _) = build_sql("logs", &query, Some(cursor), Direction::Newer);
        assert_eq!(
            sql,
            "SELECT ts_ns, line_id, stream, deployment_id, container_id, line, truncated \
             FROM logs.container_logs WHERE organization_id = ? AND service_id = ? \
             AND ts_ns >= ? AND ts_ns < ? AND deployment_id = ? \
             AND positionCaseInsensitive(line, ?) > 0 AND stream = ? \
             AND (ts_ns, line_id) > (?, ?) \
             ORDER BY ts_ns ASC, line_id ASC LIMIT 1 BY line_id LIMIT 10"
        );
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            ts_ns: 1_790_000_000_000_000_123,
            line_id: u64::MAX,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("x-1"), None);
    }
}
