//! A stored object streamed into an agent's load (restores, verifications, point-in-time
//! steps), timed by stage for the timeline.
//!
//! Three stages overlap, as `zstd -dc | pg_restore` does: the object's bytes are read (a
//! local object by the opening thread itself, in large reads; an S3 object by this task, fed
//! to the thread through a bounded queue), a blocking thread checks and decrypts them
//! ([`Opener`]), and this task sends the zstd stream to the agent as the thread yields it
//! (the agent decompresses it, where the engine is). The agent's `end` is sent only once the whole object checked out (every frame
//! and the SHA-256); anything else abandons the load, and the agent restores nothing.
//!
//! The local store's own stream reads 8 KiB per blocking task: 32k hops through the blocking
//! pool for a 256 MiB object, each waiting for a thread on a busy machine; reading the file
//! in the opening thread takes one read per MiB.

use std::io::Read;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use object_store::GetResultPayload;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::engines::{LoadStream, Loaded};
use super::format::{self, Opener};
use super::{BackupError, Backups, LOAD_PIECE};

/// Pieces queued between the reading task, the opening thread and the sending task.
const OPEN_QUEUE: usize = 16;
/// Bytes of a local object per read.
const READ: usize = 1 << 20;

/// Where the time of a load went: reading the object, checking and decrypting it (in its
/// thread, beside the send; the agent decompresses), waiting for the agent to take the next
/// piece (gRPC flow control: the agent or the engine is behind), waiting for the agent's
/// answer after the end; and the agent's own split ([`Loaded`]).
#[derive(Debug, Clone, Default)]
pub struct LoadStages {
    pub read: Duration,
    pub open: Duration,
    pub send: Duration,
    pub answer: Duration,
    pub total: Duration,
    pub loaded: Loaded,
}

impl std::fmt::Display for LoadStages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_millis();
        write!(
            f,
            "{} bytes of dump loaded in {} ms (reading the object {} ms, checking and decrypting {} ms (beside the send), waiting for the agent {} ms, for its answer after the end {} ms; on the agent: waiting for the upload {} ms, decompressing {} ms (beside the feeding), feeding the engine {} ms, the engine after the end {} ms)",
            self.loaded.bytes,
            ms(self.total),
            ms(self.read),
            ms(self.open),
            ms(self.send),
            ms(self.answer),
            ms(self.loaded.upload_wait),
            ms(self.loaded.decompress),
            ms(self.loaded.feed),
            ms(self.loaded.after_end)
        )?;
        if !self.loaded.detail.is_empty() {
            write!(f, ": {}", self.loaded.detail)?;
        }
        Ok(())
    }
}

/// Where the opening thread reads the object from.
enum Source {
    File(std::fs::File),
    Queue(mpsc::Receiver<Bytes>),
}

/// What the opening thread spent: reading a local object, and opening.
#[derive(Debug, Clone, Copy, Default)]
struct Opened {
    read: Duration,
    open: Duration,
}

