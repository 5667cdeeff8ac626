//! Organizations, their members and API tokens (with a role and an optional expiry).

use ::api::MemberRole;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{ApiToken, Member, Organization, Result, Store, StoreError};
use crate::crypto;

/// What a token may do (one definition, in the `api` crate); its order is the rights order
/// (`Owner` > `Deployer` > `ReadOnly`). The route matrix is `api::roles`. The column is of the
/// PostgreSQL type `token_role`: queries bind `$n::token_role` and read `role::text`.
pub use ::api::TokenRole as Role;

/// A token to mint.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub name: &'a str,
    pub role: Role,
    /// `None` = never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A token as `GET /tokens` lists it: what it is for, its role and times; no secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TokenListed {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// `None` = never expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// The last call it authenticated; `None` = never used.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Past its expiry (it is refused, but not revoked).
    pub expired: bool,
}

pub(super) const TOKEN_COLUMNS: &str =
    "id, organization_id, name, role::text AS role, expires_at, created_at";

impl Store {
    pub async fn create_organization(&self, name: &str) -> Result<Organization> {
        sqlx::query_as(
            "INSERT INTO organizations (id, name) VALUES ($1, $2) RETURNING id, name, created_at",
        )
        .bind(Uuid::new_v4())
        .bind(name)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::unique(e, || format!("organization {name:?} already exists")))
    }

    pub async fn organization(&self, id: Uuid) -> Result<Organization> {
        sqlx::query_as("SELECT id, name, created_at FROM organizations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("organization", id))
    }

    /// Creates a token; returns it with its secret, which is not stored and never shown again.
    pub async fn create_token(
        &self,
        organization_id: Uuid,
        new: &NewToken<'_>,
    ) -> Result<(ApiToken, String)> {
        let secret = crypto::generate_token();
        let sql = format!(
            "INSERT INTO api_tokens (id, organization_id, name, token_sha256, role, expires_at) \
             VALUES ($1, $2, $3, $4, $5::token_role, $6) RETURNING {TOKEN_COLUMNS}"
        );
        let token = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(Uuid::new_v4())
            .bind(organization_id)
            .bind(new.name)
            .bind(crypto::hash_token(&secret))
            .bind(new.role)
            .bind(new.expires_at)
            .fetch_one(&self.pool)
            .await?;
        Ok((token, secret))
    }

    /// The token a secret belongs to, unless unknown, revoked or expired.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<ApiToken>> {
        let hash = crypto::hash_token(secret);
        // The lookup is by hash (an index), so it cannot leak the secret through timing.
        let sql = format!(
            "UPDATE api_tokens SET last_used_at = now() WHERE token_sha256 = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > now()) RETURNING {TOKEN_COLUMNS}"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&hash)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn revoke_token(&self, organization_id: Uuid, id: Uuid) -> Result<()> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND organization_id = $2 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(organization_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("token", id));
        }
        Ok(())
    }

    /// The organization's tokens that are not revoked (expired ones included: they still
    /// show what was minted), oldest first; never a secret (only its hash is stored).
    pub async fn tokens(&self, organization_id: Uuid) -> Result<Vec<TokenListed>> {
        Ok(sqlx::query_as(
            "SELECT id, name, role::text AS role, created_at, expires_at, last_used_at, \
             (expires_at IS NOT NULL AND expires_at <= now()) AS expired \
             FROM api_tokens WHERE organization_id = $1 AND revoked_at IS NULL \
             ORDER BY created_at, id",
        )
        .bind(organization_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Removes a member; the organization's last owner stays (409).
    pub async fn remove_member(&self, organization_id: Uuid, id: Uuid) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let member = Self::member_keeping_an_owner(&mut tx, organization_id, id, None).await?;
        sqlx::query("DELETE FROM members WHERE id = $1 AND organization_id = $2")
            .bind(member.id)
            .bind(organization_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives a member another role; the organization's last owner cannot be demoted (409).
    pub async fn set_member_role(
        &self,
        organization_id: Uuid,
        id: Uuid,
        role: MemberRole,
    ) -> Result<Member> {
        let mut tx = self.pool.begin().await?;
        Self::member_keeping_an_owner(&mut tx, organization_id, id, Some(role)).await?;
        let member = sqlx::query_as(
            "UPDATE members SET role = $3 WHERE id = $1 AND organization_id = $2 \
             RETURNING id, email, role, created_at",
        )
        .bind(id)
        .bind(organization_id)
        .bind(role)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(member)
    }

    /// The member `id` of the organization, locked with the organization's owners, refused
    /// when it is the last owner and would stop being one (removed: `becomes` is `None`). The
    /// owners' rows are locked in one order, so two owners demoting each other at once cannot
    /// both succeed.
    async fn member_keeping_an_owner(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        organization_id: Uuid,
        id: Uuid,
        becomes: Option<MemberRole>,
    ) -> Result<Member> {
        let owners: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM members WHERE organization_id = $1 AND (role = $2 OR id = $3) \
             ORDER BY id FOR UPDATE",
        )
        .bind(organization_id)
        .bind(MemberRole::Owner)
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
        let member: Member = sqlx::query_as(
            "SELECT id, email, role, created_at FROM members WHERE id = $1 AND organization_id = $2",
        )
        .bind(id)
        .bind(organization_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::not_found("member", id))?;
        let other_owners = owners.iter().filter(|o| **o != id).count();
        if member.role == MemberRole::Owner
            && becomes != Some(MemberRole::Owner)
            && other_owners == 0
        {
            return Err(StoreError::Conflict(format!(
                "{} is the organization's last owner: make another member owner first",
                member.email
            )));
        }
        Ok(member)
    }

    pub async fn add_member(
        &self,
        organization_id: Uuid,
        email: &str,
        role: MemberRole,
    ) -> Result<Member> {
        sqlx::query_as(
            "INSERT INTO members (id, organization_id, email, role) VALUES ($1, $2, $3, $4) \
             RETURNING id, email, role, created_at",
        )
        .bind(Uuid::new_v4())
        .bind(organization_id)
        .bind(email)
        .bind(role)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::unique(e, || format!("member {email:?} already exists")))
    }

    pub async fn members(&self, organization_id: Uuid) -> Result<Vec<Member>> {
        Ok(sqlx::query_as(
            "SELECT id, email, role, created_at FROM members WHERE organization_id = $1 ORDER BY created_at, id",
        )
        .bind(organization_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
