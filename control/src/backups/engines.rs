//! The node agent's `EngineDump` / `EngineLoad` (#14) as control calls them: a dump arrives as a
//! stream of chunks that counts only once its `end` came; a load is sent as a stream whose
//! `end` is sent only when the caller says the data is whole (else the agent restores nothing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::api::{Engine, NodeRole};
use proto::node::v1 as n;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::rowcount::MariadbRowCounter;
use crate::clients::tls::PlatformTls;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("node agent at {address}: {message}")]
    Agent { address: String, message: String },
    #[error(
        "node agent at {address}: the dump stream ended without its end (the agent or the engine stopped mid-way)"
    )]
    CutShort { address: String },
}

/// Node agents reached for dumps and loads (plain `http://` on loopback, mTLS for `https://`,
/// as every other call control makes to a node).
#[derive(Debug, Default)]
pub struct GrpcEngines {
    tls: Option<Arc<PlatformTls>>,
    channels: Mutex<HashMap<String, Channel>>,
}

fn engine(e: Engine) -> i32 {
    (match e {
        Engine::Postgres => n::Engine::Postgres,
        Engine::Mariadb => n::Engine::Mariadb,
        Engine::Redis => n::Engine::Redis,
    }) as i32
}

/// A dump coming from an agent.
pub struct DumpStream {
    address: String,
    inner: tonic::Streaming<n::EngineChunk>,
    ended: bool,
    /// Counts the rows of a MariaDB dump as it passes ([`DumpStream::count_mariadb_rows`]).
    rows: Option<Arc<Mutex<MariadbRowCounter>>>,
    /// What the chunks say they carry (the first one's; every other must match).
    compression: Option<n::Compression>,
    /// The end chunk's count of the command's output before compression.
    raw_bytes: u64,
}

impl std::fmt::Debug for DumpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpStream")
            .field("address", &self.address)
            .finish()
    }
}

impl DumpStream {
    /// From here on, every piece also goes through a MariaDB row counter; the handle reads it
    /// once the dump was consumed.
    pub fn count_mariadb_rows(&mut self) -> Arc<Mutex<MariadbRowCounter>> {
        self.rows
            .get_or_insert_with(|| Arc::new(Mutex::new(MariadbRowCounter::default())))
            .clone()
    }

    /// How the pieces are encoded, as the agent said (NONE until a piece came, and from an
    /// agent that predates `compression`).
    pub fn compression(&self) -> n::Compression {
        self.compression.unwrap_or(n::Compression::None)
    }

    /// The command's output in bytes before compression, as the agent counted it (once the
    /// dump ended whole; 0 from an agent that predates the count).
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// The next piece; `None` once the dump ended whole.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, EngineError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            match self.inner.message().await {
                Ok(Some(chunk)) => {
                    let said = n::Compression::try_from(chunk.compression).map_err(|_| {
                        EngineError::Agent {
                            address: self.address.clone(),
                            message: format!(
                                "the dump's chunks claim compression {}, which control does not know",
                                chunk.compression
                            ),
                        }
                    })?;
                    if *self.compression.get_or_insert(said) != said {
                        return Err(EngineError::Agent {
                            address: self.address.clone(),
                            message: format!(
                                "the dump's chunks change their compression from {:?} to {said:?}",
                                self.compression()
                            ),
                        });
                    }
                    self.ended = chunk.end;
                    self.raw_bytes = chunk.raw_bytes;
                    if !chunk.data.is_empty() {
                        if let Some(rows) = &self.rows {
                            rows.lock().expect("row counter lock").push(&chunk.data);
                        }
                        return Ok(Some(chunk.data));
                    }
                }
                Ok(None) => {
                    return Err(EngineError::CutShort {
                        address: self.address.clone(),
                    });
                }
                Err(s) => {
                    return Err(EngineError::Agent {
                        address: self.address.clone(),
                        message: format!("{:?}: {}", s.code(), s.message()),
                    });
                }
            }
        }
    }
}

/// A load on its way to an agent.
#[derive(Debug)]
pub struct LoadStream {
    address: String,
    /// How the data is sent (`EngineLoadHeader.compression`).
    compression: n::Compression,
    tx: mpsc::Sender<n::EngineLoadRequest>,
    call: tokio::task::JoinHandle<Result<n::EngineLoadResponse, tonic::Status>>,
}

impl LoadStream {
    /// How the data must be sent (the header said so).
    pub fn compression(&self) -> n::Compression {
        self.compression
    }

    pub async fn send(&self, data: Vec<u8>) -> Result<(), EngineError> {
        let msg = n::EngineLoadRequest {
            part: Some(n::engine_load_request::Part::Chunk(n::EngineChunk {
                data,
                ..Default::default()
            })),
        };
        if self.tx.send(msg).await.is_err() {
            // The call ended early: its answer says why.
            return Err(EngineError::Agent {
                address: self.address.clone(),
                message: "the agent stopped reading the load".into(),
            });
        }
        Ok(())
    }

