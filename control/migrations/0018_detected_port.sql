-- The port a build detected (#19): a service's port is used as given only when the user gave it
-- (create or update with "port"); otherwise a built deployment runs, health-checks and routes on
-- the port its build detected (deployments.container_port, kept for rollbacks), and the
-- service's port is the fallback when nothing was detected. Services from before keep the port
-- they ran with (explicit).
ALTER TABLE services ADD COLUMN port_explicit BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE deployments ADD COLUMN container_port INTEGER
    CHECK (container_port IS NULL OR container_port BETWEEN 1 AND 65535);
