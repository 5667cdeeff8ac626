//! A project's GitHub token (#17): with one, its previews' progress is sent to GitHub as
//! deployment statuses (`crate::github`). Sealed at rest, never shown again.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiResult, invalid};
use super::extract::{Body, Org, PathId};

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PutGitHubToken {
    /// A fine-grained token (or an installation token) allowed to write deployments.
    pub token: String,
}

/// `PUT /projects/{id}/github-token`.
pub async fn put(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
    Body(req): Body<PutGitHubToken>,
) -> ApiResult<Json<Value>> {
    let printable = req.token.bytes().all(|b| (0x21..0x7f).contains(&b));
    if !(8..=1024).contains(&req.token.len()) || !printable {
        return Err(invalid(
            "token",
            "must be 8 to 1024 printable characters without spaces",
        ));
    }
    crate::github::set_token(&state.store, org.id, project, Some(&req.token)).await?;
    Ok(Json(json!({
        "project_id": project,
        "has_github_token": true,
        "note": "the token is sealed and used only to send the previews' deployment statuses to GitHub; it is never shown again",
    })))
}

/// `DELETE /projects/{id}/github-token`: statuses are no longer sent.
pub async fn delete(
    State(state): State<AppState>,
    org: Org,
    PathId(project): PathId,
) -> ApiResult<StatusCode> {
    crate::github::set_token(&state.store, org.id, project, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
