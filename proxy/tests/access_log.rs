//! Access log rows through the real binary into the real ClickHouse from `scripts/services`:
//! every routed request becomes one row with its fields (query string left out), and with
//! ClickHouse unreachable requests are still answered at once while rows are retried, then
//! dropped and counted once the queue is full, and the rest arrive when ClickHouse is back.

mod common;

use std::time::{Duration, Instant};

use anyhow::Context;
use common::{Backend, ProxyProcess, authed, free_port, raw};
use proto::proxy::v1 as pb;
use proxy::access_log::AccessRow;
use stackpad_tests::db::ClickHouseDb;

fn clickhouse_url() -> String {
    stackpad_tests::Services::from_env().clickhouse_url
}

/// Rows of `db.access_logs` as readers see them (one per row id), oldest first; none before
/// the proxy made the table.
async fn rows(db: &ClickHouseDb) -> anyhow::Result<Vec<AccessRow>> {
    let sql = format!(
        "SELECT * FROM {}.access_logs ORDER BY ts_ns LIMIT 1 BY row_id",
        db.name()
    );
    match db.client().query(&sql).fetch_all::<AccessRow>().await {
        Ok(rows) => Ok(rows),
        Err(e) if e.to_string().contains("doesn't exist") => Ok(Vec::new()),
        Err(e) => {
            Err(e).with_context(|| format!("ClickHouse at {}: run scripts/services up", db.url()))
        }
    }
}