impl Backups {
    /// Streams a stored object (sealed with nonces from `id`) into `load`, checking it; sends
    /// the end only when the whole object checked out. Where the time went.
    pub(super) async fn stream_object(
        &self,
        organization_id: Uuid,
        id: Uuid,
        object_key: &str,
        expected: &str,
        load: LoadStream,
    ) -> Result<LoadStages, BackupError> {
        let started = Instant::now();
        let key = format::organization_key(self.inner.store.secrets(), organization_id);
        let opened = async {
            // The agent decompresses (the header said so): the frames go out as they are.
            let plain = match load.compression() {
                proto::node::v1::Compression::Zstd => format::Plain::Zstd,
                proto::node::v1::Compression::None => format::Plain::Dump,
            };
            let opener = Opener::new(key, id, plain)?;
            let got = self
                .inner
                .objects
                .get(&self.path(object_key))
                .await
                .map_err(|e| self.objects_error(e))?;
            Ok::<_, BackupError>((opener, got))
        }
        .await;
        let (opener, got) = match opened {
            Ok(o) => o,
            Err(e) => {
                load.abandon().await;
                return Err(e);
            }
        };
        let (stored_tx, stored_rx) = mpsc::channel::<Bytes>(OPEN_QUEUE);
        let (source, remote) = match got.payload {
            GetResultPayload::File(file, _) => (Source::File(file), None),
            GetResultPayload::Stream(s) => (Source::Queue(stored_rx), Some(s)),
        };
        let (plain_tx, mut plain_rx) = mpsc::channel::<Vec<u8>>(OPEN_QUEUE);
        let expected = expected.to_owned();
        let store = self.inner.settings.store.clone();
        // Ends when its input ends or its output is dropped; what it returns counts only
        // when the reading and the sending both ended whole.
        let opening = tokio::task::spawn_blocking(move || {
            open_object(opener, &expected, source, &plain_tx, &store)
        });
        let mut stages = LoadStages::default();
        let mut fetched = Duration::ZERO;
        let fetch = async move {
            if let Some(mut remote) = remote {
                loop {
                    let t = Instant::now();
                    let next = remote.next().await;
                    fetched += t.elapsed();
                    match next {
                        Some(Ok(bytes)) => {
                            if stored_tx.send(bytes).await.is_err() {
                                // The thread stopped: its result says why.
                                break;
                            }
                        }
                        Some(Err(e)) => return Err(self.objects_error(e)),
                        None => break,
                    }
                }
            }
            Ok::<_, BackupError>(fetched)
        };
        let mut sent = Duration::ZERO;
        let send = async {
            while let Some(piece) = plain_rx.recv().await {
                let t = Instant::now();
                load.send(piece).await?;
                sent += t.elapsed();
            }
            Ok::<_, BackupError>(())
        };
        let result = tokio::try_join!(fetch, send);
        // On an error the queues go with the futures: the thread stops at its next piece.
        drop(plain_rx);
        let whole = match result {
            Ok((fetched, ())) => match opening.await {
                Ok(Ok(Some(o))) => {
                    stages.read = fetched + o.read;
                    stages.open = o.open;
                    Ok(())
                }
                Ok(Ok(None)) => Err(BackupError::Objects {
                    store: self.inner.settings.store.clone(),
                    message: "the opened object was not all sent".into(),
                }),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(BackupError::Objects {
                    store: self.inner.settings.store.clone(),
                    message: format!("the opening thread failed: {e}"),
                }),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = whole {
            load.abandon().await;
            return Err(e);
        }
        stages.send = sent;
        let t = Instant::now();
        stages.loaded = load.finish().await?;
        stages.answer = t.elapsed();
        stages.total = started.elapsed();
        Ok(stages)
    }
}

/// The opening thread: reads (a local file) or receives the object's bytes, opens them and
/// sends the dump on in pieces; then checks the object's end and checksum. `None` when the
/// receiver went away.
fn open_object(
    mut opener: Opener,
    expected: &str,
    source: Source,
    out: &mpsc::Sender<Vec<u8>>,
    store: &str,
) -> Result<Option<Opened>, BackupError> {
    let mut spent = Opened::default();
    let send = |plain: Vec<u8>| {
        plain
            .chunks(LOAD_PIECE)
            .all(|piece| out.blocking_send(piece.to_vec()).is_ok())
    };
    let mut push = |stored: &[u8], spent: &mut Opened| -> Result<bool, BackupError> {
        let t = Instant::now();
        let plain = opener.push(stored)?;
        spent.open += t.elapsed();
        Ok(send(plain))
    };
    match source {
        Source::File(mut file) => {
            let mut buf = vec![0u8; READ];
            loop {
                let t = Instant::now();
                let n = file.read(&mut buf).map_err(|e| BackupError::Objects {
                    store: store.to_owned(),
                    message: format!("reading the object: {e}"),
                })?;
                spent.read += t.elapsed();
                if n == 0 {
                    break;
                }
                if !push(&buf[..n], &mut spent)? {
                    return Ok(None);
                }
            }
        }
        Source::Queue(mut rx) => {
            while let Some(bytes) = rx.blocking_recv() {
                if !push(&bytes, &mut spent)? {
                    return Ok(None);
                }
            }
        }
    }
    let t = Instant::now();
    let rest = opener.finish(expected)?;
    spent.open += t.elapsed();
    Ok(send(rest).then_some(spent))
}
