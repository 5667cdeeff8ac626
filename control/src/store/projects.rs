//! Projects (their environments are in `environments.rs`).

use uuid::Uuid;

use super::{Page, PageRequest, Project, Result, Store, StoreError, page};

impl Store {
    pub async fn create_project(&self, organization_id: Uuid, name: &str) -> Result<Project> {
        sqlx::query_as(
            "INSERT INTO projects (id, organization_id, name) VALUES ($1, $2, $3) \
             RETURNING id, organization_id, name, created_at",
        )
        .bind(Uuid::new_v4())
        .bind(organization_id)
        .bind(name)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::unique(e, || format!("project {name:?} already exists")))
    }

    pub async fn project(&self, organization_id: Uuid, id: Uuid) -> Result<Project> {
        sqlx::query_as(
            "SELECT id, organization_id, name, created_at FROM projects WHERE id = $1 AND organization_id = $2",
        )
        .bind(id)
        .bind(organization_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("project", id))
    }

    pub async fn projects(&self, organization_id: Uuid, req: PageRequest) -> Result<Page<Project>> {
        let rows = sqlx::query_as(
            "SELECT id, organization_id, name, created_at FROM projects p WHERE organization_id = $1 \
             AND ($2::uuid IS NULL OR (created_at, id) > (SELECT created_at, id FROM projects WHERE id = $2)) \
             ORDER BY created_at, id LIMIT $3",
        )
        .bind(organization_id)
        .bind(req.after)
        .bind(req.limit + 1)
        .fetch_all(&self.pool)
        .await?;
        Ok(page(rows, req, |p: &Project| p.id))
    }

    pub async fn delete_project(&self, organization_id: Uuid, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM projects WHERE id = $1 AND organization_id = $2")
            .bind(id)
            .bind(organization_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("project", id));
        }
        Ok(())
    }
}
