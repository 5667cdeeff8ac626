//! The stored form of a backup (pure, no I/O): the engine's dump compressed with zstd, cut into
//! frames of about [`FRAME`] compressed bytes, each sealed with the organization's backup key
//! ([`crate::crypto::SecretBox::derive`], ChaCha20-Poly1305) under associated data naming the
//! backup, the frame's index and whether it is the last one. So a frame moved to another
//! backup or another place, a flipped byte, or an object cut short (no `last` frame) does not
//! open. The object's SHA-256 is computed as it is written and checked as it is read.
//!
//! Layout: `SPBK1\n`, then per frame a big-endian u32 length and the sealed bytes.

use sha2::{Digest, Sha256};
use std::io::Write;
use uuid::Uuid;

use crate::crypto::SecretBox;

pub const MAGIC: &[u8] = b"SPBK1\n";
/// Compressed bytes per sealed frame.
pub const FRAME: usize = 1 << 20;
/// No frame is larger than this (a length past it is damage, not a frame to buffer).
const MAX_SEALED: usize = 4 * FRAME;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not a Stackpad backup object (its header is missing)")]
    NotABackup,
    #[error("frame {frame} does not decrypt: the object is damaged or not this backup's")]
    Decrypt { frame: u64 },
    #[error("frame {frame} claims {len} bytes: the object is damaged")]
    FrameTooLarge { frame: u64, len: usize },
    #[error("the object is cut short after {frames} frames (its last frame is missing)")]
    Truncated { frames: u64 },
    #[error("data after the object's last frame")]
    TrailingData,
    #[error("the decrypted data does not decompress: {0}")]
    Decompress(String),
    #[error("compression: {0}")]
    Compress(String),
    #[error(
        "checksum mismatch: the stored object's sha256 is {actual}, the backup recorded {expected}"
    )]
    Checksum { expected: String, actual: String },
}

fn aad(backup: Uuid, frame: u64, last: bool) -> String {
    format!(
        "stackpad backup {backup} frame {frame} {}",
        if last { "last" } else { "more" }
    )
}

/// The organization's backup key.
pub fn organization_key(secrets: &SecretBox, organization_id: Uuid) -> SecretBox {
    secrets.derive(&format!(
        "stackpad backups v1 organization {organization_id}"
    ))
}

/// zstd worker threads per backup: the machine's cores, at most 4 (a backup must not take
/// every core of a large control node).
fn compress_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u32)
}

/// What a [`Sealer`] is fed, or an [`Opener`] hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plain {
    /// The engine's dump: compressed by the sealer, decompressed by the opener.
    Dump,
    /// The zstd stream itself (the node agent compresses where the dump is made, and
    /// decompresses a load): only framed and sealed, or opened. The stored object is the same.
    Zstd,
}

/// The zstd stream of a [`Sealer`]: made here, or taken as it came.
enum Stream {
    Compress(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Given(Vec<u8>),
}

impl Stream {
    fn pending(&mut self) -> &mut Vec<u8> {
        match self {
            Stream::Compress(e) => e.get_mut(),
            Stream::Given(b) => b,
        }
    }
}

/// Turns a dump (or its zstd stream, [`Plain`]) into the stored object, piece by piece.
pub struct Sealer {
    key: SecretBox,
    backup: Uuid,
    stream: Stream,
    frames: u64,
    hasher: Sha256,
    size: u64,
    dump: u64,
    started: bool,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("backup", &self.backup)
            .field("frames", &self.frames)
            .finish()
    }
}

/// What a finished object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub sha256: String,
    pub size: u64,
    /// The bytes pushed: the dump's for [`Plain::Dump`]; for [`Plain::Zstd`] the stream's
    /// (the caller knows the dump's own size from the agent and sets it).
    pub dump: u64,
}

