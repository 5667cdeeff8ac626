//! `EngineDump` and `EngineLoad` (#14 backups): the gRPC face of [`crate::agent::dump`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        loop {
            // Whole pieces of CHUNK bytes (only the last is shorter): pg_dump writes 4 KiB at a
            // time, and a read per write made as many messages (~250,000 per GB), each through
            // gRPC, control's queue and its sealing thread.
            let mut data = Vec::with_capacity(dump::CHUNK);
            let mut ended = false;
            while data.len() < dump::CHUNK {
                match running.stdout.read_buf(&mut data).await {
                    Ok(0) => {
                        ended = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("reading the dump: {e}"))))
                            .await;
                        return;
                    }
                }
            }
            if !data.is_empty() {
                let chunk = pb::EngineChunk { data, end: false };
                if tx.send(Ok(chunk)).await.is_err() {
                    // The reader went away: dropping `running` kills the command.
                    return;
                }
            }
            if ended {
                break;
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
    let mut upload = Upload::new(stream);
    if header.stream && engine == Engine::Postgres && kind == LoadKind::Dump {
        return load_streamed(agent, &id, engine, upload).await;
    }
    let path = agent.spool_path(&id);
    let _cleanup = RemoveOnDrop(path.clone());
    let mut file = dump::spool_create(&path).await.map_err(status)?;
    let mut feed = Duration::ZERO;
    while let Some(piece) = upload.next().await? {
        let t = Instant::now();
        file.write_all(&piece)
            .await
            .map_err(|e| Status::internal(format!("spool file: {e}")))?;
        feed += t.elapsed();
    }
    file.flush()
        .await
        .map_err(|e| Status::internal(format!("spool file: {e}")))?;
    drop(file);
    let t = Instant::now();
    let detail = agent
        .engine_load_kind(&id, engine, &kind, &path)
        .await
        .map_err(status)?;
    Ok(upload.answer(detail, feed, t.elapsed()))
}

/// The chunks of an upload after its header, checked: data until the `end`, nothing after
/// it, no second header; a stream that closes before its `end` restores nothing. Counts the
/// bytes and the time spent waiting for the sender.
struct Upload {
    stream: Streaming<pb::EngineLoadRequest>,
    bytes: u64,
    ended: bool,
    waited: Duration,
}

impl Upload {
    fn new(stream: Streaming<pb::EngineLoadRequest>) -> Self {
        Self {
            stream,
            bytes: 0,
            ended: false,
            waited: Duration::ZERO,
        }
    }

    /// The next piece of data; `None` once the upload ended whole (its `end` came and the
    /// stream closed).
    async fn next(&mut self) -> Result<Option<Vec<u8>>, Status> {
        loop {
            let t = Instant::now();
            let msg = self.stream.next().await;
            self.waited += t.elapsed();
            let c = match msg {
                None if self.ended => return Ok(None),
                None => {
                    return Err(Status::aborted(format!(
                        "the upload ended after {} bytes without its end: nothing was restored",
                        self.bytes
                    )));
                }
                Some(m) => match m?.part {
                    Some(pb::engine_load_request::Part::Chunk(c)) => c,
                    _ => {
                        return Err(Status::invalid_argument(
                            "invalid message: only the first may be a header",
                        ));
                    }
                },
            };
            if self.ended {
                return Err(Status::invalid_argument(
                    "invalid chunk: data after the end",
                ));
            }
            self.ended = c.end;
            if !c.data.is_empty() {
                self.bytes += c.data.len() as u64;
                return Ok(Some(c.data));
            }
        }
    }

    /// The load's answer: its bytes, the engine's `detail` and where the time went.
    fn answer(
        &self,
        detail: String,
        feed: Duration,
        after_end: Duration,
    ) -> pb::EngineLoadResponse {
        let ms = |d: Duration| d.as_millis() as u64;
        pb::EngineLoadResponse {
            bytes: self.bytes,
            detail,
            upload_wait_ms: ms(self.waited),
            feed_ms: ms(feed),
            engine_after_end_ms: ms(after_end),
        }
    }
}

/// Feeds the upload to the engine as it arrives, one piece behind (pg_restore cannot reach the
/// dump's end before the upload's `end` came); a stream that ends without it, or breaks,
/// drops the load, which kills the restore inside its single transaction.
async fn load_streamed(
    agent: &Arc<Agent>,
    id: &str,
    engine: Engine,
    mut upload: Upload,
) -> Result<pb::EngineLoadResponse, Status> {
    let mut load = agent.engine_load_stream(id, engine).await.map_err(status)?;
    let mut held: Option<Vec<u8>> = None;
    let mut feed = Duration::ZERO;
    while let Some(piece) = upload.next().await? {
        if let Some(earlier) = held.replace(piece) {
            let t = Instant::now();
            load.write(&earlier).await.map_err(status)?;
            feed += t.elapsed();
        }
    }
    if let Some(last) = held {
        let t = Instant::now();
        load.write(&last).await.map_err(status)?;
        feed += t.elapsed();
    }
    let t = Instant::now();
    let detail = load.finish().await.map_err(status)?;
    let answer = upload.answer(detail, feed, t.elapsed());
    tracing::info!(
        container_id = id,
        bytes = answer.bytes,
        upload_wait_ms = answer.upload_wait_ms,
        feed_ms = answer.feed_ms,
        engine_after_end_ms = answer.engine_after_end_ms,
        "engine load streamed done"
    );
    Ok(answer)
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
