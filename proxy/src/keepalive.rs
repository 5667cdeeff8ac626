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
//! A connection's first request is waited for the same way; on a plain connection its first
//! bytes also tell h2c from HTTP/1 (instead of Pingora's peek, which leaves a rewind list on
//! every connection), and an h2c connection's are put back in front of the stream for
//! Pingora's loop. Everything else stays Pingora's: HTTP/2 (ALPN h2, or h2c) and custom
//! protocols go to its own loop; the persistent settings (keep-alive request limit, the
//! connection's user context) are carried from one request to the next as Pingora does. The
//! wait ends the connection after the idle timeout (checked on the drain's idle ticks, so no
//! connection holds a timer), when the client closes, or when the drain closes idle
//! connections.
//!
//! Every connection's writes go through [`LazyWriteBuffer`], which holds no buffer between
//! responses (Pingora's L4 write buffer is set to 0 for it).
//!
//! Pipelining stays off (stackpad never enables it): with it, Pingora could hand the next
//! session bytes read past the previous request, and they would have to come before ours.

use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use futures::future::BoxFuture;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
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
    /// How often waiting connections check their idle time: an eighth of `idle_timeout`, so
    /// one ends at most 12.5% after it.
    idle_tick: Duration,
    /// The idle ticks a connection waits before it ends: after this many, more than
    /// `idle_timeout` has passed.
    idle_ticks: u32,
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
        let idle_tick = (idle_timeout / 8).max(Duration::from_millis(10));
        let periods = idle_timeout.as_nanos().div_ceil(idle_tick.as_nanos());
        Self {
            inner: Arc::new(inner),
            drain,
            idle_timeout,
            idle_tick,
            idle_ticks: u32::try_from(periods + 1).unwrap_or(u32::MAX),
        }
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> KeepAlive<A> {
    /// Waits for a request's first bytes (a connection's first request or a kept-alive
    /// connection's next one) and returns them; `None` when the connection is to end (closed
    /// by the client, broken, idle for `idle_timeout`, or the drain closes idle connections).
    /// While waiting the connection holds no buffer and no timer: the drain's idle ticks wake
    /// it to check its idle time ([`Drain::start_idle_ticks`]).
    ///
    /// An `async` block, not an `async fn`: the future holds its two references once (an
    /// `async fn` keeps its arguments and their moved copies), in every waiting connection.
    #[allow(clippy::manual_async_fn)] // the `async fn` form is what this avoids
    fn first_bytes<'a>(
        &'a self,
        stream: &'a mut Stream,
    ) -> impl Future<Output = Option<BytesMut>> + Send + 'a {
        async move {
            // Most often under load the request is already there: no clock, no waiter.
            if let Poll::Ready(read) =
                std::future::poll_fn(|cx| Poll::Ready(poll_first_bytes(stream, cx))).await
            {
                return non_empty(read);
            }
            self.drain.start_idle_ticks(self.idle_tick);
            // Idle time in ticks, not an `Instant`: 4 bytes in every waiting connection, not 16.
            let since = self.drain.idle_ticks();
            loop {
                let wakeup = self.drain.idle_wakeup();
                let mut wakeup = pin!(wakeup);
                wakeup.as_mut().enable();
                let waited = self.drain.idle_ticks().wrapping_sub(since);
                if self.drain.idle_closed() || waited >= self.idle_ticks {
                    return None;
                }
                let read = std::future::poll_fn(|cx| match poll_first_bytes(stream, cx) {
                    Poll::Ready(read) => Poll::Ready(Some(read)),
                    Poll::Pending => wakeup.as_mut().poll(cx).map(|()| None),
                })
                .await;
                if let Some(read) = read {
                    return non_empty(read);
                }
            }
        }
    }

    /// The first bytes of a plain connection that may be h2c, up to the length of the h2c
    /// preface when they begin like it (it may arrive in several reads).
    async fn first_bytes_h2c(&self, stream: &mut Stream) -> Option<BytesMut> {
        let mut first = self.first_bytes(stream).await?;
        while first.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&first) {
            let more = self.first_bytes(stream).await?;
            first.extend_from_slice(&more);
        }
        Some(first)
    }

    /// Starts serving one request: its session is made here, in a plain function, so that
    /// the connection's future never holds the session's space (~700 bytes) beside the
    /// boxed request future. `settings`: a kept-alive connection's, `None` for a connection's
    /// first request; `first`: the request's first bytes, `None` when Pingora reads the
    /// request itself.
    fn request<'a>(
        self: &'a Arc<Self>,
        stream: Stream,
        settings: Option<HttpPersistentSettings>,
        first: Option<BytesMut>,
        shutdown: &'a ShutdownWatch,
    ) -> BoxFuture<'a, Option<ReusedHttpStream>> {
        let mut session = ServerSession::new_http1(stream);
        match settings {
            Some(settings) => {
                settings.apply_to_session(&mut session);
                debug_assert!(!session.pipelining_enabled(), "pipelining is never on");
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
        if let Some(first) = first {
            session.set_pipelined_prefix(first);
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

/// How a connection's first request begins ([`KeepAlive::start`]).
enum Start {
    /// HTTP/1: the stream and the request's first bytes.
    Http1(Stream, BytesMut),
    /// Served by Pingora's own loop: h2 (by ALPN), h2c (the preface put back in front of the
    /// stream), custom protocols.
    Pingora(Stream),
}

impl<A: HttpServerApp + Send + Sync + 'static> KeepAlive<A> {
    /// Waits for a connection's first request and tells who serves it; `None` when the
    /// connection ends first. Runs once per connection, in a future of its own (boxed by the
    /// caller and freed when done), so the loop's future, kept for the connection's whole
    /// life, has no room for this wait's h2c state.
    async fn start(&self, mut stream: Stream) -> Option<Start> {
        let options = self.inner.server_options();
        let pingora_serves = options.is_some_and(|o| o.force_custom)
            || !matches!(stream.selected_alpn_proto(), None | Some(ALPN::H1));
        if pingora_serves {
            return Some(Start::Pingora(stream));
        }
        if stream.get_ssl_digest().is_some() || !options.is_some_and(|o| o.h2c) {
            let first = self.first_bytes(&mut stream).await?;
            return Some(Start::Http1(stream, first));
        }
        let first = self.first_bytes_h2c(&mut stream).await?;
        if !first.starts_with(H2_PREFACE) {
            return Some(Start::Http1(stream, first));
        }
        // h2c: Pingora's loop reads the preface from the stream itself.
        let Ok(mut l4) = stream.into_any().downcast::<L4Stream>() else {
            tracing::error!("a plain HTTP connection is not a TCP stream");
            return None;
        };
        l4.rewind(&first);
        Some(Start::Pingora(l4))
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for KeepAlive<A> {
    /// Written out rather than as async_trait's `async fn`, whose future keeps each argument
    /// twice (as captured and as moved into the body) for the connection's whole life: this
    /// one captures `self`, `shutdown` and the boxed start.
    fn process_new<'a, 'b, 'fut>(
        self: &'a Arc<Self>,
        stream: Stream,
        shutdown: &'b ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<Stream>> + Send + 'fut>>
    where
        'a: 'fut,
        'b: 'fut,
        Self: 'fut,
    {
        let start = Box::pin(self.start(stream));
        Box::pin(self.serve(start, shutdown))
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> KeepAlive<A> {
    /// The connection's loop: its first request once `start` tells it is HTTP/1, then each
    /// next one when its first bytes arrive.
    #[allow(clippy::manual_async_fn)] // as `first_bytes`: each argument held once
    fn serve<'a>(
        self: &'a Arc<Self>,
        start: Pin<Box<impl Future<Output = Option<Start>> + Send + 'a>>,
        shutdown: &'a ShutdownWatch,
    ) -> impl Future<Output = Option<Stream>> + Send + 'a {
        async move {
            let (stream, first) = match start.await? {
                Start::Http1(stream, first) => (stream, first),
                Start::Pingora(stream) => {
                    return self
                        .inner
                        .process_new(LazyWriteBuffer::wrap(stream), shutdown)
                        .await;
                }
            };
            // Only what the wait for the next request needs is kept across it (see the size
            // test): the stream and the settings as they came (an `Option` moved whole, not
            // matched apart, whose husk the future would keep beside the value), no loop-carried
            // `Option<ReusedHttpStream>`.
            let mut request =
                self.request(LazyWriteBuffer::wrap(stream), None, Some(first), shutdown);
            loop {
                let (mut stream, settings) = request.await?.consume();
                let first = if settings.is_some() {
                    Some(self.first_bytes(&mut stream).await?)
                } else {
                    // Nothing carried over: Pingora's loop reads this request itself too.
                    None
                };
                request = self.request(stream, settings, first, shutdown);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::GracefulApp;
    use crate::public_tls::TlsTerminate;

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

    /// What an idle keep-alive connection holds besides Pingora's stream is two futures: the
    /// connection's task and this loop's (the TLS wrapper hands a handshaken or plain
    /// connection's future straight through, adding none); each stays small. Growth here is
    /// memory on every idle connection (bench/proxy's idle step): typically a large future
    /// awaited inline (a TLS handshake, a session made in the loop itself, a timer).
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

        // Measured (Rust 1.9x, tokio 1.54, Pingora 0.9.1, debug build): 248 and 152 bytes.
        // The loop's future is allocated on its own (mimalloc's size classes: 224, 256, 320):
        // above 256 bytes an idle connection pays 64 more (it was 488, a 512-byte block). The
        // task's is inside tokio's task cell, which is 128-byte aligned and adds ~100 bytes:
        // up to ~150 bytes of future it is 256 bytes, above that 384.
        assert!(
            keepalive_size <= 256,
            "keep-alive loop: {keepalive_size} bytes"
        );
        assert_eq!(tls_size, keepalive_size, "the TLS wrapper added a future");
        assert!(task_size <= 160, "connection task: {task_size} bytes");
    }
}
