//! Downstream HTTP connections, with idle keep-alive connections that hold almost nothing.
//!
//! Pingora's own loop (the blanket `ServerApp` of an `HttpServerApp`) waits for the next
//! request on a kept-alive HTTP/1 connection inside `read_request`, that is inside the next
//! request's future: the whole proxy state machine, its session and a 4 KiB header buffer
//! exist for as long as the client says nothing (~19 KiB per idle connection, see
//! bench/proxy/PINGORA.md). [`KeepAlive`] runs that loop itself, through Pingora's public
//! API: between two requests it holds the stream and the persistent settings only, waits
//! until the next request's first bytes are readable (the TLS stream's plaintext, so bytes
//! rustls already decrypted count), reads them into the buffer the session then parses from
//! (Pingora's pipelined-prefix hand-over: no extra read, no extra copy), and only then creates
//! the session and calls `process_new_http`. A read that finds nothing frees its buffer at
//! once, so an idle connection holds no buffer.
//!
//! Everything else stays Pingora's: HTTP/2 (ALPN h2, or the h2c preface on plain
//! connections) and custom protocols go to its own loop; the first request of a connection
//! is read by Pingora as before (the drain's first-byte wait is in [`crate::drain`]); the
//! persistent settings (keep-alive request limit, the connection's user context) are carried
//! from one request to the next as Pingora does. The wait ends the connection after the idle
//! timeout, when the client closes, or when the drain closes idle connections.
//!
//! Every connection's writes go through [`LazyWriteBuffer`], which holds no buffer between
//! responses (Pingora's L4 write buffer is set to 0 for it).
//!
//! Pipelining stays off (stackpad never enables it): with it, Pingora could hand the next
//! session bytes read past the previous request, and they would have to come before ours.

use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use futures::future::BoxFuture;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{ALPN, Stream};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

use crate::drain::Drain;
use crate::write_buffer::LazyWriteBuffer;

/// The HTTP/2 connection preface (RFC 9113 section 3.4): a plain connection starting with it
/// is h2c.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The first read of a request: Pingora's initial header buffer size, which the session
/// keeps parsing into (and grows) when the head is longer.
const FIRST_READ: usize = 4096;

/// Pingora's keep-alive timeout for the first request of a connection (its own default).
const FIRST_REQUEST_KEEPALIVE_SECS: u64 = 60;

/// Serves the downstream connections of an HTTP application (the proxy): see the module
/// docs.
pub struct KeepAlive<A> {
    inner: Arc<A>,
    drain: Arc<Drain>,
    idle_timeout: Duration,
}

