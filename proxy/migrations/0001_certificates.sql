-- The proxy's shared TLS state, in its own schema (stackpad_proxy) so that every proxy instance
-- sees the same certificates, ACME accounts, order leases, challenges and ACME history.

CREATE TABLE acme_accounts (
    directory_url      text PRIMARY KEY,
    -- instant-acme's AccountCredentials JSON, sealed with the store key.
    credentials_sealed bytea NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE allowed_domains (
    domain     text PRIMARY KEY,
    service_id text NOT NULL DEFAULT '',
    added_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE certificates (
    domain     text PRIMARY KEY,
    chain_pem  text NOT NULL,
    -- The private key PEM, sealed with the store key.
    key_sealed bytea NOT NULL,
    not_before timestamptz NOT NULL,
    not_after  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- At most one instance orders a given domain at a time; a crashed holder's lease expires.
CREATE TABLE order_leases (
    domain     text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- http-01 answers, so that whichever instance the CA reaches can answer.
CREATE TABLE http01_challenges (
    token             text PRIMARY KEY,
    key_authorization text NOT NULL,
    domain            text NOT NULL,
    expires_at        timestamptz NOT NULL
);

-- What the rate limiter and the backoff look at.
CREATE TABLE acme_events (
    id     bigserial PRIMARY KEY,
    kind   text NOT NULL CHECK (kind IN ('ordered', 'issued', 'failed')),
    domain text NOT NULL,
    detail text NOT NULL DEFAULT '',
    at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX acme_events_at ON acme_events (at);
CREATE INDEX acme_events_domain ON acme_events (domain, at);
