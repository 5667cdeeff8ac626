//! Organizations, their members and API tokens.

use uuid::Uuid;

use super::{ApiToken, Member, Organization, Result, Store, StoreError};
use crate::crypto;

/// id, organization, name, created at, hash.
type TokenRow = (Uuid, Uuid, String, chrono::DateTime<chrono::Utc>, Vec<u8>);

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
        name: &str,
    ) -> Result<(ApiToken, String)> {
        let secret = crypto::generate_token();
        let token = sqlx::query_as(
            "INSERT INTO api_tokens (id, organization_id, name, token_sha256) VALUES ($1, $2, $3, $4) \
             RETURNING id, organization_id, name, created_at",
        )
        .bind(Uuid::new_v4())
        .bind(organization_id)
        .bind(name)
        .bind(crypto::hash_token(&secret))
        .fetch_one(&self.pool)
        .await?;
        Ok((token, secret))
    }

    /// The token a secret belongs to, unless unknown or revoked.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<ApiToken>> {
        let hash = crypto::hash_token(secret);
        let row: Option<TokenRow> = sqlx::query_as(
            "UPDATE api_tokens SET last_used_at = now() WHERE token_sha256 = $1 AND revoked_at IS NULL \
             RETURNING id, organization_id, name, created_at, token_sha256",
        )
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.filter(|r| crypto::constant_time_eq(&r.4, &hash)).map(
            |(id, organization_id, name, created_at, _)| ApiToken {
                id,
                organization_id,
                name,
                created_at,
            },
        ))
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

    pub async fn add_member(
        &self,
        organization_id: Uuid,
        email: &str,
        role: &str,
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
