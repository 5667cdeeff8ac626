-- PostgreSQL point-in-time recovery (#14): base backups beside the dumps, and the archived WAL.
-- A base backup (`pg_basebackup`) is a row of `backups` of kind 'base'; with the WAL archived
-- after it, it restores the service to any second between its completion and the newest
-- archived WAL file.
ALTER TABLE backups ADD COLUMN kind TEXT NOT NULL DEFAULT 'dump' CHECK (kind IN ('dump', 'base'));

-- Each WAL file the engine archived (a segment, a timeline history, a backup label), shipped
-- from the service's volume by the backup scheduler, sealed like a backup and stored in the
-- object store. `archived_at` is when PostgreSQL archived it (the file's time on the volume):
-- everything committed before that time is in this file or an earlier one. A row exists only
-- once its object is written whole; the file is removed from the volume after that.
CREATE TABLE backup_wal (
    id                  UUID PRIMARY KEY,
    organization_id     UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    service_id          UUID NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    object_key          TEXT NOT NULL,
    archived_at         TIMESTAMPTZ NOT NULL,
    size_bytes          BIGINT NOT NULL,
    wal_bytes           BIGINT NOT NULL,
    sha256              TEXT NOT NULL,
    stored_at           TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (service_id, name)
);
CREATE INDEX backup_wal_service_time ON backup_wal (service_id, archived_at);

-- A restore to a point in time names the time (the backup is the base backup it started from).
ALTER TABLE backup_restores ADD COLUMN to_time TIMESTAMPTZ;
