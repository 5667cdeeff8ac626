//! Leases of periodic jobs (#15): with several control instances on one database, each job
//! (node monitor, domain checks, log retention, backup scheduler) runs in the one instance
//! holding its lease. A lease is taken when free or expired and renewed by its holder; it is
//! never taken from a live holder. `crate::pipeline::jobs` runs a job under its lease.

use std::time::Duration;

use uuid::Uuid;

use super::{Result, Store};

/// Who holds a job's lease.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobLease {
    pub job: String,
    pub owner: Uuid,
    /// Not expired yet (by the database's clock).
    pub live: bool,
}

impl Store {
    /// Takes the lease of `job` for `owner` for `ttl` when it is free, expired or already
    /// `owner`'s (a renewal); false while another owner's lease is live. One statement: two
    /// instances racing for a free lease cannot both get it.
    pub async fn take_job_lease(&self, job: &str, owner: Uuid, ttl: Duration) -> Result<bool> {
        let taken: Option<(Uuid,)> = sqlx::query_as(
            "INSERT INTO job_leases (job, owner, expires_at) \
             VALUES ($1, $2, now() + $3 * interval '1 millisecond') \
             ON CONFLICT (job) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, \
                taken_at = CASE WHEN job_leases.owner = EXCLUDED.owner THEN job_leases.taken_at ELSE now() END \
             WHERE job_leases.owner = EXCLUDED.owner OR job_leases.expires_at < now() \
             RETURNING owner",
        )
        .bind(job)
        .bind(owner)
        .bind(ttl.as_millis() as f64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(taken.is_some())
    }

    /// Gives the lease of `job` up (a clean shutdown), if `owner` holds it: another instance
    /// takes the job at its next try instead of after the expiry.
    pub async fn release_job_lease(&self, job: &str, owner: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM job_leases WHERE job = $1 AND owner = $2")
            .bind(job)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every job's lease, by job.
    pub async fn job_leases(&self) -> Result<Vec<JobLease>> {
        Ok(sqlx::query_as(
            "SELECT job, owner, expires_at > now() AS live FROM job_leases ORDER BY job",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
