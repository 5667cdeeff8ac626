-- `DELETE /services/{id}?purge=true` (#14): the deleted service's backup and WAL objects are due
-- at once instead of after `backups.deleted_keep_ms` (7 days by default), like its volumes.
ALTER TABLE deleted_backup_objects ADD COLUMN purge BOOLEAN NOT NULL DEFAULT false;