impl Sealer {
    pub fn new(key: SecretBox, backup: Uuid, input: Plain) -> Result<Self, FormatError> {
        let stream = match input {
            Plain::Zstd => Stream::Given(Vec::new()),
            Plain::Dump => {
                let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3)
                    .map_err(|e| FormatError::Compress(e.to_string()))?;
                // zstd's own worker threads compress while the caller seals and hashes what is
                // done: one thread doing all three was the backup's bottleneck
                // (bench/backup/run). The output is one standard zstd frame either way.
                encoder
                    .multithread(compress_workers())
                    .map_err(|e| FormatError::Compress(e.to_string()))?;
                Stream::Compress(encoder)
            }
        };
        Ok(Self {
            key,
            backup,
            stream,
            frames: 0,
            hasher: Sha256::new(),
            size: 0,
            dump: 0,
            started: false,
        })
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        out.extend_from_slice(bytes);
    }

    fn frame(&mut self, out: &mut Vec<u8>, compressed: &[u8], last: bool) {
        let sealed = self
            .key
            .seal_bytes(&aad(self.backup, self.frames, last), compressed);
        self.frames += 1;
        let len = (sealed.len() as u32).to_be_bytes();
        self.emit(out, &len);
        self.emit(out, &sealed);
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.emit(out, MAGIC);
        }
    }

    /// Takes the next piece of the dump; returns the object bytes ready to be written.
    pub fn push(&mut self, dump: &[u8]) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::new();
        self.start(&mut out);
        self.dump += dump.len() as u64;
        match &mut self.stream {
            Stream::Compress(e) => e
                .write_all(dump)
                .map_err(|e| FormatError::Compress(e.to_string()))?,
            Stream::Given(b) => b.extend_from_slice(dump),
        }
        while self.stream.pending().len() >= FRAME {
            let pending = self.stream.pending();
            let rest = pending.split_off(FRAME);
            let full = std::mem::replace(pending, rest);
            self.frame(&mut out, &full, false);
        }
        Ok(out)
    }

    /// The last bytes of the object, and what it is.
    pub fn finish(mut self) -> Result<(Vec<u8>, Sealed), FormatError> {
        let mut out = Vec::new();
        self.start(&mut out);
        let mut rest = match std::mem::replace(&mut self.stream, Stream::Given(Vec::new())) {
            Stream::Compress(e) => e
                .finish()
                .map_err(|e| FormatError::Compress(e.to_string()))?,
            Stream::Given(b) => b,
        };
        while rest.len() > FRAME {
            let tail = rest.split_off(FRAME);
            self.frame(&mut out, &rest, false);
            rest = tail;
        }
        self.frame(&mut out, &rest, true);
        let sealed = Sealed {
            sha256: hex::encode(self.hasher.clone().finalize()),
            size: self.size,
            dump: self.dump,
        };
        Ok((out, sealed))
    }
}

/// Turns a stored object back into the dump, piece by piece, checking every frame.
pub struct Opener {
    key: SecretBox,
    backup: Uuid,
    buf: Vec<u8>,
    header_checked: bool,
    frames: u64,
    ended: bool,
    /// `None` for [`Plain::Zstd`]: the frames' plain bytes are handed out as they are.
    decoder: Option<zstd::stream::write::Decoder<'static, Vec<u8>>>,
    out: Vec<u8>,
    hasher: Sha256,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("backup", &self.backup)
            .field("frames", &self.frames)
            .finish()
    }
}

impl Opener {
    pub fn new(key: SecretBox, backup: Uuid, output: Plain) -> Result<Self, FormatError> {
        let decoder = match output {
            Plain::Zstd => None,
            Plain::Dump => Some(
                zstd::stream::write::Decoder::new(Vec::new())
                    .map_err(|e| FormatError::Decompress(e.to_string()))?,
            ),
        };
        Ok(Self {
            key,
            backup,
            buf: Vec::new(),
            header_checked: false,
            frames: 0,
            ended: false,
            decoder,
            out: Vec::new(),
            hasher: Sha256::new(),
        })
    }

    fn plain(&mut self, plain: Vec<u8>) -> Result<(), FormatError> {
        match &mut self.decoder {
            Some(d) => d
                .write_all(&plain)
                .map_err(|e| FormatError::Decompress(e.to_string())),
            None if self.out.is_empty() => {
                self.out = plain;
                Ok(())
            }
            None => {
                self.out.extend_from_slice(&plain);
                Ok(())
            }
        }
    }

