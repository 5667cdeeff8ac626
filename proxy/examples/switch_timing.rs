//! Used by `bench/proxy/run`: the time of one switch on a running `stackpad-proxy`, from the
//! Switch call to the first response served by the new set, while a client keeps requesting
//! over one keep-alive connection (bench/proxy/run keeps wrk load on the proxy meanwhile);
//! prints the median and the 99th percentile.
//!
//! usage: switch_timing PROXY_HTTP ADMIN TOKEN HOST SERVICE FROM_ADDR TO_ADDR ROUNDS
//! The two backends must answer with different bodies.

use std::time::{Duration, Instant};

use anyhow::Context;
use proto::proxy::v1 as pb;
use proto::proxy::v1::proxy_admin_client::ProxyAdminClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn body_of(conn: &mut tokio::net::TcpStream, host: &str) -> anyhow::Result<String> {
    conn.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = conn.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "proxy closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .context("response without content-length")?;
            if body.len() >= len {
                return Ok(body[..len].to_owned());
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        a.len() == 8,
        "usage: switch_timing PROXY_HTTP ADMIN TOKEN HOST SERVICE FROM TO ROUNDS"
    );
    let (proxy, admin, token, host, service) = (&a[0], &a[1], &a[2], &a[3], &a[4]);
    let addrs = [a[5].clone(), a[6].clone()];
    let rounds: usize = a[7].parse()?;
    let mut client = ProxyAdminClient::connect(format!("http://{admin}")).await?;
    let switch = |to: &str| {
        let mut req = tonic::Request::new(pb::SwitchRequest {
            service_id: service.clone(),
            upstreams: vec![pb::Upstream {
                address: to.to_owned(),
                deployment_id: String::new(),
                weight: 1,
            }],
            skip_health_wait: true,
            drain_deadline_ms: 5_000,
            ..Default::default()
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    };
    client.switch(switch(&addrs[0])).await?;
    let mut totals = Vec::new();
    let mut swaps = Vec::new();
    let mut calls = Vec::new();
    for round in 0..rounds {
        let to = &addrs[(round + 1) % 2];
        let mut conn = tokio::net::TcpStream::connect(proxy).await?;
        conn.set_nodelay(true)?;
        let before = body_of(&mut conn, host).await?;
        // A client requesting back to back over one keep-alive connection notes when the
        // first response from the new set arrives.
        let host_owned = host.clone();
        let poller = tokio::spawn(async move {
            loop {
                let body = body_of(&mut conn, &host_owned).await?;
                if body != before {
                    return anyhow::Ok(Instant::now());
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
        let started = Instant::now();
        let out = client.switch(switch(to)).await?.into_inner();
        let call = started.elapsed();
        let first_new = tokio::time::timeout(Duration::from_secs(5), poller).await???;
        totals.push(first_new.saturating_duration_since(started));
        swaps.push(Duration::from_micros(out.swap_after_us));
        calls.push(call);
    }
    totals.sort();
    swaps.sort();
    calls.sort();
    let med = |v: &[Duration]| v[v.len() / 2].as_micros();
    // The nearest-rank 99th percentile: with 100 rounds or fewer, the slowest one.
    let p99 = |v: &[Duration]| v[(v.len() * 99).div_ceil(100).max(1) - 1].as_micros();
    println!(
        "switch: call -> first response from the new set median {} us, p99 {} us (swap inside the \
         proxy median {} us, p99 {} us; whole Switch call incl. state-file fsync and drain median \
         {} us, p99 {} us); {rounds} rounds",
        med(&totals),
        p99(&totals),
        med(&swaps),
        p99(&swaps),
        med(&calls),
        p99(&calls)
    );
    Ok(())
}
