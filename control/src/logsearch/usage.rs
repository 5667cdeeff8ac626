//! A service's CPU, memory and network over time, from the node agents' per-container samples
//! in ClickHouse (`<database>.container_usage`, written by `runtime::usage`; the table's
//! contract is `logstore::container_usage`). Samples carry what their container used during
//! their interval, so a time bucket is a sum: CPU cores = CPU nanoseconds / bucket length,
//! network bytes/s likewise; memory is each container's average in the bucket, summed over the
//! service's containers. Scoped by the caller's organization like the logs.

use logstore::container_usage::{self, columns as col};
use serde::{Deserialize, Serialize};

use crate::logsearch::{Bind, Filters, LogSearch, LogSearchError, LogTable};

const CONTAINER_USAGE: LogTable = LogTable {
    name: container_usage::TABLE,
    organization_id: col::ORGANIZATION_ID,
    service_id: col::SERVICE_ID,
    deployment_id: col::DEPLOYMENT_ID,
    ts_ns: col::TS_NS,
    // No cursor pages this table.
    row_id: col::CONTAINER_ID,
};

/// What to read: one service's samples in `[since_ns, until_ns)`, in buckets of `step_s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub organization_id: String,
    pub service_id: String,
    pub since_ns: i64,
    pub until_ns: i64,
    pub step_s: u32,
}

/// One time bucket of a service's use (buckets without samples are left out).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsagePoint {
    /// Start of the bucket, seconds since the epoch.
    pub t: i64,
    /// Average CPU use in cores (1.0 = one core busy the whole bucket).
    pub cpu_cores: f64,
    pub memory_bytes: u64,
    /// Sum of the containers' limits (0: none set).
    pub memory_limit_bytes: u64,
    pub rx_bytes_per_second: f64,
    pub tx_bytes_per_second: f64,
    /// Containers that reported in the bucket.
    pub containers: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Row {
    bucket: i64,
    cpu_ns: u64,
    memory_bytes: u64,
    memory_limit_bytes: u64,
    rx_bytes: u64,
    tx_bytes: u64,
    containers: u64,
}

impl UsagePoint {
    fn from_row(r: Row, step_s: u32) -> Self {
        let step = f64::from(step_s);
        Self {
            t: r.bucket * i64::from(step_s),
            cpu_cores: r.cpu_ns as f64 / 1e9 / step,
            memory_bytes: r.memory_bytes,
            memory_limit_bytes: r.memory_limit_bytes,
            rx_bytes_per_second: r.rx_bytes as f64 / step,
            tx_bytes_per_second: r.tx_bytes as f64 / step,
            containers: r.containers,
        }
    }
}

impl LogSearch {
    /// The service's use per bucket, oldest first.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsagePoint>, LogSearchError> {
        let (sql, binds) = build_sql(self.database(), query);
        match self.bound(&sql, binds).fetch_all::<Row>().await {
            Ok(rows) => Ok(rows
                .into_iter()
                .map(|r| UsagePoint::from_row(r, query.step_s))
                .collect()),
            Err(e) => self.empty_if_missing(e),
        }
    }
}

/// The query and its bound values (pure, unit-tested). Runs on ClickHouse 18.16 and current.
fn build_sql(database: &str, query: &UsageQuery) -> (String, Vec<Bind>) {
    let table = &CONTAINER_USAGE;
    let f = Filters::scoped(
        table,
        &query.organization_id,
        &query.service_id,
        Some(query.since_ns),
        Some(query.until_ns),
        None,
    );
    let step_ns = u64::from(query.step_s.max(1)) * 1_000_000_000;
    let sql = format!(
        "SELECT bucket, sum(cpu) AS cpu_ns, sum(mem) AS memory_bytes, sum(lim) AS memory_limit_bytes, \
         sum(rx) AS rx_bytes, sum(tx) AS tx_bytes, count() AS containers FROM (\
         SELECT toInt64(intDiv({ts}, {step_ns})) AS bucket, {container}, sum({cpu}) AS cpu, \
         toUInt64(avg({mem})) AS mem, max({lim}) AS lim, sum({rx}) AS rx, sum({tx}) AS tx \
         FROM {database}.{name} WHERE {clause} GROUP BY bucket, {container}\
         ) GROUP BY bucket ORDER BY bucket",
        ts = col::TS_NS,
        container = col::CONTAINER_ID,
        cpu = col::CPU_NS,
        mem = col::MEMORY_BYTES,
        lim = col::MEMORY_LIMIT_BYTES,
        rx = col::RX_BYTES,
        tx = col::TX_BYTES,
        name = table.name,
        clause = f.clause(),
    );
    (sql, f.binds)
}

/// The bucket length for a window when none is asked for: at most 360 points, at least 10 s,
/// a round number of seconds.
pub fn default_step(window_s: i64) -> u32 {
    const STEPS: [u32; 9] = [10, 30, 60, 120, 300, 600, 1800, 3600, 86_400];
    STEPS
        .into_iter()
        .find(|s| window_s / i64::from(*s) <= 360)
        .unwrap_or(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_sum_deltas_per_container_then_per_service() {
        let q = UsageQuery {
            organization_id: "org".into(),
            service_id: "svc".into(),
            since_ns: 10,
            until_ns: 20,
            step_s: 60,
        };
        let (sql, binds) = build_sql("logs", &q);
        assert!(sql.contains("toInt64(intDiv(ts_ns, 60000000000)) AS bucket"));
        assert!(sql.contains(
            "FROM logs.container_usage WHERE organization_id = ? AND service_id = ? \
             AND ts_ns >= ? AND ts_ns < ? GROUP BY bucket, container_id"
        ));
        assert!(sql.ends_with("GROUP BY bucket ORDER BY bucket"));
        assert_eq!(
            binds,
            vec![
                Bind::Text("org".into()),
                Bind::Text("svc".into()),
                Bind::Int(10),
                Bind::Int(20)
            ]
        );
    }

    #[test]
    fn rows_become_rates() {
        let p = UsagePoint::from_row(
            Row {
                bucket: 100,
                cpu_ns: 30_000_000_000,
                memory_bytes: 5,
                memory_limit_bytes: 6,
                rx_bytes: 600,
                tx_bytes: 120,
                containers: 2,
            },
            60,
        );
        assert_eq!(p.t, 6000);
        assert!((p.cpu_cores - 0.5).abs() < 1e-9);
        assert!((p.rx_bytes_per_second - 10.0).abs() < 1e-9);
        assert!((p.tx_bytes_per_second - 2.0).abs() < 1e-9);
    }

    #[test]
    fn default_steps_keep_charts_small() {
        assert_eq!(default_step(3600), 10);
        assert_eq!(default_step(6 * 3600), 60);
        assert_eq!(default_step(24 * 3600), 300);
        assert_eq!(default_step(400 * 86_400), 86_400);
    }
}