impl<A> std::fmt::Debug for KeepAlive<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepAlive")
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl<A> KeepAlive<A> {
    /// `idle_timeout`: how long a kept-alive connection may wait for its next request.
    pub fn new(inner: A, drain: Arc<Drain>, idle_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(inner),
            drain,
            idle_timeout,
        }
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> KeepAlive<A> {
    /// Whether Pingora's own loop serves this connection (h2, h2c, custom protocols); peeks
    /// at a plain connection's first bytes for the h2c preface as Pingora does. `None`: the
    /// connection broke.
    async fn pingora_serves(&self, stream: &mut Stream) -> Option<bool> {
        let options = self.inner.server_options();
        if options.is_some_and(|o| o.force_custom) {
            return Some(true);
        }
        match stream.selected_alpn_proto() {
            None | Some(ALPN::H1) => {}
            Some(_) => return Some(true),
        }
        if stream.get_ssl_digest().is_some() || !options.is_some_and(|o| o.h2c) {
            return Some(false);
        }
        let mut preface = [0u8; H2_PREFACE.len()];
        // Streams that cannot peek answer false: HTTP/1, as in Pingora.
        let peeked = stream.try_peek(&mut preface).await.ok()?;
        Some(peeked && preface == H2_PREFACE)
    }

    /// Waits for the next request on a kept-alive connection and returns its first bytes;
    /// `None` when the connection is to end (closed by the client, broken, idle for
    /// `idle_timeout`, or the drain closes idle connections).
    async fn next_request(&self, stream: &mut Stream) -> Option<BytesMut> {
        // Most often under load the request is already there: no timer, no drain waiter.
        if let Poll::Ready(read) =
            std::future::poll_fn(|cx| Poll::Ready(poll_first_bytes(stream, cx))).await
        {
            return non_empty(read);
        }
        tokio::select! {
            biased;
            read = std::future::poll_fn(|cx| poll_first_bytes(stream, cx)) => non_empty(read),
            () = self.drain.idle_closed() => None,
            () = tokio::time::sleep(self.idle_timeout) => None,
        }
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> KeepAlive<A> {
    /// Starts serving one request: its session is made here, in a plain function, so that
    /// the connection's future never holds the session's space (~700 bytes) beside the
    /// boxed request future. `next`: a kept-alive connection's settings and the first bytes
    /// of its next request; `None` for a connection's first request.
    fn request<'a>(
        self: &'a Arc<Self>,
        stream: Stream,
        next: Option<(HttpPersistentSettings, BytesMut)>,
        shutdown: &'a ShutdownWatch,
    ) -> BoxFuture<'a, Option<ReusedHttpStream>> {
        let mut session = ServerSession::new_http1(stream);
        match next {
            Some((settings, first)) => {
                settings.apply_to_session(&mut session);
                debug_assert!(!session.pipelining_enabled(), "pipelining is never on");
                session.set_pipelined_prefix(first);
            }
            None => {
                // As Pingora: no keep-alive once a shutdown has begun.
                session
                    .set_keepalive((!*shutdown.borrow()).then_some(FIRST_REQUEST_KEEPALIVE_SECS));
                session.set_keepalive_reuses_remaining(
                    self.inner
                        .server_options()
                        .and_then(|o| o.keepalive_request_limit),
                );
            }
        }
        self.inner.process_new_http(session, shutdown)
    }
}

/// Reads what the stream has into a new buffer; `Pending` frees the buffer, so a connection
/// waiting here holds none.
fn poll_first_bytes(stream: &mut Stream, cx: &mut Context<'_>) -> Poll<io::Result<BytesMut>> {
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    let read = {
        let read = pin!(stream.read_buf(&mut buf));
        read.poll(cx)
    };
    read.map_ok(|_| buf)
}

/// The bytes read, unless the client closed (nothing read) or the read failed.
fn non_empty(read: io::Result<BytesMut>) -> Option<BytesMut> {
    read.ok().filter(|buf| !buf.is_empty())
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for KeepAlive<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut stream = LazyWriteBuffer::wrap(stream);
        if self.pingora_serves(&mut stream).await? {
            return self.inner.process_new(stream, shutdown).await;
        }
        let mut reused = self.request(stream, None, shutdown).await;
        while let Some(next) = reused {
            let (mut stream, settings) = next.consume();
            let next = match settings {
                Some(settings) => {
                    let first = self.next_request(&mut stream).await?;
                    Some((settings, first))
                }
                // Nothing carried over: Pingora's loop reads this request itself too.
                None => None,
            };
            reused = self.request(stream, next, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::GracefulApp;
    use crate::public_tls::TlsTerminate;
    use pingora::protocols::l4::stream::Stream as L4Stream;

    struct Nothing;

    #[async_trait]
    impl HttpServerApp for Nothing {
        async fn process_new_http(
            self: &Arc<Self>,
            _session: ServerSession,
            _shutdown: &ShutdownWatch,
        ) -> Option<ReusedHttpStream> {
            None
        }
    }

    async fn connection(listener: &tokio::net::TcpListener) -> Stream {
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        Box::new(L4Stream::from(server))
    }

    /// What an idle keep-alive connection holds besides Pingora's stream is these three
    /// futures (the connection's task, the TLS wrapper's and this loop's); each stays small.
    /// Growth here is memory on every idle connection (bench/proxy's idle step): typically a
    /// large future awaited inline (a TLS handshake, a session made in the loop itself).
    #[tokio::test]
    async fn the_futures_an_idle_connection_holds_stay_small() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let drain = Arc::new(Drain::default());
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let idle = Duration::from_secs(1);

        let keepalive = Arc::new(KeepAlive::new(Nothing, Arc::clone(&drain), idle));
        let future = keepalive.process_new(connection(&listener).await, &shutdown);
        let keepalive_size = std::mem::size_of_val(&*future);
        drop(future);

        let certificates = Arc::new(crate::certs::CertificateTable::default());
        let config = crate::public_tls::server_config(certificates, None).unwrap();
        let inner = KeepAlive::new(Nothing, Arc::clone(&drain), idle);
        let tls = Arc::new(TlsTerminate::new(inner, config, 1));
        let future = tls.process_new(connection(&listener).await, &shutdown);
        let tls_size = std::mem::size_of_val(&*future);
        drop(future);

        let graceful = Arc::new(GracefulApp::new(
            Nothing,
            Arc::clone(&drain),
            idle,
            Box::new(|| {}),
        ));
        let task_size = graceful.task_size(connection(&listener).await, &shutdown);

        // Measured (Rust 1.9x, tokio 1.54, Pingora 0.9.1): 656, 88 and 312 bytes.
        assert!(
            keepalive_size <= 1024,
            "keep-alive loop: {keepalive_size} bytes"
        );
        assert!(tls_size <= 256, "TLS wrapper: {tls_size} bytes");
        assert!(task_size <= 512, "connection task: {task_size} bytes");
    }
}
