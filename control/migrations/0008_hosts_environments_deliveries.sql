-- Issue #17: platform host names that cannot collide, environment variables and copies, and
-- the webhook deliveries a user can look at.

-- Every platform host label (the part before the apps domain) a web service answers at. The
-- primary key makes a label one service's across every organization; a service has one
-- primary label (`<service>[-<env>]-<project>-<org>`, or a hashed variant, see
-- control::domains::route) and maybe a legacy one: the `<service>-<project>` it answered at
-- before this migration, kept as an alias so old URLs still reach it.
CREATE TABLE platform_hosts (
    label           TEXT PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    service_id      UUID NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    legacy          BOOLEAN NOT NULL DEFAULT false,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX platform_hosts_primary ON platform_hosts (service_id) WHERE NOT legacy;
CREATE INDEX platform_hosts_service ON platform_hosts (service_id);

-- The old hosts of the web services that exist now. Where two services had the same old host
-- (they collided at the proxy), the older one keeps it.
INSERT INTO platform_hosts (label, organization_id, service_id, legacy)
SELECT DISTINCT ON (label) label, organization_id, id, true
FROM (
    SELECT lower(s.name || '-' || p.name) AS label, s.organization_id, s.id, s.created_at
    FROM services s JOIN projects p ON p.id = s.project_id
    WHERE s.kind = 'web'
) old
ORDER BY label, created_at, id;

-- Variables of an environment, given to every service in it; they override a service's own
-- variable of the same name (a staging copy's DATABASE_URL). Sealed like service_env.
CREATE TABLE environment_env (
    environment_id  UUID NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    value_enc       BYTEA NOT NULL,
    secret          BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (environment_id, name)
);

-- The environment a copy was made from (its services, settings and variables were copied).
ALTER TABLE environments ADD COLUMN created_from UUID REFERENCES environments(id) ON DELETE SET NULL;

-- Recent webhook deliveries and what became of them, so a user can see why a push did
-- nothing. Pruned to the latest rows per project when written.
CREATE TABLE webhook_delivery_log (
    id              BIGSERIAL PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    project_id      UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    service_id      UUID REFERENCES services(id) ON DELETE SET NULL,
    service_name    TEXT NOT NULL,
    delivery_id     TEXT,
    event           TEXT,
    outcome         TEXT NOT NULL CHECK (outcome IN ('deployed', 'ignored', 'refused')),
    reason          TEXT NOT NULL,
    http_status     INTEGER NOT NULL,
    deployment_id   UUID REFERENCES deployments(id) ON DELETE SET NULL,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_delivery_log_project ON webhook_delivery_log (project_id, id);
