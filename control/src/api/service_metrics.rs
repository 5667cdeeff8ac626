//! `GET /services/{id}/metrics`: a service's CPU, memory and network over time, from the node
//! agents' per-container samples (`crate::logsearch::usage`). `since`/`until` as the logs take
//! them (RFC 3339 or nanoseconds; default the last hour), `step_seconds` the bucket
//! (10..=86400, at most 1000 buckets; default from the window). Another organization's service
//! is a 404.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Org, PathId, Query};
use crate::logsearch::usage::{UsageQuery, default_step};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsParams {
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default)]
    pub step_seconds: Option<u32>,
}

pub async fn usage(
    State(state): State<AppState>,
    org: Org,
    PathId(service_id): PathId,
    Query(p): Query<MetricsParams>,
) -> ApiResult<Json<Value>> {
    let scope = super::logs::scope(
        &state,
        &org,
        service_id,
        p.since.as_deref(),
        p.until.as_deref(),
        None,
        None,
    )
    .await?;
    let until_ns = scope
        .until_ns
        .unwrap_or_else(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX));
    let since_ns = scope
        .since_ns
        .unwrap_or(until_ns.saturating_sub(3600 * 1_000_000_000));
    if since_ns >= until_ns {
        return Err(invalid("since", "must be before until"));
    }
    let window_s = (until_ns - since_ns) / 1_000_000_000;
    let step_s = match p.step_seconds {
        None => default_step(window_s),
        Some(s) if !(10..=86_400).contains(&s) => {
            return Err(invalid("step_seconds", "must be between 10 and 86400"));
        }
        Some(s) if window_s / i64::from(s) > 1000 => {
            return Err(invalid(
                "step_seconds",
                format!("{s} s gives more than 1000 points over {window_s} s: take a longer step"),
            ));
        }
        Some(s) => s,
    };
    let query = UsageQuery {
        organization_id: org.id.to_string(),
        service_id: service_id.to_string(),
        since_ns,
        until_ns,
        step_s,
    };
    let points = scope
        .logs
        .usage(&query)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(json!({
        "since_ns": since_ns,
        "until_ns": until_ns,
        "step_seconds": step_s,
        "points": points,
    })))
}
