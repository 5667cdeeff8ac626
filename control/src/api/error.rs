//! API errors: every one is JSON `{"error": {"status", "message", "field"?}}`. Messages and field
//! names are cut to a bounded length (a refused 1 MB value is never echoed whole); a 500 shows
//! "internal error" and a request id, never the error's text, which is logged under that id.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

use crate::store::StoreError;

/// The longest message a client is shown, in characters.
pub const MAX_MESSAGE: usize = 512;
/// The longest field name a client is shown, in characters.
pub const MAX_FIELD: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid API token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A field failed validation; `field` names it.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The body is larger than the API takes.
    #[error("{0}")]
    TooLarge(String),
    /// Logged with a request id; the client sees the id only.
    #[error("internal error: {0}")]
    Internal(String),
    /// A service this call depends on (DNS, the proxy) did not answer; retry later.
    #[error("{0}")]
    Unavailable(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A refused tenant value, its message from the `tenant` crate, the field named here.
pub fn refused(field: &str, e: tenant::Invalid) -> ApiError {
    invalid(field, e.to_string())
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// `text` cut to `max` characters, with `...` when cut.
pub fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = json!({ "status": status.as_u16() });
        match &self {
            ApiError::Internal(detail) => {
                let request_id = Uuid::new_v4();
                tracing::error!(%request_id, error = %detail, "internal error");
                body["message"] = json!(format!("internal error (request id {request_id})"));
                body["request_id"] = json!(request_id);
            }
            ApiError::Invalid { field, message } => {
                let field = bounded(field, MAX_FIELD);
                body["message"] = json!(bounded(&format!("{field}: {message}"), MAX_MESSAGE));
                body["field"] = json!(field);
            }
            other => body["message"] = json!(bounded(&other.to_string(), MAX_MESSAGE)),
        }
        (status, Json(json!({ "error": body }))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn shown(e: ApiError) -> (u16, serde_json::Value) {
        let r = e.into_response();
        let status = r.status().as_u16();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn internal_errors_show_a_request_id_not_their_text() {
        let (status, v) = shown(ApiError::Internal(
            "error returned from database: invalid byte sequence for encoding \"UTF8\": 0x00"
                .into(),
        ))
        .await;
        assert_eq!(status, 500);
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("internal error (request id "), "{v}");
        assert!(!message.contains("database"), "{v}");
        assert!(v["error"]["request_id"].is_string(), "{v}");
    }

    #[tokio::test]
    async fn long_values_are_cut() {
        let huge = "n".repeat(1 << 20);
        let (status, v) = shown(invalid(&huge, huge.clone())).await;
        assert_eq!(status, 422);
        assert!(v["error"]["message"].as_str().unwrap().len() <= MAX_MESSAGE + 3);
        assert!(v["error"]["field"].as_str().unwrap().len() <= MAX_FIELD + 3);
        assert_eq!(bounded("abc", 2), "ab...");
        assert_eq!(bounded("ab", 2), "ab");
        assert_eq!(bounded("éé", 1), "é...");
    }
}
