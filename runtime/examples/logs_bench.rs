//! Benchmark driver for `bench/logs/run`: container log lines shipped end to end per second.
//!
//! End to end = a real busybox container's stdout -> the FIFO -> the agent's reader (the same
//! `Logs` code `stackpad-node` runs, in this process) -> `ClickHouseShipper` -> rows in
//! ClickHouse. The container first writes `LINES` realistic lines (~120 bytes) to a file of its
//! own, then `cat`s it: the clock starts at the first line the agent reads and stops when the
//! shipper has inserted (or dropped) the last, so the generator's own speed is not measured.
//!
//! Env: LINES (default 1000000), ROUNDS (default 3), DATABASE (default stackpad_bench_e2e,
//! dropped and created here, left for the script's ceiling run). Traffic stays on loopback.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use runtime::NodeConfig;
use runtime::agent::{Agent, State};
use runtime::isolation::IsolationDisabled;
use runtime::logship::{ClickHouseShipper, ShipperConfig};
use runtime::spec::deploy::Resources;
use runtime::spec::{DeploySpec, RestartMode, RestartSpec, Workload};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spec(registry: &str, round: u64, lines: u64) -> DeploySpec {
    let script = format!(
        "awk 'BEGIN{{for(i=0;i<{lines};i++) printf \"2026-11-27T08:00:00.%06dZ %s request id=%d \
         method=GET path=/api/items/%d status=%d duration_ms=%d user=u%d\\n\", i%1000000, \
         (i%7==0)?\"ERROR\":\"INFO\", i, i%1000, (i%7==0)?500:200, i%997, i%5000}}' > /tmp/lines \
         && exec cat /tmp/lines"
    );
    DeploySpec {
        workload: Workload {
            organization_id: "bench".into(),
            project_id: "logs".into(),
            environment_id: "production".into(),
            service_id: "svc-logs".into(),
            service_name: "logs".into(),
            deployment_id: format!("{}-{round}", stackpad_tests::unique_name("dep")),
            service_type: 2,
            environment_name: "production".into(),
            replica: 0,
        },
        image: format!("{registry}/stackpad/busybox:1"),
        command: vec!["sh".into(), "-c".into(), script],
        args: vec![],
        env: BTreeMap::new(),
        working_dir: String::new(),
        ports: vec![],
        resources: Resources {
            cpu_millis: 0,
            memory_bytes: 512 << 20,
            pids_limit: 64,
        },
        health: None,
        restart: RestartSpec {
            mode: RestartMode::Never,
            max_restarts: 0,
        },
        read_only_rootfs: false,
        stop_grace_ms: 100,
        volumes: vec![],
    }
}

/// One container's burst: (seconds from the first line read to the last one inserted or
/// dropped, lines inserted, lines dropped).
async fn round(
    agent: &Arc<Agent>,
    shipper: &ClickHouseShipper,
    registry: &str,
    round: u64,
    lines: u64,
) -> anyhow::Result<(f64, u64, u64)> {
    let stats = shipper.stats();
    let dropped =
        || stats.lines_dropped_queue.load(Ordering::Relaxed) + shipper.lines_dropped_spool();
    let (received0, shipped0, dropped0) = (
        stats.lines_received.load(Ordering::Relaxed),
        stats.lines_shipped.load(Ordering::Relaxed),
        dropped(),
    );
    let status = agent.deploy(spec(registry, round, lines)).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut first = None;
    loop {
        if first.is_none() && stats.lines_received.load(Ordering::Relaxed) > received0 {
            first = Some(Instant::now());
        }
        let done = stats.lines_shipped.load(Ordering::Relaxed) - shipped0 + dropped() - dropped0;
        if done >= lines {
            break;
        }
        if Instant::now() > deadline {
            bail!("round {round}: {done} of {lines} lines shipped after 300 s");
        }
        if first.is_none() {
            let s = agent.status(&status.container_id)?;
            if s.state == State::Failed {
                bail!("the log container failed: {s:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let _ = agent.remove(&status.container_id, true).await;
    let shipped = stats.lines_shipped.load(Ordering::Relaxed) - shipped0;
    let failed = stats.batches_failed.load(Ordering::Relaxed);
    if dropped() > dropped0 || failed > 0 {
        println!(
            "  shipper so far: {} lines dropped at the queue, {} by the spool, {failed} failed inserts",
            stats.lines_dropped_queue.load(Ordering::Relaxed),
            shipper.lines_dropped_spool(),
        );
    }
    Ok((secs, shipped, dropped() - dropped0))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let lines = env_u64("LINES", 1_000_000);
    let rounds = env_u64("ROUNDS", 3);
    let database = std::env::var("DATABASE").unwrap_or_else(|_| "stackpad_bench_e2e".into());
    let services = stackpad_tests::Services::from_env();
    clickhouse::Client::default()
        .with_url(&services.clickhouse_url)
        .query(&format!("DROP DATABASE IF EXISTS {database}"))
        .execute()
        .await
        .context("ClickHouse (scripts/services up)")?;

    let ns = stackpad_tests::unique_name("bench-logs");
    let dirs = tempfile::tempdir()?;
    let config = NodeConfig {
        namespace: ns.clone(),
        containerd_socket: services.containerd_socket.clone().into(),
        state_dir: dirs.path().join("state"),
        run_dir: dirs.path().join("run"),
        listen: "127.0.0.1:0".parse()?,
        metrics_listen: "127.0.0.1:0".parse()?,
        ..NodeConfig::default()
    };
    let shipper = ClickHouseShipper::start(ShipperConfig {
        clickhouse_url: services.clickhouse_url.clone(),
        database: database.clone(),
        node_id: "bench".into(),
        spool_dir: dirs.path().join("spool"),
        batch_max_lines: env_u64("BATCH", 100_000) as usize,
        ..ShipperConfig::default()
    })?;
    let agent = Agent::new(
        config,
        Arc::new(IsolationDisabled),
        Arc::new(shipper.clone()),
    )
    .await
    .context("agent (is containerd up? scripts/services up)")?;

    let mut outcome = Ok(Vec::new());
    for r in 0..rounds {
        match round(&agent, &shipper, &services.registry, r, lines).await {
            Ok((secs, shipped, dropped)) => {
                println!(
                    "e2e round {r}: {lines} lines printed, {shipped} inserted in {secs:.2} s = \
                     {:.0} lines/s shipped, {dropped} dropped",
                    shipped as f64 / secs
                );
                if let Ok(v) = outcome.as_mut() {
                    v.push(shipped as f64 / secs);
                }
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    for s in agent.list(None, None) {
        let _ = agent.remove(&s.container_id, true).await;
    }
    let ctr = |args: &[&str]| {
        let _ = std::process::Command::new("ctr")
            .arg("-n")
            .arg(&ns)
            .args(args)
            .output();
    };
    ctr(&[
        "image",
        "rm",
        "--sync",
        &format!("{}/stackpad/busybox:1", services.registry),
    ]);
    ctr(&["namespaces", "rm", &ns]);
    let mut rates = outcome?;
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!("e2e_lines_per_s={median:.0}");
    Ok(())
}
