//! Per-container resource use over time: every `usage_interval_ms` the agent reads each running
//! container's CPU time and memory (its cgroup v1 directories) and the bytes in and out of its
//! network namespace (`/proc/<pid>/net/dev`, every interface but `lo`), turns the counters into
//! what was used during the interval ([`Deltas`], pure and unit-tested), and inserts one
//! `container_usage` row per container into ClickHouse (`logstore::container_usage`), where the
//! control plane reads them for a service's CPU, memory and network graphs.
//!
//! Unlike log lines, samples are not spooled: a batch ClickHouse refuses is dropped (counted in
//! the warning), and the next interval's deltas still cover only their own interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use logstore::container_usage::{TABLE, UsageRow, ensure_schema};
use tokio::sync::watch;

use crate::agent::{Agent, Status};

/// A container's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// CPU time of the cgroup since it was made.
    pub cpu_ns: u64,
    /// Memory in use now (without inactive page cache).
    pub memory_bytes: u64,
    /// Bytes received / sent by the container's interfaces since they were made.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// One running container and what it read at `ts_ns`.
#[derive(Debug, Clone)]
pub struct Observation {
    pub status: Status,
    pub reading: Reading,
}

/// Turns successive readings of each container into per-interval rows. Keeps the last reading
/// of every container seen in the previous round; forgets the others.
#[derive(Debug, Default)]
pub struct Deltas {
    last: HashMap<String, (i64, Reading)>,
}

/// Growth of a counter; a counter that went back (the task restarted, its cgroup and
/// interfaces are new) counts from 0.
fn grown(now: u64, before: u64) -> u64 {
    if now >= before { now - before } else { now }
}

impl Deltas {
    /// The rows of one round taken at `now_ns`. A container seen for the first time gives a row
    /// from its start when it started within `2 * interval` (its first seconds count), else it
    /// only sets its baseline (an agent restarted under an old container does not report its
    /// whole life as one interval).
    pub fn round(
        &mut self,
        now_ns: i64,
        interval: Duration,
        node_id: &str,
        retention_days: impl Fn(&str) -> u16,
        observations: Vec<Observation>,
    ) -> Vec<UsageRow> {
        let mut next = HashMap::with_capacity(observations.len());
        let mut rows = Vec::with_capacity(observations.len());
        let recent_ns = 2 * i64::try_from(interval.as_nanos()).unwrap_or(i64::MAX / 4);
        for o in observations {
            let id = o.status.container_id.clone();
            let started_ns = o.status.started_ms.saturating_mul(1_000_000);
            let baseline = match self.last.get(&id) {
                Some(&(at, before)) => Some((at, before)),
                None if started_ns > 0 && now_ns - started_ns <= recent_ns => {
                    Some((started_ns, Reading::default()))
                }
                None => None,
            };
            next.insert(id, (now_ns, o.reading));
            let Some((at, before)) = baseline else {
                continue;
            };
            if now_ns <= at {
                continue;
            }
            let w = &o.status.spec.workload;
            rows.push(UsageRow {
                date: u16::try_from(now_ns.max(0) / 86_400_000_000_000).unwrap_or(u16::MAX),
                ts_ns: now_ns,
                organization_id: w.organization_id.clone(),
                project_id: w.project_id.clone(),
                environment_id: w.environment_id.clone(),
                service_id: w.service_id.clone(),
                deployment_id: w.deployment_id.clone(),
                container_id: o.status.container_id.clone(),
                node_id: node_id.to_owned(),
                interval_ms: u32::try_from((now_ns - at) / 1_000_000).unwrap_or(u32::MAX),
                cpu_ns: grown(o.reading.cpu_ns, before.cpu_ns),
                memory_bytes: o.reading.memory_bytes,
                memory_limit_bytes: o.status.spec.resources.memory_bytes,
                rx_bytes: grown(o.reading.rx_bytes, before.rx_bytes),
                tx_bytes: grown(o.reading.tx_bytes, before.tx_bytes),
                retention_days: retention_days(&w.organization_id),
            });
        }
        self.last = next;
        rows
    }
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A `key value` line's value in a cgroup stat file.
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// CPU nanoseconds and memory bytes (usage less inactive file cache, as `docker stats`) of a
/// container's cgroup v1 directories; `None` when the cgroup is gone.
pub fn cgroup_reading(namespace: &str, container_id: &str) -> Option<(u64, u64)> {
    let cpu = read_u64(&format!(
        "/sys/fs/cgroup/cpuacct/{namespace}/{container_id}/cpuacct.usage"
    ))?;
    let memory_dir = format!("/sys/fs/cgroup/memory/{namespace}/{container_id}");
    let usage = read_u64(&format!("{memory_dir}/memory.usage_in_bytes")).unwrap_or(0);
    let inactive = std::fs::read_to_string(format!("{memory_dir}/memory.stat"))
        .ok()
        .and_then(|s| stat_value(&s, "total_inactive_file"))
        .unwrap_or(0);
    Some((cpu, usage.saturating_sub(inactive)))
}

/// Received and sent bytes of every interface but `lo` in a `/proc/<pid>/net/dev` text.
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    let mut total = (0, 0);
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = counters
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        if fields.len() >= 9 {
            total.0 += fields[0];
            total.1 += fields[8];
        }
    }
    total
}

