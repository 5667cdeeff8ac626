//! Each hardening rule with a raw-socket request: the proxy answers 4xx (and closes where the
//! framing is broken), and the backend sees nothing (for body framing: not one byte, counted
//! by a raw-socket backend).

mod common;

use std::time::Duration;

use common::raw_backend::RawBackend;
use common::{Backend, ProxyProcess, authed, raw};
use proto::proxy::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup(extra: &[&str]) -> anyhow::Result<(Backend, ProxyProcess)> {
    let app = Backend::start("app").await;
    let proxy = ProxyProcess::start_with(extra).await?;
    let mut admin = proxy.admin().await?;
    let route = pb::Route {
        route_id: "app".into(),
        hosts: vec!["h.test".into()],
        service_id: "svc".into(),
        max_body_bytes: 1_000,
        allow_plain_http: true,
        ..Default::default()
    };
    admin
        .client
        .upsert_route(authed(pb::UpsertRouteRequest { route: Some(route) }))
        .await?;
    admin.switch("svc", &[&app], 0).await?;
    Ok((app, proxy))
}

fn status(resp: &str) -> &str {
    resp.get(9..12).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_framing_gets_400_and_never_reaches_the_backend() -> anyhow::Result<()> {
    let (app, proxy) = setup(&[]).await?;
    let cases: [(&str, &str); 6] = [
        (
            "CL and TE",
            "POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "duplicate CL",
            "POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        ),
        (
            "CL list",
            "POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5, 5\r\n\r\nhello",
        ),
        (
            "invalid CL",
            "POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: abc\r\n\r\nhello",
        ),
        ("bare LF", "GET / HTTP/1.1\nHost: h.test\n\n"),
        (
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: h.test\r\nX-A: 1\r\n  continued\r\n\r\n",
        ),
    ];
    for (name, req) in cases {
        let resp = raw(proxy.http, req.as_bytes(), Duration::from_secs(3)).await?;
        assert_eq!(status(&resp), "400", "{name}: {resp:?}");
        assert_eq!(app.requests(), 0, "{name}: the backend saw the request");
    }
    // A well-formed request on the same route still passes.
    let resp = raw(
        proxy.http,
        b"GET / HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await?;
    assert_eq!(status(&resp), "200", "{resp}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_limits_give_431_and_body_limit_413() -> anyhow::Result<()> {
    let (app, proxy) = setup(&[]).await?;
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET / HTTP/1.1\r\nHost: h.test\r\n{many}\r\n");
    let resp = raw(proxy.http, req.as_bytes(), Duration::from_secs(3)).await?;
    assert_eq!(status(&resp), "431", "too many headers: {resp:?}");
    let big = "a".repeat(80 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: h.test\r\nX-Big: {big}\r\n\r\n");
    let resp = raw(proxy.http, req.as_bytes(), Duration::from_secs(3)).await?;
    assert_eq!(
        status(&resp),
        "431",
        "header too large: {:?}",
        &resp[..resp.len().min(200)]
    );
    let body = "b".repeat(2_000);
    let req = format!("POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: 2000\r\n\r\n{body}");
    let resp = raw(proxy.http, req.as_bytes(), Duration::from_secs(3)).await?;
    assert_eq!(status(&resp), "413", "body too large: {resp:?}");
    assert_eq!(app.requests(), 0, "the backend saw a refused request");
    // Chunked bodies are counted as they are read (the first 64 KiB before an upstream is
    // chosen): the proxy cuts them at the limit with 413.
    let chunk = format!("{:x}\r\n{}\r\n", 1_500, "c".repeat(1_500));
    let req = format!(
        "POST / HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}0\r\n\r\n"
    );
    let resp = raw(proxy.http, req.as_bytes(), Duration::from_secs(3)).await?;
    assert_eq!(status(&resp), "413", "chunked body too large: {resp:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_connections_are_cut() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(stackpad_tests::unique_name("proxy-cfg"));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("config.json");
    std::fs::write(
        &cfg,
        r#"{"header_read_timeout_ms": 500, "idle_timeout_ms": 1000, "body_read_timeout_ms": 1000}"#,
    )?;
    let result = async {
        let (app, proxy) = setup(&["--config", cfg.to_str().unwrap()]).await?;
        // Slowloris: the head trickles in for longer than the header-read timeout.
        let mut s = tokio::net::TcpStream::connect(proxy.http).await?;
        s.write_all(b"GET / HTTP/1.1\r\n").await?;
        tokio::time::sleep(Duration::from_millis(800)).await;
        s.write_all(b"Host: h.test\r\n\r\n").await?;
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut out)).await;
        assert_eq!(status(&out), "408", "slow header: {out:?}");
        assert_eq!(app.requests(), 0, "the backend saw the slow request");

        // An idle keep-alive connection is closed after the idle timeout.
        let mut s = tokio::net::TcpStream::connect(proxy.http).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: h.test\r\n\r\n")
            .await?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await?;
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        let started = std::time::Instant::now();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
        assert_eq!(n, 0, "idle connection got data");
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "closed too early: {:?}",
            started.elapsed()
        );

        // A body that stops arriving is cut after the body-read timeout.
        let mut s = tokio::net::TcpStream::connect(proxy.http).await?;
        s.write_all(b"POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: 10\r\n\r\nab")
            .await?;
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await?;
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "slow body held for {:?}",
            started.elapsed()
        );
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A route to a raw backend that records every byte it gets; bodies up to 1 MB.
async fn setup_raw() -> anyhow::Result<(RawBackend, ProxyProcess)> {
    let backend = RawBackend::start().await;
    let proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;
    let route = pb::Route {
        route_id: "raw".into(),
        hosts: vec!["h.test".into()],
        service_id: "raw".into(),
        max_body_bytes: 1_000_000,
        allow_plain_http: true,
        ..Default::default()
    };
    admin
        .client
        .upsert_route(authed(pb::UpsertRouteRequest { route: Some(route) }))
        .await?;
    let switch = pb::SwitchRequest {
        service_id: "raw".into(),
        upstreams: vec![pb::Upstream {
            address: backend.addr.to_string(),
            deployment_id: "raw".into(),
            weight: 1,
        }],
        health_timeout_ms: 5_000,
        health_check: Some(common::fast_health()),
        ..Default::default()
    };
    admin.client.switch(authed(switch)).await?;
    Ok((backend, proxy))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_body_framing_is_refused_before_any_byte_reaches_the_upstream() -> anyhow::Result<()>
{
    let (backend, proxy) = setup_raw().await?;
    let chunked = |body: &str| {
        format!("POST / HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
    };
    let cases = [
        ("chunk size not hex", chunked("zz\r\nhello\r\n0\r\n\r\n")),
        (
            "chunk size overflows",
            chunked("fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "chunk data longer than its size",
            chunked("5\r\nhello, world\r\n0\r\n\r\n"),
        ),
        (
            "garbage where the chunk's CRLF belongs",
            chunked("5\r\nhelloXX0\r\n\r\n"),
        ),
        (
            "a good chunk, then a broken one",
            chunked("5\r\nhello\r\nxyz\r\nabc\r\n0\r\n\r\n"),
        ),
        (
            "Content-Length and Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_owned(),
        ),
    ];
    for (name, req) in &cases {
        let resp = raw(proxy.http, req.as_bytes(), Duration::from_secs(3)).await?;
        assert_eq!(status(&resp), "400", "{name}: {resp:?}");
        assert_eq!(
            backend.bytes(),
            0,
            "{name}: the upstream received {:?}",
            backend.received()
        );
    }

    // A body longer than its Content-Length: the request is its first 5 bytes; the bytes
    // after it are dropped with the connection (Pingora does not pipeline), and none of them
    // goes upstream.
    let req = b"POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\n\r\nhelloGARBAGE\r\n\r\n";
    let started = std::time::Instant::now();
    let resp = raw(proxy.http, req, Duration::from_secs(5)).await?;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the connection stayed open after the extra bytes"
    );
    let got = backend.received();
    assert_eq!(got.requests.len(), 1, "{got:?}");
    assert_eq!(got.requests[0].1, b"hello");
    assert!(got.stray.is_empty(), "{got:?}");

    // Good chunked bodies pass whole: a small one, and one larger than the 64 KiB read before
    // the upstream is chosen (the part read ahead is sent first, then the rest).
    let resp = raw(
        proxy.http,
        chunked("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").as_bytes(),
        Duration::from_secs(3),
    )
    .await?;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    let parts: Vec<String> = (0..5u8)
        .map(|i| char::from(b'a' + i).to_string().repeat(40 * 1024))
        .collect();
    let body: String = parts
        .iter()
        .map(|p| format!("{:x}\r\n{p}\r\n", p.len()))
        .chain(["0\r\n\r\n".to_owned()])
        .collect();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
    );
    let resp = raw(proxy.http, req.as_bytes(), Duration::from_secs(5)).await?;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    let got = backend.received();
    assert_eq!(got.requests.len(), 3, "{got:?}");
    assert_eq!(got.requests[1].1, b"hello world");
    assert_eq!(
        got.requests[2].1,
        parts.concat().into_bytes(),
        "the large body arrived changed"
    );
    assert!(got.stray.is_empty());
    Ok(())
}
