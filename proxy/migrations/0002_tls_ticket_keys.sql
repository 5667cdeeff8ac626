-- TLS session ticket keys shared by every proxy instance on this store (#16): a ticket issued by
-- one instance resumes on any other. A new key is added every rotation period; keys older than
-- rotation + ticket lifetime are deleted, and a ticket sealed with one of them gets a full
-- handshake.
CREATE TABLE tls_ticket_keys (
    -- 16 random bytes: the key's name, at the start of every ticket it seals.
    id         bytea PRIMARY KEY,
    -- The 32-byte ChaCha20-Poly1305 key, sealed with the store key.
    key_sealed bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
