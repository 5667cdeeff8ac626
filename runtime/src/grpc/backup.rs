//! `EngineDump` and `EngineLoad` (#14 backups): the gRPC face of [`crate::agent::dump`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use proto::node::v1 as pb;
use tokio::io::AsyncWriteExt;
use tonic::{Status, Streaming};

use crate::agent::Agent;
use crate::agent::dump::{self, Compression, DumpCommand, DumpError, Engine, Inflated, LoadKind};

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

fn compression(value: i32) -> Result<Compression, Status> {
    match pb::Compression::try_from(value) {
        Ok(pb::Compression::None) => Ok(Compression::None),
        Ok(pb::Compression::Zstd) => Ok(Compression::Zstd),
        Err(_) => Err(Status::invalid_argument(format!(
            "invalid compression: {value} is not none or zstd"
        ))),
    }
}

fn wire(c: Compression) -> i32 {
    (match c {
        Compression::None => pb::Compression::None,
        Compression::Zstd => pb::Compression::Zstd,
    }) as i32
}

fn container(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(
            "invalid container_id: must not be empty",
        ));
    }
    Ok(id)
}

/// Streams the command's stdout (compressed where it is made when the request asks: what a
/// backup stores is a zstd stream anyway); the last message has `end` and the output's bytes
/// before compression once it exited 0, an error status instead when it failed. A reader
/// that goes away kills the command.
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
    let compression = compression(req.compression)?;
    let mut running = agent
        .engine_dump(container(&req.container_id)?, engine, command)
        .await
        .map_err(status)?;
    let output = running
        .take_output()
        .map_err(|e| Status::internal(format!("the dump's output: {e}")))?;
    let wire = wire(compression);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::EngineChunk, Status>>(8);
    tokio::spawn(async move {
        // Reading (and compressing) is a blocking thread's: zstd on a runtime worker would
        // hold it for ms per piece, beside the agent's other calls.
        let pumped = {
            let tx = tx.clone();
            tokio::task::spawn_blocking(move || {
                dump::pump(output, compression, |data| {
                    let chunk = pb::EngineChunk {
                        data,
                        end: false,
                        compression: wire,
                        raw_bytes: 0,
                    };
                    tx.blocking_send(Ok(chunk)).is_ok()
                })
            })
        };
        let raw_bytes = tokio::select! {
            pumped = pumped => match pumped {
                Ok(Ok(Some(raw))) => raw,
                // The reader went away: dropping `running` kills the command.
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    let _ = tx
                        .send(Err(Status::internal(format!("reading the dump: {e}"))))
                        .await;
                    return;
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::internal(format!("the dump's thread failed: {e}"))))
                        .await;
                    return;
                }
            },
            // The reader went away while the command wrote nothing: kill it, which ends the
            // thread's read.
            () = tx.closed() => {
                running.kill();
                return;
            }
        };
        let last = match running.finish().await {
            Ok(()) => Ok(pb::EngineChunk {
                data: vec![],
                end: true,
                compression: wire,
                raw_bytes,
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
    let mut upload = Upload::new(stream, compression(header.compression)?);
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
/// it, no second header; a stream that closes before its `end` restores nothing.
struct Checked {
    stream: Streaming<pb::EngineLoadRequest>,
    bytes: u64,
    ended: bool,
}

impl Checked {
    /// The next piece of data as it came; `None` once the upload ended whole (its `end`
    /// came and the stream closed).
    async fn next(&mut self) -> Result<Option<Vec<u8>>, Status> {
        loop {
            let c = match self.stream.next().await {
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
}

/// An upload's data for the engine: the checked chunks as they came, or (a zstd upload)
/// decompressed by [`dump::inflate`] on a blocking thread, fed by a task that reads the
/// stream, so receiving, decompressing and feeding the engine overlap. Counts the bytes fed
/// and the time spent waiting for the next piece.
struct Upload {
    source: Source,
    compression: Compression,
    bytes: u64,
    waited: Duration,
    decompress: Duration,
    done: bool,
}

enum Source {
    Plain(Box<Checked>),
    Inflating(tokio::sync::mpsc::Receiver<Inflated<Status>>),
}

impl Upload {
    fn new(stream: Streaming<pb::EngineLoadRequest>, compression: Compression) -> Self {
        let mut checked = Checked {
            stream,
            bytes: 0,
            ended: false,
        };
        let source = match compression {
            Compression::None => Source::Plain(Box::new(checked)),
            Compression::Zstd => {
                let (in_tx, mut in_rx) = tokio::sync::mpsc::channel(4);
                let (out_tx, out_rx) = tokio::sync::mpsc::channel(4);
                // Ends at the upload's end or break, or when the thread stopped reading.
                tokio::spawn(async move {
                    loop {
                        let next = checked.next().await;
                        let last = !matches!(next, Ok(Some(_)));
                        let piece = match next {
                            Ok(Some(p)) => Ok(p),
                            // Whole: closing the channel ends the zstd stream.
                            Ok(None) => break,
                            Err(s) => Err(s),
                        };
                        if in_tx.send(piece).await.is_err() || last {
                            break;
                        }
                    }
                });
                tokio::task::spawn_blocking(move || dump::inflate(&mut in_rx, &out_tx));
                Source::Inflating(out_rx)
            }
        };
        Self {
            source,
            compression,
            bytes: 0,
            waited: Duration::ZERO,
            decompress: Duration::ZERO,
            done: false,
        }
    }

    /// The next piece of data for the engine; `None` once the upload ended whole.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, Status> {
        let t = Instant::now();
        let next = self.next_piece().await;
        self.waited += t.elapsed();
        if let Ok(Some(p)) = &next {
            self.bytes += p.len() as u64;
        }
        next
    }

    async fn next_piece(&mut self) -> Result<Option<Vec<u8>>, Status> {
        let rx = match &mut self.source {
            Source::Plain(checked) => return checked.next().await,
            Source::Inflating(rx) => rx,
        };
        if self.done {
            return Ok(None);
        }
        match rx.recv().await {
            Some(Inflated::Data(d)) => Ok(Some(d)),
            Some(Inflated::End(busy)) => {
                self.decompress = busy;
                self.done = true;
                Ok(None)
            }
            Some(Inflated::Broken(s)) => Err(s),
            Some(Inflated::Corrupt(m)) => Err(Status::invalid_argument(format!(
                "invalid upload: {m}: nothing was restored"
            ))),
            None => Err(Status::internal(
                "the decompressing thread stopped: nothing was restored",
            )),
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
            compression: wire(self.compression),
            decompress_ms: ms(self.decompress),
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
