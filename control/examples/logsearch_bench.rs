//! Benchmark driver for `bench/logs/run`: latency of control's log search over `ROWS` rows
//! (default 10M), p50/p99 over `RUNS` (default 50) queries per term.
//!
//! The rows are made in ClickHouse itself (`INSERT ... SELECT FROM numbers()`), in the schema
//! of the log store's contract (`logstore::container_logs::ensure_schema`): one organization, 10
//! services, 10 ms apart, realistic access-log-like text. The query is the one the API runs
//! (`LogSearch::search`: organization + service + case-insensitive text, newest first, one row
//! per line id, 100 lines). Terms: a rare one (a single request id: the whole service is
//! scanned) and a common one (`status=500`, one line in 7: the first page fills fast).
//!
//! Env: ROWS, RUNS, DATABASE (default stackpad_bench_search; kept between runs when it already
//! holds ROWS rows, dropped with DROP=1).

use std::time::Instant;

use anyhow::Context;
use control::logsearch::{Direction, LogQuery, LogSearch};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Lines like an HTTP service's access log; `number` picks the values.
const LOAD: &str = "INSERT INTO {db}.container_logs
SELECT toDate(toDateTime(intDiv(ts, 1000000000))), ts, sipHash64(number), 'org-bench',
       'proj-bench', 'production', concat('svc-', toString(number % 10)),
       concat('dep-', toString(number % 10)), concat('sp-', toString(number % 10)), 'compute-1',
       if(number % 7 = 0, 2, 1), 0,
       concat(toString(toDateTime(intDiv(ts, 1000000000))), ' ',
              if(number % 7 = 0, 'ERROR', 'INFO'), ' request id=', toString(number),
              ' method=', arrayElement(['GET', 'POST', 'PUT', 'DELETE'], 1 + number % 4),
              ' path=/api/', arrayElement(['users', 'orders', 'items', 'cart', 'search'],
                                          1 + intDiv(number, 3) % 5),
              '/', toString(number % 100000),
              ' status=', if(number % 7 = 0, '500', '200'),
              ' duration_ms=', toString(number % 997),
              ' ua=\"Mozilla/5.0 (X11; Linux x86_64)\"'),
       14
FROM (SELECT number, toInt64(1790000000000000000 + number * 10000000) AS ts
      FROM numbers({rows}))";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows = env_u64("ROWS", 10_000_000);
    let runs = env_u64("RUNS", 50).max(1);
    let database = std::env::var("DATABASE").unwrap_or_else(|_| "stackpad_bench_search".into());
    let url = stackpad_tests::Services::from_env().clickhouse_url;
    let server = clickhouse::Client::default()
        .with_url(&url)
        .with_validation(false);
    logstore::container_logs::ensure_schema(&server, &database)
        .await
        .context("ClickHouse (scripts/services up)")?;
    let have: u64 = server
        .query(&format!("SELECT count() FROM {database}.container_logs"))
        .fetch_one()
        .await?;
    if have != rows {
        server
            .query(&format!("TRUNCATE TABLE {database}.container_logs"))
            .execute()
            .await?;
        let started = Instant::now();
        server
            .query(
                &LOAD
                    .replace("{db}", &database)
                    .replace("{rows}", &rows.to_string()),
            )
            .execute()
            .await
            .context("loading the rows")?;
        let _ = server
            .query(&format!("OPTIMIZE TABLE {database}.container_logs FINAL"))
            .execute()
            .await;
        println!(
            "loaded {rows} rows in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let bytes: u64 = server
        .query(
            "SELECT sum(bytes_on_disk) FROM system.parts \
             WHERE database = ? AND table = 'container_logs' AND active",
        )
        .bind(&database)
        .fetch_one()
        .await
        .unwrap_or(0);
    println!(
        "{rows} rows, 10 services, {:.0} MiB on disk",
        bytes as f64 / f64::from(1 << 20)
    );

    let search = LogSearch::new(&url, &database);
    // A request id that exists once, in svc-7 (number % 10 == 7).
    let rare = format!("id={} ", rows / 2 + 7 - (rows / 2) % 10);
    for (label, term) in [("rare term", rare.as_str()), ("common term", "status=500")] {
        let query = LogQuery {
            organization_id: "org-bench".into(),
            service_id: "svc-7".into(),
            text: Some(term.into()),
            limit: 100,
            ..LogQuery::default()
        };
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..runs {
            let started = Instant::now();
            found = search.search(&query, None, Direction::Older).await?.len();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let pick =
            |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
        println!(
            "search {label:<12} {term:?}: {found} lines, p50 {:.1} ms, p99 {:.1} ms over {runs} runs",
            pick(0.5),
            pick(0.99)
        );
    }
    if std::env::var("DROP").is_ok_and(|v| v == "1") {
        server
            .query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute()
            .await?;
    }
    Ok(())
}