/// The container's reading, or `None` when its cgroup is gone (it stopped meanwhile).
pub fn read_container(namespace: &str, status: &Status) -> Option<Reading> {
    let (cpu_ns, memory_bytes) = cgroup_reading(namespace, &status.container_id)?;
    // The task's pid as the agent knows it, else the first process of its cgroup.
    let pid = Some(status.pid).filter(|p| *p > 0).or_else(|| {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/memory/{namespace}/{}/cgroup.procs",
            status.container_id
        ))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
    });
    let (rx_bytes, tx_bytes) = pid
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/net/dev")).ok())
        .map(|t| parse_net_dev(&t))
        .unwrap_or_default();
    Some(Reading {
        cpu_ns,
        memory_bytes,
        rx_bytes,
        tx_bytes,
    })
}

/// Where samples go and how often.
#[derive(Debug, Clone)]
pub struct UsageConfig {
    /// ClickHouse's HTTP interface and database (the logs' ones).
    pub clickhouse_url: String,
    pub database: String,
    pub node_id: String,
    pub interval: Duration,
    pub default_retention_days: u16,
    pub retention_days_by_organization: HashMap<String, u16>,
}

/// Why a round's rows were not stored.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("usage table in ClickHouse database {database}: {source}")]
    Schema {
        database: String,
        #[source]
        source: logstore::SchemaError,
    },
    #[error("insert into {database}.container_usage: {source}")]
    Insert {
        database: String,
        #[source]
        source: clickhouse::error::Error,
    },
}

/// Writes rows to ClickHouse, creating the table before the first insert.
#[derive(Debug)]
pub struct UsageWriter {
    server: clickhouse::Client,
    database: String,
    schema_ready: bool,
}

impl UsageWriter {
    pub fn new(url: &str, database: &str) -> Self {
        Self {
            server: clickhouse::Client::default()
                .with_url(url)
                .with_validation(false),
            database: database.to_owned(),
            schema_ready: false,
        }
    }

    pub async fn insert(&mut self, rows: &[UsageRow]) -> Result<(), UsageError> {
        if !self.schema_ready {
            ensure_schema(&self.server, &self.database)
                .await
                .map_err(|source| UsageError::Schema {
                    database: self.database.clone(),
                    source,
                })?;
            self.schema_ready = true;
        }
        if rows.is_empty() {
            return Ok(());
        }
        let failed = |source| UsageError::Insert {
            database: self.database.clone(),
            source,
        };
        let client = self.server.clone().with_database(&self.database);
        let mut insert = client.insert::<UsageRow>(TABLE).await.map_err(failed)?;
        for row in rows {
            insert.write(row).await.map_err(failed)?;
        }
        insert.end().await.map_err(failed)
    }
}

/// One round on the agent's running containers: the rows to store.
pub fn observe(agent: &Agent) -> Vec<Observation> {
    let namespace = &agent.config().namespace;
    agent
        .list(None, None)
        .into_iter()
        .filter(|s| s.state.is_running())
        .filter_map(|status| {
            let reading = read_container(namespace, &status)?;
            Some(Observation { status, reading })
        })
        .collect()
}

