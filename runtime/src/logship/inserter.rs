//! The shipper's seam to ClickHouse: what its sender does with the store (make sure the log
//! table exists, insert one batch), and the real implementation over ClickHouse's HTTP
//! interface. The sender's batching, retry, spool and timeouts are unit-tested on a recording
//! fake with paused time (`logship::fake`); [`ClickHouseInserter`] keeps its tests against the
//! real ClickHouse (`runtime/tests/logship_clickhouse.rs`, `log_burst.rs`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use logstore::SchemaError;
use logstore::container_logs::{LogRow, ensure_schema};

/// Why a batch was not stored; the sender spools the batch and tries again either way.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("log table in ClickHouse database {database}: {source}")]
    Schema {
        database: String,
        #[source]
        source: SchemaError,
    },
    #[error("insert into {database}.container_logs: {source}")]
    Insert {
        database: String,
        #[source]
        source: clickhouse::error::Error,
    },
}

/// Stores batches of log rows. Called by one sender, one batch at a time; the sender bounds
/// each call with `insert_timeout` (a call cut there counts as failed).
pub trait Inserter: Send + Sync + 'static {
    /// Inserts `rows` into `container_logs`, creating the table first when this inserter has
    /// not done so yet.
    fn insert(&self, rows: &[LogRow]) -> impl Future<Output = Result<(), InsertError>> + Send;
}

/// The node's inserter: ClickHouse's HTTP interface, the schema applied before the first
/// insert (and again after a failed attempt at it).
pub struct ClickHouseInserter {
    /// Bound to `database`, for inserts.
    client: clickhouse::Client,
    /// Not bound to a database: the schema step creates it.
    server: clickhouse::Client,
    database: String,
    schema_ready: AtomicBool,
}

impl std::fmt::Debug for ClickHouseInserter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseInserter")
            .field("database", &self.database)
            .field("schema_ready", &self.schema_ready)
            .finish_non_exhaustive()
    }
}

impl ClickHouseInserter {
    /// `url` is ClickHouse's HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub fn new(url: &str, database: &str) -> Self {
        let server = clickhouse::Client::default()
            .with_url(url)
            .with_validation(false);
        Self {
            client: server.clone().with_database(database),
            server,
            database: database.to_owned(),
            schema_ready: AtomicBool::new(false),
        }
    }
}

impl Inserter for ClickHouseInserter {
    async fn insert(&self, rows: &[LogRow]) -> Result<(), InsertError> {
        if !self.schema_ready.load(Ordering::Acquire) {
            ensure_schema(&self.server, &self.database)
                .await
                .map_err(|source| InsertError::Schema {
                    database: self.database.clone(),
                    source,
                })?;
            self.schema_ready.store(true, Ordering::Release);
        }
        let failed = |source| InsertError::Insert {
            database: self.database.clone(),
            source,
        };
        let mut insert = self
            .client
            .insert::<LogRow>("container_logs")
            .await
            .map_err(failed)?;
        for row in rows {
            insert.write(row).await.map_err(failed)?;
        }
        insert.end().await.map_err(failed)
    }
}
