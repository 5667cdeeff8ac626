//! Request parsing at the edge: JSON bodies with errors naming the field, the caller from the
//! token, pagination, idempotency keys.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
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

/// A JSON body. Syntax errors are 400; a missing, unknown or mistyped field is 422 naming it.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("cannot read the body: {e}")))?;
        parse_json(&bytes).map(Body)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.is_empty() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = inner.to_string();
                let named = message.split('`').nth(1).filter(|_| {
                    message.starts_with("missing field") || message.starts_with("unknown field")
                });
                let field = match (path.as_str(), named) {
                    (".", Some(name)) => name.to_owned(),
                    (p, Some(name)) if message.starts_with("missing field") => {
                        format!("{p}.{name}")
                    }
                    (".", None) => "body".to_owned(),
                    (p, _) => p.to_owned(),
                };
                invalid(&field, message)
            }
            _ => ApiError::BadRequest(format!("invalid JSON: {inner}")),
        }
    })
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
