//! The managed engines' images (`scripts/base-images`: stackpad/postgres:15, mariadb:10.11,
//! redis:7; #14) under the node agent. Each starts from its entrypoint with the environment
//! control gives it, passes its own probe run inside the container (exec probe: pg_isready,
//! mariadb-admin ping, redis-cli ping; `agent::exec`), and a client container of the same project reaches it
//! at `<service>.<environment>.internal` with the generated credentials: the client's own exec
//! probe is that connection, so "healthy" means "connected and answered". A wrong password is
//! refused. The data directory is a volume: data written by the client is still there after
//! the engine's container is stopped and a new deployment of it starts on the same volume. One
//! harness for the three engines.

mod common;

use std::time::{Duration, Instant};

use common::TestNode;
use runtime::agent::{State, Status};
use runtime::spec::deploy::{PortSpec, Protocol};
use runtime::spec::{DeploySpec, HealthSpec, Probe, VolumeSpec};

struct Engine {
    image: &'static str,
    port: u32,
    env: &'static [(&'static str, &'static str)],
    /// The engine's own readiness probe (as control sends it).
    probe: &'static [&'static str],
    /// A client command that succeeds only when it connected to `db.production.internal` with
    /// `PASSWORD` and got an answer.
    client: &'static str,
    /// Where the engine keeps its data (the volume's mount path).
    data: &'static str,
    /// Client commands that write a value, and that succeed only when it is there.
    write: &'static str,
    read: &'static str,
}

const PASSWORD: &str = "0123456789abcdef0123456789abcdef";

const POSTGRES: Engine = Engine {
    image: "postgres:15",
    port: 5432,
    env: &[
        ("POSTGRES_USER", "app"),
        ("POSTGRES_DB", "app"),
        ("POSTGRES_PASSWORD", PASSWORD),
    ],
    probe: &["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"],
    client: "[ \"$(psql \"postgres://app:$PASSWORD@db.production.internal:5432/app\" -tAc 'select 40 + 2')\" = 42 ]",
    data: "/var/lib/postgresql/data",
    write: "psql \"postgres://app:$PASSWORD@db.production.internal:5432/app\" -c 'create table kept (x int)' -c 'insert into kept values (7)'",
    read: "[ \"$(psql \"postgres://app:$PASSWORD@db.production.internal:5432/app\" -tAc 'select x from kept')\" = 7 ]",
};

const MARIADB: Engine = Engine {
    image: "mariadb:10.11",
    port: 3306,
    env: &[
        ("MARIADB_USER", "app"),
        ("MARIADB_DATABASE", "app"),
        ("MARIADB_PASSWORD", PASSWORD),
    ],
    probe: &["mariadb-admin", "ping", "--silent", "-h", "127.0.0.1"],
    client: "[ \"$(mariadb -h db.production.internal -u app -p\"$PASSWORD\" app -N -e 'select 40 + 2')\" = 42 ]",
    data: "/var/lib/mysql",
    write: "mariadb -h db.production.internal -u app -p\"$PASSWORD\" app -e 'create table kept (x int); insert into kept values (7)'",
    read: "[ \"$(mariadb -h db.production.internal -u app -p\"$PASSWORD\" app -N -e 'select x from kept')\" = 7 ]",
};

const REDIS: Engine = Engine {
    image: "redis:7",
    port: 6379,
    env: &[("REDIS_PASSWORD", PASSWORD)],
    probe: &[
        "sh",
        "-c",
        "[ \"$(REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli -h 127.0.0.1 ping)\" = PONG ]",
    ],
    client: "[ \"$(redis-cli -u \"redis://default:$PASSWORD@db.production.internal:6379\" --no-auth-warning incr visits)\" = 1 ]",
    data: "/var/lib/redis",
    write: "[ \"$(redis-cli -u \"redis://default:$PASSWORD@db.production.internal:6379\" --no-auth-warning set kept 7)\" = OK ]",
    read: "[ \"$(redis-cli -u \"redis://default:$PASSWORD@db.production.internal:6379\" --no-auth-warning get kept)\" = 7 ]",
};

fn exec_health(command: Vec<String>) -> Option<HealthSpec> {
    Some(HealthSpec {
        probe: Probe::Exec { command },
        interval_ms: 200,
        timeout_ms: 5_000,
        healthy_threshold: 1,
        unhealthy_threshold: 3,
        deadline_ms: 90_000,
    })
}

