-- Stackpad control plane state. Every object below an organization carries organization_id so
-- that every query can scope by it.

CREATE TABLE organizations (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE members (
    id              UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    email           TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'viewer')),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (organization_id, email)
);

-- Only the SHA-256 of a token is stored; the token itself is shown once at creation.
CREATE TABLE api_tokens (
    id              UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    token_sha256    BYTEA NOT NULL UNIQUE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at    TIMESTAMPTZ,
    revoked_at      TIMESTAMPTZ
);

CREATE TABLE projects (
    id              UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (organization_id, name)
);

CREATE TABLE environments (
    id              UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    project_id      UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    -- Pushes to this branch deploy the environment's services.
    branch          TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);

CREATE TABLE services (
    id              UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    project_id      UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    environment_id  UUID NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('web', 'database', 'cache', 'worker')),
    -- Source: an image reference, or a git repository built by buildd.
    image           TEXT,
    git_url         TEXT,
    git_subdirectory TEXT NOT NULL DEFAULT '',
    -- Build settings, resources and health check as JSON documents (typed in Rust).
    build           JSONB NOT NULL DEFAULT '{}',
    resources       JSONB NOT NULL DEFAULT '{}',
    health_check    JSONB,
    port            INTEGER NOT NULL DEFAULT 8080,
    replicas        INTEGER NOT NULL DEFAULT 1,
    domains         TEXT[] NOT NULL DEFAULT '{}',
    -- Secret for GitHub webhook signatures, encrypted like env vars.
    webhook_secret_enc BYTEA,
    -- The deployment serving traffic now.
    current_deployment_id UUID,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (environment_id, name),
    CHECK ((image IS NULL) <> (git_url IS NULL))
);

-- Env vars and secrets, encrypted at rest (ChaCha20-Poly1305, nonce prefixed).
CREATE TABLE service_env (
    service_id  UUID NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    value_enc   BYTEA NOT NULL,
    secret      BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (service_id, name)
);

CREATE TABLE nodes (
    id              UUID PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL CHECK (role IN ('build', 'compute', 'proxy')),
    -- gRPC address of the node's daemon, e.g. "http://127.0.0.1:7001".
    address         TEXT NOT NULL,
    -- Internal address containers on this node are reached at by the proxy.
    cpu_millis      INTEGER NOT NULL DEFAULT 0,
    memory_bytes    BIGINT NOT NULL DEFAULT 0,
    build_slots     INTEGER NOT NULL DEFAULT 4,
    status          TEXT NOT NULL DEFAULT 'up' CHECK (status IN ('up', 'down')),
    last_heartbeat_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Which repositories a build node has built (its cache is warm for them).
CREATE TABLE build_cache (
    node_id     UUID NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    repository  TEXT NOT NULL,
    last_built_at TIMESTAMPTZ NOT NULL,
    builds      INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (node_id, repository)
);

CREATE TABLE deployments (
    id              UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    service_id      UUID NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    -- Public state and the pipeline's finer phase (see pipeline::Phase).
    state           TEXT NOT NULL,
    phase           TEXT NOT NULL,
    git_ref         TEXT,
    git_commit      TEXT,
    image           TEXT,
    image_digest    TEXT,
    rollback_of     UUID REFERENCES deployments(id),
    -- The serving deployment when this one started; stopped after the switch.
    previous_deployment_id UUID,
    build_node_id   UUID REFERENCES nodes(id),
    node_id         UUID REFERENCES nodes(id),
    container_id    TEXT,
    upstream_address TEXT,
    failure_reason  TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    -- Lease of the worker driving it; expired leases are taken over (crash resume).
    lease_owner     UUID,
    lease_expires_at TIMESTAMPTZ,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ,
    -- Set once it reached ready: only such deployments can be rolled back to.
    ready_at        TIMESTAMPTZ
);
CREATE INDEX deployments_claim ON deployments (created_at) WHERE phase NOT IN ('ready', 'failed', 'superseded', 'cancelled');
CREATE INDEX deployments_service ON deployments (service_id, created_at);

-- The step timeline: one row per phase change.
CREATE TABLE deployment_events (
    id              BIGSERIAL PRIMARY KEY,
    deployment_id   UUID NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    phase           TEXT NOT NULL,
    detail          TEXT NOT NULL DEFAULT '',
    at              TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX deployment_events_deployment ON deployment_events (deployment_id, id);

-- A build occupies a slot on its build node until it ends.
CREATE TABLE build_slots (
    deployment_id   UUID PRIMARY KEY REFERENCES deployments(id) ON DELETE CASCADE,
    node_id         UUID NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    taken_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE idempotency_keys (
    organization_id UUID NOT NULL,
    key             TEXT NOT NULL,
    request_sha256  BYTEA NOT NULL,
    status          INTEGER NOT NULL,
    response        JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, key)
);

CREATE TABLE webhook_deliveries (
    delivery_id     TEXT PRIMARY KEY,
    service_id      UUID NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE audit_log (
    id              BIGSERIAL PRIMARY KEY,
    organization_id UUID,
    token_id        UUID,
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    status          INTEGER NOT NULL,
    at              TIMESTAMPTZ NOT NULL DEFAULT now()
);
