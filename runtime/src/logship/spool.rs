//! A bounded on-disk buffer of log batches for when ClickHouse does not answer.
//!
//! One file per batch (`<seq>-<rows>.batch`, written to a temporary name and renamed, so a
//! crash never leaves half a batch under a real name), read back oldest first. The total size is
//! capped: making room drops the oldest batches and counts their lines. The spool survives an
//! agent restart: opening it finds the batches left there.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use logstore::container_logs::LogRow;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("log spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    seq: u64,
    rows: u64,
    bytes: u64,
}

#[derive(Debug, Default)]
struct State {
    batches: VecDeque<Batch>,
    bytes: u64,
    next_seq: u64,
}

/// The spool of one node.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    dropped_lines: AtomicU64,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, finding batches a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        let io = |source| SpoolError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut batches = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A batch that was being written when the agent died: never complete.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some((seq, rows)) = name
                .strip_suffix(".batch")
                .and_then(|stem| stem.split_once('-'))
                .and_then(|(seq, rows)| Some((seq.parse().ok()?, rows.parse().ok()?)))
            else {
                continue;
            };
            let bytes = entry.metadata().map_err(io)?.len();
            batches.push(Batch { seq, rows, bytes });
        }
        batches.sort_by_key(|b| b.seq);
        let state = State {
            bytes: batches.iter().map(|b| b.bytes).sum(),
            next_seq: batches.last().map_or(0, |b| b.seq + 1),
            batches: batches.into(),
        };
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            state: Mutex::new(state),
            dropped_lines: AtomicU64::new(0),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.lock().batches.is_empty()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Lines waiting in the spool.
    pub fn lines(&self) -> u64 {
        self.lock().batches.iter().map(|b| b.rows).sum()
    }

    /// Lines dropped to keep the spool under its cap, since it was opened.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped_lines.load(Ordering::Relaxed)
    }

    /// Appends a batch, dropping the oldest batches (or the oldest lines of this one, if it
    /// alone is larger than the cap) to stay under the cap.
    pub fn push(&self, rows: &[LogRow]) -> Result<(), SpoolError> {
        let mut start = 0;
        let mut encoded = encode(rows);
        while encoded.len() as u64 > self.max_bytes && start < rows.len() {
            let skip = (rows.len() - start).div_ceil(4);
            start += skip;
            self.dropped_lines.fetch_add(skip as u64, Ordering::Relaxed);
            encoded = encode(&rows[start..]);
        }
        let rows = &rows[start..];
        if rows.is_empty() {
            return Ok(());
        }
        let mut state = self.lock();
        while state.bytes + encoded.len() as u64 > self.max_bytes {
            let Some(oldest) = state.batches.pop_front() else {
                break;
            };
            state.bytes -= oldest.bytes;
            self.dropped_lines.fetch_add(oldest.rows, Ordering::Relaxed);
            let _ = std::fs::remove_file(self.path(oldest));
        }
        let batch = Batch {
            seq: state.next_seq,
            rows: rows.len() as u64,
            bytes: encoded.len() as u64,
        };
        let path = self.path(batch);
        let tmp = path.with_extension("tmp");
        let io = |source| SpoolError::Io {
            path: tmp.clone(),
            source,
        };
        std::fs::write(&tmp, &encoded).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        state.next_seq += 1;
        state.bytes += batch.bytes;
        state.batches.push_back(batch);
        Ok(())
    }

    /// The oldest batch: its sequence number (for [`Spool::remove`]) and rows.
    pub fn oldest(&self) -> Result<Option<(u64, Vec<LogRow>)>, SpoolError> {
        let Some(batch) = self.lock().batches.front().copied() else {
            return Ok(None);
        };
        let path = self.path(batch);
        let bytes = std::fs::read(&path).map_err(|source| SpoolError::Io { path, source })?;
        let mut input = bytes.as_slice();
        let mut rows = Vec::with_capacity(batch.rows as usize);
        while let Some(row) = LogRow::decode(&mut input) {
            rows.push(row);
        }
        Ok(Some((batch.seq, rows)))
    }

    /// Forgets a batch that was delivered.
    pub fn remove(&self, seq: u64) {
        let mut state = self.lock();
        if let Some(index) = state.batches.iter().position(|b| b.seq == seq)
            && let Some(batch) = state.batches.remove(index)
        {
            state.bytes -= batch.bytes;
            let _ = std::fs::remove_file(self.path(batch));
        }
    }

    fn path(&self, batch: Batch) -> PathBuf {
        self.dir
            .join(format!("{:020}-{}.batch", batch.seq, batch.rows))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn encode(rows: &[LogRow]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        row.encode(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(from: u64, n: u64) -> Vec<LogRow> {
        (from..from + n)
            .map(|i| LogRow {
                date: 1,
                ts_ns: i as i64,
                line_id: i,
                organization_id: "o".into(),
                project_id: "p".into(),
                environment_id: "e".into(),
                service_id: "s".into(),
                deployment_id: "d".into(),
                container_id: "c".into(),
                node_id: "n".into(),
                stream: 1,
                truncated: 0,
                line: format!("line {i}").into_bytes(),
                retention_days: 7,
            })
            .collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("stackpad-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn batches_come_back_in_order_and_survive_a_reopen() {
        let dir = temp_dir("order");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        spool.push(&rows(0, 3)).unwrap();
        spool.push(&rows(3, 2)).unwrap();
        assert_eq!(spool.lines(), 5);
        drop(spool);
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let (seq, first) = spool.oldest().unwrap().unwrap();
        assert_eq!(first, rows(0, 3));
        spool.remove(seq);
        let (seq, second) = spool.oldest().unwrap().unwrap();
        assert_eq!(second, rows(3, 2));
        spool.remove(seq);
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = temp_dir("full");
        let one_batch = encode(&rows(10, 10)).len() as u64; // two-digit lines, like all but the first batch
        let spool = Spool::open(&dir, one_batch * 3).unwrap();
        for i in 0..5 {
            spool.push(&rows(i * 10, 10)).unwrap();
        }
        assert!(spool.bytes() <= one_batch * 3);
        assert_eq!(spool.dropped_lines(), 20);
        assert_eq!(spool.oldest().unwrap().unwrap().1, rows(20, 10));
        // A single batch larger than the cap keeps its newest lines.
        spool.push(&rows(100, 40)).unwrap();
        assert!(spool.bytes() <= one_batch * 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
