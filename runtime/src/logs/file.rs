//! A container's log on disk: one entry per line (`<unix nanos> <o|e> <F|T> <bytes>`), rotated
//! at a size, a fixed number of rotated files kept, so each container has a size cap.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{LogLine, Stream};

/// Appends entries and rotates `container.log` -> `.1` -> `.2` ... Entries are buffered until
/// [`RotatingFile::flush`] (the reader flushes after each chunk it read: one write per chunk,
/// not per line).
#[derive(Debug)]
pub struct RotatingFile {
    dir: PathBuf,
    file: Option<BufWriter<File>>,
    size: u64,
    max_bytes: u64,
    keep: u32,
    entry: Vec<u8>,
}

pub fn current(dir: &Path) -> PathBuf {
    dir.join("container.log")
}

fn rotated(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("container.log.{n}"))
}

/// Serialises one entry (with its newline).
pub fn encode(line: &LogLine) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.line.len() + 25);
    encode_into(line, &mut out);
    out
}

/// Appends one entry (with its newline) to `out`.
fn encode_into(line: &LogLine, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "{} {} {} ",
        line.timestamp_nanos,
        match line.stream {
            Stream::Stdout => 'o',
            Stream::Stderr => 'e',
        },
        if line.truncated { 'T' } else { 'F' }
    );
    out.extend_from_slice(&line.line);
    out.push(b'\n');
}

/// Parses one entry (without its newline); `None` for a damaged line.
pub fn decode(raw: &[u8]) -> Option<LogLine> {
    let mut parts = raw.splitn(4, |b| *b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let stream = match parts.next()? {
        b"o" => Stream::Stdout,
        b"e" => Stream::Stderr,
        _ => return None,
    };
    let truncated = match parts.next()? {
        b"T" => true,
        b"F" => false,
        _ => return None,
    };
    Some(LogLine {
        timestamp_nanos: ts,
        stream,
        line: parts.next().unwrap_or_default().to_vec(),
        truncated,
    })
}

impl RotatingFile {
    pub fn open(dir: &Path, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let size = std::fs::metadata(current(dir))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(Self {
            dir: dir.to_owned(),
            file: None,
            size,
            max_bytes,
            keep,
            entry: Vec::new(),
        })
    }

    /// Buffers one entry; [`RotatingFile::flush`] writes it.
    pub fn append(&mut self, line: &LogLine) -> std::io::Result<()> {
        self.entry.clear();
        encode_into(line, &mut self.entry);
        let len = self.entry.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        if self.file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(current(&self.dir))?;
            self.file = Some(BufWriter::with_capacity(64 << 10, file));
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(&self.entry)?;
        self.size += len;
        Ok(())
    }

    /// Writes the buffered entries to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.flush()?;
        self.file = None;
        let _ = std::fs::remove_file(rotated(&self.dir, self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(rotated(&self.dir, n), rotated(&self.dir, n + 1));
        }
        std::fs::rename(current(&self.dir), rotated(&self.dir, 1))?;
        self.size = 0;
        Ok(())
    }
}

/// The last `n` entries across the rotated files and the current one, oldest first.
pub fn tail(dir: &Path, keep: u32, n: usize) -> Vec<LogLine> {
    if n == 0 {
        return Vec::new();
    }
    let mut files: Vec<PathBuf> = (1..=keep).rev().map(|i| rotated(dir, i)).collect();
    files.push(current(dir));
    let mut out: std::collections::VecDeque<LogLine> = std::collections::VecDeque::new();
    for path in files {
        let Ok(f) = File::open(&path) else { continue };
        for raw in BufReader::new(f).split(b'\n').map_while(Result::ok) {
            if let Some(l) = decode(&raw) {
                if out.len() == n {
                    out.pop_front();
                }
                out.push_back(l);
            }
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize) -> LogLine {
        LogLine {
            timestamp_nanos: i as i64,
            stream: if i.is_multiple_of(2) {
                Stream::Stdout
            } else {
                Stream::Stderr
            },
            line: format!("line {i} with spaces").into_bytes(),
            truncated: false,
        }
    }

    #[test]
    fn round_trips_and_rotates_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(dir.path(), 200, 2).unwrap();
        for i in 0..100 {
            f.append(&line(i)).unwrap();
        }
        f.flush().unwrap();
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 3 * 200, "cap exceeded: {total}");
        assert!(!rotated(dir.path(), 3).exists());
        let last = tail(dir.path(), 2, 3);
        assert_eq!(last, vec![line(97), line(98), line(99)]);
        assert_eq!(
            decode(&encode(&line(5))[..encode(&line(5)).len() - 1]),
            Some(line(5))
        );
    }
}
