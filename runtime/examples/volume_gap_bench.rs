//! Benchmark driver for `bench/runtime/volume-gap`: the redeploy gap of a database on a volume
//! (#14). A PostgreSQL 15 container (`stackpad/postgres:15`, `scripts/base-images`) keeps its
//! data directory on a volume; each run replaces it the way the pipeline does for a service
//! with volumes: stop the old (SIGTERM, its grace, SIGKILL) and remove it, then deploy the new
//! on the same volume and wait for `pg_isready` (exec probe). The gap is from the stop's start
//! to the new container's healthy verdict: no process accepts writes in between. After every
//! run a row is written and the row count checked, so each new server found the data.
//!
//! Bounded: `RUNS` redeploys (default 10). Traffic stays inside the network namespaces this
//! program creates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use runtime::NodeConfig;
use runtime::agent::{Agent, Status};
use runtime::isolation::IsolationDisabled;
use runtime::logs::NoShipping;
use runtime::spec::deploy::{PortSpec, Protocol, Resources};
use runtime::spec::{
    DeploySpec, HealthSpec, Probe, RestartMode, RestartSpec, VolumeSpec, Workload,
};
use runtime::userns::UsernsFile;
use runtime::volume::Volumes;

const PASSWORD: &str = "bench-password-0123456789abcdef";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        ms(v[n / 2])
    } else {
        (ms(v[n / 2 - 1]) + ms(v[n / 2])) / 2.0
    }
}

fn print(label: &str, v: &[Duration]) {
    let mut s = v.to_vec();
    s.sort();
    println!(
        "{label:<34} n={:<3} median {:7.1} ms   min {:7.1} ms   max {:7.1} ms",
        s.len(),
        median(s.clone()),
        ms(s[0]),
        ms(s[s.len() - 1])
    );
}

fn spec(registry: &str, project: &str, deployment: &str) -> DeploySpec {
    DeploySpec {
        workload: Workload {
            organization_id: "bench".into(),
            project_id: project.into(),
            environment_id: "production".into(),
            service_id: format!("{project}-db"),
            service_name: "db".into(),
            deployment_id: deployment.into(),
            service_type: 2,
            environment_name: "production".into(),
            replica: 0,
        },
        image: format!("{registry}/stackpad/postgres:15"),
        command: vec![],
        args: vec![],
        env: [
            ("POSTGRES_USER", "app"),
            ("POSTGRES_DB", "app"),
            ("POSTGRES_PASSWORD", PASSWORD),
            ("STACKPAD_MEMORY_LIMIT_BYTES", "268435456"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into(),
        working_dir: String::new(),
        ports: vec![PortSpec {
            container_port: 5432,
            protocol: Protocol::Tcp,
            name: "db".into(),
        }],
        resources: Resources {
            cpu_millis: 1000,
            memory_bytes: 256 << 20,
            pids_limit: 512,
        },
        health: Some(HealthSpec {
            probe: Probe::Exec {
                command: ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]
                    .map(String::from)
                    .to_vec(),
            },
            interval_ms: 50,
            timeout_ms: 5_000,
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            deadline_ms: 90_000,
        }),
        restart: RestartSpec {
            mode: RestartMode::OnFailure,
            max_restarts: 0,
        },
        read_only_rootfs: false,
        stop_grace_ms: 10_000,
        volumes: vec![VolumeSpec {
            name: "data".into(),
            mount_path: "/var/lib/postgresql/data".into(),
            size_bytes: 256 << 20,
        }],
    }
}

/// Runs `sql` with psql inside the container; fails unless it printed `expect` (when given).
async fn psql(agent: &Agent, s: &Status, sql: &str, expect: Option<&str>) -> anyhow::Result<()> {
    let run = format!("psql -h 127.0.0.1 -U app -d app -tAc \"{sql}\"");
    let script = match expect {
        Some(e) => format!("[ \"$(PGPASSWORD={PASSWORD} {run})\" = \"{e}\" ]"),
        None => format!("PGPASSWORD={PASSWORD} {run} >/dev/null"),
    };
    runtime::agent::exec::probe(
        agent.containerd(),
        &s.container_id,
        s.pid,
        &["sh".into(), "-c".into(), script],
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{sql}: {e}"))
}

async fn bench(agent: Arc<Agent>, registry: &str, runs: usize) -> anyhow::Result<()> {
    let project = stackpad_tests::unique_name("vg");
    let t = Instant::now();
    let mut current = agent
        .deploy(spec(registry, &project, &format!("{project}-0")))
        .await
        .context("first deploy (is stackpad/postgres:15 in the registry? scripts/base-images)")?;
    println!(
        "first deploy (pull, volume, initdb): {:.1} ms",
        ms(t.elapsed())
    );
    psql(&agent, &current, "create table visits (n int)", None).await?;
    let (mut stops, mut starts, mut gaps) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..=runs {
        psql(
            &agent,
            &current,
            &format!("insert into visits values ({i})"),
            None,
        )
        .await?;
        let t0 = Instant::now();
        agent.stop(&current.container_id, None).await?;
        agent.remove(&current.container_id, true).await?;
        let t1 = Instant::now();
        current = agent
            .deploy(spec(registry, &project, &format!("{project}-{i}")))
            .await?;
        let t2 = Instant::now();
        stops.push(t1 - t0);
        starts.push(t2 - t1);
        gaps.push(t2 - t0);
        psql(
            &agent,
            &current,
            "select count(*) from visits",
            Some(&i.to_string()),
        )
        .await
        .context("the new server did not find the rows written before")?;
    }
    print("stop old (SIGTERM..exit) + remove", &stops);
    print("start new to pg_isready", &starts);
    print("redeploy gap (no server)", &gaps);
    println!("target redeploy_gap_ms {:.1} < 2000", median(gaps));
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runs = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let services = stackpad_tests::Services::from_env();
    let ns = stackpad_tests::unique_name("bench-vol");
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
    let agent = Agent::new(
        config.clone(),
        Arc::new(IsolationDisabled),
        Arc::new(NoShipping),
    )
    .await
    .context("agent (is containerd up? scripts/services up)")?;
    let outcome = bench(agent.clone(), &services.registry, runs).await;
    // Whatever happened, leave nothing behind: containers, volumes, the namespace, id ranges.
    for s in agent.list(None, None) {
        let _ = agent.remove(&s.container_id, true).await;
    }
    let volumes = Volumes::under_state_dir(&config.state_dir);
    for v in volumes.list(None).unwrap_or_default() {
        let _ = agent.remove_volumes(&v.service_id, None).await;
    }
    volumes.unmount_all();
    agent.containerd().purge_namespace().await;
    if let Ok(table) = UsernsFile::new(&config.userns_dir) {
        let _ = table.update(|s| {
            s.release_namespace(&ns);
            Ok(())
        });
    }
    outcome
}
