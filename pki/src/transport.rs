//! Daemon links under tonic: the accepted connections of a server (plain or TLS, handshakes off
//! the accept loop) and a connector for clients (TCP, then TLS).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};

use crate::PkiError;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One accepted connection.
#[derive(Debug)]
pub enum Conn {
    /// Plain text (a loopback listener without TLS).
    Plain(TcpStream),
    /// A client that passed the mTLS handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    /// The client's address.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp().peer_addr()
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.tcp().local_addr().ok(),
            remote_addr: self.tcp().peer_addr().ok(),
        }
    }
}

/// The connections a tonic server serves (`serve_with_incoming*`): plain, or those that passed
/// the handshake of `tls`. A refused handshake is logged and dropped; it never stops the server.
/// The listener is closed when the server drops the stream.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(32);
    tokio::spawn(async move {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let Some(acceptor) = &acceptor else {
                if tx.send(Ok(Conn::Plain(tcp))).await.is_err() {
                    return;
                }
                continue;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(Conn::Tls(Box::new(stream)))).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "tls handshake refused"),
                    Err(_) => tracing::info!(%peer, "tls handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The client config of each new connection, chosen when it is made (the identity expected of
/// the server may come from a database, the client certificate may have been renewed).
pub trait ClientConfigSource: Send + Sync {
    fn client_config(
        &self,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<ClientConfig>>> + Send + '_>>;
}

impl ClientConfigSource for Arc<ClientConfig> {
    fn client_config(
        &self,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<ClientConfig>>> + Send + '_>> {
        Box::pin(std::future::ready(Ok(self.clone())))
    }
}

/// Connects a tonic channel over TCP then TLS with a client config of [`crate::client_config`].
/// The URI's host is only the TCP destination: the certificate's identity is what is checked.
#[derive(Clone)]
pub struct TlsConnector {
    source: Arc<dyn ClientConfigSource>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConnector")
    }
}

impl TlsConnector {
    pub fn new(source: Arc<dyn ClientConfigSource>) -> Self {
        Self { source }
    }
}

type Connecting = Pin<
    Box<
        dyn Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send,
    >,
>;

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let source = self.source.clone();
        Box::pin(async move {
            let config = source.client_config().await?;
            let host = uri
                .host()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("{uri} has no host"))
                })?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// How often a channel pings its peer, and how long it waits for the answer before it fails the
/// connection (and the calls on it).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A lazily connected channel to a daemon: `https://` runs mTLS with `tls` (which it then needs),
/// `http://` plain text.
pub fn channel(
    address: &str,
    tls: Option<Arc<dyn ClientConfigSource>>,
    connect_timeout: Duration,
) -> Result<Channel, PkiError> {
    let endpoint = Endpoint::from_shared(address.to_owned())
        .map_err(|e| PkiError::invalid(format!("address {address:?}"), e))?
        .connect_timeout(connect_timeout)
        // A peer that vanished (a node killed, its WireGuard gone) answers nothing, not even a
        // reset: HTTP/2 pings fail its calls within seconds instead of TCP's minutes (#15).
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if address.starts_with("https://") {
        let tls = tls.ok_or_else(|| {
            PkiError::invalid(
                format!("address {address:?}"),
                "https needs the platform certificate (none configured)",
            )
        })?;
        Ok(endpoint.connect_with_connector_lazy(TlsConnector::new(tls)))
    } else if address.starts_with("http://") {
        Ok(endpoint.connect_lazy())
    } else {
        Err(PkiError::invalid(
            format!("address {address:?}"),
            "must start with http:// or https://",
        ))
    }
}
