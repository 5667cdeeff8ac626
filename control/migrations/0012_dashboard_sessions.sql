-- Dashboard sign-in (#18): a browser session is exchanged for an API token (or the operator
-- token) and acts as it: revoking or expiring the token ends its sessions. Only hashes are
-- stored: of the session id (the cookie) and, for an operator session, of the operator token
-- it was opened with (a changed operator token ends them).
CREATE TABLE dashboard_sessions (
    id_sha256          BYTEA PRIMARY KEY,
    token_id           UUID REFERENCES api_tokens(id) ON DELETE CASCADE,
    admin_token_sha256 BYTEA,
    csrf_token         TEXT NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at         TIMESTAMPTZ NOT NULL,
    CHECK ((token_id IS NULL) <> (admin_token_sha256 IS NULL))
);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);
