-- Backups that fail or are missed, WAL shipping that fails, row counts of dumps, and the
-- objects of deleted services (#14 items 7 and 8).

-- When the policy began (a service never backed up is missed one interval and a grace after
-- it), and when the current stretch without a backup was reported as missed (cleared once a
-- backup completes, so each stretch is one event on the service).
ALTER TABLE backup_policies ADD COLUMN created_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE backup_policies ADD COLUMN missed_at TIMESTAMPTZ;
-- PostgreSQL WAL shipping: failed passes in all (a counter on /metrics), since when it fails
-- now (NULL while it works) and the last error.
ALTER TABLE backup_policies ADD COLUMN wal_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE backup_policies ADD COLUMN wal_failing_since TIMESTAMPTZ;
ALTER TABLE backup_policies ADD COLUMN wal_error TEXT;

-- Rows per table as the dump itself holds them (MariaDB: counted from the dump's INSERTs while
-- it is stored), compared with what the verification restore holds.
ALTER TABLE backups ADD COLUMN row_counts JSONB;

-- Objects of a deleted service's backups and WAL: the rows go with the service (ON DELETE
-- CASCADE), their objects are kept for `backups.deleted_keep_ms` after the delete (7 days by
-- default) and then removed by the backup scheduler. A trigger records them whatever deletes
-- the service (the service, its environment, project or organization).
CREATE TABLE deleted_backup_objects (
    object_key          TEXT PRIMARY KEY,
    service_id          UUID NOT NULL,
    deleted_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX deleted_backup_objects_due ON deleted_backup_objects (deleted_at);

CREATE FUNCTION stackpad_keep_deleted_backup_objects() RETURNS trigger AS $$
BEGIN
    INSERT INTO deleted_backup_objects (object_key, service_id)
        SELECT object_key, OLD.id FROM backups WHERE service_id = OLD.id
        UNION SELECT object_key, OLD.id FROM backup_wal WHERE service_id = OLD.id
        ON CONFLICT (object_key) DO NOTHING;
    RETURN OLD;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER services_keep_deleted_backup_objects BEFORE DELETE ON services
    FOR EACH ROW EXECUTE FUNCTION stackpad_keep_deleted_backup_objects();
