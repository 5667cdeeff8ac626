//! Objects of a deleted service's backups and WAL (#14): the rows go with the service, but a
//! trigger (migration 0028) records their object keys in `deleted_backup_objects`. They are
//! kept `backups.deleted_keep_ms` after the delete (7 days by default, like the service's
//! volumes: an operator can still undo a mistaken delete from them), then each scheduler pass
//! removes the due ones from the object store and forgets them. An object the store cannot
//! delete now keeps its row and is tried again at the next pass. A delete with `purge=true`
//! (migration 0030) makes them due at once ([`purge`]) and starts a sweep right away.

use std::time::Duration;

use uuid::Uuid;

use super::{BackupError, Backups};
use crate::store::{Store, StoreError};

/// Objects removed per pass at most (the rest at the next pass).
const PER_PASS: i64 = 500;

impl Backups {
    /// Removes the objects of deleted services kept for longer than `keep`; returns how many.
    pub async fn sweep_deleted_objects(&self, keep: Duration) -> Result<usize, BackupError> {
        let store = self.store();
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT object_key FROM deleted_backup_objects \
             WHERE purge OR deleted_at <= now() - make_interval(secs => $1) \
             ORDER BY purge DESC, deleted_at LIMIT $2",
        )
        .bind(keep.as_secs_f64())
        .bind(PER_PASS)
        .fetch_all(&store.pool)
        .await
        .map_err(crate::store::StoreError::from)?;
        let mut removed = 0;
        for key in due {
            match self.objects().delete(&self.path(&key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    sqlx::query("DELETE FROM deleted_backup_objects WHERE object_key = $1")
                        .bind(&key)
                        .execute(&store.pool)
                        .await
                        .map_err(crate::store::StoreError::from)?;
                    removed += 1;
                }
                Err(e) => return Err(self.objects_error(e)),
            }
        }
        if removed > 0 {
            tracing::info!(removed, "objects of deleted services' backups removed");
        }
        Ok(removed)
    }

    /// `DELETE /services/{id}?purge=true`: the deleted service's objects are due now, and a
    /// sweep starts in the background (what it cannot delete waits for the scheduler's next
    /// pass, like every due object).
    pub async fn purge_deleted(&self, service_id: Uuid) -> Result<(), StoreError> {
        let marked = purge(self.store(), service_id).await?;
        if marked > 0 {
            let this = self.clone();
            let keep = Duration::from_millis(self.settings().deleted_keep_ms);
            tokio::spawn(async move {
                if let Err(e) = this.sweep_deleted_objects(keep).await {
                    tracing::warn!(service = %service_id, error = %e, "removing a purged service's backup objects failed; tried again at the next pass");
                }
            });
        }
        Ok(())
    }
}

/// Marks the kept objects of deleted service `service_id` due at once; how many.
pub async fn purge(store: &Store, service_id: Uuid) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("UPDATE deleted_backup_objects SET purge = true WHERE service_id = $1")
            .bind(service_id)
            .execute(&store.pool)
            .await?
            .rows_affected(),
    )
}
