-- Periodic jobs that one control instance runs at a time (#15): several stackpad-control
-- processes share one PostgreSQL; the instance holding a job's lease runs it and renews the
-- lease while it runs; once the lease expired (its holder died or lost the database), another
-- instance takes the job. Deployments have their own leases (deployments.lease_owner).
CREATE TABLE job_leases (
    job text PRIMARY KEY,
    owner uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now()
);
