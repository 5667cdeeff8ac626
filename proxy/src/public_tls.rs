//! The public TLS listener's handshake, done by us with Pingora's own acceptor
//! ([`Acceptor::from_server_config`]) around the proxy app, because Pingora's `TlsSettings`
//! builds its rustls config itself and offers no way to set a ticketer: the listener is a plain
//! TCP one and [`TlsTerminate`] turns its connections into Pingora's `TlsStream` exactly as
//! Pingora's own listener would (same ALPN, digests, h2 selection).
//!
//! The rustls config: TLS 1.2 and 1.3, certificates by SNI from the certificate table, ALPN
//! h2 then http/1.1, session tickets from [`crate::tickets`] (shared across instances) and
//! 0-RTT off.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::Stream;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::server::ShutdownWatch;
use rustls::server::{ProducesTickets, ResolvesServerCert};

use crate::tickets::{SharedTicketer, TicketKeys, TicketSettings};

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The public listener's rustls config. `tickets` = keys shared through the store; `None` =
/// rustls' own in-memory ticketer.
pub fn server_config(
    certificates: Arc<dyn ResolvesServerCert>,
    tickets: Option<(Arc<TicketKeys>, TicketSettings)>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS12,
        &rustls::version::TLS13,
    ])
    .with_no_client_auth()
    .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // No 0-RTT: early data can be replayed.
    config.max_early_data_size = 0;
    config.ticketer = match tickets {
        Some((keys, settings)) => {
            Arc::new(SharedTicketer::new(keys, settings)) as Arc<dyn ProducesTickets>
        }
        None => rustls::crypto::ring::Ticketer::new()?,
    };
    Ok(config)
}

/// Wraps the proxy app: a connection to `tls_port` is handshaken first.
pub struct TlsTerminate<A> {
    inner: Arc<A>,
    acceptor: Acceptor,
    tls_port: u16,
}

impl<A> std::fmt::Debug for TlsTerminate<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTerminate")
            .field("tls_port", &self.tls_port)
            .finish_non_exhaustive()
    }
}

impl<A> TlsTerminate<A> {
    pub fn new(inner: A, config: rustls::ServerConfig, tls_port: u16) -> Self {
        Self {
            inner: Arc::new(inner),
            acceptor: Acceptor::from_server_config(Arc::new(config)),
            tls_port,
        }
    }
}

fn local_port(stream: &Stream) -> Option<u16> {
    let digest = stream.get_socket_digest()?;
    Some(digest.local_addr()?.as_inet()?.port())
}

impl<A: ServerApp + Send + Sync + 'static> TlsTerminate<A> {
    /// Handshakes a new connection to the TLS port; the handshaken stream goes back to the
    /// caller, which hands it to [`ServerApp::process_new`] again (its contract for a stream
    /// to serve further). `None`: the handshake failed.
    async fn handshake(self: Arc<Self>, stream: Stream) -> Option<Stream> {
        let l4 = match stream.into_any().downcast::<L4Stream>() {
            Ok(l4) => l4,
            Err(_) => {
                tracing::error!("a TLS listener connection is not a TCP stream");
                return None;
            }
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.tls_handshake(*l4)).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                None
            }
            Err(_) => None,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for TlsTerminate<A> {
    /// Written out (not `async`) so that a connection being served is the inner app's future
    /// alone: a wrapper future around it would be one more allocation held by every idle
    /// connection. The handshake's future (large) is its own, freed once it is done.
    fn process_new<'life0, 'life1, 'async_trait>(
        self: &'life0 Arc<Self>,
        stream: Stream,
        shutdown: &'life1 ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<Stream>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        // A kept-alive TLS connection comes back already handshaken.
        if stream.get_ssl_digest().is_some() || local_port(&stream) != Some(self.tls_port) {
            return self.inner.process_new(stream, shutdown);
        }
        Box::pin(Arc::clone(self).handshake(stream))
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
