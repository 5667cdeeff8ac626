-- A service whose replicas must move off a lost or drained node while no node has room for
-- its set (#15): it waits here, and control's node monitor places it again once room frees
-- (a node answers again, joins, or another service shrinks). One row per waiting service.
CREATE TABLE room_waits (
    service_id  UUID PRIMARY KEY REFERENCES services(id) ON DELETE CASCADE,
    node_id     UUID,
    cause       TEXT NOT NULL CHECK (cause IN ('lost', 'drained')),
    reason      TEXT NOT NULL,
    since       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The service's own scheduling timeline (like deployment_events, for what happens to a
-- service outside any deployment): waiting for room, placed again, wait ended.
CREATE TABLE service_events (
    id          BIGSERIAL PRIMARY KEY,
    service_id  UUID NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    step        TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX service_events_service ON service_events (service_id, id);
