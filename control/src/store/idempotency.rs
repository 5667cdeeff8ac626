//! Idempotency keys of create calls: the first response is stored and replayed.

use uuid::Uuid;

use super::{Result, Store};

/// A stored response: the request's hash, status and body.
pub type StoredResponse = (Vec<u8>, u16, serde_json::Value);

impl Store {
    pub async fn idempotent_response(
        &self,
        organization_id: Uuid,
        key: &str,
    ) -> Result<Option<StoredResponse>> {
        let row: Option<(Vec<u8>, i32, serde_json::Value)> = sqlx::query_as(
            "SELECT request_sha256, status, response FROM idempotency_keys WHERE organization_id = $1 AND key = $2",
        )
        .bind(organization_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(h, s, r)| (h, s as u16, r)))
    }

    /// Stores the response unless another request with the key stored one first.
    pub async fn store_idempotent_response(
        &self,
        organization_id: Uuid,
        key: &str,
        request_sha256: &[u8],
        status: u16,
        response: &serde_json::Value,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO idempotency_keys (organization_id, key, request_sha256, status, response) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(organization_id)
        .bind(key)
        .bind(request_sha256)
        .bind(i32::from(status))
        .bind(response)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