    /// What is ready to hand out (the decoder flushed when `flush`).
    fn take(&mut self, flush: bool) -> Result<Vec<u8>, FormatError> {
        match &mut self.decoder {
            Some(d) => {
                if flush {
                    d.flush()
                        .map_err(|e| FormatError::Decompress(e.to_string()))?;
                }
                Ok(std::mem::take(d.get_mut()))
            }
            None => Ok(std::mem::take(&mut self.out)),
        }
    }

    /// Takes the next bytes of the object; returns the dump bytes they complete.
    pub fn push(&mut self, stored: &[u8]) -> Result<Vec<u8>, FormatError> {
        self.hasher.update(stored);
        self.buf.extend_from_slice(stored);
        if !self.header_checked {
            if self.buf.len() < MAGIC.len() {
                return Ok(Vec::new());
            }
            if &self.buf[..MAGIC.len()] != MAGIC {
                return Err(FormatError::NotABackup);
            }
            self.buf.drain(..MAGIC.len());
            self.header_checked = true;
        }
        let mut consumed = 0;
        while self.buf.len() - consumed >= 4 {
            if self.ended {
                return Err(FormatError::TrailingData);
            }
            let at = consumed;
            let len =
                u32::from_be_bytes(self.buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            if len > MAX_SEALED {
                return Err(FormatError::FrameTooLarge {
                    frame: self.frames,
                    len,
                });
            }
            if self.buf.len() - at - 4 < len {
                break;
            }
            let sealed = &self.buf[at + 4..at + 4 + len];
            let frame = self.frames;
            let (plain, last) = match self.key.open_bytes(&aad(self.backup, frame, false), sealed) {
                Ok(p) => (p, false),
                Err(_) => (
                    self.key
                        .open_bytes(&aad(self.backup, frame, true), sealed)
                        .map_err(|_| FormatError::Decrypt { frame })?,
                    true,
                ),
            };
            self.frames += 1;
            self.ended = last;
            consumed = at + 4 + len;
            self.plain(plain)?;
        }
        if self.ended && self.buf.len() > consumed {
            return Err(FormatError::TrailingData);
        }
        self.buf.drain(..consumed);
        let ended = self.ended;
        self.take(ended)
    }

    /// The object ended: it must have had its last frame and match `expected_sha256`.
    pub fn finish(mut self, expected_sha256: &str) -> Result<Vec<u8>, FormatError> {
        if !self.header_checked {
            return Err(FormatError::NotABackup);
        }
        if !self.ended || !self.buf.is_empty() {
            return Err(FormatError::Truncated {
                frames: self.frames,
            });
        }
        let actual = hex::encode(self.hasher.clone().finalize());
        if actual != expected_sha256 {
            return Err(FormatError::Checksum {
                expected: expected_sha256.to_owned(),
                actual,
            });
        }
        self.take(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretBox {
        organization_key(&SecretBox::from_hex(&"33".repeat(32)).unwrap(), Uuid::nil())
    }

    fn seal(id: Uuid, dump: &[u8], piece: usize) -> (Vec<u8>, Sealed) {
        let mut s = Sealer::new(key(), id, Plain::Dump).unwrap();
        let mut out = Vec::new();
        for c in dump.chunks(piece.max(1)) {
            out.extend(s.push(c).unwrap());
        }
        let (tail, sealed) = s.finish().unwrap();
        out.extend(tail);
        (out, sealed)
    }

    fn open(id: Uuid, object: &[u8], piece: usize, sha: &str) -> Result<Vec<u8>, FormatError> {
        let mut o = Opener::new(key(), id, Plain::Dump)?;
        let mut dump = Vec::new();
        for c in object.chunks(piece.max(1)) {
            dump.extend(o.push(c)?);
        }
        dump.extend(o.finish(sha)?);
        Ok(dump)
    }

    /// A dump that compresses but not to nothing: several frames.
    fn dump(len: usize) -> Vec<u8> {
        let mut x = 0x1234_5678u32;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 3 == 0 { (x & 0xff) as u8 } else { b'a' }
            })
            .collect()
    }

    #[test]
    fn round_trips_in_any_pieces() {
        let id = Uuid::new_v4();
        for (len, piece) in [(0, 1), (10, 3), (5 << 20, 100_000), (3 << 20, 1 << 20)] {
            let d = dump(len);
            let (object, sealed) = seal(id, &d, piece);
            assert_eq!(sealed.size, object.len() as u64);
            assert_eq!(sealed.dump, len as u64);
            assert_eq!(sealed.sha256, hex::encode(Sha256::digest(&object)));
            for read in [1usize, 7, 65_536, object.len()] {
                assert_eq!(
                    open(id, &object, read, &sealed.sha256).unwrap(),
                    d,
                    "{len}/{read}"
                );
            }
        }
    }

    /// The node agent's zstd stream, framed and sealed as it came, is the same kind of object:
    /// it opens into the dump, and a dump sealed here opens into a zstd stream of the dump.
    #[test]
    fn a_given_zstd_stream_makes_the_same_object() {
        let id = Uuid::new_v4();
        let d = dump(5 << 20);
        let stream = zstd::encode_all(&d[..], 3).unwrap();
        let mut s = Sealer::new(key(), id, Plain::Zstd).unwrap();
        let mut object = Vec::new();
        for c in stream.chunks(300_000) {
            object.extend(s.push(c).unwrap());
        }
        let (tail, sealed) = s.finish().unwrap();
        object.extend(tail);
        assert_eq!(sealed.dump, stream.len() as u64);
        assert!(sealed.size > FRAME as u64, "several frames");
        assert_eq!(open(id, &object, 65_536, &sealed.sha256).unwrap(), d);

        let (object, sealed) = seal(id, &d, 1 << 20);
        let mut o = Opener::new(key(), id, Plain::Zstd).unwrap();
        let mut zst = Vec::new();
        for c in object.chunks(100_000) {
            zst.extend(o.push(c).unwrap());
        }
        zst.extend(o.finish(&sealed.sha256).unwrap());
        assert_eq!(zstd::decode_all(&zst[..]).unwrap(), d);
    }

    #[test]
    fn damage_is_caught() {
        let id = Uuid::new_v4();
        let d = dump(3 << 20);
        let (object, sealed) = seal(id, &d, 64 << 10);
        // A flipped byte anywhere in a frame: that frame does not decrypt.
        let mut flipped = object.clone();
        let at = object.len() / 2;
        flipped[at] ^= 0x01;
        let e = open(id, &flipped, 4096, &sealed.sha256).unwrap_err();
        assert!(
            matches!(
                e,
                FormatError::Decrypt { .. } | FormatError::FrameTooLarge { .. }
            ),
            "{e}"
        );
        // Cut short at a frame boundary or inside one.
        for cut in [object.len() - 1, MAGIC.len() + 4 + 100] {
            let e = open(id, &object[..cut], 4096, &sealed.sha256).unwrap_err();
            assert!(matches!(e, FormatError::Truncated { .. }), "{e}");
        }
        // Another backup's id (a copied object): does not decrypt.
        let e = open(Uuid::new_v4(), &object, 4096, &sealed.sha256).unwrap_err();
        assert_eq!(e, FormatError::Decrypt { frame: 0 });
        // Another organization's key.
        let other = organization_key(
            &SecretBox::from_hex(&"33".repeat(32)).unwrap(),
            Uuid::new_v4(),
        );
        let mut o = Opener::new(other, id, Plain::Dump).unwrap();
        assert!(o.push(&object).is_err());
        // A recorded checksum that differs.
        let e = open(id, &object, 4096, &"0".repeat(64)).unwrap_err();
        assert!(matches!(e, FormatError::Checksum { .. }), "{e}");
        // Not ours at all.
        let e = open(id, b"PGDMP....", 4, &sealed.sha256).unwrap_err();
        assert_eq!(e, FormatError::NotABackup);
        // Bytes after the last frame.
        let mut longer = object.clone();
        longer.extend_from_slice(&[0, 0, 0, 1, 9]);
        assert_eq!(
            open(id, &longer, 1 << 20, &sealed.sha256).unwrap_err(),
            FormatError::TrailingData
        );
    }
}
