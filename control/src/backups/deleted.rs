//! Objects of a deleted service's backups and WAL (#14): the rows go with the service, but a
//! trigger (migration 0028) records their object keys in `deleted_backup_objects`. They are
//! kept `backups.deleted_keep_ms` after the delete (7 days by default, like the service's
//! volumes: an operator can still undo a mistaken delete from them), then each scheduler pass
//! removes the due ones from the object store and forgets them. An object the store cannot
//! delete now keeps its row and is tried again at the next pass.

use std::time::Duration;

use super::{BackupError, Backups};

/// Objects removed per pass at most (the rest at the next pass).
const PER_PASS: i64 = 500;

impl Backups {
    /// Removes the objects of deleted services kept for longer than `keep`; returns how many.
    pub async fn sweep_deleted_objects(&self, keep: Duration) -> Result<usize, BackupError> {
        let store = self.store();
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT object_key FROM deleted_backup_objects \
             WHERE deleted_at <= now() - make_interval(secs => $1) ORDER BY deleted_at LIMIT $2",
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
}
