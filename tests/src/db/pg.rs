use anyhow::Context;
use sqlx::Connection;

use crate::{Services, on_own_thread, service_down, unique_ident};

/// A PostgreSQL database of the test's own, on the server `DATABASE_URL` names, dropped (with
/// `WITH (FORCE)`, so open connections do not keep it) when the guard goes.
#[derive(Debug)]
pub struct PostgresDb {
    name: String,
    url: String,
    admin_url: String,
}

impl PostgresDb {
    /// Creates `<prefix>_<12 hex digits>`; fails naming PostgreSQL when it does not answer.
    pub async fn create(prefix: &str) -> anyhow::Result<Self> {
        let admin_url = Services::from_env().database_url;
        let (base, _) = admin_url
            .rsplit_once('/')
            .context("DATABASE_URL names no database")?;
        let name = unique_ident(prefix);
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .map_err(|e| service_down("PostgreSQL", &admin_url, e))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating PostgreSQL database {name}"))?;
        Ok(Self {
            url: format!("{base}/{name}"),
            name,
            admin_url,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL to connect to it (`DATABASE_URL` with this database).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PostgresDb {
    fn drop(&mut self) {
        let (name, admin_url) = (self.name.clone(), self.admin_url.clone());
        on_own_thread(
            &format!("dropping PostgreSQL database {name}"),
            async move {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                Ok(())
            },
        );
    }
}
