//! `GET /services/{id}/logs`: search a service's container logs; `GET /services/{id}/logs/follow`:
//! new lines as server-sent events, from a cursor so nothing between a search and a follow is
//! missed. Both are scoped to the caller's organization (another's service is a 404).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Org, PathId, Query};
use crate::logsearch::{Cursor, Direction, LogQuery, LogSearch};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsParams {
    /// Case-insensitive text the line contains.
    #[serde(default)]
    pub q: Option<String>,
    /// RFC 3339 time or nanoseconds since the epoch.
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub until: Option<String>,
    /// `stdout` or `stderr`.
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub deployment: Option<Uuid>,
    /// 1..=1000, default 100.
    #[serde(default)]
    pub limit: Option<u32>,
    /// From a previous page's `next_cursor` (older lines) or a line's `cursor` (follow).
    #[serde(default)]
    pub cursor: Option<String>,
}

/// How often a follow asks ClickHouse for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

pub(super) fn time_ns(field: &str, value: &str) -> ApiResult<i64> {
    if let Ok(ns) = value.parse::<i64>() {
        return Ok(ns);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| {
            invalid(
                field,
                format!("{value:?} is neither RFC 3339 nor nanoseconds since the epoch"),
            )
        })
}

/// What both log endpoints read the same way: the log store (once the service is known to be
/// the caller's), the time range, the page size and the cursor.
pub(super) struct Scope {
    pub logs: LogSearch,
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

pub(super) async fn scope(
    state: &AppState,
    org: &Org,
    service_id: Uuid,
    since: Option<&str>,
    until: Option<&str>,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> ApiResult<Scope> {
    state.store.service(org.id, service_id).await?;
    let logs = state.logs.clone().ok_or_else(|| {
        ApiError::Unavailable("log search is not configured (clickhouse_url)".into())
    })?;
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(invalid("limit", "must be between 1 and 1000"));
    }
    let cursor = match cursor {
        Some(c) => Some(
            Cursor::decode(c).ok_or_else(|| invalid("cursor", format!("{c:?} is not a cursor")))?,
        ),
        None => None,
    };
    Ok(Scope {
        logs,
        since_ns: since.map(|s| time_ns("since", s)).transpose()?,
        until_ns: until.map(|s| time_ns("until", s)).transpose()?,
        limit,
        cursor,
    })
}

async fn prepare(
    state: &AppState,
    org: &Org,
    service_id: Uuid,
    p: &LogsParams,
) -> ApiResult<(LogSearch, LogQuery, Option<Cursor>)> {
    let scope = scope(
        state,
        org,
        service_id,
        p.since.as_deref(),
        p.until.as_deref(),
        p.limit,
        p.cursor.as_deref(),
    )
    .await?;
    let stream = match p.stream.as_deref() {
        None => None,
        Some("stdout") => Some(1),
        Some("stderr") => Some(2),
        Some(other) => {
            return Err(invalid(
                "stream",
                format!("{other:?} is neither stdout nor stderr"),
            ));
        }
    };
    let query = LogQuery {
        organization_id: org.id.to_string(),
        service_id: service_id.to_string(),
        text: p.q.clone(),
        since_ns: scope.since_ns,
        until_ns: scope.until_ns,
        stream,
        deployment_id: p.deployment.map(|d| d.to_string()),
        limit: scope.limit,
    };
    Ok((scope.logs, query, scope.cursor))
}

pub async fn search(
    State(state): State<AppState>,
    org: Org,
    PathId(service_id): PathId,
    Query(p): Query<LogsParams>,
) -> ApiResult<Json<Value>> {
    let (logs, query, cursor) = prepare(&state, &org, service_id, &p).await?;
    let lines = logs
        .search(&query, cursor, Direction::Older)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let next = (lines.len() == query.limit as usize)
        .then(|| lines.last().map(|l| l.cursor.clone()))
        .flatten();
    // Where a follow should start to miss nothing after this search: its newest line.
    let follow_from = lines.first().map(|l| l.cursor.clone());
    Ok(Json(
        json!({ "lines": lines, "next_cursor": next, "follow_cursor": follow_from }),
    ))
}

pub async fn follow(
    State(state): State<AppState>,
    org: Org,
    PathId(service_id): PathId,
    Query(p): Query<LogsParams>,
) -> ApiResult<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>> {
    let (logs, mut query, cursor) = prepare(&state, &org, service_id, &p).await?;
    query.limit = 1000;
    // Without a cursor, follow from now.
    let start = cursor.unwrap_or(Cursor {
        ts_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX),
        line_id: 0,
    });
    let stream = futures::stream::unfold(
        (logs, query, start),
        |(logs, query, mut cursor)| async move {
            loop {
                match logs.search(&query, Some(cursor), Direction::Newer).await {
                    Ok(lines) if !lines.is_empty() => {
                        let events: Vec<Result<Event, Infallible>> = lines
                            .iter()
                            .map(|l| {
                                Ok(Event::default()
                                    .id(l.cursor.clone())
                                    .json_data(l)
                                    .unwrap_or_default())
                            })
                            .collect();
                        if let Some(c) = lines.last().and_then(|l| Cursor::decode(&l.cursor)) {
                            cursor = c;
                        }
                        return Some((futures::stream::iter(events), (logs, query, cursor)));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "log follow poll failed; retrying"),
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        },
    );
    Ok(Sse::new(futures::StreamExt::flatten(stream)).keep_alive(KeepAlive::default()))
}
