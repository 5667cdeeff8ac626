//! Search over the proxy's access logs in ClickHouse (`<database>.access_logs`, written by
//! `proxy::access_log`): time range, status and latency filters, path text, newest first with
//! a cursor. Scoped by the caller's organization like container logs; rows a retried batch
//! stored twice are read once (`LIMIT 1 BY row_id`). Table and column names come from the log
//! store's contract (`logstore`).

use logstore::access_logs::{self, columns as col};
use serde::{Deserialize, Serialize};

use crate::logsearch::{Bind, Cursor, Filters, LogSearch, LogSearchError, LogTable};

const ACCESS_LOGS: LogTable = LogTable {
    name: access_logs::TABLE,
    organization_id: col::ORGANIZATION_ID,
    service_id: col::SERVICE_ID,
    deployment_id: col::DEPLOYMENT_ID,
    ts_ns: col::TS_NS,
    row_id: col::ROW_ID,
};

/// The columns a search reads, in [`Row`]'s order.
const ROW_COLUMNS: [&str; 13] = [
    col::TS_NS,
    col::ROW_ID,
    col::METHOD,
    col::HOST,
    col::PATH,
    col::STATUS,
    col::DURATION_US,
    col::REQUEST_BYTES,
    col::RESPONSE_BYTES,
    col::UPSTREAM,
    col::DEPLOYMENT_ID,
    col::CLIENT_IP,
    col::REQUEST_ID,
];

/// Inclusive status ranges: `5xx`, `404`, `500-599`, or a comma-separated list of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusFilter(pub Vec<(u16, u16)>);

impl StatusFilter {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let range =
                if let Some(class) = part.strip_suffix("xx").or_else(|| part.strip_suffix("XX")) {
                    let c: u16 = class
                        .parse()
                        .ok()
                        .filter(|c| (1..=5).contains(c))
                        .ok_or_else(|| format!("{part:?} is not a status class 1xx..5xx"))?;
                    (c * 100, c * 100 + 99)
                } else if let Some((low, high)) = part.split_once('-') {
                    let (low, high) = (status(low)?, status(high)?);
                    if low > high {
                        return Err(format!("{part:?}: the range is empty"));
                    }
                    (low, high)
                } else {
                    let s = status(part)?;
                    (s, s)
                };
            ranges.push(range);
        }
        if ranges.is_empty() {
            return Err("no status given".into());
        }
        Ok(Self(ranges))
    }
}

fn status(text: &str) -> Result<u16, String> {
    text.trim()
        .parse()
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| format!("{text:?} is not an HTTP status (100..599)"))
}

/// What to look for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessQuery {
    pub organization_id: String,
    pub service_id: String,
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    pub status: Option<StatusFilter>,
    pub min_duration_us: Option<u64>,
    /// Case-insensitive substring of the path.
    pub path_text: Option<String>,
    pub deployment_id: Option<String>,
    pub limit: u32,
}

/// One request as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessLogEntry {
    pub timestamp_ns: i64,
    pub method: String,
    pub host: String,
    pub path: String,
    /// 0 when the client went away before a response.
    pub status: u16,
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub upstream: String,
    pub deployment_id: String,
    pub client_ip: String,
    pub request_id: String,
    pub cursor: String,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Row {
    ts_ns: i64,
    row_id: u64,
    method: String,
    host: String,
    path: String,
    status: u16,
    duration_us: u64,
    request_bytes: u64,
    response_bytes: u64,
    upstream: String,
    deployment_id: String,
    client_ip: String,
    request_id: String,
}

impl From<Row> for AccessLogEntry {
    fn from(r: Row) -> Self {
        Self {
            timestamp_ns: r.ts_ns,
            method: r.method,
            host: r.host,
            path: r.path,
            status: r.status,
            duration_ms: r.duration_us as f64 / 1000.0,
            request_bytes: r.request_bytes,
            response_bytes: r.response_bytes,
            upstream: r.upstream,
            deployment_id: r.deployment_id,
            client_ip: r.client_ip,
            request_id: r.request_id,
            cursor: Cursor {
                ts_ns: r.ts_ns,
                line_id: r.row_id,
            }
            .encode(),
        }
    }
}

