//! Used by `bench/proxy/run` and `bench/tls/run`: the floor under stackpad-proxy. A minimal
//! Pingora proxy in the shape of the framework's load-balancer example (one fixed upstream, no
//! filters, no routing, metrics or hardening), built from the same Pingora version and with the
//! same profile and allocator (mimalloc, as the daemon's binary), so the bench splits the gap to
//! nginx into Pingora's part and ours.
//!
//! usage: bare_pingora LISTEN UPSTREAM [CERT KEY]
//! One worker thread; with CERT and KEY (PEM files) LISTEN is TLS (HTTP/1.1 and h2 by ALPN).
//! Runs until killed.

use async_trait::async_trait;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;

struct Bare {
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream, tls) = match args.as_slice() {
        [listen, upstream] => (listen, upstream, None),
        [listen, upstream, cert, key] => (listen, upstream, Some((cert, key))),
        _ => anyhow::bail!("usage: bare_pingora LISTEN UPSTREAM [CERT KEY]"),
    };
    let upstream = upstream
        .parse()
        .map_err(|e| anyhow::anyhow!("upstream {upstream:?}: {e}"))?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        // stackpad-proxy's default (`upstream_keepalive_pool_size`), so both keep the same
        // idle upstream connections.
        upstream_keepalive_pool_size: 512,
        daemon: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream });
    match tls {
        None => service.add_tcp(listen),
        Some((cert, key)) => {
            let mut settings = TlsSettings::intermediate(cert, key)
                .map_err(|e| anyhow::anyhow!("certificate {cert} / {key}: {e}"))?;
            settings.enable_h2();
            service.add_tls_with_settings(listen, None, settings);
        }
    }
    server.add_service(service);
    server.run_forever()
}
