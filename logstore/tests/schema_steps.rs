//! The contract's schema steps against the real ClickHouse (`CLICKHOUSE_URL`, default
//! `http://127.0.0.1:8123`), in a database of the test's own, dropped even when it fails.

use logstore::{access_logs, container_logs};
use stackpad_tests::db::ClickHouseDb;

async fn applied_versions(server: &clickhouse::Client, db: &str, component: &str) -> Vec<u32> {
    server
        .query(&format!(
            "SELECT version FROM {db}.schema_migrations WHERE component = ? ORDER BY version"
        ))
        .bind(component)
        .fetch_all::<u32>()
        .await
        .expect("ClickHouse must be up at CLICKHOUSE_URL (scripts/services start clickhouse)")
}

#[tokio::test]
async fn both_tables_are_created_once_and_take_their_rows() {
    let db = ClickHouseDb::create("logstore_steps")
        .await
        .expect("a ClickHouse database of the test's own");
    let server = db.client();
    for _ in 0..2 {
        container_logs::ensure_schema(&server, db.name())
            .await
            .expect("ClickHouse must be up at CLICKHOUSE_URL (scripts/services start clickhouse)");
        access_logs::ensure_schema(&server, db.name())
            .await
            .unwrap();
    }
    // Each step is recorded once, under its table's component, however often it is applied.
    assert_eq!(
        applied_versions(&server, db.name(), container_logs::COMPONENT).await,
        [1]
    );
    assert_eq!(
        applied_versions(&server, db.name(), access_logs::COMPONENT).await,
        [1]
    );

    let log = container_logs::LogRow {
        date: 20_000,
        ts_ns: 1_728_000_000_000_000_000,
        line_id: 7,
        organization_id: "org".into(),
        project_id: "p".into(),
        environment_id: "e".into(),
        service_id: "s".into(),
        deployment_id: "d".into(),
        container_id: "c".into(),
        node_id: "n".into(),
        stream: container_logs::STREAM_STDERR,
        truncated: 0,
        line: vec![0xff, b'x'],
        retention_days: 14,
    };
    let mut insert = server
        .clone()
        .with_database(db.name())
        .insert::<container_logs::LogRow>(container_logs::TABLE)
        .await
        .unwrap();
    insert.write(&log).await.unwrap();
    insert.end().await.unwrap();
    let read: Vec<container_logs::LogRow> = server
        .query(&format!(
            "SELECT ?fields FROM {}.{}",
            db.name(),
            container_logs::TABLE
        ))
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(read, [log]);

    let access = access_logs::AccessRow {
        date: 20_000,
        ts_ns: 1_728_000_000_000_000_000,
        row_id: 9,
        organization_id: "org".into(),
        service_id: "s".into(),
        method: "GET".into(),
        host: "app.example.test".into(),
        path: "/".into(),
        status: 200,
        duration_us: 1_500,
        retention_days: 7,
        ..access_logs::AccessRow::default()
    };
    let mut insert = server
        .clone()
        .with_database(db.name())
        .insert::<access_logs::AccessRow>(access_logs::TABLE)
        .await
        .unwrap();
    insert.write(&access).await.unwrap();
    insert.end().await.unwrap();
    // The readers' column names select what the writer wrote.
    use access_logs::columns::{ROW_ID, STATUS};
    let (row_id, status): (u64, u16) = server
        .query(&format!(
            "SELECT {ROW_ID}, {STATUS} FROM {}.{}",
            db.name(),
            access_logs::TABLE
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!((row_id, status), (9, 200));
}

#[tokio::test]
async fn build_logs_are_created_once_and_a_line_written_twice_reads_once() {
    use logstore::build_logs::{self, BuildLogRow, columns as col};
    let db = ClickHouseDb::create("logstore_build_steps")
        .await
        .expect("a ClickHouse database of the test's own");
    let server = db.client();
    for _ in 0..2 {
        build_logs::ensure_schema(&server, db.name())
            .await
            .expect("ClickHouse must be up at CLICKHOUSE_URL (scripts/services start clickhouse)");
    }
    assert_eq!(
        applied_versions(&server, db.name(), build_logs::COMPONENT).await,
        [1]
    );
    let row = BuildLogRow {
        date: 20_000,
        ts_ns: 1_728_000_000_000_000_000,
        organization_id: "org".into(),
        deployment_id: "d".into(),
        build_id: "d".into(),
        line_number: 3,
        step: "[build 2/3] RUN npm run build".into(),
        stream: build_logs::STREAM_STDOUT,
        line: "compiled".into(),
        retention_days: 14,
        ..BuildLogRow::default()
    };
    // A watch taken again replays the build: the same line is written twice.
    for _ in 0..2 {
        let mut insert = server
            .clone()
            .with_database(db.name())
            .insert::<BuildLogRow>(build_logs::TABLE)
            .await
            .unwrap();
        insert.write(&row).await.unwrap();
        insert.end().await.unwrap();
    }
    let read: Vec<BuildLogRow> = server
        .query(&format!(
            "SELECT ?fields FROM {}.{} WHERE {} = ? LIMIT 1 BY {}",
            db.name(),
            build_logs::TABLE,
            col::DEPLOYMENT_ID,
            col::LINE_NUMBER,
        ))
        .bind("d")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(read, [row]);
}
