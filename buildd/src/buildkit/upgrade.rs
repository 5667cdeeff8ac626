//! The HTTP/1.1 upgrade dockerd needs before it speaks BuildKit's gRPC on its socket.

use std::io;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Largest response head we accept from dockerd before giving up.
const MAX_HEAD: usize = 16 * 1024;

/// Connects to dockerd's socket and upgrades `POST /grpc` to h2c. The returned stream carries
/// HTTP/2 frames from its first byte.
pub(super) async fn dockerd_grpc_stream(socket: &Path) -> io::Result<UnixStream> {
    upgrade(socket, "/grpc", &[]).await
}

/// Upgrades `POST path` on dockerd's socket to h2c with extra request headers.
pub(super) async fn upgrade(
    socket: &Path,
    path: &str,
    headers: &[(&str, String)],
) -> io::Result<UnixStream> {
    let mut stream = UnixStream::connect(socket).await?;
    let mut head =
        format!("POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    // Read the response head byte by byte: dockerd may send HTTP/2 frames right after it, and
    // those must stay in the stream for the gRPC client.
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "dockerd's /grpc response head is too large",
            ));
        }
        let byte = stream.read_u8().await?;
        head.push(byte);
    }
    let status_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line).trim().to_owned();
    if !status_line.starts_with("HTTP/1.1 101") {
        return Err(io::Error::other(format!(
            "dockerd refused the upgrade of POST {path} to h2c: {status_line:?} \
             (is dockerd >= 18.09 with BuildKit enabled?)"
        )));
    }
    Ok(stream)
}
