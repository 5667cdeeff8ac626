//! `EngineDump` and `EngineLoad` (#14 backups): the gRPC face of [`crate::agent::dump`].

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use proto::node::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Status, Streaming};

use crate::agent::Agent;
use crate::agent::dump::{self, DumpCommand, DumpError, Engine, LoadKind};

pub type Chunks = Pin<Box<dyn Stream<Item = Result<pb::EngineChunk, Status>> + Send>>;

fn engine(value: i32) -> Result<Engine, Status> {
    match pb::Engine::try_from(value) {
        Ok(pb::Engine::Postgres) => Ok(Engine::Postgres),
        Ok(pb::Engine::Mariadb) => Ok(Engine::Mariadb),
        Ok(pb::Engine::Redis) => Ok(Engine::Redis),
        _ => Err(Status::invalid_argument(format!(
            "invalid engine: {value} is not postgres, mariadb or redis"
        ))),
    }
}

fn status(e: DumpError) -> Status {
    let msg = e.to_string();
    match e {
        DumpError::NotFound(_) => Status::not_found(msg),
        DumpError::NotRunning { .. } => Status::failed_precondition(msg),
        DumpError::Command { .. } => Status::aborted(msg),
        DumpError::Invalid { .. } => Status::invalid_argument(msg),
        DumpError::Spool { .. } | DumpError::Exec(_) => Status::internal(msg),
    }
}

fn container(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(
            "invalid container_id: must not be empty",
        ));
    }
    Ok(id)
}

/// Streams the command's stdout; the last message has `end` once it exited 0, an error
/// status instead when it failed. A reader that goes away kills the command.
pub async fn engine_dump(agent: &Arc<Agent>, req: pb::EngineDumpRequest) -> Result<Chunks, Status> {
    let engine = engine(req.engine)?;
    let command = match pb::EngineCommand::try_from(req.command) {
        Ok(pb::EngineCommand::Dump) => DumpCommand::Dump,
        Ok(pb::EngineCommand::Check) => DumpCommand::Check,
        Ok(pb::EngineCommand::BaseBackup) => DumpCommand::BaseBackup,
        Ok(pb::EngineCommand::WalList) => DumpCommand::WalList,
        Ok(pb::EngineCommand::WalRead) => DumpCommand::WalRead(req.name.clone()),
        Ok(pb::EngineCommand::WalRemove) => DumpCommand::WalRemove(req.name.clone()),
        Ok(pb::EngineCommand::WalSwitch) => DumpCommand::WalSwitch,
        _ => {
            return Err(Status::invalid_argument(format!(
                "invalid command: {} is not dump, check, base_backup, wal_list, wal_read, wal_remove or wal_switch",
                req.command
            )));
        }
    };
    let mut running = agent
        .engine_dump(container(&req.container_id)?, engine, command)
        .await
        .map_err(status)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::EngineChunk, Status>>(8);
    tokio::spawn(async move {
        let mut buf = vec![0u8; dump::CHUNK];
        loop {
            let n = match running.stdout.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::internal(format!("reading the dump: {e}"))))
                        .await;
                    return;
                }
            };
            let chunk = pb::EngineChunk {
                data: buf[..n].to_vec(),
                end: false,
            };
            if tx.send(Ok(chunk)).await.is_err() {
                // The reader went away: dropping `running` kills the command.
                return;
            }
        }
        let last = match running.finish().await {
            Ok(()) => Ok(pb::EngineChunk {
                data: vec![],
                end: true,
            }),
            Err(e) => Err(status(e)),
        };
        let _ = tx.send(last).await;
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Spools the upload, then loads it once its `end` arrived; a PostgreSQL dump marked `stream`
/// (a target with nothing to keep) goes straight into pg_restore instead ([`load_streamed`]).
pub async fn engine_load(
    agent: &Arc<Agent>,
    mut stream: Streaming<pb::EngineLoadRequest>,
) -> Result<pb::EngineLoadResponse, Status> {
    let header = match stream.next().await {
        Some(Ok(pb::EngineLoadRequest {
            part: Some(pb::engine_load_request::Part::Header(h)),
        })) => h,
        Some(Err(e)) => return Err(e),
        _ => {
            return Err(Status::invalid_argument(
                "invalid header: the first message must name the container and engine",
            ));
        }
    };
    let engine = engine(header.engine)?;
    let kind = match pb::EngineLoadKind::try_from(header.kind) {
        Ok(pb::EngineLoadKind::Dump) => LoadKind::Dump,
        Ok(pb::EngineLoadKind::PgBase) => LoadKind::PgBase,
        Ok(pb::EngineLoadKind::PgWal) => LoadKind::PgWal(header.name.clone()),
        Ok(pb::EngineLoadKind::PgRecover) => {
            LoadKind::PgRecover(header.recovery_target_time.clone())
        }
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "invalid kind: {} is not dump, pg_base, pg_wal or pg_recover",
                header.kind
            )));
        }
    };
    let id = container(&header.container_id)?.to_owned();
    if header.stream && engine == Engine::Postgres && kind == LoadKind::Dump {
        return load_streamed(agent, &id, engine, stream).await;
    }
    let path = agent.spool_path(&id);
    let _cleanup = RemoveOnDrop(path.clone());
    let mut file = dump::spool_create(&path).await.map_err(status)?;
    let mut bytes = 0u64;
    let mut ended = false;
    while let Some(msg) = stream.next().await {
        match msg?.part {
            Some(pb::engine_load_request::Part::Chunk(c)) => {
                if ended {
                    return Err(Status::invalid_argument(
                        "invalid chunk: data after the end",
                    ));
                }
                file.write_all(&c.data)
                    .await
                    .map_err(|e| Status::internal(format!("spool file: {e}")))?;
                bytes += c.data.len() as u64;
                ended = c.end;
            }
            _ => {
                return Err(Status::invalid_argument(
                    "invalid message: only the first may be a header",
                ));
            }
        }
    }
    if !ended {
        return Err(Status::aborted(format!(
            "the upload ended after {bytes} bytes without its end: nothing was restored"
        )));
    }
    file.flush()
        .await
        .map_err(|e| Status::internal(format!("spool file: {e}")))?;
    drop(file);
    let detail = agent
        .engine_load_kind(&id, engine, &kind, &path)
        .await
        .map_err(status)?;
    Ok(pb::EngineLoadResponse { bytes, detail })
}

