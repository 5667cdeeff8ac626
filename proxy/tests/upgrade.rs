//! Graceful restart: a new binary takes the listening sockets over through Pingora's fd
//! handover while clients keep requesting (a new connection per request, and many keep-alive
//! connections); no request fails, routes survive, and the old process exits as soon as its
//! last connection is answered. The same drain serves a plain shutdown (SIGTERM): HTTP/1
//! requests in flight are answered with `Connection: close`, h2 streams finish after GOAWAY.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::{Backend, ProxyProcess, get};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_upgrade_loses_no_request() -> anyhow::Result<()> {
    let app = Backend::start("app").await;
    let dir = std::env::temp_dir().join(stackpad_tests::unique_name("proxy-upgrade-cfg"));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, r#"{"grace_period_secs": 2}"#)?;
    let result = async {
        let mut proxy = ProxyProcess::start_with(&["--config", cfg.to_str().unwrap()]).await?;
        let mut admin = proxy.admin().await?;
        admin.route("app", &["upgrade.test"], "", "svc").await?;
        admin.switch("svc", &[&app], 0).await?;
        drop(admin);

        // New connection per request, as many clients would: each must be accepted by one
        // of the two processes.
        let http = proxy.http;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let load = {
            let (stop, done) = (stop.clone(), done.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let req = b"GET / HTTP/1.1\r\nHost: upgrade.test\r\nConnection: close\r\n\r\n";
                    let outcome = common::raw(http, req, Duration::from_secs(5)).await;
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    match outcome {
                        Ok(r) if r.starts_with("HTTP/1.1 200") => ok += 1,
                        Ok(r) => {
                            failed.push(r.lines().next().unwrap_or("empty response").to_owned())
                        }
                        Err(e) => failed.push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (ok, failed)
            })
        };
        // Requests flow before, during and after the hand-over.
        let more = |n: u32| {
            let done = done.clone();
            async move {
                let want = done.load(std::sync::atomic::Ordering::SeqCst) + n;
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while done.load(std::sync::atomic::Ordering::SeqCst) < want {
                    anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "the load made no progress in 10 s"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                anyhow::Ok(())
            }
        };
        more(30).await?;
        let _ = proxy.graceful_upgrade().await?;
        more(30).await?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, failed) = load.await?;
        assert!(
            failed.is_empty(),
            "{} of {} requests failed: {:?}",
            failed.len(),
            ok as usize + failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert!(ok > 50, "only {ok} requests");
        // The new process serves the routes from the state file, and its admin API answers.
        assert_eq!(get(&proxy, "upgrade.test", "/").await?, (200, "app".into()));
        let mut admin = proxy.admin().await?;
        let list = admin
            .client
            .list_routes(common::authed(proto::proxy::v1::ListRoutesRequest {}))
            .await?;
        assert_eq!(list.into_inner().routes.len(), 1);
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// What one keep-alive client saw.
#[derive(Debug, Default)]
struct ClientRun {
    ok: u32,
    failed: Vec<String>,
    /// When each response carrying `Connection: close` arrived.
    closes: Vec<Instant>,
}

/// Reads one response (status line, headers, Content-Length body): its status and whether it
/// carried `Connection: close`.
async fn read_response(conn: &mut BufReader<TcpStream>) -> anyhow::Result<(u16, bool)> {
    let mut line = String::new();
    anyhow::ensure!(
        conn.read_line(&mut line).await? > 0,
        "connection closed before the response"
    );
    let status = line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let (mut length, mut close) = (None, false);
    loop {
        line.clear();
        anyhow::ensure!(conn.read_line(&mut line).await? > 0, "closed in the head");
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').context("header without a colon")?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>()?);
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let mut body = vec![0; length.context("response without Content-Length")?];
    conn.read_exact(&mut body).await?;
    Ok((status, close))
}

/// Sends `GET path` again and again on one keep-alive connection until `stop`, opening a new
/// connection only when the proxy answered with `Connection: close`, as HTTP clients do. Any
/// request without a response is a failure.
async fn keep_alive_client(addr: SocketAddr, path: String, stop: Arc<AtomicBool>) -> ClientRun {
    let mut run = ClientRun::default();
    let mut conn: Option<BufReader<TcpStream>> = None;
    let request = format!("GET {path} HTTP/1.1\r\nHost: upgrade.test\r\n\r\n");
    while !stop.load(Ordering::Relaxed) {
        let outcome = tokio::time::timeout(Duration::from_secs(5), async {
            let c = match &mut conn {
                Some(c) => c,
                None => conn.insert(BufReader::new(TcpStream::connect(addr).await?)),
            };
            c.get_mut().write_all(request.as_bytes()).await?;
            read_response(c).await
        })
        .await;
        match outcome {
            Ok(Ok((200, close))) => {
                run.ok += 1;
                if close {
                    run.closes.push(Instant::now());
                    conn = None;
                }
            }
            Ok(Ok((status, _))) => {
                run.failed.push(format!("status {status}"));
                conn = None;
            }
            Ok(Err(e)) => {
                run.failed.push(e.to_string());
                conn = None;
            }
            Err(_) => {
                run.failed.push("no response in 5 s".into());
                conn = None;
            }
        }
    }
    run
}

/// Starts `n` keep-alive clients; every other one asks for a response that takes 150 ms, so
/// requests are in flight when the old process is told to go.
fn start_clients(
    addr: SocketAddr,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<ClientRun>> {
    (0..n)
        .map(|i| {
            let path = if i % 2 == 0 { "/" } else { "/slow?ms=150" };
            tokio::spawn(keep_alive_client(addr, path.into(), stop.clone()))
        })
        .collect()
}

async fn stop_clients(
    stop: &AtomicBool,
    clients: Vec<tokio::task::JoinHandle<ClientRun>>,
) -> anyhow::Result<ClientRun> {
    stop.store(true, Ordering::Relaxed);
    let mut all = ClientRun::default();
    for c in clients {
        let run = c.await?;
        all.ok += run.ok;
        all.failed.extend(run.failed);
        all.closes.extend(run.closes);
    }
    Ok(all)
}

/// A proxy with a 10 s grace period in front of one backend on `upgrade.test`.
async fn proxy_with_grace(dir: &std::path::Path, app: &Backend) -> anyhow::Result<ProxyProcess> {
    std::fs::create_dir_all(dir)?;
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, r#"{"grace_period_secs": 10}"#)?;
    let proxy = ProxyProcess::start_with(&["--config", cfg.to_str().unwrap()]).await?;
    let mut admin = proxy.admin().await?;
    admin.route("app", &["upgrade.test"], "", "svc").await?;
    admin.switch("svc", &[app], 0).await?;
    Ok(proxy)
}

const CLIENTS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_upgrade_under_keep_alive_load_fails_no_request() -> anyhow::Result<()> {
    let app = Backend::start("app").await;
    let dir = std::env::temp_dir().join(stackpad_tests::unique_name("proxy-upgrade-ka"));
    let result = async {
        let mut proxy = proxy_with_grace(&dir, &app).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let clients = start_clients(proxy.http, CLIENTS, &stop);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let before = app.requests();
        let upgrade = proxy.graceful_upgrade().await?;
        // Load on the new process for a while.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let run = stop_clients(&stop, clients).await?;
        assert!(
            run.failed.is_empty(),
            "{} of {} requests failed: {:?}",
            run.failed.len(),
            run.ok as usize + run.failed.len(),
            &run.failed[..run.failed.len().min(5)]
        );
        assert!(before > CLIENTS as u64, "only {before} requests before");
        // Every connection of the old process ended with a response saying so.
        assert!(
            run.closes.len() >= CLIENTS,
            "{} responses with Connection: close for {CLIENTS} connections",
            run.closes.len()
        );
        let last = *run.closes.iter().max().unwrap();
        let after_last = upgrade.exited.saturating_duration_since(last);
        assert!(
            after_last < Duration::from_secs(1),
            "the old process exited {after_last:?} after its last response"
        );
        // Pingora keeps accepting in the old process for a fixed 5 s after handing the
        // sockets over (its CLOSE_TIMEOUT), then the drain starts; the grace period is 10 s.
        let took = upgrade.exited - upgrade.signalled;
        assert!(
            took < Duration::from_secs(5 + 2),
            "the old process took {took:?} to exit (grace period 10 s)"
        );
        eprintln!(
            "{} requests, {} connections closed by the old process, exited {:?} after SIGQUIT and {after_last:?} after its last response",
            run.ok,
            run.closes.len(),
            took
        );
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shutdown_answers_requests_in_flight_and_closes_idle_connections() -> anyhow::Result<()> {
    let app = Backend::start("app").await;
    let dir = std::env::temp_dir().join(stackpad_tests::unique_name("proxy-shutdown-ka"));
    let result = async {
        let mut proxy = proxy_with_grace(&dir, &app).await?;
        // Idle keep-alive connections: one request answered, then nothing.
        let mut idle = Vec::new();
        for _ in 0..8 {
            let mut c = BufReader::new(TcpStream::connect(proxy.http).await?);
            c.get_mut()
                .write_all(b"GET / HTTP/1.1\r\nHost: upgrade.test\r\n\r\n")
                .await?;
            assert_eq!(read_response(&mut c).await?, (200, false));
            idle.push(c);
        }
        // Requests in flight: each takes 600 ms.
        let mut busy = Vec::new();
        for _ in 0..4 {
            let mut c = BufReader::new(TcpStream::connect(proxy.http).await?);
            c.get_mut()
                .write_all(b"GET /slow?ms=600 HTTP/1.1\r\nHost: upgrade.test\r\n\r\n")
                .await?;
            busy.push(tokio::spawn(async move {
                let r = read_response(&mut c).await;
                (r, Instant::now())
            }));
        }
        // HTTP/2 (h2c): streams in flight on one connection.
        let (sender, h2_conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(TcpStream::connect(proxy.http).await?),
        )
        .await?;
        let h2_conn = tokio::spawn(h2_conn);
        let mut streams = Vec::new();
        for _ in 0..4 {
            let mut sender = sender.clone();
            let req = hyper::Request::get("http://upgrade.test/slow?ms=600")
                .body(http_body_util::Empty::<bytes::Bytes>::new())?;
            streams.push(tokio::spawn(async move {
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                let body = http_body_util::BodyExt::collect(resp.into_body()).await?;
                anyhow::Ok((status, body.to_bytes(), Instant::now()))
            }));
        }
        drop(sender);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped = proxy.terminate().await?;
        let mut last = stopped.signalled;
        for b in busy {
            let (response, at) = b.await?;
            assert_eq!(
                response?,
                (200, true),
                "a request in flight is answered, closing"
            );
            last = last.max(at);
        }
        for s in streams {
            let (status, body, at) = s.await??;
            assert_eq!(
                (status, &body[..]),
                (200, &b"app"[..]),
                "an h2 stream in flight"
            );
            last = last.max(at);
        }
        // GOAWAY, then the connection ends cleanly once its streams are done.
        tokio::time::timeout(Duration::from_secs(1), h2_conn)
            .await
            .context("the h2 connection stayed open")??
            .context("the h2 connection ended with an error")?;
        for mut c in idle {
            let mut buf = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(1), c.read(&mut buf))
                .await
                .context("an idle connection stayed open")?;
            assert!(matches!(n, Ok(0) | Err(_)), "an idle connection got bytes");
        }
        let after_last = stopped.exited.saturating_duration_since(last);
        assert!(
            after_last < Duration::from_secs(1),
            "the proxy exited {after_last:?} after its last response (grace period 10 s)"
        );
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
