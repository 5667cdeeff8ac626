//! A real HTTP backend on 127.0.0.1: answers every request with its name, serves `/health`
//! (switchable) and `/slow?ms=N` (answers after N ms), echoes websocket-style upgraded bytes, counts what it saw, and can be stopped
//! and restarted on the same port (like a container being replaced).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

#[derive(Debug, Default)]
pub struct Seen {
    pub requests: AtomicU64,
    /// `/slow` requests that arrived (counted in `requests` once answered).
    pub slow_arrived: AtomicU64,
    pub last_headers: Mutex<Vec<(String, String)>>,
}

#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub healthy: Arc<AtomicBool>,
    pub seen: Arc<Seen>,
    tasks: Option<JoinSet<()>>,
}

impl Backend {
    pub async fn start(name: &str) -> Self {
        Self::start_on(
            name,
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(AtomicBool::new(true)),
            Arc::default(),
        )
        .await
    }

    async fn start_on(
        name: &str,
        addr: SocketAddr,
        healthy: Arc<AtomicBool>,
        seen: Arc<Seen>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("backend bind");
        let addr = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        let (n, h, s) = (name.to_owned(), healthy.clone(), seen.clone());
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (n, h, s) = (n.clone(), h.clone(), s.clone());
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, n.clone(), h.clone(), s.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Self {
            name: name.to_owned(),
            addr,
            healthy,
            seen,
            tasks: Some(tasks),
        }
    }

    /// Closes the listener and every connection, like a stopped container.
    pub async fn stop(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Starts again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let again = Self::start_on(
            &self.name,
            self.addr,
            self.healthy.clone(),
            self.seen.clone(),
        )
        .await;
        *self = again;
    }

    pub fn requests(&self) -> u64 {
        self.seen.requests.load(Ordering::SeqCst)
    }
}

async fn handle(
    mut req: Request<Incoming>,
    name: String,
    healthy: Arc<AtomicBool>,
    seen: Arc<Seen>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let full = |b: Bytes| Full::new(b).boxed();
    if req.uri().path() == "/stream" {
        // Server-sent events: three events 300 ms apart.
        let events = futures::stream::unfold(0u32, |i| async move {
            if i == 3 {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            let frame = Frame::data(Bytes::from(format!("data: {i}\n\n")));
            Some((Ok::<_, Infallible>(frame), i + 1))
        });
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .body(StreamBody::new(events).boxed())
            .unwrap());
    }
    if req.uri().path() == "/slow" {
        // Answers after `?ms=N` milliseconds (a request in flight for a while).
        let ms = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        seen.slow_arrived.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        seen.requests.fetch_add(1, Ordering::SeqCst);
        return Ok(Response::new(full(Bytes::from(name))));
    }
    if req.uri().path() == "/health" {
        let ok = healthy.load(Ordering::SeqCst);
        let status = if ok { 200 } else { 503 };
        return Ok(Response::builder()
            .status(status)
            .body(full(Bytes::from(name)))
            .unwrap());
    }
    seen.requests.fetch_add(1, Ordering::SeqCst);
    *seen.last_headers.lock().unwrap() = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    if req.headers().get("upgrade").is_some() {
        let upgrade = hyper::upgrade::on(&mut req);
        let prefix = name.clone();
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let reply = [prefix.as_bytes(), b":", &buf[..n]].concat();
                        if io.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(full(Bytes::new()))
            .unwrap());
    }
    Ok(Response::new(full(Bytes::from(name))))
}
