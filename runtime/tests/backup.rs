//! EngineDump and EngineLoad over the node agent's gRPC (#14 backups), on the real engine
//! images in containerd: write rows, dump (the engine's own consistent dump, streamed), drop
//! the data, load the dump back: the rows are back; CHECK counts what the engine holds. An
//! upload that ends without its end changes nothing, and a damaged dump is refused by the
//! engine's own tool with the data left as it was. Redis is restored by putting the RDB in
//! place and restarting the container (its restart policy), then healthy again. A PostgreSQL
//! dump as older agents took it (zlib-compressed by pg_dump; now `-Z0`) still loads.

mod common;

use std::time::{Duration, Instant};

use common::TestNode;
use proto::node::v1 as pb;
use proto::node::v1::node_agent_client::NodeAgentClient;
use runtime::agent::{State, Status};
use runtime::spec::deploy::{PortSpec, Protocol};
use runtime::spec::{DeploySpec, HealthSpec, Probe, VolumeSpec};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const PASSWORD: &str = "0123456789abcdef0123456789abcdef";

struct Engine {
    image: &'static str,
    engine: pb::Engine,
    port: u32,
    env: &'static [(&'static str, &'static str)],
    probe: &'static [&'static str],
    data: &'static str,
    /// Run inside the engine's container: writes three rows / keys.
    write: &'static str,
    /// Removes them.
    drop: &'static str,
    /// Succeeds only when the three are there.
    read: &'static str,
    /// The CHECK answer with the three written.
    check: &'static str,
    /// Found in the first 100 bytes of a dump.
    magic: &'static str,
    /// Prints a dump as an older agent took it, which must still load.
    older: Option<&'static str>,
}

const POSTGRES: Engine = Engine {
    image: "postgres:15",
    engine: pb::Engine::Postgres,
    port: 5432,
    env: &[
        ("POSTGRES_USER", "app"),
        ("POSTGRES_DB", "app"),
        ("POSTGRES_PASSWORD", PASSWORD),
    ],
    probe: &["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"],
    data: "/var/lib/postgresql/data",
    write: "psql -X -q -tA -h /run/postgresql -U app -d app -v ON_ERROR_STOP=1 -c 'create table kept (x int)' -c 'insert into kept values (1), (2), (3)'",
    drop: "psql -X -q -tA -h /run/postgresql -U app -d app -v ON_ERROR_STOP=1 -c 'drop table kept'",
    read: "[ \"$(psql -X -q -tA -h /run/postgresql -U app -d app -c 'select sum(x) from kept')\" = 6 ]",
    check: "tables 1\nrows 3\n",
    magic: "PGDMP",
    // Before bench/backup, the agent let pg_dump compress with zlib (now -Z0, zstd in control).
    older: Some("exec pg_dump -Fc -h /run/postgresql -U app -d app"),
};

const MARIADB: Engine = Engine {
    image: "mariadb:10.11",
    engine: pb::Engine::Mariadb,
    port: 3306,
    env: &[
        ("MARIADB_USER", "app"),
        ("MARIADB_DATABASE", "app"),
        ("MARIADB_PASSWORD", PASSWORD),
    ],
    probe: &["mariadb-admin", "ping", "--silent", "-h", "127.0.0.1"],
    data: "/var/lib/mysql",
    write: "mariadb -uroot -S /run/mysqld/mysqld.sock app -e 'create table kept (x int); insert into kept values (1), (2), (3)'",
    drop: "mariadb -uroot -S /run/mysqld/mysqld.sock app -e 'drop table kept'",
    read: "[ \"$(mariadb -uroot -S /run/mysqld/mysqld.sock app -N -e 'select sum(x) from kept')\" = 6 ]",
    check: "tables 1\nrows 3\ntable kept 3\n",
    magic: "-- MariaDB dump",
    older: None,
};

