//! Organizations (created by the operator), tokens (with a role and an optional expiry),
//! members, the audit log. Who may call what is decided in `roles`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Admin, Body, Org};
use super::validate;
use crate::store::{NewToken, Role};

/// The longest a token can live: a token for CI that leaks must stop working within a year.
pub const MAX_TOKEN_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::days(366);

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganization {
    pub name: String,
}

/// Creates an organization and its first token (shown once).
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    Body(req): Body<CreateOrganization>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate::name("name", &req.name)?;
    let org = state.store.create_organization(&req.name).await?;
    let initial = NewToken {
        name: "initial",
        role: Role::Owner,
        expires_at: None,
    };
    let (token, secret) = state.store.create_token(org.id, &initial).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "organization": org, "token": { "id": token.id, "secret": secret } })),
    ))
}

pub async fn current(State(state): State<AppState>, org: Org) -> ApiResult<Json<Value>> {
    Ok(Json(json!(state.store.organization(org.id).await?)))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// Default: the caller's role. Never more than the caller's.
    #[serde(default)]
    pub role: Option<Role>,
    /// RFC 3339; default: the caller's expiry (none for a token that never expires). At most
    /// [`MAX_TOKEN_LIFETIME`] ahead and never after the caller's own expiry.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Mints a token: at most the caller's role and the caller's lifetime (a token cannot mint one
/// with more rights than itself). Only owners reach this (see `roles`).
pub async fn create_token(
    State(state): State<AppState>,
    org: Org,
    Body(req): Body<CreateToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate::non_empty("name", &req.name)?;
    validate::text("name", &req.name, 100)?;
    let role = req.role.unwrap_or(org.role);
    if role > org.role {
        return Err(ApiError::Forbidden(format!(
            "a {} token cannot mint a {role} token (role: at most {})",
            org.role, org.role
        )));
    }
    let expires_at = token_expiry(req.expires_at, org.expires_at, Utc::now())?;
    let new = NewToken {
        name: &req.name,
        role,
        expires_at,
    };
    let (token, secret) = state.store.create_token(org.id, &new).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token, "secret": secret })),
    ))
}

/// The expiry of a new token: in the future, at most [`MAX_TOKEN_LIFETIME`] from `now`, and not
/// after the minting token's own expiry (which is the default).
pub fn token_expiry(
    asked: Option<DateTime<Utc>>,
    caller: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> ApiResult<Option<DateTime<Utc>>> {
    let Some(at) = asked else {
        return Ok(caller);
    };
    if at <= now {
        return Err(invalid("expires_at", "must be in the future"));
    }
    if at > now + MAX_TOKEN_LIFETIME {
        return Err(invalid(
            "expires_at",
            format!(
                "must be at most {} days ahead",
                MAX_TOKEN_LIFETIME.num_days()
            ),
        ));
    }
    if let Some(limit) = caller
        && at > limit
    {
        return Err(invalid(
            "expires_at",
            format!("must not be after this token's own expiry ({limit})"),
        ));
    }
    Ok(Some(at))
}

/// The organization's tokens that are not revoked: id, name, role, created, expiry, last use;
/// never a secret.
pub async fn tokens(State(state): State<AppState>, org: Org) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "items": state.store.tokens(org.id).await? })))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    org: Org,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    state.store.revoke_token(org.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn members(State(state): State<AppState>, org: Org) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "items": state.store.members(org.id).await? })))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub email: String,
    pub role: String,
}

pub async fn add_member(
    State(state): State<AppState>,
    org: Org,
    Body(req): Body<AddMember>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !req.email.contains('@') || req.email.len() > 254 {
        return Err(invalid(
            "email",
            format!("{} is not an email address", tenant::echo(&req.email)),
        ));
    }
    let role = member_role(&req.role)?;
    let member = state.store.add_member(org.id, &req.email, role).await?;
    Ok((StatusCode::CREATED, Json(json!(member))))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SetMemberRole {
    pub role: String,
}

/// Gives a member another role (owner only, see `roles`); the organization's last owner
/// cannot be demoted (409).
pub async fn set_member_role(
    State(state): State<AppState>,
    org: Org,
    Path(id): Path<Uuid>,
    Body(req): Body<SetMemberRole>,
) -> ApiResult<Json<Value>> {
    let role = member_role(&req.role)?;
    let member = state.store.set_member_role(org.id, id, role).await?;
    Ok(Json(json!(member)))
}

fn member_role(role: &str) -> ApiResult<::api::MemberRole> {
    role.parse().map_err(|_| {
        invalid(
            "role",
            format!(
                "{} is not a member role: must be owner, admin, developer or viewer",
                tenant::echo(role)
            ),
        )
    })
}

/// Removes a member; the organization's last owner stays (409).
pub async fn remove_member(
    State(state): State<AppState>,
    org: Org,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    state.store.remove_member(org.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn audit(State(state): State<AppState>, org: Org) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "items": state.store.audit_entries(org.id, 200).await? }),
    ))
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn a_new_token_expires_in_the_future_within_the_maximum_and_the_minters_expiry() {
        let now = Utc::now();
        let hour = now + TimeDelta::hours(1);
        assert_eq!(token_expiry(None, None, now).unwrap(), None);
        assert_eq!(token_expiry(None, Some(hour), now).unwrap(), Some(hour));
        assert_eq!(token_expiry(Some(hour), None, now).unwrap(), Some(hour));
        let refused = [
            (Some(now), None),
            (Some(now - TimeDelta::seconds(1)), None),
            (Some(now + MAX_TOKEN_LIFETIME + TimeDelta::seconds(1)), None),
            (Some(hour + TimeDelta::seconds(1)), Some(hour)),
        ];
        for (asked, caller) in refused {
            match token_expiry(asked, caller, now) {
                Err(ApiError::Invalid { field, .. }) => assert_eq!(field, "expires_at"),
                other => panic!("{asked:?} with {caller:?}: {other:?}"),
            }
        }
    }
}
