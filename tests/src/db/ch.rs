use anyhow::Context;

use crate::{Services, on_own_thread, service_down, unique_ident};

/// A ClickHouse database of the test's own, on the server `CLICKHOUSE_URL` names, dropped when
/// the guard goes.
#[derive(Debug)]
pub struct ClickHouseDb {
    name: String,
    url: String,
}

impl ClickHouseDb {
    /// Creates `<prefix>_<12 hex digits>`; fails naming ClickHouse when it does not answer.
    pub async fn create(prefix: &str) -> anyhow::Result<Self> {
        let url = Services::from_env().clickhouse_url;
        let db = Self {
            name: unique_ident(prefix),
            url,
        };
        db.client()
            .query(&format!("CREATE DATABASE {}", db.name))
            .execute()
            .await
            .map_err(|e| service_down("ClickHouse", &db.url, e))
            .with_context(|| format!("creating ClickHouse database {}", db.name))?;
        Ok(db)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's URL (`CLICKHOUSE_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client of the server as the platform's writers and reader make one (no row validation:
    /// the 18.16 server knows no `RowBinaryWithNamesAndTypes`); queries name the database.
    pub fn client(&self) -> clickhouse::Client {
        server(&self.url)
    }
}

fn server(url: &str) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(url)
        .with_validation(false)
}

impl Drop for ClickHouseDb {
    fn drop(&mut self) {
        let (name, url) = (self.name.clone(), self.url.clone());
        on_own_thread(
            &format!("dropping ClickHouse database {name}"),
            async move {
                server(&url)
                    .query(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute()
                    .await?;
                Ok(())
            },
        );
    }
}
