//! Deployments: the durable queue (rows claimed with `FOR UPDATE SKIP LOCKED` under a lease),
//! fenced transitions, the step timeline, rollback and cancel.

use std::time::Duration;

use tenant::git::{CommitSha, GitRef};
use tenant::image::ImageRef;
use uuid::Uuid;

use super::{Deployment, DeploymentEvent, Page, PageRequest, Result, Store, StoreError, page};
use crate::pipeline::machine::{self, Cancel, DeploymentState, Event, Phase, Transition};

/// What a deployment deploys: a git ref/commit (built first) or an image, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewDeployment {
    pub git_ref: Option<GitRef>,
    pub git_commit: Option<CommitSha>,
    pub image: Option<ImageRef>,
    pub rollback_of: Option<Uuid>,
    /// The port the deployed image's build detected (a rollback keeps its target's).
    pub container_port: Option<i32>,
}

/// Facts a step learned, recorded with its transition (`None` keeps the stored value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepData {
    pub build_node_id: Option<Uuid>,
    pub git_commit: Option<String>,
    pub image: Option<String>,
    pub image_digest: Option<String>,
    pub node_id: Option<Uuid>,
    pub container_id: Option<String>,
    pub upstream_address: Option<String>,
    /// The port the build detected the app listens on.
    pub container_port: Option<i32>,
}

/// A deployment a worker holds the lease of.
pub type Claimed = Deployment;

/// A deployment's state and the node it was placed on.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Placement {
    pub id: Uuid,
    pub state: DeploymentState,
    pub node_id: Option<Uuid>,
}

/// What a transaction reads of the deployment row it locks (columns by name: an unknown phase
/// is an error naming the column and the value).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct Lock {
    pub(super) phase: Phase,
    lease_owner: Option<Uuid>,
    service_id: Uuid,
}

const COLUMNS: &str = "id, organization_id, service_id, state, phase, git_ref, git_commit, image, image_digest, \
    rollback_of, previous_deployment_id, build_node_id, node_id, container_id, upstream_address, container_port, failure_reason, \
    cancel_requested, attempts, created_at, updated_at, finished_at, ready_at";

const TERMINAL: &str = "('ready', 'failed', 'superseded', 'cancelled')";

async fn add_event(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    phase: Phase,
    detail: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO deployment_events (deployment_id, phase, detail) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(phase.as_str())
        .bind(detail)
        .execute(conn)
        .await?;
    Ok(())
}