impl LogSearch {
    /// Requests matching `query` older than `cursor`, newest first.
    pub async fn access_logs(
        &self,
        query: &AccessQuery,
        cursor: Option<Cursor>,
    ) -> Result<Vec<AccessLogEntry>, LogSearchError> {
        let (sql, binds) = build_sql(self.database(), query, cursor);
        match self.bound(&sql, binds).fetch_all::<Row>().await {
            Ok(rows) => Ok(rows.into_iter().map(AccessLogEntry::from).collect()),
            Err(e) => self.empty_if_missing(e),
        }
    }
}

/// The query and its bound values (pure, unit-tested).
fn build_sql(database: &str, query: &AccessQuery, cursor: Option<Cursor>) -> (String, Vec<Bind>) {
    let table = &ACCESS_LOGS;
    let mut f = Filters::scoped(
        table,
        &query.organization_id,
        &query.service_id,
        query.since_ns,
        query.until_ns,
        query.deployment_id.as_deref(),
    );
    if let Some(StatusFilter(ranges)) = &query.status {
        let any: Vec<String> = ranges
            .iter()
            .map(|_| format!("{} BETWEEN ? AND ?", col::STATUS))
            .collect();
        let bounds = ranges
            .iter()
            .flat_map(|(low, high)| [Bind::UInt(u64::from(*low)), Bind::UInt(u64::from(*high))]);
        f.push(format!("({})", any.join(" OR ")), bounds);
    }
    if let Some(min) = query.min_duration_us {
        f.push(format!("{} >= ?", col::DURATION_US), [Bind::UInt(min)]);
    }
    if let Some(text) = query.path_text.as_ref().filter(|t| !t.is_empty()) {
        f.push(
            format!("positionCaseInsensitive({}, ?) > 0", col::PATH),
            [Bind::Text(text.clone())],
        );
    }
    if let Some(c) = cursor {
        f.push_cursor(table, "<", c);
    }
    let (ts, id) = (table.ts_ns, table.row_id);
    let sql = format!(
        "SELECT {} FROM {database}.{} WHERE {} \
         ORDER BY {ts} DESC, {id} DESC LIMIT 1 BY {id} LIMIT {}",
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
    fn status_filters_parse_classes_codes_and_ranges() {
        assert_eq!(StatusFilter::parse("5xx").unwrap().0, vec![(500, 599)]);
        assert_eq!(
            StatusFilter::parse("404, 500-503").unwrap().0,
            vec![(404, 404), (500, 503)]
        );
        for bad in ["", "6xx", "abc", "600", "503-500", "99"] {
            assert!(StatusFilter::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn queries_are_scoped_filtered_and_paged() {
        let query = AccessQuery {
            organization_id: "org".into(),
            service_id: "svc".into(),
            status: Some(StatusFilter(vec![(404, 404), (500, 599)])),
            min_duration_us: Some(250_000),
            path_text: Some("/api".into()),
            limit: 5000,
            ..Default::default()
        };
        let cursor = Cursor {
            ts_ns: 10,
            line_id: 7,
        };
        let (sql, binds) = build_sql("logs", &query, Some(cursor));
        assert!(sql.contains("FROM logs.access_logs WHERE organization_id = ? AND service_id = ?"));
        assert!(sql.contains("(status BETWEEN ? AND ? OR status BETWEEN ? AND ?)"));
        assert!(sql.contains("duration_us >= ?"));
        assert!(sql.contains("positionCaseInsensitive(path, ?) > 0"));
        assert!(sql.contains("(ts_ns, row_id) < (?, ?)"));
        assert!(sql.ends_with("ORDER BY ts_ns DESC, row_id DESC LIMIT 1 BY row_id LIMIT 1000"));
        assert_eq!(
            binds[..6],
            [
                Bind::Text("org".into()),
                Bind::Text("svc".into()),
                Bind::UInt(404),
                Bind::UInt(404),
                Bind::UInt(500),
                Bind::UInt(599)
            ]
        );
        assert_eq!(binds.last(), Some(&Bind::UInt(7)));
        assert_eq!(
            sql,
            "SELECT ts_ns, row_id, method, host, path, status, duration_us, request_bytes, \
             response_bytes, upstream, deployment_id, client_ip, request_id \
             FROM logs.access_logs WHERE organization_id = ? AND service_id = ? \
             AND (status BETWEEN ? AND ? OR status BETWEEN ? AND ?) AND duration_us >= ? \
             AND positionCaseInsensitive(path, ?) > 0 AND (ts_ns, row_id) < (?, ?) \
             ORDER BY ts_ns DESC, row_id DESC LIMIT 1 BY row_id LIMIT 1000",
            "the query text written out by hand before the contract named the columns"
        );
    }
}
