//! The writer: [`AccessLog::record`] on the request path (never blocks), a batching task on
//! the admin runtime.

use std::fmt::Write;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::row::{AccessEntry, AccessRow};
use super::settings::AccessLogSettings;
use logstore::access_logs::{TABLE, ensure_schema};

/// Counters of the writer, rendered on the proxy's `/metrics`.
#[derive(Debug, Default)]
pub struct AccessLogStats {
    /// Rows ClickHouse accepted.
    pub rows_sent: AtomicU64,
    /// Rows dropped because the channel was full (ClickHouse slow or down).
    pub rows_dropped: AtomicU64,
    /// Insert attempts that failed (each is retried).
    pub insert_failures: AtomicU64,
    /// Rows recorded and not yet accepted.
    pub rows_pending: AtomicI64,
}

impl AccessLogStats {
    /// Prometheus text of the counters.
    pub fn render(&self, out: &mut String) {
        for (name, help, value) in [
            (
                "stackpad_proxy_access_log_rows_sent_total",
                "Access log rows ClickHouse accepted.",
                self.rows_sent.load(Ordering::Relaxed),
            ),
            (
                "stackpad_proxy_access_log_rows_dropped_total",
                "Access log rows dropped because the writer's queue was full.",
                self.rows_dropped.load(Ordering::Relaxed),
            ),
            (
                "stackpad_proxy_access_log_insert_failures_total",
                "Failed access log inserts into ClickHouse (each batch is retried).",
                self.insert_failures.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let name = "stackpad_proxy_access_log_rows_pending";
        let _ = writeln!(
            out,
            "# HELP {name} Access log rows waiting for ClickHouse.\n# TYPE {name} gauge\n{name} {}",
            self.rows_pending.load(Ordering::Relaxed).max(0)
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
                self.stats.rows_pending.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.rows_dropped.fetch_add(1, Ordering::Relaxed);
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
                self.stats.rows_sent.fetch_add(n, Ordering::Relaxed);
                self.stats
                    .rows_pending
                    .fetch_sub(n as i64, Ordering::Relaxed);
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
                self.stats.insert_failures.fetch_add(1, Ordering::Relaxed);
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
