//! `GET /services/{id}/access-logs`: the proxy's access log of a service, newest first, with
//! status, latency, path and time filters and a cursor for older pages. Scoped to the caller's
//! organization (another's service is a 404, and rows are read with the caller's id).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use super::extract::Org;
use super::logs::time_ns;
use crate::accesslogs::{AccessQuery, StatusFilter};
use crate::logsearch::Cursor;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogsParams {
    /// RFC 3339 time or nanoseconds since the epoch.
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub until: Option<String>,
    /// `5xx`, `404`, `500-599`, or a comma-separated list of them.
    #[serde(default)]
    pub status: Option<String>,
    /// Only requests that took at least this long.
    #[serde(default)]
    pub min_duration_ms: Option<u64>,
    /// Case-insensitive text the path contains.
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub deployment: Option<Uuid>,
    /// 1..=1000, default 100.
    #[serde(default)]
    pub limit: Option<u32>,
    /// From a previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

pub async fn search(
    State(state): State<AppState>,
    org: Org,
    Path(service_id): Path<Uuid>,
    Query(p): Query<AccessLogsParams>,
) -> ApiResult<Json<Value>> {
    state.store.service(org.id, service_id).await?;
    let logs = state.logs.clone().ok_or_else(|| {
        ApiError::Internal("log search is not configured (clickhouse_url)".into())
    })?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(invalid("limit", "must be between 1 and 1000"));
    }
    let cursor = match &p.cursor {
        Some(c) => Some(
            Cursor::decode(c).ok_or_else(|| invalid("cursor", format!("{c:?} is not a cursor")))?,
        ),
        None => None,
    };
    let status = p
        .status
        .as_deref()
        .map(StatusFilter::parse)
        .transpose()
        .map_err(|reason| invalid("status", reason))?;
    let query = AccessQuery {
        organization_id: org.id.to_string(),
        service_id: service_id.to_string(),
        since_ns: p
            .since
            .as_deref()
            .map(|s| time_ns("since", s))
            .transpose()?,
        until_ns: p
            .until
            .as_deref()
            .map(|s| time_ns("until", s))
            .transpose()?,
        status,
        min_duration_us: p.min_duration_ms.map(|ms| ms.saturating_mul(1000)),
        path_text: p.q.clone(),
        deployment_id: p.deployment.map(|d| d.to_string()),
        limit,
    };
    let requests = logs
        .access_logs(&query, cursor)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let next = (requests.len() == limit as usize)
        .then(|| requests.last().map(|r| r.cursor.clone()))
        .flatten();
    Ok(Json(json!({ "requests": requests, "next_cursor": next })))
}
