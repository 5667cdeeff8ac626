//! Protocols through the proxy: gRPC over h2c on the plain listener, HTTP/1.1 and HTTP/2 (ALPN)
//! on the TLS listener, HTTP/1.1 keep-alive on both listeners, and server-sent events passed
//! through unbuffered.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backend, ProxyProcess, authed};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proto::proxy::v1 as pb;
use proto::proxy::v1::proxy_admin_client::ProxyAdminClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passes_through_over_h2c() -> anyhow::Result<()> {
    let proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;
    // The proxy's own admin listener is a real gRPC server: route to it through the proxy.
    admin.route("grpc", &["127.0.0.1"], "", "grpc-svc").await?;
    let req = pb::SwitchRequest {
        service_id: "grpc-svc".into(),
        upstreams: vec![pb::Upstream {
            address: proxy.admin.to_string(),
            deployment_id: "admin".into(),
            weight: 1,
        }],
        health_check: Some(pb::HealthCheck {
            path: String::new(),
            ..common::fast_health()
        }),
        ..Default::default()
    };
    admin.client.switch(authed(req)).await?;
    let mut through = ProxyAdminClient::connect(format!("http://{}", proxy.http)).await?;
    let list = through
        .list_routes(authed(pb::ListRoutesRequest {}))
        .await?
        .into_inner();
    assert_eq!(list.routes[0].route_id, "grpc");
    // gRPC errors travel in trailers: they must come through too.
    let err = through
        .list_routes(tonic::Request::new(pb::ListRoutesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_are_not_buffered() -> anyhow::Result<()> {
    let app = Backend::start("app").await;
    let proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;
    admin.route("sse", &["sse.test"], "", "svc").await?;
    admin.switch("svc", &[&app], 0).await?;
    let mut s = tokio::net::TcpStream::connect(proxy.http).await?;
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: sse.test\r\nAccept: text/event-stream\r\n\r\n")
        .await?;
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("data: 0") {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let first = started.elapsed();
    // The whole stream takes 600 ms; the first event must arrive well before that.
    assert!(
        first < Duration::from_millis(400),
        "first event after {first:?}: buffered"
    );
    while !String::from_utf8_lossy(&got).contains("data: 2") {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(started.elapsed() >= Duration::from_millis(550));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_http1_and_http2_by_alpn() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["tls.test".to_string()])?;
    let app = Backend::start("app").await;
    let tls_port = common::free_port();
    let dir = std::env::temp_dir().join(stackpad_tests::unique_name("proxy-tls"));
    std::fs::create_dir_all(&dir)?;
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem())?;
    std::fs::write(&key_file, cert.signing_key.serialize_pem())?;
    let tls_addr = format!("127.0.0.1:{tls_port}");
    let result = async {
        let proxy = ProxyProcess::start_with(&[
            "--https",
            &tls_addr,
            "--cert",
            cert_file.to_str().unwrap(),
            "--key",
            key_file.to_str().unwrap(),
        ])
        .await?;
        let mut admin = proxy.admin().await?;
        admin.route("tls", &["tls.test"], "", "svc").await?;
        admin.switch("svc", &[&app], 0).await?;

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone())?;
        let connect = |alpn: Vec<Vec<u8>>| {
            let mut config = rustls::ClientConfig::builder()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = alpn;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let addr = tls_addr.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await?;
                let name = rustls::pki_types::ServerName::try_from("tls.test")?;
                anyhow::Ok(connector.connect(name, tcp).await?)
            }
        };

        // HTTP/2 by ALPN.
        let tls = connect(vec![b"h2".to_vec(), b"http/1.1".to_vec()]).await?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let resp = sender
            .send_request(hyper::Request::get("https://tls.test/").body(Empty::<Bytes>::new())?)
            .await?;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.into_body().collect().await?.to_bytes(), "app");
        let proto_seen = app
            .seen
            .last_headers
            .lock()
            .unwrap()
            .iter()
            .find(|(k, _)| k == "x-forwarded-proto")
            .map(|(_, v)| v.clone());
        assert_eq!(proto_seen.as_deref(), Some("https"));

        // HTTP/1.1, kept alive over TLS and over the plain listener.
        let tls = connect(vec![b"http/1.1".to_vec()]).await?;
        keep_alive_requests(tls, "tls.test").await?;
        let plain = tokio::net::TcpStream::connect(proxy.http).await?;
        keep_alive_requests(plain, "tls.test").await?;
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Three requests on one keep-alive connection: the second comes after a pause, its head in
/// two writes (the proxy waits for the next request before it makes its session, and hands
/// what it read to the session, which reads the rest); the third closes the connection.
async fn keep_alive_requests<S>(mut stream: S, host: &str) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let first = read_response(&mut stream).await?;
    assert!(
        first.starts_with("HTTP/1.1 200") && first.ends_with("app"),
        "{first}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(b"GET /second HTTP/1.1\r\nHo").await?;
    stream.flush().await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream
        .write_all(format!("st: {host}\r\n\r\n").as_bytes())
        .await?;
    let second = read_response(&mut stream).await?;
    assert!(
        second.starts_with("HTTP/1.1 200") && second.ends_with("app"),
        "{second}"
    );
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut rest = String::new();
    let _ = stream.read_to_string(&mut rest).await;
    assert!(
        rest.starts_with("HTTP/1.1 200") && rest.ends_with("app"),
        "{rest}"
    );
    Ok(())
}

/// One response with a Content-Length, read whole.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> anyhow::Result<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| anyhow::anyhow!("no content-length: {text}"))?;
            if got.len() >= end + 4 + length {
                return Ok(text);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed before the response's end: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}
