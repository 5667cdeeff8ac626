//! Request parsing at the edge: JSON bodies with errors naming the field, the caller from the
//! token, pagination, idempotency keys.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use crate::store::{PageRequest, Role};

/// Who is calling, set by the auth middleware (which also checked the role the route needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Org {
        organization_id: Uuid,
        token_id: Uuid,
        role: Role,
        /// The token's expiry; `None` = never.
        expires_at: Option<DateTime<Utc>>,
    },
}

/// A caller with an organization token.
#[derive(Debug, Clone, Copy)]
pub struct Org {
    pub id: Uuid,
    pub token_id: Uuid,
    pub role: Role,
    pub expires_at: Option<DateTime<Utc>>,
}

impl<S: Send + Sync> FromRequestParts<S> for Org {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        match parts.extensions.get::<Caller>() {
            Some(Caller::Org {
                organization_id,
                token_id,
                role,
                expires_at,
            }) => Ok(Org {
                id: *organization_id,
                token_id: *token_id,
                role: *role,
                expires_at: *expires_at,
            }),
            Some(Caller::Admin) => Err(ApiError::Forbidden(
                "this call needs an organization token, not the operator token".into(),
            )),
            None => Err(ApiError::Unauthorized),
        }
    }
}

/// A caller with the operator token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        match parts.extensions.get::<Caller>() {
            Some(Caller::Admin) => Ok(Admin),
            Some(_) => Err(ApiError::Forbidden(
                "this call needs the operator token".into(),
            )),
            None => Err(ApiError::Unauthorized),
        }
    }
}

/// A JSON body. Syntax errors are 400; a body over the limit is 413; a missing, unknown or
/// mistyped field, and a NUL character in any string or key, is 422 naming the field.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(format!(
                    "the body is larger than the API takes ({} bytes)",
                    super::MAX_BODY_BYTES
                ))
            } else {
                ApiError::BadRequest(format!("cannot read the body: {e}"))
            }
        })?;
        parse_json(&bytes).map(Body)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.is_empty() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))?;
    if let Some(field) = nul_in(&value, String::new()) {
        return Err(invalid(&field, "holds a NUL character"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        invalid(&field_of(&path, &inner.to_string()), inner.to_string())
    })
}

/// The field a serde error is about: its path, or the name a missing/unknown-field message
/// quotes; `body` when there is neither.
fn field_of(path: &str, message: &str) -> String {
    let named = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("missing field") || message.starts_with("unknown field"));
    match (path, named) {
        (".", Some(name)) => name.to_owned(),
        (p, Some(name)) if message.starts_with("missing field") => format!("{p}.{name}"),
        (".", None) => "body".to_owned(),
        (p, _) => p.to_owned(),
    }
}

/// The path of the first string or key holding a NUL (PostgreSQL cannot store one; nothing a
/// tenant sends needs one).
fn nul_in(value: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    let join = |key: &str| {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    match value {
        Value::String(s) if s.contains('\0') => {
            Some(if at.is_empty() { "body".into() } else { at })
        }
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            nul_in(
                v,
                format!("{}[{i}]", if at.is_empty() { "body" } else { &at }),
            )
        }),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(if at.is_empty() {
                    "body".into()
                } else {
                    at.clone()
                })
            } else {
                nul_in(v, join(k))
            }
        }),
        _ => None,
    }
}

/// A query string parsed into `T`: a mistyped or unknown parameter, or a NUL in one, is 422
/// naming the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        let query = parts.uri.query().unwrap_or_default();
        parse_query(query).map(Query)
    }
}

pub fn parse_query<T: DeserializeOwned>(query: &str) -> ApiResult<T> {
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key.contains('\0') || value.contains('\0') {
            return Err(invalid(&key, "holds a NUL character"));
        }
    }
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        invalid(&field_of(&path, &message), message)
    })
}

/// The text of the path parameter `key`, percent-decoded; JSON errors instead of axum's plain
/// text ones.
async fn path_param(parts: &mut Parts, key: &str) -> ApiResult<String> {
    let params = RawPathParams::from_request_parts(parts, &())
        .await
        .map_err(|_| invalid(key, "is not valid UTF-8"))?;
    let value = params
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
        .ok_or_else(|| ApiError::NotFound(format!("no {key} in this route")))?;
    if value.contains('\0') {
        return Err(invalid(key, "holds a NUL character"));
    }
    Ok(value)
}

/// The `{id}` of a route, a UUID.
#[derive(Debug, Clone, Copy)]
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        let raw = path_param(parts, "id").await?;
        Uuid::parse_str(&raw)
            .map(PathId)
            .map_err(|_| invalid("id", format!("{} is not a UUID", tenant::echo(&raw))))
    }
}

/// The `{domain}` of a route, as text (the handler parses it).
#[derive(Debug, Clone)]
pub struct PathDomain(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathDomain {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        let raw = path_param(parts, "domain").await?;
        if raw.len() > 253 {
            return Err(invalid(
                "domain",
                format!("{} is longer than 253 bytes", tenant::echo(&raw)),
            ));
        }
        Ok(PathDomain(raw))
    }
}

/// `?limit=&after=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub limit: Option<i64>,
    pub after: Option<Uuid>,
}

impl PageQuery {
    pub fn page(&self) -> ApiResult<PageRequest> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(invalid("limit", "must be between 1 and 200"));
        }
        Ok(PageRequest {
            limit,
            after: self.after,
        })
    }
}

/// Runs a create call at most once per `Idempotency-Key`: a retry with the same key and request
/// gets the first response again; the same key with another request is refused.
pub async fn idempotent<T, F, Fut>(
    state: &AppState,
    org: Org,
    headers: &HeaderMap,
    what: &str,
    request: &T,
    create: F,
) -> ApiResult<(StatusCode, axum::Json<serde_json::Value>)>
where
    T: Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = ApiResult<serde_json::Value>>,
{
    let key = match headers.get("idempotency-key") {
        None => return Ok((StatusCode::CREATED, axum::Json(create().await?))),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 200)
            .ok_or_else(|| {
                invalid(
                    "Idempotency-Key",
                    "must be 1 to 200 visible ASCII characters",
                )
            })?
            .to_owned(),
    };
    let mut hasher = Sha256::new();
    hasher.update(what.as_bytes());
    hasher.update(serde_json::to_vec(request).unwrap_or_default());
    let hash = hasher.finalize().to_vec();
    if let Some((stored_hash, status, body)) = state
        .store
        .reserve_idempotency_key(org.id, &key, &hash)
        .await?
    {
        if stored_hash != hash {
            return Err(invalid(
                "Idempotency-Key",
                "was already used for a different request",
            ));
        }
        if status == 0 {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still running; retry later".into(),
            ));
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        return Ok((status, axum::Json(body)));
    }
    let body = match create().await {
        Ok(body) => body,
        Err(e) => {
            state.store.release_idempotency_key(org.id, &key).await?;
            return Err(e);
        }
    };
    state
        .store
        .complete_idempotency_key(org.id, &key, StatusCode::CREATED.as_u16(), &body)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(body)))
}