fn engine_spec(node: &TestNode, project: &str, e: &Engine) -> DeploySpec {
    let mut s = node.web(project, "db");
    s.image = node.image(e.image);
    s.command = vec![];
    s.env = e
        .env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    s.env.insert(
        "STACKPAD_MEMORY_LIMIT_BYTES".into(),
        (256u64 << 20).to_string(),
    );
    s.ports = vec![PortSpec {
        container_port: e.port,
        protocol: Protocol::Tcp,
        name: "db".into(),
    }];
    s.resources.memory_bytes = 256 << 20;
    s.resources.pids_limit = 512;
    s.resources.cpu_millis = 1000;
    s.health = exec_health(e.probe.iter().map(|a| (*a).to_owned()).collect());
    s.stop_grace_ms = 10_000;
    s.volumes = vec![VolumeSpec {
        name: "data".into(),
        mount_path: e.data.into(),
        size_bytes: 256 << 20,
    }];
    s
}

/// Runs `script` in the client container (its env has PASSWORD); `Err` = it failed.
async fn in_client(node: &TestNode, client: &Status, script: &str) -> Result<(), String> {
    let argv = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
    runtime::agent::exec::probe(
        &node.ns.containerd,
        &client.container_id,
        client.pid,
        &argv,
        Duration::from_secs(20),
    )
    .await
}

/// A container of the engine's image running `sleep`, whose health is the client command.
fn client_spec(node: &TestNode, project: &str, e: &Engine, password: &str) -> DeploySpec {
    let mut s = node.web(project, "client");
    s.image = node.image(e.image);
    s.command = vec!["sleep".into(), "3600".into()];
    s.env = [("PASSWORD".to_owned(), password.to_owned())].into();
    s.ports.clear();
    s.resources.pids_limit = 128;
    let mut h = exec_health(vec!["sh".into(), "-c".into(), e.client.into()]);
    if let Some(h) = h.as_mut() {
        h.deadline_ms = 20_000;
    }
    s.health = h;
    s
}

async fn engine_serves_its_project_by_internal_name(
    prefix: &str,
    e: &Engine,
) -> anyhow::Result<()> {
    let node = TestNode::start(prefix).await?;
    let project = stackpad_tests::unique_name("p");
    let started = Instant::now();
    let db = node.agent.deploy(engine_spec(&node, &project, e)).await?;
    let to_healthy = started.elapsed();
    assert_eq!(db.state, State::Healthy, "{}: {}", e.image, db.message);
    println!(
        "{}: healthy (exec probe) {:?} after deploy",
        e.image, to_healthy
    );

    let client = node
        .agent
        .deploy(client_spec(&node, &project, e, PASSWORD))
        .await?;
    assert_eq!(
        client.state,
        State::Healthy,
        "{}: the client did not connect by db.production.internal: {}",
        e.image,
        client.message
    );
    let hosts = std::fs::read_to_string(
        node.config
            .run_dir
            .join("networks")
            .join(&db.bridge)
            .join("hosts"),
    )?;
    assert!(
        hosts.contains("\tdb db.production.internal\n"),
        "hosts file: {hosts}"
    );

    // The same client command with another password is refused by the engine.
    let argv: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        e.client.replace("$PASSWORD", "wrong-password"),
    ];
    let refused = runtime::agent::exec::probe(
        &node.ns.containerd,
        &client.container_id,
        client.pid,
        &argv,
        Duration::from_secs(10),
    )
    .await;
    assert!(refused.is_err(), "{}: a wrong password was let in", e.image);

    // Data on the volume outlives the container: stop it (SIGTERM, the engine shuts down
    // cleanly), remove it, deploy the engine anew on the same volume, read the value back.
    in_client(&node, &client, e.write)
        .await
        .map_err(|m| anyhow::anyhow!("{}: write failed: {m}", e.image))?;
    node.agent.stop(&db.container_id, None).await?;
    node.agent.remove(&db.container_id, false).await?;
    let started = Instant::now();
    let again = node.agent.deploy(engine_spec(&node, &project, e)).await?;
    assert_eq!(
        again.state,
        State::Healthy,
        "{}: {}",
        e.image,
        again.message
    );
    assert_ne!(again.container_id, db.container_id);
    println!(
        "{}: redeployed on its volume, healthy after {:?}",
        e.image,
        started.elapsed()
    );
    in_client(&node, &client, e.read)
        .await
        .map_err(|m| anyhow::anyhow!("{}: the value did not survive the redeploy: {m}", e.image))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_starts_passes_pg_isready_and_serves_its_project() -> anyhow::Result<()> {
    engine_serves_its_project_by_internal_name("pg", &POSTGRES).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_starts_passes_its_ping_and_serves_its_project() -> anyhow::Result<()> {
    engine_serves_its_project_by_internal_name("maria", &MARIADB).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_starts_passes_its_ping_and_serves_its_project() -> anyhow::Result<()> {
    engine_serves_its_project_by_internal_name("redis", &REDIS).await
}
