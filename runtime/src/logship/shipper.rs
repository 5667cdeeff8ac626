//! The shipper: a [`LogSink`] that never blocks, batching into ClickHouse with a disk spool.
//! Its timing (batch delay, insert timeout, retry) is on tokio's clock, so paused time drives
//! it in the unit tests (`logship/tests.rs`).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use logstore::container_logs::{LogRow, STREAM_STDERR, STREAM_STDOUT};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::inserter::{ClickHouseInserter, Inserter};
use super::spool::{Spool, SpoolError};
use crate::logs::{LogLabels, LogLine, LogSink, Stream};

/// Settings of the shipper.
#[derive(Debug, Clone)]
pub struct ShipperConfig {
    /// ClickHouse's HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub clickhouse_url: String,
    pub database: String,
    /// This node's id, stored on every row.
    pub node_id: String,
    /// A batch is sent when it has this many lines...
    pub batch_max_lines: usize,
    /// ...or when its first line is this old.
    pub batch_max_delay: Duration,
    /// Lines waiting in memory; past it `ship` drops (and counts) instead of blocking.
    pub queue_capacity: usize,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    /// Wait after a failed insert before trying again.
    pub retry_interval: Duration,
    /// Longer lines are cut and marked truncated.
    pub max_line_bytes: usize,
    pub default_retention_days: u16,
    /// Retention by organization id (its plan), overriding the default.
    pub retention_days_by_organization: HashMap<String, u16>,
    /// Time one insert may take before it counts as failed.
    pub insert_timeout: Duration,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        Self {
            clickhouse_url: "http://127.0.0.1:8123".into(),
            database: "stackpad_logs".into(),
            node_id: "node".into(),
            batch_max_lines: 100_000,
            batch_max_delay: Duration::from_millis(500),
            queue_capacity: 500_000,
            spool_dir: PathBuf::from("/var/lib/stackpad/node/log-spool"),
            spool_max_bytes: 512 << 20,
            retry_interval: Duration::from_secs(2),
            max_line_bytes: 64 << 10,
            default_retention_days: 14,
            retention_days_by_organization: HashMap::new(),
            insert_timeout: Duration::from_secs(10),
        }
    }
}

impl ShipperConfig {
    /// Refuses values the shipper cannot work with, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_max_lines == 0 {
            return Err("logs.batch_max_lines must be at least 1".into());
        }
        if self.queue_capacity < self.batch_max_lines {
            return Err("logs.queue_capacity must be at least logs.batch_max_lines".into());
        }
        if self.spool_max_bytes < 1 << 20 {
            return Err("logs.spool_max_bytes must be at least 1 MiB".into());
        }
        if self.max_line_bytes == 0 {
            return Err("logs.max_line_bytes must be at least 1".into());
        }
        if self.default_retention_days == 0 {
            return Err("logs.default_retention_days must be at least 1".into());
        }
        Ok(())
    }
}

/// Counters of the shipper, for `/metrics`.
#[derive(Debug, Default)]
pub struct ShipperStats {
    /// Every line handed to the shipper, shipped or not.
    pub lines_received: AtomicU64,
    pub lines_shipped: AtomicU64,
    /// Dropped because the in-memory queue was full.
    pub lines_dropped_queue: AtomicU64,
    pub lines_truncated: AtomicU64,
    pub batches_failed: AtomicU64,
}

/// A line waiting in the queue; it becomes a [`LogRow`] on the sending side, off the
/// container's reader.
#[derive(Debug)]
struct Pending {
    labels: Arc<LogLabels>,
    line: LogLine,
}

/// The node's log shipper.
#[derive(Debug, Clone)]
pub struct ClickHouseShipper {
    queue: mpsc::Sender<Pending>,
    stats: Arc<ShipperStats>,
    spool: Arc<Spool>,
    config: Arc<ShipperConfig>,
    ids: Arc<LineIds>,
}

impl ClickHouseShipper {
    /// Opens the spool and starts the sending task on the current runtime.
    pub fn start(config: ShipperConfig) -> Result<Self, SpoolError> {
        let inserter = ClickHouseInserter::new(&config.clickhouse_url, &config.database);
        Self::start_with(config, inserter)
    }

