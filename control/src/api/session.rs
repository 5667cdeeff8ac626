//! Dashboard sign-in (#18): `POST /session` exchanges an API token (or the operator token) for
//! a session cookie (`HttpOnly; Secure; SameSite=Strict`), `GET /session` says whose it is and
//! hands the page its CSRF token, `DELETE /session` signs out. Requests carrying the cookie are
//! authenticated in [`super::auth_and_audit`] as the token the session was opened with; every
//! state-changing one must also carry that CSRF token in `X-CSRF-Token`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::extract::Body;
use super::{AppState, AuditAs};
use crate::crypto;
use crate::store::{Session, SessionOwner};

/// The cookie holding the session id.
pub const COOKIE: &str = "stackpad_session";
/// The header a session's state-changing calls carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    token: String,
}

/// The session cookie's value in `headers`, if any.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether `headers` carry the session's CSRF token.
pub fn csrf_ok(headers: &HeaderMap, session: &Session) -> bool {
    headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| crypto::constant_time_eq(v.as_bytes(), session.csrf_token.as_bytes()))
}

/// Looks up the live session of `headers`' cookie; an operator session whose operator token
/// has since changed is no session.
pub async fn lookup(state: &AppState, headers: &HeaderMap) -> ApiResult<Option<Session>> {
    let Some(value) = cookie(headers) else {
        return Ok(None);
    };
    let Some(session) = state.store.session(&value).await? else {
        return Ok(None);
    };
    if let SessionOwner::Operator { admin_token_sha256 } = &session.owner {
        let current = state.admin_token_sha256.as_deref().unwrap_or_default();
        if current.is_empty() || !crypto::constant_time_eq(current, admin_token_sha256) {
            return Ok(None);
        }
    }
    Ok(Some(session))
}

async fn describe(state: &AppState, session: &Session) -> ApiResult<Value> {
    Ok(match &session.owner {
        SessionOwner::Token(t) => {
            let org = state.store.organization(t.organization_id).await?;
            json!({
                "kind": "organization",
                "organization": { "id": org.id, "name": org.name },
                "role": t.role,
                "token_name": t.name,
                "csrf_token": session.csrf_token,
                "expires_at": session.expires_at,
            })
        }
        SessionOwner::Operator { .. } => json!({
            "kind": "operator",
            "csrf_token": session.csrf_token,
            "expires_at": session.expires_at,
        }),
    })
}

fn set_cookie(value: &str, max_age_s: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age_s}"
    ))
    .expect("a token is a valid header value")
}

/// `POST /session {"token"}`: 201 with the session (and its cookie), 401 for a token that is
/// unknown, revoked or expired.
pub async fn create(State(state): State<AppState>, Body(req): Body<SignIn>) -> ApiResult<Response> {
    let token = req.token.trim();
    let hash = crypto::hash_token(token);
    let owner = match &state.admin_token_sha256 {
        Some(admin) if !token.is_empty() && crypto::constant_time_eq(admin, &hash) => {
            SessionOwner::Operator {
                admin_token_sha256: admin.clone(),
            }
        }
        _ => match state.store.authenticate(token).await? {
            Some(t) => SessionOwner::Token(t),
            None => return Err(ApiError::Unauthorized),
        },
    };
    let audit = match &owner {
        SessionOwner::Token(t) => Some(AuditAs {
            organization_id: t.organization_id,
        }),
        SessionOwner::Operator { .. } => None,
    };
    let new = state.store.create_session(owner).await?;
    let body = describe(&state, &new.session).await?;
    let max_age = (new.session.expires_at - chrono::Utc::now())
        .num_seconds()
        .max(0);
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&new.cookie, max_age));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(by) = audit {
        response.extensions_mut().insert(by);
    }
    Ok(response)
}

/// `GET /session`: whose session the cookie is, with its CSRF token; 401 without one.
pub async fn current(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let session = lookup(&state, &headers)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let mut response = Json(describe(&state, &session).await?).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `DELETE /session`: signs out (needs the CSRF token, like every change); 204, and the
/// cookie is cleared.
pub async fn delete(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let session = lookup(&state, &headers)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if !csrf_ok(&headers, &session) {
        return Err(csrf_refused());
    }
    if let Some(value) = cookie(&headers) {
        state.store.delete_session(&value).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0));
    Ok(response)
}

/// The refusal of a session's change without its CSRF token.
pub fn csrf_refused() -> ApiError {
    ApiError::Forbidden(format!(
        "a change made with a dashboard session needs its CSRF token in the {CSRF_HEADER} header"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; stackpad_session=sp_x ; b=2"),
        );
        assert_eq!(cookie(&h).as_deref(), Some("sp_x"));
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("stackpad_sessionx=1"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("stackpad_session="),
        );
        assert_eq!(cookie(&h), None);
    }

    #[test]
    fn the_cookie_is_http_only_secure_and_strict() {
        let v = set_cookie("sp_1", 60);
        let v = v.to_str().unwrap();
        for part in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(v.contains(part), "{v} lacks {part}");
        }
    }
}
