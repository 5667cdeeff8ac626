//! Idempotency keys of create calls: the first request reserves the key, its response is stored
//! and replayed to retries.

use uuid::Uuid;

use super::{Result, Store};

/// What a key holds when it is not new: the request's hash, and the stored status and body
/// (status 0 while the first request is still running).
pub type StoredResponse = (Vec<u8>, u16, serde_json::Value);

impl Store {
    /// Reserves `key` for this request; `None` when reserved now, else what the key holds.
    pub async fn reserve_idempotency_key(
        &self,
        organization_id: Uuid,
        key: &str,
        request_sha256: &[u8],
    ) -> Result<Option<StoredResponse>> {
        let reserved = sqlx::query(
            "INSERT INTO idempotency_keys (organization_id, key, request_sha256, status, response) \
             VALUES ($1, $2, $3, 0, 'null') ON CONFLICT DO NOTHING",
        )
        .bind(organization_id)
        .bind(key)
        .bind(request_sha256)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if reserved {
            return Ok(None);
        }
        let row: Option<(Vec<u8>, i32, serde_json::Value)> = sqlx::query_as(
            "SELECT request_sha256, status, response FROM idempotency_keys WHERE organization_id = $1 AND key = $2",
        )
        .bind(organization_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        // Released between the insert and the select: report it as still running.
        Ok(Some(row.map_or_else(
            || (request_sha256.to_vec(), 0, serde_json::Value::Null),
            |(h, s, r)| (h, s as u16, r),
        )))
    }

    /// Stores the response of the request that reserved `key`.
    pub async fn complete_idempotency_key(
        &self,
        organization_id: Uuid,
        key: &str,
        status: u16,
        response: &serde_json::Value,
    ) -> Result<()> {
        sqlx::query("UPDATE idempotency_keys SET status = $3, response = $4 WHERE organization_id = $1 AND key = $2")
            .bind(organization_id)
            .bind(key)
            .bind(i32::from(status))
            .bind(response)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Frees a key whose request failed, so a retry runs again.
    pub async fn release_idempotency_key(&self, organization_id: Uuid, key: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE organization_id = $1 AND key = $2 AND status = 0",
        )
        .bind(organization_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
