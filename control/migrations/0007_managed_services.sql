-- Managed database and cache services (#14): the engine Stackpad runs for a service. Its
-- credentials are the service's own secrets in service_env (sealed like every secret); the
-- image, port and probe are in the services row as for any image service.
CREATE TABLE managed_services (
    service_id          UUID PRIMARY KEY REFERENCES services(id) ON DELETE CASCADE,
    engine              TEXT NOT NULL CHECK (engine IN ('postgres', 'mariadb', 'redis')),
    password_rotated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
