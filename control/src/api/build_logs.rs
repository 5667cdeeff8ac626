//! `GET /deployments/{id}/build-logs`: the deployment's build log, oldest line first, paged by
//! line number (`after`, `limit`; `tail=true` for the last lines); with `follow=true`, the
//! lines after `after` as server-sent events (the same polling as `/services/{id}/logs/follow`)
//! until the build is over, then an `end` event with the deployment's state. Scoped to the
//! caller's organization: another's deployment is a 404.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Org, PathId, Query};
use crate::buildlogs::{BuildLogEntry, BuildLogStore, PageRequest};
use crate::pipeline::machine::Phase;
use crate::store::Store;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildLogParams {
    /// Lines after this line number (a page's `next_cursor`, a line's `line_number`).
    #[serde(default)]
    pub after: Option<u32>,
    /// 1..=1000, default 500.
    #[serde(default)]
    pub limit: Option<u32>,
    /// The last `limit` lines.
    #[serde(default)]
    pub tail: Option<bool>,
    /// Server-sent events until the build is over.
    #[serde(default)]
    pub follow: Option<bool>,
}

/// How often a follow asks ClickHouse for new lines (as the container log follow does).
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// Whether a deployment in `phase` may still print build lines.
fn building(phase: Phase) -> bool {
    matches!(phase, Phase::Queued | Phase::Building)
}

pub async fn get(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
    Query(p): Query<BuildLogParams>,
) -> ApiResult<Response> {
    let deployment = state.store.deployment(org.id, id).await?;
    let logs = state.build_logs.clone().ok_or_else(|| {
        ApiError::Unavailable("build logs are not configured (clickhouse_url)".into())
    })?;
    let limit = p.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(invalid("limit", "must be between 1 and 1000"));
    }
    let follow = p.follow.unwrap_or(false);
    let tail = p.tail.unwrap_or(false);
    if follow && tail {
        return Err(invalid(
            "tail",
            "cannot be combined with follow (follow from a tail's last line_number with after)",
        ));
    }
    let page = PageRequest {
        after: p.after.unwrap_or(0),
        limit,
        tail,
    };
    let org_id = org.id.to_string();
    if !follow {
        let lines = logs
            .page(&org_id, &id.to_string(), page)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let next = (!tail && lines.len() == limit as usize)
            .then(|| lines.last().map(|l| l.line_number))
            .flatten();
        return Ok(Json(json!({
            "deployment_id": id,
            "state": deployment.phase.state(),
            "lines": lines,
            "next_cursor": next,
        }))
        .into_response());
    }
    let stream = follow_stream(state.store.clone(), logs, org.id, id, page.after);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn line_event(l: &BuildLogEntry) -> Result<Event, Infallible> {
    Ok(Event::default()
        .id(l.line_number.to_string())
        .json_data(l)
        .unwrap_or_default())
}

/// Lines after `after` as they are stored; ends (with an `end` event naming the deployment's
/// state) once the deployment left the build and every line stored before that was sent.
fn follow_stream(
    store: Store,
    logs: BuildLogStore,
    org: Uuid,
    id: Uuid,
    after: u32,
) -> impl futures::Stream<Item = Result<Event, Infallible>> {
    let (org_s, id_s) = (org.to_string(), id.to_string());
    futures::stream::unfold(Some(after), move |cursor| {
        let (store, logs, org_s, id_s) = (store.clone(), logs.clone(), org_s.clone(), id_s.clone());
        async move {
            let mut after = cursor?;
            loop {
                // Read the state first: lines are stored before the build's end is recorded,
                // so a build seen over has every line in the store by now.
                let phase = match store.deployment(org, id).await {
                    Ok(d) => Some(d.phase),
                    Err(e) => {
                        tracing::warn!(deployment = %id, error = %e, "build log follow: reading the deployment failed");
                        None
                    }
                };
                let page = PageRequest {
                    after,
                    limit: 1000,
                    tail: false,
                };
                match logs.page(&org_s, &id_s, page).await {
                    Ok(lines) if !lines.is_empty() => {
                        after = lines.last().map_or(after, |l| l.line_number);
                        let events: Vec<_> = lines.iter().map(line_event).collect();
                        return Some((futures::stream::iter(events).boxed(), Some(after)));
                    }
                    Ok(_) => {
                        if let Some(phase) = phase.filter(|p| !building(*p)) {
                            let end = Event::default()
                                .event("end")
                                .json_data(json!({ "state": phase.state() }))
                                .unwrap_or_default();
                            return Some((futures::stream::iter([Ok(end)]).boxed(), None));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "build log follow poll failed; retrying"),
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
    })
    .flatten()
}