/// Samples the agent's containers every interval until `stop` turns true.
pub async fn run(agent: Arc<Agent>, config: UsageConfig, mut stop: watch::Receiver<bool>) {
    let mut deltas = Deltas::default();
    let mut writer = UsageWriter::new(&config.clickhouse_url, &config.database);
    let retention = |org: &str| {
        config
            .retention_days_by_organization
            .get(org)
            .copied()
            .unwrap_or(config.default_retention_days)
    };
    loop {
        let now_ns = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        )
        .unwrap_or(i64::MAX);
        let rows = deltas.round(
            now_ns,
            config.interval,
            &config.node_id,
            retention,
            observe(&agent),
        );
        if let Err(e) = writer.insert(&rows).await {
            tracing::warn!(error = %e, rows = rows.len(), "container usage samples dropped");
        }
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::State;

    fn status(id: &str, started_ms: i64) -> Status {
        let mut spec = crate::spec::deploy::tests::sample();
        spec.workload.organization_id = "org".into();
        spec.workload.service_id = "svc".into();
        spec.resources.memory_bytes = 64 << 20;
        Status {
            container_id: id.into(),
            spec,
            image_digest: String::new(),
            state: State::Healthy,
            ip: None,
            bridge: String::new(),
            exit_code: 0,
            oom_killed: false,
            restart_count: 0,
            message: String::new(),
            created_ms: started_ms,
            started_ms,
            pid: 0,
            wanted_running: true,
            generation: 0,
            id_map: None,
        }
    }

    fn seen(id: &str, started_ms: i64, cpu_ns: u64, rx: u64) -> Observation {
        Observation {
            status: status(id, started_ms),
            reading: Reading {
                cpu_ns,
                memory_bytes: 1000,
                rx_bytes: rx,
                tx_bytes: rx / 2,
            },
        }
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn counters_become_per_interval_deltas_and_resets_count_from_zero() {
        let mut d = Deltas::default();
        let i = Duration::from_secs(10);
        let days = |_: &str| 14;
        // A fresh container (started 3 s ago) counts from its start; an old one only sets
        // its baseline.
        let rows = d.round(
            100 * S,
            i,
            "n1",
            days,
            vec![
                seen("new", 97_000, 600, 40),
                seen("old", 1_000, 9_999, 9_999),
            ],
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0].container_id.as_str(),
                rows[0].interval_ms,
                rows[0].cpu_ns,
                rows[0].rx_bytes,
                rows[0].tx_bytes
            ),
            ("new", 3_000, 600, 40, 20)
        );
        assert_eq!(
            (rows[0].memory_limit_bytes, rows[0].retention_days),
            (64 << 20, 14)
        );
        assert_eq!(rows[0].date, 0);
        let rows = d.round(
            110 * S,
            i,
            "n1",
            days,
            vec![
                seen("new", 97_000, 1_600, 140),
                seen("old", 1_000, 10_999, 10_099),
            ],
        );
        let by: HashMap<_, _> = rows.iter().map(|r| (r.container_id.as_str(), r)).collect();
        assert_eq!(
            (by["new"].cpu_ns, by["new"].rx_bytes, by["new"].interval_ms),
            (1_000, 100, 10_000)
        );
        assert_eq!((by["old"].cpu_ns, by["old"].rx_bytes), (1_000, 100));
        // "old" restarted: its counters went back; "new" is gone and forgotten.
        let rows = d.round(120 * S, i, "n1", days, vec![seen("old", 1_000, 300, 5)]);
        assert_eq!((rows.len(), rows[0].cpu_ns, rows[0].rx_bytes), (1, 300, 5));
        let rows = d.round(130 * S, i, "n1", days, vec![seen("new", 97_000, 2_000, 0)]);
        assert!(
            rows.is_empty(),
            "a container seen again after a gap restarts its baseline"
        );
    }

    #[test]
    fn net_dev_sums_every_interface_but_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
 lo:   12345     10    0    0    0     0          0         0    12345     10    0    0    0     0       0          0\n  \
 eth0:    2000      5    0    0    0     0          0         0     300      3    0    0    0     0       0          0\n  \
 eth1:      10      1    0    0    0     0          0         0       1      1    0    0    0     0       0          0\n";
        assert_eq!(parse_net_dev(text), (2010, 301));
        assert_eq!(parse_net_dev(""), (0, 0));
    }

    #[test]
    fn stat_values_are_found_by_whole_key() {
        let text = "inactive_file 5\ntotal_inactive_file_x 7\ntotal_inactive_file 4096\n";
        assert_eq!(stat_value(text, "total_inactive_file"), Some(4096));
        assert_eq!(stat_value(text, "missing"), None);
    }
}
