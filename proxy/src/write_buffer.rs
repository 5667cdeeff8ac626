//! A downstream connection's write buffer that exists only while a response is written.
//!
//! Pingora's L4 stream can buffer writes (so a response's head and a small body leave in one
//! `send`), but its buffer is allocated with the connection and kept for the connection's
//! whole life: ~1.5 KiB on every idle keep-alive connection. [`LazyWriteBuffer`] does the
//! same coalescing above Pingora's stream (whose own write buffer is then set to 0): the
//! buffer is allocated by the first small write and freed once flushed, so an idle
//! connection holds none. Over TLS it coalesces plaintext, so a small response is one TLS
//! record instead of one per write.
//!
//! The semantics are tokio's `BufWriter`'s, which Pingora's stream uses: writes smaller than
//! the buffer are copied into it, a write that would overflow it flushes it first, a write at
//! least as large as the buffer goes straight through, and `flush`/`shutdown` write out what
//! is buffered first.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The buffer's size while a response is written: one TCP segment, as Pingora's default.
pub const WRITE_BUFFER_BYTES: usize = 1460;

/// A stream whose write buffer is allocated only while something is buffered (module docs).
#[derive(Debug)]
pub struct LazyWriteBuffer {
    inner: Stream,
    /// Capacity 0 while nothing is buffered.
    buf: Vec<u8>,
}

impl LazyWriteBuffer {
    /// Wraps `stream` (whose own write buffer should be 0).
    pub fn wrap(stream: Stream) -> Stream {
        Box::new(Self {
            inner: stream,
            buf: Vec::new(),
        })
    }

    /// Writes out what is buffered, then frees the buffer.
    fn poll_flush_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut written = 0;
        let result = loop {
            if written == self.buf.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &self.buf[written..]) {
                Poll::Ready(Ok(0)) => {
                    break Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the connection took no more of the response",
                    )));
                }
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        if written == self.buf.len() {
            self.buf = Vec::new();
        } else {
            self.buf.drain(..written);
        }
        result
    }

    /// Room for `len` more bytes: flushes first when they would not fit. `Ready(true)` when
    /// they are to be buffered, `Ready(false)` when they are to go straight through.
    fn poll_make_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.buf.len() + len > WRITE_BUFFER_BYTES {
            ready!(self.poll_flush_buf(cx))?;
        }
        if len >= WRITE_BUFFER_BYTES {
            return Poll::Ready(Ok(false));
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(WRITE_BUFFER_BYTES);
        }
        Poll::Ready(Ok(true))
    }
}

impl AsyncRead for LazyWriteBuffer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for LazyWriteBuffer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if ready!(this.poll_make_room(cx, data.len()))? {
            this.buf.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        } else {
            Pin::new(&mut this.inner).poll_write(cx, data)
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let total = bufs.iter().map(|b| b.len()).sum();
        if ready!(this.poll_make_room(cx, total))? {
            for b in bufs {
                this.buf.extend_from_slice(b);
            }
            Poll::Ready(Ok(total))
        } else {
            Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush_buf(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush_buf(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for LazyWriteBuffer {
    async fn shutdown(&mut self) {
        // As Pingora's streams: errors are of no use at this point.
        let _ = std::future::poll_fn(|cx| self.poll_flush_buf(cx)).await;
        self.inner.shutdown().await;
    }
}

impl UniqueID for LazyWriteBuffer {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for LazyWriteBuffer {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for LazyWriteBuffer {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for LazyWriteBuffer {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for LazyWriteBuffer {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for LazyWriteBuffer {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair over loopback: Pingora's stream (write buffer 0 as the proxy sets
    /// it) wrapped, and the peer's plain socket.
    async fn pair() -> (Stream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let l4 = pingora::protocols::l4::stream::Stream::from(server);
        (LazyWriteBuffer::wrap(Box::new(l4)), peer)
    }

    fn buffered(stream: &Stream) -> (usize, usize) {
        let lazy = stream.as_any().downcast_ref::<LazyWriteBuffer>().unwrap();
        (lazy.buf.len(), lazy.buf.capacity())
    }

    #[tokio::test]
    async fn small_writes_wait_for_the_flush_and_the_buffer_is_freed() {
        let (mut stream, mut peer) = pair().await;
        assert_eq!(
            buffered(&stream),
            (0, 0),
            "no buffer before the first write"
        );
        stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        stream.write_all(b"hello").await.unwrap();
        assert_eq!(buffered(&stream).0, 24);
        let mut got = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(50), peer.read(&mut got)).await;
        assert!(early.is_err(), "bytes left before the flush");
        stream.flush().await.unwrap();
        assert_eq!(buffered(&stream), (0, 0), "the buffer outlived the flush");
        let mut got = [0u8; 24];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HTTP/1.1 200 OK\r\n\r\nhello");
    }

    #[tokio::test]
    async fn large_and_vectored_writes_keep_their_order() {
        let (mut stream, mut peer) = pair().await;
        let large = vec![b'x'; 3 * WRITE_BUFFER_BYTES];
        stream.write_all(b"head").await.unwrap();
        stream.write_all(&large).await.unwrap();
        let parts = [io::IoSlice::new(b"a"), io::IoSlice::new(b"bc")];
        let n = stream.write_vectored(&parts).await.unwrap();
        assert_eq!(n, 3);
        AsyncWriteExt::shutdown(&mut stream).await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        let mut want = b"head".to_vec();
        want.extend_from_slice(&large);
        want.extend_from_slice(b"abc");
        assert_eq!(got, want);
    }
}
