//! The dashboard's pages (#18), served by `stackpad-control` itself at `/dashboard/` on the
//! API's origin. The front end (TypeScript, `dashboard/` at the repository root) is built by
//! Vite in `build.rs` and embedded; it calls the same REST API as the CLI, signed in with a
//! session cookie (`api::session`). Every page is strict about what it loads: scripts, styles
//! and connections only from this origin, no framing, no referrer.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

/// Where the dashboard lives.
pub const PATH: &str = "/dashboard/";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// `/` and `/dashboard` lead to the dashboard; its files are under `/dashboard/`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to(PATH) }))
        .route("/dashboard", get(|| async { Redirect::to(PATH) }))
        .route("/dashboard/", get(|| async { file("index.html") }))
        .route(
            "/dashboard/{*path}",
            get(|Path(path): Path<String>| async move { file(&path) }),
        )
}

/// The content type of a built file, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn file(path: &str) -> Response {
    let Some((_, bytes)) = ASSETS.iter().find(|(p, _)| *p == path) else {
        return (StatusCode::NOT_FOUND, "no such dashboard file").into_response();
    };
    let mut response = (*bytes).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    // Bundles are named by their content hash: cached for good; the page is always fresh.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_bundles_are_embedded() {
        assert!(ASSETS.iter().any(|(p, _)| *p == "index.html"));
        assert!(
            ASSETS
                .iter()
                .any(|(p, _)| p.starts_with("assets/") && p.ends_with(".js"))
        );
    }

    #[test]
    fn files_get_their_type_and_unknown_ones_404() {
        let r = file("index.html");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(
            r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(file("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(file("nope.js").status(), StatusCode::NOT_FOUND);
    }
}
