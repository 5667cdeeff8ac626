-- The platform CA and node joining (#15).

-- One row: the CA every daemon certificate chains to. Its key is sealed with the control
-- plane's encryption key (crypto::SecretBox, associated data "platform_ca").
CREATE TABLE platform_ca (
    id          SMALLINT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    cert_pem    TEXT NOT NULL,
    key_sealed  BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One-time, expiring join tokens; only their SHA-256 is kept.
CREATE TABLE join_tokens (
    id          UUID PRIMARY KEY,
    token_hash  BYTEA NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('build', 'compute', 'proxy')),
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ,
    node_id     UUID REFERENCES nodes(id) ON DELETE SET NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What a joined node registered beside its role and capacity: the subnet its containers get
-- addresses from, and its WireGuard public key and endpoint (the cluster's private network).
ALTER TABLE nodes ADD COLUMN container_subnet TEXT;
ALTER TABLE nodes ADD COLUMN wireguard_public_key TEXT;
ALTER TABLE nodes ADD COLUMN wireguard_endpoint TEXT;
