//! Reading a container's stdout/stderr from the FIFOs the agent hands to containerd, cutting
//! the bytes into lines (long lines are cut at the limit and marked truncated).

use std::path::Path;

use tokio::io::AsyncReadExt;

use super::{LogLine, Stream};

/// Creates the FIFO if it is not there.
pub fn ensure_fifo(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(std::io::Error::from)
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Splits a byte stream into lines of at most `max` bytes.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    /// Inside a line that was already emitted truncated: drop bytes up to its newline.
    skipping: bool,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max: max.max(1),
            skipping: false,
        }
    }

    /// Feeds bytes; returns complete lines as (bytes, truncated).
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        while !data.is_empty() {
            match data.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    if self.skipping {
                        self.skipping = false;
                    } else {
                        self.buf.extend_from_slice(&data[..i]);
                        let mut line = std::mem::take(&mut self.buf);
                        let truncated = line.len() > self.max;
                        line.truncate(self.max);
                        out.push((line, truncated));
                    }
                    data = &data[i + 1..];
                }
                None => {
                    if !self.skipping {
                        self.buf.extend_from_slice(data);
                        if self.buf.len() > self.max {
                            let mut line = std::mem::take(&mut self.buf);
                            line.truncate(self.max);
                            out.push((line, true));
                            self.skipping = true;
                        }
                    }
                    data = &[];
                }
            }
        }
        out
    }
}

/// Reads the FIFO until the task is gone for good (the reader is aborted); the lines of each
/// chunk read go to `emit` together. Each read waits on the FIFO's readiness (epoll through
/// tokio's pipe support), no timer. Opened read-write, so this end always holds a writer:
/// it never sees end-of-file, also between task restarts when the shim's write end closes.
pub async fn pump(
    path: std::path::PathBuf,
    stream: Stream,
    max_line: usize,
    mut emit: impl FnMut(Vec<LogLine>) + Send,
) -> std::io::Result<()> {
    let mut rx = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&path)?;
    let mut splitter = LineSplitter::new(max_line);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = rx.read(&mut buf).await?;
        if n == 0 {
            // Cannot happen while this end holds a writer; end the reader rather than spin.
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "end of file on a fifo opened read-write",
            ));
        }
        let ts = now_nanos();
        let lines: Vec<LogLine> = splitter
            .feed(&buf[..n])
            .into_iter()
            .map(|(line, truncated)| LogLine {
                timestamp_nanos: ts,
                stream,
                line,
                truncated,
            })
            .collect();
        if !lines.is_empty() {
            emit(lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[test]
    fn splits_and_truncates() {
        let mut s = LineSplitter::new(5);
        assert_eq!(s.feed(b"ab"), vec![]);
        assert_eq!(
            s.feed(b"c\nde\n"),
            vec![(b"abc".to_vec(), false), (b"de".to_vec(), false)]
        );
        assert_eq!(s.feed(b"0123456789"), vec![(b"01234".to_vec(), true)]);
        assert_eq!(s.feed(b"xx\nok\n"), vec![(b"ok".to_vec(), false)]);
    }

    /// One writer after another (a task, then its restart) on the same FIFO: the reader sees
    /// every line, and the lines of one write arrive together, woken by the data itself.
    #[tokio::test]
    async fn reads_across_writers_without_end_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        ensure_fifo(&path).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(pump(path.clone(), Stream::Stdout, 1024, move |lines| {
            let _ = tx.send(lines);
        }));
        let text = |lines: Vec<LogLine>| -> Vec<String> {
            lines
                .into_iter()
                .map(|l| String::from_utf8(l.line).unwrap())
                .collect()
        };
        for round in 0..2 {
            // Opening for writing blocks until a reader has the FIFO open: the pump's task.
            let p = path.clone();
            let mut writer = tokio::task::spawn_blocking(move || {
                std::fs::OpenOptions::new().write(true).open(p).unwrap()
            })
            .await
            .unwrap();
            writer
                .write_all(format!("a{round}\nb{round}\n").as_bytes())
                .unwrap();
            let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("lines within 10 s")
                .expect("reader running");
            assert_eq!(text(got), [format!("a{round}"), format!("b{round}")]);
            drop(writer);
        }
        assert!(!reader.is_finished(), "the reader ended: {reader:?}");
        reader.abort();
    }
}
