//! GitHub webhooks: `X-Hub-Signature-256` checked over the raw body, duplicate deliveries
//! ignored, a push to the environment's branch queues a deployment of its commit. The answer
//! comes at once; the pipeline workers do the work.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::crypto;
use crate::store::NewDeployment;

/// The part of a push event we use.
#[derive(Debug, Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub async fn github(
    State(state): State<AppState>,
    Path(service_id): Path<Uuid>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // Unknown service, no secret and bad signature all look the same to the caller.
    let secret = state
        .store
        .webhook_secret(service_id)
        .await
        .ok()
        .flatten()
        .ok_or(ApiError::Unauthorized)?;
    let signature = header(&headers, "x-hub-signature-256").ok_or(ApiError::Unauthorized)?;
    if !crypto::verify_github_signature(secret.as_bytes(), &body, signature) {
        return Err(ApiError::Unauthorized);
    }
    let delivery = header(&headers, "x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 100)
        .ok_or_else(|| ApiError::BadRequest("missing X-GitHub-Delivery".into()))?;
    let first = sqlx::query("INSERT INTO webhook_deliveries (delivery_id, service_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(delivery)
        .bind(service_id)
        .execute(&state.store.pool)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .rows_affected()
        == 1;
    if !first {
        return Ok((
            StatusCode::OK,
            Json(json!({ "status": "duplicate delivery ignored" })),
        ));
    }
    match header(&headers, "x-github-event") {
        Some("push") => {}
        Some("ping") => return Ok((StatusCode::OK, Json(json!({ "status": "pong" })))),
        other => {
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "status": format!("event {:?} ignored", other.unwrap_or("")) })),
            ));
        }
    }
    let push: Push = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("push payload: {e}")))?;
    let (org, branch) = state
        .store
        .services_for_push(service_id)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let pushed = push.git_ref.strip_prefix("refs/heads/");
    if push.deleted || pushed != Some(branch.as_str()) || push.after.chars().all(|c| c == '0') {
        return Ok((
            StatusCode::ACCEPTED,
            Json(
                json!({ "status": format!("push to {} ignored: the environment deploys {branch}", push.git_ref) }),
            ),
        ));
    }
    let queued = state
        .store
        .create_deployment(
            org,
            service_id,
            &NewDeployment {
                git_ref: Some(branch),
                git_commit: Some(push.after),
                ..Default::default()
            },
        )
        .await;
    let d = match queued {
        Ok(d) => d,
        Err(e) => {
            // Forget the delivery so GitHub's redelivery is not ignored as a duplicate.
            let _ = sqlx::query("DELETE FROM webhook_deliveries WHERE delivery_id = $1")
                .bind(delivery)
                .execute(&state.store.pool)
                .await;
            return Err(e.into());
        }
    };
    state.wake.notify_waiters();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "status": "queued", "deployment_id": d.id })),
    ))
}