const REDIS: Engine = Engine {
    image: "redis:7",
    engine: pb::Engine::Redis,
    port: 6379,
    env: &[("REDIS_PASSWORD", PASSWORD)],
    probe: &[
        "sh",
        "-c",
        "[ \"$(REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli -h 127.0.0.1 ping)\" = PONG ]",
    ],
    data: "/var/lib/redis",
    write: "export REDISCLI_AUTH=\"$REDIS_PASSWORD\"; redis-cli -h 127.0.0.1 --no-auth-warning mset a 1 b 2 c 3 >/dev/null",
    drop: "export REDISCLI_AUTH=\"$REDIS_PASSWORD\"; redis-cli -h 127.0.0.1 --no-auth-warning flushall >/dev/null",
    read: "export REDISCLI_AUTH=\"$REDIS_PASSWORD\"; [ \"$(redis-cli -h 127.0.0.1 --no-auth-warning mget a b c | tr -d '\\n')\" = 123 ]",
    check: "keys 3\n",
    magic: "REDIS",
    older: None,
};

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
    s.health = Some(HealthSpec {
        probe: Probe::Exec {
            command: e.probe.iter().map(|a| (*a).to_owned()).collect(),
        },
        interval_ms: 200,
        timeout_ms: 5_000,
        healthy_threshold: 1,
        unhealthy_threshold: 3,
        deadline_ms: 90_000,
    });
    s.stop_grace_ms = 10_000;
    s.volumes = vec![VolumeSpec {
        name: "data".into(),
        mount_path: e.data.into(),
        size_bytes: 256 << 20,
    }];
    s
}

async fn run_in(node: &TestNode, db: &Status, script: &str) -> Result<(), String> {
    let argv = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
    let pid = node
        .agent
        .status(&db.container_id)
        .map_err(|e| e.to_string())?
        .pid;
    runtime::agent::exec::probe(
        &node.ns.containerd,
        &db.container_id,
        pid,
        &argv,
        Duration::from_secs(20),
    )
    .await
}

/// The whole stream of an EngineDump; `Err` when it failed or ended without `end`.
async fn dump(
    client: &mut NodeAgentClient<Channel>,
    container: &str,
    engine: pb::Engine,
    command: pb::EngineCommand,
) -> anyhow::Result<Vec<u8>> {
    dump_named(client, container, engine, command, "").await
}

async fn dump_named(
    client: &mut NodeAgentClient<Channel>,
    container: &str,
    engine: pb::Engine,
    command: pb::EngineCommand,
    name: &str,
) -> anyhow::Result<Vec<u8>> {
    let (out, _) = dump_as(
        client,
        container,
        engine,
        command,
        name,
        pb::Compression::None,
    )
    .await?;
    Ok(out)
}

