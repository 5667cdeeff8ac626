-- Custom domains of web services (issue #4): routed and given certificates only once DNS
-- points them at the service (status 'verified'); re-checked periodically.
CREATE TABLE custom_domains (
    -- Lower case, no trailing dot. One service per domain across every organization.
    domain          TEXT PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    service_id      UUID NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'verified', 'failed')),
    -- The CNAME target the domain must point at: the service's platform host.
    target          TEXT NOT NULL,
    -- What the last check saw ("none" when no record), and why it did not match.
    last_seen       TEXT,
    last_error      TEXT,
    checked_at      TIMESTAMPTZ,
    verified_at     TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX custom_domains_service ON custom_domains (service_id);
