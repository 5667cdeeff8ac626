-- Backups of managed services (#14): each dump, compressed, encrypted with a key of the
-- organization and written to the object store (`backups.store`). A row is `completed` only
-- once its object is written whole and its SHA-256 recorded; a backup whose control stopped
-- stays `running` until the scheduler's next pass finds its heartbeat stale and fails it.
CREATE TABLE backups (
    id                  UUID PRIMARY KEY,
    organization_id     UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    service_id          UUID NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    engine              TEXT NOT NULL CHECK (engine IN ('postgres', 'mariadb', 'redis')),
    trigger             TEXT NOT NULL CHECK (trigger IN ('manual', 'scheduled', 'pre_restore')),
    state               TEXT NOT NULL CHECK (state IN ('running', 'completed', 'failed')),
    verification        TEXT NOT NULL DEFAULT 'pending'
                        CHECK (verification IN ('pending', 'verified', 'failed')),
    -- What the verification restore found (`tables 3 rows 120`), or why it failed.
    verification_detail TEXT NOT NULL DEFAULT '',
    object_key          TEXT NOT NULL,
    -- Bytes of the stored object / of the engine's dump before compression.
    size_bytes          BIGINT,
    dump_bytes          BIGINT,
    sha256              TEXT,
    error               TEXT,
    started_at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    completed_at        TIMESTAMPTZ,
    duration_ms         BIGINT,
    verified_at         TIMESTAMPTZ
);
CREATE INDEX backups_service ON backups (service_id, started_at DESC);
-- One backup of a service at a time (two controls, a manual one during a scheduled one).
CREATE UNIQUE INDEX backups_one_running ON backups (service_id) WHERE state = 'running';

-- When each managed service is backed up and how many completed backups are kept. A row is
-- added for every managed service by the scheduler; `next_at` is claimed with SKIP LOCKED.
CREATE TABLE backup_policies (
    service_id          UUID PRIMARY KEY REFERENCES services(id) ON DELETE CASCADE,
    interval_seconds    INTEGER NOT NULL DEFAULT 86400 CHECK (interval_seconds >= 60),
    keep                INTEGER NOT NULL DEFAULT 7 CHECK (keep BETWEEN 1 AND 1000),
    next_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Failed scheduled runs in a row (reset by a completed one).
    failures            INTEGER NOT NULL DEFAULT 0
);

-- A restore of a backup into a service (the same one, or a new one of the same engine).
CREATE TABLE backup_restores (
    id                  UUID PRIMARY KEY,
    organization_id     UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    backup_id           UUID NOT NULL REFERENCES backups(id) ON DELETE CASCADE,
    service_id          UUID NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    -- The backup of the data the restore replaced (restores into the same service).
    pre_restore_backup_id UUID REFERENCES backups(id) ON DELETE SET NULL,
    state               TEXT NOT NULL CHECK (state IN ('running', 'completed', 'failed')),
    error               TEXT,
    started_at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    finished_at         TIMESTAMPTZ
);

-- The timeline of a backup or a restore (like deployment_events): one row per step.
CREATE TABLE backup_events (
    id                  BIGSERIAL PRIMARY KEY,
    subject_id          UUID NOT NULL,
    step                TEXT NOT NULL,
    detail              TEXT NOT NULL DEFAULT '',
    at                  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX backup_events_subject ON backup_events (subject_id, id);