/// An EngineDump asked for as `compression`: its data, and the end's count of the command's
/// output; every chunk must say it carries `compression`.
async fn dump_as(
    client: &mut NodeAgentClient<Channel>,
    container: &str,
    engine: pb::Engine,
    command: pb::EngineCommand,
    name: &str,
    compression: pb::Compression,
) -> anyhow::Result<(Vec<u8>, u64)> {
    let mut stream = client
        .engine_dump(pb::EngineDumpRequest {
            container_id: container.into(),
            engine: engine as i32,
            command: command as i32,
            name: name.into(),
            compression: compression as i32,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    let mut ended = false;
    let mut raw = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        anyhow::ensure!(
            chunk.compression == compression as i32,
            "a chunk says {}, asked {compression:?}",
            chunk.compression
        );
        out.extend(chunk.data);
        ended = chunk.end;
        raw = chunk.raw_bytes;
    }
    anyhow::ensure!(ended, "the dump stream ended without its end");
    Ok((out, raw))
}

async fn load(
    client: &mut NodeAgentClient<Channel>,
    container: &str,
    engine: pb::Engine,
    data: &[u8],
    end: bool,
) -> Result<pb::EngineLoadResponse, tonic::Status> {
    let header = pb::EngineLoadHeader {
        container_id: container.into(),
        engine: engine as i32,
        ..Default::default()
    };
    load_with(client, header, data, end).await
}

async fn load_with(
    client: &mut NodeAgentClient<Channel>,
    header: pb::EngineLoadHeader,
    data: &[u8],
    end: bool,
) -> Result<pb::EngineLoadResponse, tonic::Status> {
    let mut msgs = vec![pb::EngineLoadRequest {
        part: Some(pb::engine_load_request::Part::Header(header)),
    }];
    for c in data.chunks(100_000) {
        msgs.push(pb::EngineLoadRequest {
            part: Some(pb::engine_load_request::Part::Chunk(pb::EngineChunk {
                data: c.to_vec(),
                ..Default::default()
            })),
        });
    }
    msgs.push(pb::EngineLoadRequest {
        part: Some(pb::engine_load_request::Part::Chunk(pb::EngineChunk {
            end,
            ..Default::default()
        })),
    });
    client
        .engine_load(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

/// A PostgreSQL dump loaded as it arrives (`stream`, a target with nothing to keep): cut
/// short or damaged it restores nothing (pg_restore is killed inside, or fails, its single
/// transaction); whole, the rows are back.
async fn streamed_load(
    client: &mut NodeAgentClient<Channel>,
    node: &TestNode,
    db: &Status,
    e: &Engine,
    data: &[u8],
) -> anyhow::Result<()> {
    let header = || pb::EngineLoadHeader {
        container_id: db.container_id.clone(),
        engine: e.engine as i32,
        stream: true,
        ..Default::default()
    };
    run_in(node, db, e.drop)
        .await
        .map_err(|m| anyhow::anyhow!("{}: drop: {m}", e.image))?;
    // All of it but without its end: pg_restore is one piece behind and never sees the
    // dump's end, then is killed.
    let cut = load_with(client, header(), data, false).await;
    refused(node, db, e, cut, tonic::Code::Aborted, "without its end").await;
    let mut bad = data[..data.len() / 2].to_vec();
    let at = bad.windows(5).position(|w| w == b"PGDMP").unwrap_or(0);
    bad[at + 1] ^= 0xff;
    let refused = load_with(client, header(), &bad, true).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");
    assert!(refused.message().contains("restore failed"), "{refused:?}");
    assert!(
        run_in(node, db, e.read).await.is_err(),
        "{}: a damaged streamed dump loaded",
        e.image
    );
    let started = Instant::now();
    let done = load_with(client, header(), data, true).await?;
    println!(
        "{}: streamed load of {} bytes in {:?}",
        e.image,
        done.bytes,
        started.elapsed()
    );
    assert_eq!(done.bytes, data.len() as u64);
    run_in(node, db, e.read)
        .await
        .map_err(|m| anyhow::anyhow!("{}: rows not back after the streamed load: {m}", e.image))?;
    Ok(())
}

/// A load refused with `code` and a message saying `why`, after which the engine still does
/// not hold the rows.
async fn refused(
    node: &TestNode,
    db: &Status,
    e: &Engine,
    load: Result<pb::EngineLoadResponse, tonic::Status>,
    code: tonic::Code,
    why: &str,
) {
    let refused = load.expect_err("the load was not refused");
    assert_eq!(refused.code(), code, "{refused:?}");
    assert!(refused.message().contains(why), "{refused:?}");
    assert!(
        run_in(node, db, e.read).await.is_err(),
        "{}: a refused load ({why}) was restored",
        e.image
    );
}

/// Compressed where it is made: the dump as one zstd stream (what a backup stores), whose
/// end counts the dump's own bytes; loaded back through the agent's decompression (spooled,
/// and for PostgreSQL also streamed). A zstd stream cut short restores nothing.
async fn zstd_dump_and_load(
    client: &mut NodeAgentClient<Channel>,
    node: &TestNode,
    db: &Status,
    e: &Engine,
) -> anyhow::Result<()> {
    let id = &db.container_id;
    let (zst, raw) = dump_as(
        client,
        id,
        e.engine,
        pb::EngineCommand::Dump,
        "",
        pb::Compression::Zstd,
    )
    .await?;
    let plain = zstd::decode_all(&zst[..])?;
    assert_eq!(plain.len() as u64, raw, "{}", e.image);
    assert!(
        String::from_utf8_lossy(&plain[..plain.len().min(100)]).contains(e.magic),
        "{}: not a dump",
        e.image
    );
    println!(
        "{}: zstd dump of {raw} bytes sent as {}",
        e.image,
        zst.len()
    );
    let streams: &[bool] = if e.engine == pb::Engine::Postgres {
        &[false, true]
    } else {
        &[false]
    };
    for &stream in streams {
        let header = || pb::EngineLoadHeader {
            container_id: id.clone(),
            engine: e.engine as i32,
            stream,
            compression: pb::Compression::Zstd as i32,
            ..Default::default()
        };
        run_in(node, db, e.drop)
            .await
            .map_err(|m| anyhow::anyhow!("{}: drop: {m}", e.image))?;
        let cut = load_with(client, header(), &zst[..zst.len() * 3 / 4], true).await;
        refused(node, db, e, cut, tonic::Code::InvalidArgument, "cut short").await;
        let done = load_with(client, header(), &zst, true).await?;
        assert_eq!(done.bytes, raw, "{}", e.image);
        assert_eq!(done.compression, pb::Compression::Zstd as i32);
        run_in(node, db, e.read)
            .await
            .map_err(|m| anyhow::anyhow!("{}: rows not back after the zstd load: {m}", e.image))?;
        println!(
            "{}: zstd load (stream {stream}), decompressing {} ms",
            e.image, done.decompress_ms
        );
    }
    Ok(())
}

async fn dump_drop_load(prefix: &str, e: &Engine) -> anyhow::Result<()> {
    let node = TestNode::start(prefix).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (grpc_addr, _metrics, server) = runtime::daemon::serve(node.agent.clone(), async {
        let _ = stop_rx.await;
    })
    .await?;
    let mut client = NodeAgentClient::connect(format!("http://{grpc_addr}")).await?;
    let project = stackpad_tests::unique_name("p");
    let db = node.agent.deploy(engine_spec(&node, &project, e)).await?;
    assert_eq!(db.state, State::Healthy, "{}: {}", e.image, db.message);
    let id = db.container_id.clone();
    run_in(&node, &db, e.write)
        .await
        .map_err(|m| anyhow::anyhow!("{}: write: {m}", e.image))?;

    let started = Instant::now();
    let data = dump(&mut client, &id, e.engine, pb::EngineCommand::Dump).await?;
    println!(
        "{}: dump of {} bytes in {:?}",
        e.image,
        data.len(),
        started.elapsed()
    );
    assert!(
        String::from_utf8_lossy(&data[..data.len().min(100)]).contains(e.magic),
        "{}: not a dump: {:?}",
        e.image,
        String::from_utf8_lossy(&data[..data.len().min(40)])
    );
    let check = dump(&mut client, &id, e.engine, pb::EngineCommand::Check).await?;
    assert_eq!(String::from_utf8_lossy(&check), e.check, "{}", e.image);

    run_in(&node, &db, e.drop)
        .await
        .map_err(|m| anyhow::anyhow!("{}: drop: {m}", e.image))?;
    assert!(
        run_in(&node, &db, e.read).await.is_err(),
        "{}: not dropped",
        e.image
    );

    // Cut short: nothing is restored.
    let cut = load(&mut client, &id, e.engine, &data, false)
        .await
        .unwrap_err();
    assert_eq!(cut.code(), tonic::Code::Aborted, "{cut:?}");
    assert!(cut.message().contains("without its end"), "{cut:?}");
    // Damaged: refused (a byte flipped in the header, the dump cut in half), the data stays
    // as it was (still dropped).
    let mut bad = data[..data.len() / 2].to_vec();
    let at = bad
        .windows(3)
        .position(|w| w == &e.magic.as_bytes()[..3])
        .unwrap_or(0);
    bad[at + 1] ^= 0xff;
    let refused = load(&mut client, &id, e.engine, &bad, true)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");
    println!("{}: damaged dump refused: {}", e.image, refused.message());
    assert!(
        run_in(&node, &db, e.read).await.is_err(),
        "{}: damaged dump loaded",
        e.image
    );

    let started = Instant::now();
    let done = load(&mut client, &id, e.engine, &data, true).await?;
    println!(
        "{}: loaded {} bytes in {:?} ({})",
        e.image,
        done.bytes,
        started.elapsed(),
        done.detail
    );
    assert_eq!(done.bytes, data.len() as u64);
    run_in(&node, &db, e.read)
        .await
        .map_err(|m| anyhow::anyhow!("{}: rows not back after the load: {m}", e.image))?;
    let check = dump(&mut client, &id, e.engine, pb::EngineCommand::Check).await?;
    assert_eq!(String::from_utf8_lossy(&check), e.check, "{}", e.image);

    if e.engine == pb::Engine::Postgres {
        streamed_load(&mut client, &node, &db, e, &data).await?;
    }
    zstd_dump_and_load(&mut client, &node, &db, e).await?;

    if let Some(script) = e.older {
        let pid = node.agent.status(&id)?.pid;
        let argv = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
        let out = runtime::agent::exec::nsenter(&node.ns.containerd, &id, pid, &argv)
            .await
            .map_err(|m| anyhow::anyhow!("{}: older dump: {m}", e.image))?
            .output()
            .await?;
        assert!(out.status.success(), "{}: older dump: {out:?}", e.image);
        run_in(&node, &db, e.drop)
            .await
            .map_err(|m| anyhow::anyhow!("{}: drop: {m}", e.image))?;
        load(&mut client, &id, e.engine, &out.stdout, true).await?;
        run_in(&node, &db, e.read)
            .await
            .map_err(|m| anyhow::anyhow!("{}: an older agent's dump did not load: {m}", e.image))?;
        println!(
            "{}: an older agent's dump ({} bytes, the new one {}) loaded",
            e.image,
            out.stdout.len(),
            data.len()
        );
    }

    // A container that is not there: not found, naming it.
    let missing = dump(&mut client, "nope", e.engine, pb::EngineCommand::Dump)
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("nope"), "{missing}");
    // No spool file is left behind.
    let spool = node.config.state_dir.join("engine-loads");
    let left = std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "spool files left in {}", spool.display());

    node.agent.stop(&id, None).await?;
    node.agent.remove(&id, false).await?;
    let _ = stop_tx.send(());
    server.await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dump_drop_load_brings_the_rows_back() -> anyhow::Result<()> {
    dump_drop_load("bkpg", &POSTGRES).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rdb_put_back_and_restarted_brings_the_keys_back() -> anyhow::Result<()> {
    dump_drop_load("bkredis", &REDIS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_dump_drop_load_brings_the_rows_back() -> anyhow::Result<()> {
    dump_drop_load("bkmaria", &MARIADB).await
}

/// The archived WAL files of the container: (name, mtime, size).
async fn wal_list(
    client: &mut NodeAgentClient<Channel>,
    id: &str,
) -> anyhow::Result<Vec<(String, i64, u64)>> {
    let out = dump(client, id, pb::Engine::Postgres, pb::EngineCommand::WalList).await?;
    String::from_utf8(out)?
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            anyhow::ensure!(f.len() == 3, "bad wal list line {l:?}");
            Ok((f[0].to_owned(), f[1].parse()?, f[2].parse()?))
        })
        .collect()
}

const PSQL: &str = "psql -X -q -tA -h /run/postgresql -U app -d app -v ON_ERROR_STOP=1";

/// Point-in-time recovery on the real engine (#14): a base backup, rows A then (after a noted
/// time) B, the archived WAL shipped out of the container through WAL_LIST/WAL_READ and
/// removed with WAL_REMOVE; staged back (PG_BASE, PG_WAL per file) and recovered to the time
/// (PG_RECOVER): A is there, B is not, the server is out of recovery on a new timeline, whose
/// history file is archived in turn. Bad names and times are refused before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_point_in_time_recovery_keeps_a_and_not_b() -> anyhow::Result<()> {
    let node = TestNode::start("bkpitr").await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (grpc_addr, _metrics, server) = runtime::daemon::serve(node.agent.clone(), async {
        let _ = stop_rx.await;
    })
    .await?;
    let mut client = NodeAgentClient::connect(format!("http://{grpc_addr}")).await?;
    let project = stackpad_tests::unique_name("p");
    let mut spec = engine_spec(&node, &project, &POSTGRES);
    spec.env
        .insert("STACKPAD_ARCHIVE_TIMEOUT".into(), "1".into());
    let db = node.agent.deploy(spec).await?;
    assert_eq!(db.state, State::Healthy, "{}", db.message);
    let id = db.container_id.clone();
    let pg = pb::Engine::Postgres;
    let sql = |q: &str| format!("{PSQL} -c \"{q}\"");
    run_in(&node, &db, &sql("create table t (x text)"))
        .await
        .map_err(|m| anyhow::anyhow!("create: {m}"))?;

    let started = Instant::now();
    let base = dump(&mut client, &id, pg, pb::EngineCommand::BaseBackup).await?;
    println!(
        "base backup of {} bytes in {:?}",
        base.len(),
        started.elapsed()
    );
    anyhow::ensure!(base.len() > 1 << 20, "base backup of {} bytes", base.len());

    run_in(&node, &db, &sql("insert into t values ('A')"))
        .await
        .map_err(|m| anyhow::anyhow!("insert A: {m}"))?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S.%6N+00"])
        .output()?;
    let target = String::from_utf8(target.stdout)?.trim().to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // B, then the segment holding it switched and archived (WAL_SWITCH commits one more
    // transaction, so the archive reaches past the target).
    run_in(&node, &db, &sql("insert into t values ('B')"))
        .await
        .map_err(|m| anyhow::anyhow!("insert B: {m}"))?;
    let switched = dump(&mut client, &id, pg, pb::EngineCommand::WalSwitch).await?;
    let switched = String::from_utf8(switched)?.trim().to_owned();
    println!("switched and archived {switched}");

    // Ship: every archived file read, then removed.
    let listed = wal_list(&mut client, &id).await?;
    anyhow::ensure!(
        listed.iter().any(|(n, _, _)| *n == switched),
        "{switched} not listed: {listed:?}"
    );
    anyhow::ensure!(
        listed.iter().any(|(n, _, _)| n.ends_with(".backup")),
        "no backup label archived: {listed:?}"
    );
    let mut shipped = Vec::new();
    for (name, _, size) in &listed {
        let bytes = dump_named(&mut client, &id, pg, pb::EngineCommand::WalRead, name).await?;
        assert_eq!(bytes.len() as u64, *size, "{name}");
        dump_named(&mut client, &id, pg, pb::EngineCommand::WalRemove, name).await?;
        shipped.push((name.clone(), bytes));
    }
    let left = wal_list(&mut client, &id).await?;
    assert!(
        left.iter()
            .all(|(n, _, _)| !shipped.iter().any(|(s, _)| s == n)),
        "removed files still listed: {left:?}"
    );
    println!("shipped {} WAL files", shipped.len());

    // Names and times are checked before anything runs.
    let bad = dump_named(
        &mut client,
        &id,
        pg,
        pb::EngineCommand::WalRead,
        "../../etc/passwd",
    )
    .await
    .unwrap_err();
    assert!(bad.to_string().contains("invalid name"), "{bad}");
    let header = |kind: pb::EngineLoadKind, name: &str, time: &str| pb::EngineLoadHeader {
        container_id: id.clone(),
        engine: pg as i32,
        kind: kind as i32,
        name: name.into(),
        recovery_target_time: time.into(),
        ..Default::default()
    };
    let bad = load_with(
        &mut client,
        header(pb::EngineLoadKind::PgRecover, "", "now'; drop table t; --"),
        &[],
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("recovery_target_time"), "{bad:?}");

    // Stage and recover.
    let started = Instant::now();
    load_with(
        &mut client,
        header(pb::EngineLoadKind::PgBase, "", ""),
        &base,
        true,
    )
    .await?;
    for (name, bytes) in &shipped {
        load_with(
            &mut client,
            header(pb::EngineLoadKind::PgWal, name, ""),
            bytes,
            true,
        )
        .await?;
    }
    // Still serving the current data until the recovery step.
    run_in(
        &node,
        &db,
        &format!("[ \"$({PSQL} -c 'select count(*) from t')\" = 2 ]"),
    )
    .await
    .map_err(|m| anyhow::anyhow!("current data changed by the staging: {m}"))?;
    let done = load_with(
        &mut client,
        header(pb::EngineLoadKind::PgRecover, "", &target),
        &[],
        true,
    )
    .await?;
    println!(
        "staged and recovered to {target} in {:?} ({})",
        started.elapsed(),
        done.detail
    );
    let db = node.agent.status(&id)?;
    assert_eq!(db.state, State::Healthy, "{}", db.message);
    run_in(
        &node,
        &db,
        &format!(
            "[ \"$({PSQL} -c 'select count(*) from t')\" = 1 ] && \
             [ \"$({PSQL} -c \"select count(*) from t where x = 'A'\")\" = 1 ] && \
             [ \"$({PSQL} -c 'select pg_is_in_recovery()')\" = f ]"
        ),
    )
    .await
    .map_err(|m| {
        anyhow::anyhow!("after the recovery A alone must be there, out of recovery: {m}")
    })?;
    // The new timeline's history is archived for the next shipping.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = wal_list(&mut client, &id).await?;
        if now.iter().any(|(n, _, _)| n.ends_with(".history")) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no timeline history archived: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    node.agent.stop(&id, None).await?;
    node.agent.remove(&id, false).await?;
    let _ = stop_tx.send(());
    server.await?;
    Ok(())
}