/// Feeds the upload to the engine as it arrives, one piece behind (pg_restore cannot reach the
/// dump's end before the upload's `end` came); a stream that ends without it, or breaks,
/// drops the load, which kills the restore inside its single transaction.
async fn load_streamed(
    agent: &Arc<Agent>,
    id: &str,
    engine: Engine,
    mut stream: Streaming<pb::EngineLoadRequest>,
) -> Result<pb::EngineLoadResponse, Status> {
    let mut load = agent.engine_load_stream(id, engine).await.map_err(status)?;
    let mut held: Vec<u8> = Vec::new();
    let mut bytes = 0u64;
    let mut ended = false;
    while let Some(msg) = stream.next().await {
        match msg?.part {
            Some(pb::engine_load_request::Part::Chunk(c)) => {
                if ended {
                    return Err(Status::invalid_argument(
                        "invalid chunk: data after the end",
                    ));
                }
                if !c.data.is_empty() {
                    if !held.is_empty() {
                        load.write(&held).await.map_err(status)?;
                    }
                    bytes += c.data.len() as u64;
                    held = c.data;
                }
                ended = c.end;
            }
            _ => {
                return Err(Status::invalid_argument(
                    "invalid message: only the first may be a header",
                ));
            }
        }
    }
    if !ended {
        return Err(Status::aborted(format!(
            "the upload ended after {bytes} bytes without its end: nothing was restored"
        )));
    }
    if !held.is_empty() {
        load.write(&held).await.map_err(status)?;
    }
    let detail = load.finish().await.map_err(status)?;
    tracing::info!(container_id = id, bytes, "engine load streamed done");
    Ok(pb::EngineLoadResponse { bytes, detail })
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