    /// The data is whole: the agent restores it; returns its answer.
    pub async fn finish(self) -> Result<Loaded, EngineError> {
        let end = n::EngineLoadRequest {
            part: Some(n::engine_load_request::Part::Chunk(n::EngineChunk {
                end: true,
                ..Default::default()
            })),
        };
        let _ = self.tx.send(end).await;
        let LoadStream {
            address,
            compression,
            tx,
            call,
        } = self;
        drop(tx);
        let loaded = answer(address.clone(), call).await?;
        if loaded.compression != compression {
            // An agent that predates `compression` fed the zstd stream to the engine as it
            // was; the engine refused it, or (a staged WAL file) nothing uses it before the
            // recovery this error stops.
            return Err(EngineError::Agent {
                address,
                message: format!(
                    "the agent read the load as {:?}, not {compression:?} (an agent older than control?)",
                    loaded.compression
                ),
            });
        }
        Ok(loaded)
    }

    /// The data is not whole: the stream ends without `end`, the agent restores nothing.
    pub async fn abandon(self) {
        let LoadStream { tx, call, .. } = self;
        drop(tx);
        let _ = call.await;
    }
}

/// An agent's answer to a whole load: the bytes it fed the engine, the engine's last lines
/// (warnings), and where the agent's time went (`EngineLoadResponse`).
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub bytes: u64,
    pub detail: String,
    /// Waiting for the upload's next piece.
    pub upload_wait: Duration,
    /// Feeding the engine (the spool file, or the restore's pipe while it was not reading).
    pub feed: Duration,
    /// The engine's work after the upload's end.
    pub after_end: Duration,
    /// How the agent read the upload (`EngineLoadResponse.compression`).
    pub compression: n::Compression,
    /// The agent decompressing the upload (its own thread, beside the feeding).
    pub decompress: Duration,
}

async fn answer(
    address: String,
    call: tokio::task::JoinHandle<Result<n::EngineLoadResponse, tonic::Status>>,
) -> Result<Loaded, EngineError> {
    {
        match call.await {
            Ok(Ok(r)) => Ok(Loaded {
                bytes: r.bytes,
                detail: r.detail,
                upload_wait: Duration::from_millis(r.upload_wait_ms),
                feed: Duration::from_millis(r.feed_ms),
                after_end: Duration::from_millis(r.engine_after_end_ms),
                compression: n::Compression::try_from(r.compression)
                    .unwrap_or(n::Compression::None),
                decompress: Duration::from_millis(r.decompress_ms),
            }),
            Ok(Err(s)) => Err(EngineError::Agent {
                address,
                message: format!("{:?}: {}", s.code(), s.message()),
            }),
            Err(e) => Err(EngineError::Agent {
                address,
                message: format!("the load call failed: {e}"),
            }),
        }
    }
}

impl GrpcEngines {
    pub fn with_tls(tls: Option<Arc<PlatformTls>>) -> Self {
        Self {
            tls,
            channels: Mutex::default(),
        }
    }

    fn client(
        &self,
        address: &str,
    ) -> Result<n::node_agent_client::NodeAgentClient<Channel>, EngineError> {
        let mut map = self.channels.lock().expect("channel map lock");
        let channel = match map.get(address) {
            Some(c) => c.clone(),
            None => {
                let tls = self
                    .tls
                    .as_ref()
                    .map(|t| t.for_address(address, NodeRole::Compute));
                let c = pki::channel(address, tls, Duration::from_secs(3)).map_err(|e| {
                    EngineError::Agent {
                        address: address.to_owned(),
                        message: e.to_string(),
                    }
                })?;
                map.insert(address.to_owned(), c.clone());
                c
            }
        };
        Ok(n::node_agent_client::NodeAgentClient::new(channel).max_decoding_message_size(16 << 20))
    }

    /// Starts the engine's dump (or check) in `container` on the agent at `address`.
    pub async fn dump(
        &self,
        address: &str,
        container: &str,
        e: Engine,
        check: bool,
    ) -> Result<DumpStream, EngineError> {
        let command = if check {
            n::EngineCommand::Check
        } else {
            n::EngineCommand::Dump
        };
        self.command(address, container, e, command, "", n::Compression::None)
            .await
    }

    /// Starts one of the agent's fixed engine commands (`name`: the WAL file of WAL_READ and
    /// WAL_REMOVE), its output asked for as `compression` (ZSTD: compressed by the agent; what
    /// it sent is [`DumpStream::compression`]).
    pub async fn command(
        &self,
        address: &str,
        container: &str,
        e: Engine,
        command: n::EngineCommand,
        name: &str,
        compression: n::Compression,
    ) -> Result<DumpStream, EngineError> {
        let inner = self
            .client(address)?
            .engine_dump(n::EngineDumpRequest {
                container_id: container.to_owned(),
                engine: engine(e),
                command: command as i32,
                name: name.to_owned(),
                compression: compression as i32,
            })
            .await
            .map_err(|s| EngineError::Agent {
                address: address.to_owned(),
                message: format!("{:?}: {}", s.code(), s.message()),
            })?
            .into_inner();
        Ok(DumpStream {
            address: address.to_owned(),
            inner,
            ended: false,
            rows: None,
            compression: None,
            raw_bytes: 0,
        })
    }

