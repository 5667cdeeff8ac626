//! The headline promise: switching a service between two real backends >= 100 times under
//! steady load loses no request, and every request started after a Switch returned is served
//! by the new set. Plus a websocket held open across a switch until the drain deadline.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backend, ProxyProcess};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOAD_TASKS: usize = 6;
const SWITCHES: usize = 100;

#[derive(Debug)]
struct Sample {
    start: Instant,
    outcome: Result<(u16, String), String>,
}

/// Waits until the load tasks have completed `n` more requests (at most 10 s).
async fn more_requests(done: &AtomicUsize, n: usize) -> anyhow::Result<()> {
    let want = done.load(Ordering::SeqCst) + n;
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::SeqCst) < want {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the load made no progress in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

async fn load(
    url: String,
    host: &'static str,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> Vec<Sample> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let req = hyper::Request::get(&url)
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        let outcome = match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await
        {
            Err(_) => Err("timed out".to_owned()),
            Ok(Err(e)) => Err(format!("{e:?}")),
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                match resp.into_body().collect().await {
                    Ok(body) => Ok((
                        status,
                        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                    )),
                    Err(e) => Err(format!("body: {e:?}")),
                }
            }
        };
        samples.push(Sample { start, outcome });
        done.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_switches_under_load_lose_no_request() -> anyhow::Result<()> {
    let mut blue = Backend::start("blue").await;
    let mut green = Backend::start("green").await;
    let proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;
    admin.route("app", &["switch.test"], "", "svc").await?;
    admin.switch("svc", &[&blue], 1_000).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..LOAD_TASKS)
        .map(|_| {
            let load = load(proxy.url("/"), "switch.test", stop.clone(), done.clone());
            tokio::spawn(load)
        })
        .collect();
    // The load is flowing before the first switch, between switches and after the last.
    more_requests(&done, LOAD_TASKS * 10).await?;

    // (call started, call returned, name of the new set)
    let mut switches: Vec<(Instant, Instant, String)> = Vec::new();
    let started = Instant::now();
    for i in 0..SWITCHES {
        let (to, from) = if i % 2 == 0 {
            (&mut green, &mut blue)
        } else {
            (&mut blue, &mut green)
        };
        if i >= 1 {
            to.restart().await; // it was stopped after the previous switch away from it
        }
        let call = Instant::now();
        let out = admin.switch("svc", &[to], 5_000).await?;
        let returned = Instant::now();
        assert_eq!(out.connections_closed_at_deadline, 0);
        switches.push((call, returned, to.name.clone()));
        // Like a deploy: once the switch returns, the old container is stopped.
        from.stop().await;
        more_requests(&done, LOAD_TASKS).await?;
    }
    let elapsed = started.elapsed();
    more_requests(&done, LOAD_TASKS * 10).await?;
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await?);
    }

    let errors: Vec<_> = samples
        .iter()
        .filter_map(|s| s.outcome.as_ref().err())
        .collect();
    let non_2xx: Vec<_> = samples
        .iter()
        .filter_map(|s| s.outcome.as_ref().ok())
        .filter(|(status, _)| !(200..300).contains(status))
        .collect();
    let rate = samples.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{} requests in {:.1} s ({rate:.0}/s) across {SWITCHES} switches",
        samples.len(),
        elapsed.as_secs_f64()
    );
    assert!(
        errors.is_empty(),
        "{} socket errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(
        non_2xx.is_empty(),
        "{} non-2xx responses, first: {:?}",
        non_2xx.len(),
        non_2xx.first()
    );
    assert!(rate >= 200.0, "the load was only {rate:.0} requests/s");

    // Every request started after a Switch returned (and before the next one began) was
    // served by the new set.
    let mut checked = 0;
    for (i, (_, returned, name)) in switches.iter().enumerate() {
        let next_call = switches.get(i + 1).map(|s| s.0);
        for s in &samples {
            if s.start >= *returned && next_call.is_none_or(|n| s.start < n) {
                let (_, body) = s.outcome.as_ref().unwrap();
                assert_eq!(
                    body, name,
                    "request started after switch {i} returned hit the old set"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > SWITCHES,
        "only {checked} requests fell between switches"
    );
    Ok(())
}

async fn read_until(
    s: &mut tokio::net::TcpStream,
    needle: &str,
    wait: Duration,
) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    while !String::from_utf8_lossy(&out).contains(needle) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf)).await??;
        anyhow::ensure!(
            n > 0,
            "closed before {needle:?}; got {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_keeps_working_across_a_switch_until_the_drain_deadline() -> anyhow::Result<()>
{
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;
    admin.route("app", &["ws.test"], "", "svc").await?;
    admin.switch("svc", &[&blue], 0).await?;

    let mut ws = tokio::net::TcpStream::connect(proxy.http).await?;
    ws.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await?;
    let head = read_until(&mut ws, "\r\n\r\n", Duration::from_secs(5)).await?;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    ws.write_all(b"one").await?;
    read_until(&mut ws, "blue:one", Duration::from_secs(5)).await?;

    let deadline = Duration::from_millis(1_500);
    let mut switcher = admin.clone();
    let green_up = common::upstream(&green);
    let switch = tokio::spawn(async move {
        let started = Instant::now();
        let req = proto::proxy::v1::SwitchRequest {
            service_id: "svc".into(),
            upstreams: vec![green_up],
            drain_deadline_ms: deadline.as_millis() as u32,
            health_timeout_ms: 5_000,
            health_check: Some(common::fast_health()),
            ..Default::default()
        };
        let out = switcher
            .client
            .switch(common::authed(req))
            .await
            .map(|r| r.into_inner());
        (out, started.elapsed())
    });
    // New requests go to green at once while the websocket stays on blue.
    let t0 = Instant::now();
    loop {
        let (status, body) = common::get(&proxy, "ws.test", "/").await?;
        assert_eq!(status, 200);
        if body == "green" {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(3),
            "new requests never reached green"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ws.write_all(b"two").await?;
    read_until(&mut ws, "blue:two", Duration::from_secs(1)).await?;
    assert!(
        !switch.is_finished(),
        "the switch returned while the websocket was still open"
    );

    let (out, took) = switch.await?;
    let out = out?;
    assert_eq!(out.connections_closed_at_deadline, 1, "{out:?}");
    assert!(
        took >= deadline,
        "returned after {took:?}, before the {deadline:?} deadline"
    );
    assert!(
        took < deadline + Duration::from_secs(3),
        "returned after {took:?}"
    );
    // The proxy closed the websocket at the deadline.
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), ws.read(&mut buf))
        .await?
        .unwrap_or(0);
    assert_eq!(n, 0, "websocket still open after the drain deadline");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switch_returns_as_soon_as_the_old_set_is_idle() -> anyhow::Result<()> {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;
    admin.route("app", &["idle.test"], "", "svc").await?;
    admin.switch("svc", &[&blue], 0).await?;
    assert_eq!(common::get(&proxy, "idle.test", "/").await?.1, "blue");
    let started = Instant::now();
    let out = admin.switch("svc", &[&green], 30_000).await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "idle old set held the switch {:?}",
        started.elapsed()
    );
    assert_eq!(out.previous[0].address, blue.addr.to_string());
    assert_eq!(out.generation, 2);
    assert_eq!(common::get(&proxy, "idle.test", "/").await?.1, "green");
    // Rollback is the same call.
    admin.switch("svc", &[&blue], 30_000).await?;
    assert_eq!(common::get(&proxy, "idle.test", "/").await?.1, "blue");
    Ok(())
}
