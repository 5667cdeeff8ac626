//! The outermost layer of the API: whatever answers with an error that is not JSON yet (axum's
//! own plain-text rejections, a 405, a body over the limit read by a handler that takes raw
//! bytes) is rewritten into the `{"error": {"status", "message"}}` shape. 5xx texts are not
//! shown, only logged.

use axum::Json;
use axum::extract::Request;
use axum::http::header::{ALLOW, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{MAX_MESSAGE, bounded};

/// How much of a plain-text error body is read to become the message.
const READ_LIMIT: usize = 4096;

pub async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, READ_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let message = if status.is_server_error() {
        if !text.is_empty() {
            tracing::error!(status = status.as_u16(), error = %text, "non-JSON error answer");
        }
        reason
    } else if text.is_empty() {
        reason
    } else {
        lower_first(&text)
    };
    let mut rewritten = (
        status,
        Json(json!({ "error": { "status": status.as_u16(), "message": bounded(&message, MAX_MESSAGE) } })),
    )
        .into_response();
    if let Some(allow) = parts.headers.get(ALLOW) {
        rewritten.headers_mut().insert(ALLOW, allow.clone());
    }
    rewritten
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::post;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn call(app: Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
        let r = app.oneshot(req).await.unwrap();
        let status = r.status();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn plain_text_rejections_become_json() {
        let app = Router::new()
            .route("/raw", post(|_: axum::body::Bytes| async { "ok" }))
            .route(
                "/boom",
                post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "db password=x") }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(16))
            .layer(axum::middleware::from_fn(json_errors));
        let big = Request::post("/raw")
            .body(Body::from(vec![b'x'; 64]))
            .unwrap();
        let (status, v) = call(app.clone(), big).await;
        assert_eq!(status, 413);
        assert_eq!(v["error"]["status"], 413, "{v}");
        let get = Request::get("/raw").body(Body::empty()).unwrap();
        let (status, v) = call(app.clone(), get).await;
        assert_eq!(status, 405);
        assert_eq!(v["error"]["message"], "method not allowed", "{v}");
        let boom = Request::post("/boom").body(Body::empty()).unwrap();
        let (status, v) = call(app, boom).await;
        assert_eq!(status, 500);
        assert_eq!(v["error"]["message"], "internal server error", "{v}");
    }
}