    /// [`start`](Self::start) with any [`Inserter`] (`config.clickhouse_url` and `database`
    /// are then unused).
    pub(super) fn start_with(
        config: ShipperConfig,
        inserter: impl Inserter,
    ) -> Result<Self, SpoolError> {
        let spool = Arc::new(Spool::open(&config.spool_dir, config.spool_max_bytes)?);
        let (queue, rows) = mpsc::channel(config.queue_capacity.max(1));
        let this = Self {
            queue,
            stats: Arc::default(),
            spool,
            config: Arc::new(config),
            ids: Arc::new(LineIds::new()),
        };
        tokio::spawn(Sender::new(&this, inserter).run(rows, this.ids.clone()));
        Ok(this)
    }

    pub fn stats(&self) -> &ShipperStats {
        &self.stats
    }

    /// Lines dropped by the spool's cap.
    pub fn lines_dropped_spool(&self) -> u64 {
        self.spool.dropped_lines()
    }

    pub fn spool_bytes(&self) -> u64 {
        self.spool.bytes()
    }

    /// Lines waiting on disk for ClickHouse.
    pub fn spool_lines(&self) -> u64 {
        self.spool.lines()
    }

    /// Lines waiting in the in-memory queue.
    pub fn queue_lines(&self) -> u64 {
        (self.queue.max_capacity() - self.queue.capacity()) as u64
    }

