//! The writer: [`AccessLog::record`] on the request path (never blocks), a batching task on
//! the admin runtime.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::row::{AccessEntry, AccessRow};
use super::settings::AccessLogSettings;
use logstore::access_logs::{TABLE, ensure_schema};

/// Counters of the writer, rendered on the proxy's `/metrics`.
#[derive(Debug, Default)]
pub struct AccessLogStats {
    /// Rows ClickHouse accepted.
    pub rows_sent: Counter,
    /// Rows dropped because the channel was full (ClickHouse slow or down).
    pub rows_dropped: Counter,
    /// Insert attempts that failed (each is retried).
    pub insert_failures: Counter,
    /// Rows recorded and not yet accepted.
    pub rows_pending: Gauge,
}

impl AccessLogStats {
    /// Adds the writer's series to the proxy's registry.
    pub fn register(&self, registry: &mut Registry) {
        for (name, help, counter) in [
            (
                "stackpad_proxy_access_log_rows_sent",
                "Access log rows ClickHouse accepted",
                &self.rows_sent,
            ),
            (
                "stackpad_proxy_access_log_rows_dropped",
                "Access log rows dropped because the writer's queue was full",
                &self.rows_dropped,
            ),
            (
                "stackpad_proxy_access_log_insert_failures",
                "Failed access log inserts into ClickHouse (each batch is retried)",
                &self.insert_failures,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        let pending = Gauge::<i64>::default();
        pending.set(self.rows_pending.get().max(0));
        registry.register(
            "stackpad_proxy_access_log_rows_pending",
            "Access log rows waiting for ClickHouse",
            pending,
        );
    }
}

/// The proxy's access log writer. Cheap to share: the request path holds an `Arc` of it.
#[derive(Debug)]
pub struct AccessLog {
    queue: mpsc::Sender<AccessRow>,
    stats: Arc<AccessLogStats>,
    settings: Arc<AccessLogSettings>,
    seed: std::collections::hash_map::RandomState,
    counter: AtomicU64,
}

impl AccessLog {
    /// Starts the writing task on `runtime` (the schema is applied as soon as ClickHouse
    /// answers; the proxy does not wait for it).
    pub fn start(
        settings: AccessLogSettings,
        stats: Arc<AccessLogStats>,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let (queue, rows) = mpsc::channel(settings.queue_capacity.max(1));
        let settings = Arc::new(settings);
        let writer = Writer::new(Arc::clone(&settings), Arc::clone(&stats));
        runtime.spawn(writer.run(rows));
        Self {
            queue,
            stats,
            settings,
            seed: std::collections::hash_map::RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    /// Queues the row of a finished request; drops (and counts) it when the queue is full.
    pub fn record(&self, entry: AccessEntry<'_>) {
        let retention = self.settings.retention_days(entry.organization_id);
        let row = entry.into_row(self.next_id(), retention, self.settings.include_query);
        match self.queue.try_send(row) {
            Ok(()) => {
                self.stats.rows_pending.inc();
            }
            Err(_) => {
                self.stats.rows_dropped.inc();
            }
        }
    }

    pub fn stats(&self) -> &AccessLogStats {
        &self.stats
    }

    /// Unique across proxies and restarts: a hash of a per-process random seed and a counter.
    fn next_id(&self) -> u64 {
        let mut hasher = self.seed.build_hasher();
        hasher.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        hasher.finish()
    }
}

/// The background task: batches and inserts, retrying a failed batch.
struct Writer {
    server: clickhouse::Client,
    client: clickhouse::Client,
    settings: Arc<AccessLogSettings>,
    stats: Arc<AccessLogStats>,
    schema_ready: bool,
    /// A failure is logged once, then again when inserts work.
    failing: bool,
}

impl Writer {
    fn new(settings: Arc<AccessLogSettings>, stats: Arc<AccessLogStats>) -> Self {
        let server = clickhouse::Client::default()
            .with_url(&settings.clickhouse_url)
            .with_validation(false);
        Self {
            client: server.clone().with_database(&settings.database),
            server,
            settings,
            stats,
            schema_ready: false,
            failing: false,
        }
    }

    async fn run(mut self, mut rows: mpsc::Receiver<AccessRow>) {
        // Migrations at start, without holding anything up.
        if let Err(error) = self.prepare().await {
            tracing::warn!(%error, "access log schema not applied yet; retrying with the first batch");
        }
        let max = self.settings.batch_max_rows;
        let delay = AccessLogSettings::ms(self.settings.batch_max_delay_ms);
        let mut batch: Vec<AccessRow> = Vec::with_capacity(max.min(10_000));
        loop {
            match rows.recv().await {
                Some(row) => batch.push(row),
                None => return,
            }
            let deadline = Instant::now() + delay;
            let mut closed = false;
            while batch.len() < max {
                match tokio::time::timeout_at(deadline, rows.recv()).await {
                    Ok(Some(row)) => batch.push(row),
                    Ok(None) => {
                        closed = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            // Retry until ClickHouse takes it; meanwhile the channel fills and then drops.
            while !self.insert(&batch).await {
                if closed {
                    return;
                }
                tokio::time::sleep(AccessLogSettings::ms(self.settings.retry_interval_ms)).await;
            }
            batch.clear();
            if closed {
                return;
            }
        }
    }

    async fn prepare(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let timeout = AccessLogSettings::ms(self.settings.insert_timeout_ms);
        tokio::time::timeout(
            timeout,
            ensure_schema(&self.server, &self.settings.database),
        )
        .await
        .map_err(|_| "timed out")??;
        self.schema_ready = true;
        Ok(())
    }

    async fn insert(&mut self, rows: &[AccessRow]) -> bool {
        let timeout = AccessLogSettings::ms(self.settings.insert_timeout_ms);
        let result = tokio::time::timeout(timeout, self.try_insert(rows)).await;
        match result {
            Ok(Ok(())) => {
                if self.failing {
                    tracing::info!("access log inserts work again");
                    self.failing = false;
                }
                let n = rows.len() as u64;
                self.stats.rows_sent.inc_by(n);
                self.stats.rows_pending.dec_by(n as i64);
                true
            }
            failure => {
                let reason = match failure {
                    Ok(Err(error)) => error.to_string(),
                    _ => "timed out".into(),
                };
                if !self.failing {
                    tracing::warn!(
                        reason,
                        url = %self.settings.clickhouse_url,
                        "access log insert failed; retrying (rows are dropped once the queue is full)"
                    );
                    self.failing = true;
                }
                self.stats.insert_failures.inc();
                false
            }
        }
    }

    async fn try_insert(
        &mut self,
        rows: &[AccessRow],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if !self.schema_ready {
            ensure_schema(&self.server, &self.settings.database).await?;
            self.schema_ready = true;
        }
        let mut insert = self.client.insert::<AccessRow>(TABLE).await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }
}
