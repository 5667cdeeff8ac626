//! `GET /services/{id}/volumes`: a service's volumes with the bytes each uses, as the node
//! agent holding them reports (`NodeAgent.ListVolumes`, #14, #18).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Org, PathId};

pub async fn list(
    State(state): State<AppState>,
    org: Org,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let service = state.store.service(org.id, id).await?;
    let Some((clients, _)) = &state.teardown else {
        return Err(ApiError::Unavailable(
            "this control plane reaches no node agent: volume usage is unknown".into(),
        ));
    };
    let items = crate::volumes::usage(&state.store, clients, &service).await?;
    Ok(Json(json!({ "items": items })))
}
