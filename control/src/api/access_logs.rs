//! `GET /services/{id}/access-logs`: the proxy's access log of a service, newest first, with
//! status, latency, path and time filters and a cursor for older pages. Scoped to the caller's
//! organization (another's service is a 404, and rows are read with the caller's id).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Org, PathId, Query};
use crate::accesslogs::{AccessQuery, StatusFilter};

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
    PathId(service_id): PathId,
    Query(p): Query<AccessLogsParams>,
) -> ApiResult<Json<Value>> {
    let scope = super::logs::scope(
        &state,
        &org,
        service_id,
        p.since.as_deref(),
        p.until.as_deref(),
        p.limit,
        p.cursor.as_deref(),
    )
    .await?;
    let status = p
        .status
        .as_deref()
        .map(StatusFilter::parse)
        .transpose()
        .map_err(|reason| invalid("status", reason))?;
    let query = AccessQuery {
        organization_id: org.id.to_string(),
        service_id: service_id.to_string(),
        since_ns: scope.since_ns,
        until_ns: scope.until_ns,
        status,
        min_duration_us: p.min_duration_ms.map(|ms| ms.saturating_mul(1000)),
        path_text: p.q.clone(),
        deployment_id: p.deployment.map(|d| d.to_string()),
        limit: scope.limit,
    };
    let requests = scope
        .logs
        .access_logs(&query, scope.cursor)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let next = (requests.len() == scope.limit as usize)
        .then(|| requests.last().map(|r| r.cursor.clone()))
        .flatten();
    Ok(Json(json!({ "requests": requests, "next_cursor": next })))
}