async fn wait_for_rows(
    db: &ClickHouseDb,
    n: usize,
    within: Duration,
) -> anyhow::Result<Vec<AccessRow>> {
    let deadline = Instant::now() + within;
    loop {
        let rows = rows(db).await?;
        if rows.len() >= n || Instant::now() > deadline {
            return Ok(rows);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `stackpad-proxy serve --config <file>` whose only setting is the access log section.
async fn proxy_with(settings: serde_json::Value) -> anyhow::Result<(ProxyProcess, tempdir::Dir)> {
    let dir = tempdir::Dir::new()?;
    let file = dir.0.join("proxy.json");
    std::fs::write(
        &file,
        serde_json::json!({ "access_log_clickhouse": settings }).to_string(),
    )?;
    let proxy = ProxyProcess::start_with(&["--config", &file.display().to_string()]).await?;
    Ok((proxy, dir))
}

mod tempdir {
    /// A directory of the test's own, removed at the end.
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new() -> std::io::Result<Self> {
            let path = std::env::temp_dir().join(stackpad_tests::unique_name("access-log"));
            std::fs::create_dir_all(&path)?;
            Ok(Self(path))
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn route(
    proxy: &ProxyProcess,
    id: &str,
    host: &str,
    service: &str,
    org: &str,
) -> anyhow::Result<()> {
    let mut admin = proxy.admin().await?;
    let route = pb::Route {
        route_id: id.into(),
        hosts: vec![host.into()],
        service_id: service.into(),
        allow_plain_http: true,
        organization_id: org.into(),
        project_id: format!("{org}-project"),
        environment_id: format!("{org}-production"),
        ..Default::default()
    };
    admin
        .client
        .upsert_route(authed(pb::UpsertRouteRequest { route: Some(route) }))
        .await?;
    Ok(())
}

async fn request(proxy: &ProxyProcess, head: &str, body: &str) -> anyhow::Result<u16> {
    let req = format!("{head}Connection: close\r\n\r\n{body}");
    let resp = raw(proxy.http, req.as_bytes(), Duration::from_secs(5)).await?;
    resp.get(9..12)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {resp:?}"))
}

async fn metrics(proxy: &ProxyProcess) -> anyhow::Result<String> {
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        proxy.admin
    );
    raw(proxy.admin, req.as_bytes(), Duration::from_secs(3)).await
}

/// The metrics once `name` reads `want` (or after 5 s): the last insert's answer may still be
/// on its way to the writer when its rows already show in ClickHouse.
async fn metrics_once(proxy: &ProxyProcess, name: &str, want: u64) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(proxy).await?;
        if metric(&text, name) == want || Instant::now() > deadline {
            return Ok(text);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_routed_request_becomes_one_row_with_its_fields() -> anyhow::Result<()> {
    let db = ClickHouseDb::create("access_test").await?;
    let app = Backend::start("deploy-1").await;
    let (proxy, _dir) = proxy_with(serde_json::json!({
        "clickhouse_url": clickhouse_url(),
        "database": db.name(),
        "batch_max_delay_ms": 200,
        "retention_days_by_organization": { "org-a": 30 },
    }))
    .await?;
    route(&proxy, "app", "app.example.test", "svc-app", "org-a").await?;
    route(&proxy, "down", "down.example.test", "svc-down", "org-b").await?;
    proxy.admin().await?.switch("svc-app", &[&app], 0).await?;

    const N: usize = 40;
    for i in 0..N {
        let head = format!(
            "GET /items/{i}?token=secret-{i} HTTP/1.1\r\nHost: App.Example.test:80\r\nX-Request-Id: req-{i}\r\n"
        );
        assert_eq!(request(&proxy, &head, "").await?, 200);
    }
    let post = "POST /upload HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 5\r\n";
    assert_eq!(request(&proxy, post, "hello").await?, 200);
    let down = "GET /x HTTP/1.1\r\nHost: down.example.test\r\n";
    assert_eq!(request(&proxy, down, "").await?, 503);
    // No route, no owner: no row.
    let unknown = "GET / HTTP/1.1\r\nHost: nobody.example.test\r\n";
    assert_eq!(request(&proxy, unknown, "").await?, 404);

    let rows = wait_for_rows(&db, N + 2, Duration::from_secs(10)).await?;
    assert_eq!(rows.len(), N + 2, "{rows:#?}\nproxy log:\n{}", proxy.log());
    let gets: Vec<&AccessRow> = rows.iter().filter(|r| r.method == "GET").collect();
    for i in 0..N {
        let path = format!("/items/{i}");
        let row = gets
            .iter()
            .find(|r| r.path == path)
            .with_context(|| format!("no row for {path}: {rows:#?}"))?;
        assert_eq!(row.request_id, format!("req-{i}"));
        assert_eq!(row.host, "app.example.test");
        assert_eq!(row.status, 200);
        assert_eq!(
            (
                row.organization_id.as_str(),
                row.project_id.as_str(),
                row.environment_id.as_str()
            ),
            ("org-a", "org-a-project", "org-a-production")
        );
        assert_eq!(
            (
                row.service_id.as_str(),
                row.deployment_id.as_str(),
                row.route_id.as_str()
            ),
            ("svc-app", "deploy-1", "app")
        );
        assert_eq!(row.upstream, app.addr.to_string());
        assert_eq!(row.client_ip, "127.0.0.1");
        assert_eq!(row.response_bytes, "deploy-1".len() as u64);
        assert_eq!(row.retention_days, 30);
        assert!(
            row.duration_us > 0 && row.duration_us < 5_000_000,
            "{row:?}"
        );
        let age = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as i64
            - row.ts_ns;
        assert!((0..60_000_000_000).contains(&age), "{row:?}");
        assert_eq!(i64::from(row.date), row.ts_ns / 86_400_000_000_000);
    }
    let posted = rows
        .iter()
        .find(|r| r.method == "POST")
        .context("no POST row")?;
    assert_eq!((posted.path.as_str(), posted.request_bytes), ("/upload", 5));
    let unavailable = rows
        .iter()
        .find(|r| r.service_id == "svc-down")
        .context("no 503 row")?;
    assert_eq!(
        (unavailable.status, unavailable.organization_id.as_str()),
        (503, "org-b")
    );
    assert_eq!(unavailable.retention_days, 14);
    assert!(unavailable.upstream.is_empty() && unavailable.deployment_id.is_empty());
    assert!(
        rows.iter().all(|r| !r.path.contains("secret")),
        "query strings are not stored by default"
    );

    let text = metrics_once(
        &proxy,
        "stackpad_proxy_access_log_rows_sent_total",
        (N + 2) as u64,
    )
    .await?;
    assert_eq!(
        metric(&text, "stackpad_proxy_access_log_rows_sent_total"),
        (N + 2) as u64
    );
    assert_eq!(
        metric(&text, "stackpad_proxy_access_log_rows_dropped_total"),
        0
    );
    let ours: String = text
        .lines()
        .filter(|l| l.contains("stackpad_proxy_access_log_"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(ours.lines().count(), 4 * 3, "{text}");
    assert_eq!(
        stackpad_tests::prometheus::convention_problems(&ours),
        Vec::<String>::new()
    );
    Ok(())
}

/// A TCP relay to ClickHouse on `port`, started once the test wants ClickHouse "back".
async fn relay_to_clickhouse(port: u16) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let target = clickhouse_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    Ok(tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_served_promptly_while_clickhouse_is_unreachable() -> anyhow::Result<()> {
    let db = ClickHouseDb::create("access_test").await?;
    let app = Backend::start("deploy-1").await;
    // Nothing listens there until the relay starts.
    let port = free_port();
    let (proxy, _dir) = proxy_with(serde_json::json!({
        "clickhouse_url": format!("http://127.0.0.1:{port}"),
        "database": db.name(),
        "batch_max_rows": 5,
        "batch_max_delay_ms": 50,
        "queue_capacity": 10,
        "retry_interval_ms": 100,
        "insert_timeout_ms": 500,
    }))
    .await?;
    route(&proxy, "app", "app.example.test", "svc-app", "org-a").await?;
    proxy.admin().await?.switch("svc-app", &[&app], 0).await?;

    const N: u64 = 200;
    let head = "GET /ping HTTP/1.1\r\nHost: app.example.test\r\n";
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..N {
        let t = Instant::now();
        assert_eq!(request(&proxy, head, "").await?, 200);
        slowest = slowest.max(t.elapsed());
    }
    let total = started.elapsed();
    assert!(
        slowest < Duration::from_millis(500),
        "a request took {slowest:?} with ClickHouse down"
    );
    assert!(
        total < Duration::from_secs(20),
        "{N} requests took {total:?}"
    );

    // The logging phase runs after the response went out: wait for the last one.
    let deadline = Instant::now() + Duration::from_secs(3);
    let text = loop {
        let text = metrics(&proxy).await?;
        let seen = metric(&text, "stackpad_proxy_access_log_rows_dropped_total")
            + metric(&text, "stackpad_proxy_access_log_rows_pending");
        if seen == N || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dropped = metric(&text, "stackpad_proxy_access_log_rows_dropped_total");
    let failures = metric(&text, "stackpad_proxy_access_log_insert_failures_total");
    let pending = metric(&text, "stackpad_proxy_access_log_rows_pending");
    assert_eq!(
        metric(&text, "stackpad_proxy_access_log_rows_sent_total"),
        0
    );
    assert!(failures > 0, "{text}");
    // At most the queue (10) and the batch being retried (5) are kept.
    assert!(pending <= 15, "{text}");
    assert_eq!(dropped + pending, N, "{text}");

    // ClickHouse back: the rows kept are delivered by the retries, nothing else is lost.
    let relay = relay_to_clickhouse(port).await?;
    let rows = wait_for_rows(&db, pending as usize, Duration::from_secs(10)).await?;
    relay.abort();
    assert_eq!(rows.len() as u64, pending, "proxy log:\n{}", proxy.log());
    let text = metrics_once(&proxy, "stackpad_proxy_access_log_rows_sent_total", pending).await?;
    assert_eq!(
        metric(&text, "stackpad_proxy_access_log_rows_sent_total"),
        pending
    );
    assert_eq!(metric(&text, "stackpad_proxy_access_log_rows_pending"), 0);
    eprintln!(
        "{N} requests in {total:?} (slowest {slowest:?}) with ClickHouse down: {dropped} rows dropped, {failures} failed inserts, {pending} kept and delivered later"
    );
    Ok(())
}