    /// Queues one line, or drops and counts it when the queue is full.
    fn enqueue(&self, labels: &Arc<LogLabels>, line: LogLine) {
        self.stats.lines_received.fetch_add(1, Ordering::Relaxed);
        let pending = Pending {
            labels: labels.clone(),
            line,
        };
        if self.queue.try_send(pending).is_err() {
            self.stats
                .lines_dropped_queue
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A queued line as the row it is stored as: cut at the size limit, given its id and retention.
fn row(config: &ShipperConfig, ids: &LineIds, stats: &ShipperStats, pending: Pending) -> LogRow {
    let Pending { labels, line } = pending;
    let mut text = line.line;
    let mut truncated = line.truncated;
    if text.len() > config.max_line_bytes {
        text.truncate(config.max_line_bytes);
        truncated = true;
    }
    if truncated {
        stats.lines_truncated.fetch_add(1, Ordering::Relaxed);
    }
    let retention_days = config
        .retention_days_by_organization
        .get(&labels.organization_id)
        .copied()
        .unwrap_or(config.default_retention_days);
    LogRow {
        date: u16::try_from(line.timestamp_nanos.max(0) / 86_400_000_000_000).unwrap_or(u16::MAX),
        ts_ns: line.timestamp_nanos,
        line_id: ids.next(&labels.container_id),
        organization_id: labels.organization_id.clone(),
        project_id: labels.project_id.clone(),
        environment_id: labels.environment_id.clone(),
        service_id: labels.service_id.clone(),
        deployment_id: labels.deployment_id.clone(),
        container_id: labels.container_id.clone(),
        node_id: config.node_id.clone(),
        stream: match line.stream {
            Stream::Stdout => STREAM_STDOUT,
            Stream::Stderr => STREAM_STDERR,
        },
        truncated: u8::from(truncated),
        line: text,
        retention_days,
    }
}

impl LogSink for ClickHouseShipper {
    fn ship(&self, labels: &LogLabels, line: &LogLine) {
        self.enqueue(&Arc::new(labels.clone()), line.clone());
    }

    /// One copy of the labels per chunk, not per line: the reader stays fast.
    fn ship_lines(&self, labels: &LogLabels, lines: &[LogLine]) {
        let labels = Arc::new(labels.clone());
        for line in lines {
            self.enqueue(&labels, line.clone());
        }
    }

    fn render_metrics(&self, out: &mut String) {
        super::metrics::render(self, out);
    }
}

/// Ids unique across nodes and restarts: a hash of a per-process random seed, the container
/// and a counter.
#[derive(Debug)]
struct LineIds {
    seed: std::collections::hash_map::RandomState,
    counter: AtomicU64,
}

impl LineIds {
    fn new() -> Self {
        Self {
            seed: std::collections::hash_map::RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self, container_id: &str) -> u64 {
        let mut hasher = self.seed.build_hasher();
        hasher.write(container_id.as_bytes());
        hasher.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        hasher.finish()
    }
}

/// The background task: batches, inserts, spools.
struct Sender<I> {
    inserter: I,
    config: Arc<ShipperConfig>,
    spool: Arc<Spool>,
    stats: Arc<ShipperStats>,
    /// Set by a failed insert, cleared by a successful one. While set, new batches queue
    /// behind the spool, and the spool is not tried again before this time.
    retry_at: Option<Instant>,
}

impl<I: Inserter> Sender<I> {
    fn new(shipper: &ClickHouseShipper, inserter: I) -> Self {
        Self {
            inserter,
            config: shipper.config.clone(),
            spool: shipper.spool.clone(),
            stats: shipper.stats.clone(),
            retry_at: None,
        }
    }

    /// Delivers batches one at a time, in order, while [`collect`] gathers the next one (so
    /// batching overlaps ClickHouse's work on the previous insert).
    async fn run(mut self, queue: mpsc::Receiver<Pending>, ids: Arc<LineIds>) {
        let (batches_tx, mut batches) = mpsc::channel(1);
        tokio::spawn(collect(
            queue,
            batches_tx,
            self.config.clone(),
            ids,
            self.stats.clone(),
        ));
        loop {
            // Wake up without a batch too, to drain the spool.
            match tokio::time::timeout(self.config.retry_interval, batches.recv()).await {
                Ok(Some(batch)) => self.deliver(batch).await,
                Ok(None) => {
                    self.deliver(Vec::new()).await;
                    return;
                }
                Err(_) => self.deliver(Vec::new()).await,
            }
        }
    }

    /// Sends the spool's batches in order, then `batch`; whatever cannot be sent is spooled.
    async fn deliver(&mut self, batch: Vec<LogRow>) {
        let waiting = self.retry_at.is_some_and(|at| Instant::now() < at);
        if !waiting {
            while let Ok(Some((seq, rows))) = self.spool.oldest() {
                if !self.insert(&rows).await {
                    break;
                }
                self.spool.remove(seq);
            }
        }
        if batch.is_empty() {
            return;
        }
        if self.spool.is_empty() && self.retry_at.is_none() && self.insert(&batch).await {
            return;
        }
        if let Err(error) = self.spool.push(&batch) {
            // The disk refused: these lines are lost; count them like queue drops.
            tracing::warn!(%error, lines = batch.len(), "log spool write failed");
            self.stats
                .lines_dropped_queue
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
    }

    async fn insert(&mut self, rows: &[LogRow]) -> bool {
        let result =
            tokio::time::timeout(self.config.insert_timeout, self.inserter.insert(rows)).await;
        match result {
            Ok(Ok(())) => {
                self.retry_at = None;
                self.stats
                    .lines_shipped
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                true
            }
            failure => {
                let reason = match failure {
                    Ok(Err(error)) => error.to_string(),
                    _ => "timed out".into(),
                };
                if self.retry_at.is_none() {
                    tracing::warn!(
                        reason,
                        "ClickHouse insert failed; spooling logs until it answers"
                    );
                }
                self.stats.batches_failed.fetch_add(1, Ordering::Relaxed);
                self.retry_at = Some(Instant::now() + self.config.retry_interval);
                false
            }
        }
    }
}

/// Cuts the queue into batches of rows: `batch_max_lines`, or what came within
/// `batch_max_delay` of a batch's first line; ends (after handing over the last batch) when
/// the queue closes.
async fn collect(
    mut queue: mpsc::Receiver<Pending>,
    batches: mpsc::Sender<Vec<LogRow>>,
    config: Arc<ShipperConfig>,
    ids: Arc<LineIds>,
    stats: Arc<ShipperStats>,
) {
    let max = config.batch_max_lines;
    let mut received = Vec::with_capacity(max.min(4096));
    loop {
        let mut batch = Vec::with_capacity(max);
        let mut deadline = None;
        while batch.len() < max {
            let want = (max - batch.len()).min(4096);
            let got = match deadline {
                None => queue.recv_many(&mut received, want).await,
                Some(at) => tokio::time::timeout_at(at, queue.recv_many(&mut received, want))
                    .await
                    .unwrap_or(0),
            };
            batch.extend(received.drain(..).map(|p| row(&config, &ids, &stats, p)));
            if got == 0 {
                break;
            }
            deadline.get_or_insert_with(|| Instant::now() + config.batch_max_delay);
        }
        let closed = batch.len() < max && queue.is_closed() && queue.is_empty();
        if !batch.is_empty() && batches.send(batch).await.is_err() {
            return;
        }
        if closed {
            return;
        }
    }
}
