//! The log tables filled as their writers fill them (the node agents' shipper, the proxy's
//! access log): the `logstore` contract's schema steps, then its rows, in a ClickHouse database
//! of the test's own.

use clickhouse::{RowOwned, RowWrite};
use logstore::access_logs::{self, AccessRow};
use logstore::build_logs::{self, BuildLogRow};
use logstore::container_logs::{self, LogRow};
use stackpad_tests::db::ClickHouseDb;

pub const NS_PER_DAY: i64 = 86_400_000_000_000;

/// The `Date` (days since 1970-01-01) of a time in nanoseconds since the epoch.
pub fn date_of(ts_ns: i64) -> u16 {
    u16::try_from(ts_ns / NS_PER_DAY).expect("a date between 1970 and 2149")
}

pub async fn write_container_logs(db: &ClickHouseDb, rows: &[LogRow]) -> anyhow::Result<()> {
    container_logs::ensure_schema(&db.client(), db.name()).await?;
    insert(db, container_logs::TABLE, rows).await
}

pub async fn write_access_logs(db: &ClickHouseDb, rows: &[AccessRow]) -> anyhow::Result<()> {
    access_logs::ensure_schema(&db.client(), db.name()).await?;
    insert(db, access_logs::TABLE, rows).await
}

pub async fn write_build_logs(db: &ClickHouseDb, rows: &[BuildLogRow]) -> anyhow::Result<()> {
    build_logs::ensure_schema(&db.client(), db.name()).await?;
    insert(db, build_logs::TABLE, rows).await
}

/// Line `number` of `deployment_id`'s build (of `organization_id`) from `step`, as control's
/// pipeline stores it.
pub fn build_log_row(
    organization_id: &str,
    deployment_id: &str,
    number: u32,
    step: &str,
    line: &str,
) -> BuildLogRow {
    let ts_ns = 1_790_000_000_000_000_000 + i64::from(number) * 1_000_000;
    BuildLogRow {
        date: date_of(ts_ns),
        ts_ns,
        organization_id: organization_id.to_owned(),
        deployment_id: deployment_id.to_owned(),
        build_id: deployment_id.to_owned(),
        line_number: number,
        step: step.to_owned(),
        stream: build_logs::STREAM_STDOUT,
        line: line.to_owned(),
        retention_days: 14,
        ..BuildLogRow::default()
    }
}

async fn insert<R: RowOwned + RowWrite>(
    db: &ClickHouseDb,
    table: &str,
    rows: &[R],
) -> anyhow::Result<()> {
    let mut insert = db
        .client()
        .with_database(db.name())
        .insert::<R>(table)
        .await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(())
}

/// A request of `service_id` of `organization_id` at `ts_ns`, row id `row_id`; every other
/// field empty or 0 (the test sets those it looks at).
pub fn access_row(ts_ns: i64, row_id: u64, organization_id: &str, service_id: &str) -> AccessRow {
    AccessRow {
        date: date_of(ts_ns),
        ts_ns,
        row_id,
        organization_id: organization_id.to_owned(),
        service_id: service_id.to_owned(),
        retention_days: 14,
        ..AccessRow::default()
    }
}

/// Line `line_id` of container c1 (deployment d1) of `service_id` at `ts_ns`, on `stream`.
pub fn log_row(
    ts_ns: i64,
    line_id: u64,
    organization_id: &str,
    service_id: &str,
    stream: u8,
    line: &str,
) -> LogRow {
    LogRow {
        date: date_of(ts_ns),
        ts_ns,
        line_id,
        organization_id: organization_id.to_owned(),
        project_id: "p".into(),
        environment_id: "e".into(),
        service_id: service_id.to_owned(),
        deployment_id: "d1".into(),
        container_id: "c1".into(),
        node_id: "n1".into(),
        stream,
        truncated: 0,
        line: line.as_bytes().to_vec(),
        retention_days: 14,
    }
}

/// When the first of [`requests`] started.
pub const T0: i64 = 1_790_000_000_000_000_000;

/// The 50 requests the access log tests search: request `i` (0..50) starts at `T0 + i` ms,
/// `GET web.example.test/api/items/<i>` (even `i`) or `/static/<i>.css` (odd), status
/// 200, 404, 500, 503, 201 by `i % 5`, `i * 10` ms long, 100 response bytes, row id `i`.
pub fn requests(organization_id: &str, service_id: &str) -> Vec<AccessRow> {
    const STATUSES: [u16; 5] = [200, 404, 500, 503, 201];
    (0..50)
        .map(|i| {
            let path = if i % 2 == 0 {
                format!("/api/items/{i}")
            } else {
                format!("/static/{i}.css")
            };
            AccessRow {
                deployment_id: "d1".into(),
                method: "GET".into(),
                host: "web.example.test".into(),
                path,
                status: STATUSES[i % 5],
                duration_us: i as u64 * 10_000,
                response_bytes: 100,
                upstream: "10.200.0.2:3000".into(),
                client_ip: "203.0.113.9".into(),
                ..access_row(
                    T0 + i as i64 * 1_000_000,
                    i as u64,
                    organization_id,
                    service_id,
                )
            }
        })
        .collect()
}