async fn set_phase(conn: &mut sqlx::PgConnection, id: Uuid, t: &Transition) -> Result<()> {
    sqlx::query(
        "UPDATE deployments SET phase = $2, state = $3, failure_reason = COALESCE($4, failure_reason), \
         updated_at = now(), \
         finished_at = CASE WHEN $5 THEN now() ELSE finished_at END, \
         ready_at = CASE WHEN $2 = 'ready' THEN now() ELSE ready_at END, \
         lease_owner = CASE WHEN $5 THEN NULL ELSE lease_owner END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(t.to.as_str())
    .bind(t.to.state().as_str())
    .bind(t.reason.as_deref().filter(|_| t.to != Phase::Ready))
    .bind(t.to.is_terminal())
    .execute(&mut *conn)
    .await?;
    add_event(conn, id, t.to, t.reason.as_deref().unwrap_or("")).await
}

impl Store {
    /// Queues a deployment; an older queued deployment of the service is superseded.
    pub async fn create_deployment(
        &self,
        organization_id: Uuid,
        service_id: Uuid,
        d: &NewDeployment,
    ) -> Result<Deployment> {
        let mut tx = self.pool.begin().await?;
        let found: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM services WHERE id = $1 AND organization_id = $2 FOR UPDATE",
        )
        .bind(service_id)
        .bind(organization_id)
        .fetch_optional(&mut *tx)
        .await?;
        found.ok_or_else(|| StoreError::not_found("service", service_id))?;
        let older: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM deployments WHERE service_id = $1 AND phase = 'queued' AND lease_owner IS NULL FOR UPDATE",
        )
        .bind(service_id)
        .fetch_all(&mut *tx)
        .await?;
        let id = Uuid::new_v4();
        for old in older {
            match machine::decide(Phase::Queued, &Event::NewerQueued { by: id }) {
                Ok(t) => set_phase(&mut tx, old, &t).await?,
                Err(e) => return Err(StoreError::Conflict(e.to_string())),
            }
        }
        sqlx::query(
            "INSERT INTO deployments (id, organization_id, service_id, state, phase, git_ref, git_commit, image, rollback_of, container_port) \
             VALUES ($1, $2, $3, 'queued', 'queued', $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(organization_id)
        .bind(service_id)
        .bind(d.git_ref.as_ref().map(GitRef::as_str))
        .bind(d.git_commit.as_ref().map(CommitSha::as_str))
        .bind(d.image.as_ref().map(ImageRef::to_string))
        .bind(d.rollback_of)
        .bind(d.container_port)
        .execute(&mut *tx)
        .await?;
        add_event(&mut tx, id, Phase::Queued, "").await?;
        tx.commit().await?;
        self.deployment(organization_id, id).await
    }

    pub async fn deployment(&self, organization_id: Uuid, id: Uuid) -> Result<Deployment> {
        let sql =
            format!("SELECT {COLUMNS} FROM deployments WHERE id = $1 AND organization_id = $2");
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(organization_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("deployment", id))
    }

    pub async fn deployment_unscoped(&self, id: Uuid) -> Result<Deployment> {
        let sql = format!("SELECT {COLUMNS} FROM deployments WHERE id = $1");
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("deployment", id))
    }

    pub async fn deployments(
        &self,
        organization_id: Uuid,
        service_id: Uuid,
        req: PageRequest,
    ) -> Result<Page<Deployment>> {
        self.service(organization_id, service_id).await?;
        // Newest first.
        let sql = format!(
            "SELECT {COLUMNS} FROM deployments WHERE organization_id = $1 AND service_id = $2 \
             AND ($3::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM deployments WHERE id = $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(organization_id)
            .bind(service_id)
            .bind(req.after)
            .bind(req.limit + 1)
            .fetch_all(&self.pool)
            .await?;
        Ok(page(rows, req, |d: &Deployment| d.id))
    }

    /// Every deployment of a service with its state, once per node it placed a container on
    /// (its instances' nodes; `None` when it placed none), any organization: the caller checked
    /// the service's.
    pub async fn service_deployment_nodes(&self, service_id: Uuid) -> Result<Vec<Placement>> {
        Ok(sqlx::query_as(
            "SELECT d.id, d.state, COALESCE(i.node_id, d.node_id) AS node_id FROM deployments d \
             LEFT JOIN (SELECT DISTINCT deployment_id, node_id FROM deployment_instances) i \
                ON i.deployment_id = d.id \
             WHERE d.service_id = $1 ORDER BY d.created_at, d.id",
        )
        .bind(service_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The step timeline.
    pub async fn deployment_events(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Vec<DeploymentEvent>> {
        self.deployment(organization_id, id).await?;
        Ok(sqlx::query_as(
            "SELECT phase, detail, at FROM deployment_events WHERE deployment_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Queues a deployment of the image an earlier ready deployment ran.
    pub async fn rollback(&self, organization_id: Uuid, target: Uuid) -> Result<Deployment> {
        let d = self.deployment(organization_id, target).await?;
        if d.ready_at.is_none() {
            return Err(StoreError::Conflict(format!(
                "deployment {target} never became ready; only ready deployments can be rolled back to"
            )));
        }
        let new = NewDeployment {
            rollback_of: Some(target),
            ..same_image(&d, "roll back to")?
        };
        self.create_deployment(organization_id, d.service_id, &new)
            .await
    }

    /// Queues a deployment of the image the service runs now (no build): its containers are
    /// replaced by `replicas` new ones, switched as one set (a scale, #15). `None` when no
    /// deployment serves the service yet.
    pub async fn redeploy_current(
        &self,
        organization_id: Uuid,
        service_id: Uuid,
    ) -> Result<Option<Deployment>> {
        let service = self.service(organization_id, service_id).await?;
        let Some(current) = service.current_deployment_id else {
            return Ok(None);
        };
        let d = self.deployment(organization_id, current).await?;
        let new = same_image(&d, "deploy again")?;
        self.create_deployment(organization_id, service_id, &new)
            .await
            .map(Some)
    }

    /// Cancels a queued deployment at once; a running one is flagged and its worker cancels it
    /// at the next step boundary (refused after the switch).
    pub async fn cancel_deployment(&self, organization_id: Uuid, id: Uuid) -> Result<Deployment> {
        let mut tx = self.pool.begin().await?;
        let row: Option<Lock> = sqlx::query_as(
            "SELECT phase, lease_owner, service_id FROM deployments WHERE id = $1 AND organization_id = $2 FOR UPDATE",
        )
        .bind(id)
        .bind(organization_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Lock {
            phase,
            lease_owner: owner,
            ..
        } = row.ok_or_else(|| StoreError::not_found("deployment", id))?;
        match machine::cancel(phase, owner.is_some()) {
            Cancel::Now(t) => set_phase(&mut tx, id, &t).await?,
            Cancel::AtNextStep => {
                sqlx::query("UPDATE deployments SET cancel_requested = true WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            Cancel::Refused => {
                return Err(StoreError::Conflict(format!(
                    "deployment {id} is {} and can no longer be cancelled",
                    phase.as_str()
                )));
            }
        }
        tx.commit().await?;
        self.deployment(organization_id, id).await
    }

    /// Takes the oldest deployment that is queued or whose worker's lease ran out, unless another
    /// deployment of the same service is in progress.
    pub async fn claim(&self, owner: Uuid, lease: Duration) -> Result<Option<Claimed>> {
        let sql = format!(
            "UPDATE deployments SET lease_owner = $1, lease_expires_at = now() + $2 * interval '1 millisecond', \
             attempts = attempts + 1, updated_at = now() \
             WHERE id = (SELECT d.id FROM deployments d \
                WHERE d.phase NOT IN {TERMINAL} AND (d.lease_owner IS NULL OR d.lease_expires_at < now()) \
                AND NOT EXISTS (SELECT 1 FROM deployments o WHERE o.service_id = d.service_id AND o.id <> d.id \
                    AND o.phase NOT IN {TERMINAL} AND o.phase <> 'queued') \
                ORDER BY d.created_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(lease.as_millis() as f64)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Extends the lease; false when another worker took the deployment over.
    pub async fn renew_lease(&self, id: Uuid, owner: Uuid, lease: Duration) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE deployments SET lease_expires_at = now() + $3 * interval '1 millisecond' \
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(lease.as_millis() as f64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a transition, fenced by the lease: fails with `LeaseLost` when `owner` no longer
    /// holds it or the deployment moved on. With `now_serving`, the service's serving deployment
    /// becomes this one and the previous one is superseded, in the same transaction.
    pub async fn apply_transition(
        &self,
        id: Uuid,
        owner: Uuid,
        from: Phase,
        t: &Transition,
        data: &StepData,
    ) -> Result<Deployment> {
        let mut tx = self.pool.begin().await?;
        let current: Option<Lock> = sqlx::query_as(
            "SELECT phase, lease_owner, service_id FROM deployments WHERE id = $1 AND lease_owner = $2 FOR UPDATE",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(Lock { service_id, .. }) = current.filter(|l| l.phase == from) else {
            return Err(StoreError::LeaseLost { deployment: id });
        };
        sqlx::query(
            "UPDATE deployments SET build_node_id = COALESCE($2, build_node_id), git_commit = COALESCE($3, git_commit), \
             image = COALESCE($4, image), image_digest = COALESCE($5, image_digest), node_id = COALESCE($6, node_id), \
             container_id = COALESCE($7, container_id), upstream_address = COALESCE($8, upstream_address), \
             container_port = COALESCE($9, container_port) WHERE id = $1",
        )
        .bind(id)
        .bind(data.build_node_id)
        .bind(&data.git_commit)
        .bind(&data.image)
        .bind(&data.image_digest)
        .bind(data.node_id)
        .bind(&data.container_id)
        .bind(&data.upstream_address)
        .bind(data.container_port)
        .execute(&mut *tx)
        .await?;
        if from == Phase::Queued {
            sqlx::query(
                "UPDATE deployments SET previous_deployment_id = \
                 (SELECT current_deployment_id FROM services WHERE id = $2) WHERE id = $1",
            )
            .bind(id)
            .bind(service_id)
            .execute(&mut *tx)
            .await?;
        }
        if t.now_serving {
            sqlx::query("UPDATE services SET current_deployment_id = $1 WHERE id = $2")
                .bind(id)
                .bind(service_id)
                .execute(&mut *tx)
                .await?;
            let replaced: Vec<Uuid> = sqlx::query_scalar(
                "UPDATE deployments SET phase = 'superseded', state = 'superseded', updated_at = now() \
                 WHERE service_id = $1 AND id <> $2 AND phase = 'ready' RETURNING id",
            )
            .bind(service_id)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            for old in replaced {
                add_event(
                    &mut tx,
                    old,
                    Phase::Superseded,
                    &format!("replaced by deployment {id}"),
                )
                .await?;
            }
        }
        set_phase(&mut tx, id, t).await?;
        tx.commit().await?;
        self.deployment_unscoped(id).await
    }

    /// Records the compute node picked for the container before it is started, so a resumed
    /// deployment asks the same node again (fenced by the lease).
    pub async fn record_node(&self, id: Uuid, owner: Uuid, node_id: Uuid) -> Result<()> {
        let done =
            sqlx::query("UPDATE deployments SET node_id = $3 WHERE id = $1 AND lease_owner = $2")
                .bind(id)
                .bind(owner)
                .bind(node_id)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LeaseLost { deployment: id });
        }
        Ok(())
    }

    /// Gives a claimed deployment back (graceful shutdown): another worker resumes it at once.
    pub async fn release(&self, id: Uuid, owner: Uuid) -> Result<()> {
        sqlx::query("UPDATE deployments SET lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_owner = $2")
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// A deployment of the image `d` ran (pinned to its digest), with what its build learned;
/// `what` names the purpose in the refusal.
fn same_image(d: &Deployment, what: &str) -> Result<NewDeployment> {
    let target = d.id;
    let image = match &d.image {
        Some(image) => tenant::image::pin_to_digest(image, d.image_digest.as_deref()),
        None => {
            return Err(StoreError::Conflict(format!(
                "deployment {target} has no image to {what}"
            )));
        }
    };
    let image = ImageRef::parse(&image).map_err(|e| {
        StoreError::Conflict(format!(
            "deployment {target} ran an image that cannot be deployed again: {e}"
        ))
    })?;
    Ok(NewDeployment {
        image: Some(image),
        // What was built, for the record; a legacy abbreviated id is left out.
        git_commit: d
            .git_commit
            .as_deref()
            .and_then(|c| CommitSha::parse(c).ok()),
        container_port: d.container_port,
        ..Default::default()
    })
}
