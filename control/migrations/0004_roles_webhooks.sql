-- Token roles and expiry, and webhook replay protection (issue #13).

-- What a token may do (see api::roles): owner > deployer > read_only. Tokens made before roles
-- existed could do everything: they become owners. New tokens always name their role.
CREATE TYPE token_role AS ENUM ('owner', 'deployer', 'read_only');
ALTER TABLE api_tokens ADD COLUMN role token_role NOT NULL DEFAULT 'owner';
ALTER TABLE api_tokens ALTER COLUMN role DROP DEFAULT;
-- NULL = never expires. An expired token authenticates nothing (401).
ALTER TABLE api_tokens ADD COLUMN expires_at TIMESTAMPTZ;

-- Signed webhook bodies seen per service: the same body (hence the same signature) under a new
-- delivery id inside the replay window is refused. Rows older than the window are pruned as
-- new deliveries arrive.
CREATE TABLE webhook_bodies (
    service_id      UUID NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    body_sha256     BYTEA NOT NULL,
    delivery_id     TEXT NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, body_sha256)
);
CREATE INDEX webhook_bodies_received ON webhook_bodies (received_at);
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);