    /// The whole output of a short command (a check, a WAL list or switch).
    pub async fn output(
        &self,
        address: &str,
        container: &str,
        e: Engine,
        command: n::EngineCommand,
        name: &str,
    ) -> Result<String, EngineError> {
        let mut s = self
            .command(address, container, e, command, name, n::Compression::None)
            .await?;
        let mut out = Vec::new();
        while let Some(c) = s.next().await? {
            out.extend(c);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The whole answer of a short dump (a check).
    pub async fn check(
        &self,
        address: &str,
        container: &str,
        e: Engine,
    ) -> Result<String, EngineError> {
        let mut s = self.dump(address, container, e, true).await?;
        let mut out = Vec::new();
        while let Some(c) = s.next().await? {
            out.extend(c);
        }
        Ok(String::from_utf8_lossy(&out).trim().replace('\n', ", "))
    }

    /// Opens a load of a dump into `container`, sent as its zstd stream (the agent
    /// decompresses); `fresh`: the target holds nothing to keep
    /// (a new service, a verification container), so the agent may feed the engine as the
    /// data arrives rather than spool it first (`EngineLoadHeader.stream`).
    pub fn load(
        &self,
        address: &str,
        container: &str,
        e: Engine,
        fresh: bool,
    ) -> Result<LoadStream, EngineError> {
        self.open_load(
            address,
            n::EngineLoadHeader {
                container_id: container.to_owned(),
                engine: engine(e),
                kind: n::EngineLoadKind::Dump as i32,
                stream: fresh,
                compression: n::Compression::Zstd as i32,
                ..Default::default()
            },
        )
    }

    /// Opens a load of `kind` (a point-in-time restore's steps) into `container`.
    pub fn load_kind(
        &self,
        address: &str,
        container: &str,
        e: Engine,
        kind: n::EngineLoadKind,
        name: &str,
        recovery_target_time: &str,
    ) -> Result<LoadStream, EngineError> {
        self.open_load(
            address,
            n::EngineLoadHeader {
                container_id: container.to_owned(),
                engine: engine(e),
                kind: kind as i32,
                name: name.to_owned(),
                recovery_target_time: recovery_target_time.to_owned(),
                stream: false,
                // RECOVER carries no data (an empty zstd stream is not a stream).
                compression: if kind == n::EngineLoadKind::PgRecover {
                    n::Compression::None
                } else {
                    n::Compression::Zstd
                } as i32,
            },
        )
    }

    fn open_load(
        &self,
        address: &str,
        header: n::EngineLoadHeader,
    ) -> Result<LoadStream, EngineError> {
        let mut client = self.client(address)?;
        let compression =
            n::Compression::try_from(header.compression).unwrap_or(n::Compression::None);
        let (tx, rx) = mpsc::channel(4);
        let header = n::EngineLoadRequest {
            part: Some(n::engine_load_request::Part::Header(header)),
        };
        tx.try_send(header).expect("a new channel has room");
        let call = tokio::spawn(async move {
            client
                .engine_load(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map(|r| r.into_inner())
        });
        Ok(LoadStream {
            address: address.to_owned(),
            compression,
            tx,
            call,
        })
    }

    /// Starts a throwaway container of the engine (no volume: its data lives in the
    /// container's own filesystem and goes with it) and waits for its health; returns its id.
    pub async fn start_scratch(
        &self,
        address: &str,
        request: n::DeployRequest,
    ) -> Result<String, EngineError> {
        let err = |message: String| EngineError::Agent {
            address: address.to_owned(),
            message,
        };
        let c = self
            .client(address)?
            .deploy(request)
            .await
            .map_err(|s| err(format!("{:?}: {}", s.code(), s.message())))?
            .into_inner()
            .container
            .unwrap_or_default();
        if c.state != n::ContainerState::Healthy as i32 {
            return Err(err(format!(
                "the verification container {} did not become healthy: {}",
                c.container_id, c.message
            )));
        }
        Ok(c.container_id)
    }

    /// Removes a throwaway container (killing it). Idempotent.
    pub async fn remove_scratch(&self, address: &str, container: &str) -> Result<(), EngineError> {
        self.client(address)?
            .remove(n::RemoveRequest {
                container_id: container.to_owned(),
                force: true,
            })
            .await
            .map_err(|s| EngineError::Agent {
                address: address.to_owned(),
                message: format!("{:?}: {}", s.code(), s.message()),
            })?;
        Ok(())
    }
}
