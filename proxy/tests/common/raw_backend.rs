//! A backend on a raw socket that records every byte it receives: each request it can frame
//! (head plus Content-Length or chunked body) and any bytes it could not. Answers `200 ok`.
//! The proxy's health checks (`GET /health`) are answered and left out of the record.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the backend received, health checks left out.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Each request: its head and its body (chunked bodies de-chunked).
    pub requests: Vec<(String, Vec<u8>)>,
    /// Bytes that did not make a complete request before the connection ended.
    pub stray: Vec<u8>,
}

#[derive(Debug)]
pub struct RawBackend {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: JoinHandle<()>,
}

impl RawBackend {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("raw backend bind");
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let r = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, r.clone()));
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    pub fn received(&self) -> Received {
        self.received.lock().unwrap().clone()
    }

    /// Bytes received outside health checks.
    pub fn bytes(&self) -> usize {
        let r = self.received.lock().unwrap();
        r.stray.len()
            + r.requests
                .iter()
                .map(|(head, body)| head.len() + body.len())
                .sum::<usize>()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, received: Arc<Mutex<Received>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match frame(&buf) {
            Some((used, head, body)) => {
                buf.drain(..used);
                if !head.starts_with("GET /health ") {
                    received.lock().unwrap().requests.push((head, body));
                }
                let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if stream.write_all(ok).await.is_err() {
                    break;
                }
            }
            None => match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
        }
    }
    if !buf.is_empty() {
        received.lock().unwrap().stray.extend_from_slice(&buf);
    }
}

/// One complete request at the start of `buf`: bytes used, head, body.
fn frame(buf: &[u8]) -> Option<(usize, String, Vec<u8>)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut at = end;
        let mut body = Vec::new();
        loop {
            let line_end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[at..line_end]).ok()?, 16).ok()?;
            let data = line_end + 2;
            if size == 0 {
                return (buf.len() >= data + 2).then(|| (data + 2, head, body));
            }
            if buf.len() < data + size + 2 {
                return None;
            }
            body.extend_from_slice(&buf[data..data + size]);
            at = data + size + 2;
        }
    }
    let length: usize = header("content-length").map_or(Some(0), |v| v.parse().ok())?;
    (buf.len() >= end + length).then(|| (end + length, head, buf[end..end + length].to_vec()))
}
