//! Active health checks with thresholds, passive ejection with retry on connect failure, and a
//! switch to an unhealthy set that is refused while traffic keeps flowing to the old one.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Backend, ProxyProcess, authed, get};
use proto::proxy::v1 as pb;

async fn wait_for(
    proxy: &ProxyProcess,
    host: &str,
    want: u16,
    within: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let (status, _) = get(proxy, host, "/").await?;
        if status == want {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < within,
            "no {want} within {within:?} (last {status})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_to_an_unhealthy_set_is_refused_and_traffic_stays() -> anyhow::Result<()> {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    green.healthy.store(false, Ordering::SeqCst);
    let proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;
    admin.route("app", &["health.test"], "", "svc").await?;
    admin.switch("svc", &[&blue], 0).await?;

    let req = pb::SwitchRequest {
        service_id: "svc".into(),
        upstreams: vec![common::upstream(&green)],
        health_timeout_ms: 500,
        health_check: Some(common::fast_health()),
        ..Default::default()
    };
    let started = Instant::now();
    let err = admin.client.switch(authed(req)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(
        err.message().contains(&green.addr.to_string())
            && err.message().contains("routing unchanged"),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    for _ in 0..20 {
        assert_eq!(get(&proxy, "health.test", "/").await?, (200, "blue".into()));
    }
    assert_eq!(green.requests(), 0);
    let list = admin
        .client
        .list_routes(authed(pb::ListRoutesRequest {}))
        .await?
        .into_inner();
    assert_eq!(list.services[0].active[0].address, blue.addr.to_string());
    assert_eq!(list.services[0].generation, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_checks_eject_and_passing_checks_restore() -> anyhow::Result<()> {
    let blue = Backend::start("blue").await;
    let proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;
    admin.route("app", &["eject.test"], "", "svc").await?;
    // 20 ms interval, 2 failures to eject, 2 passes to come back.
    admin.switch("svc", &[&blue], 0).await?;
    assert_eq!(get(&proxy, "eject.test", "/").await?.0, 200);

    blue.healthy.store(false, Ordering::SeqCst);
    let took = wait_for(&proxy, "eject.test", 503, Duration::from_secs(3)).await?;
    assert!(
        took >= Duration::from_millis(15),
        "ejected after {took:?}: fewer than 2 failed checks"
    );
    blue.healthy.store(true, Ordering::SeqCst);
    let took = wait_for(&proxy, "eject.test", 200, Duration::from_secs(3)).await?;
    assert!(
        took >= Duration::from_millis(15),
        "restored after {took:?}: fewer than 2 passed checks"
    );
    let metrics = reqwest_free_metrics(&proxy).await?;
    assert!(
        metrics.contains(&format!(
            "stackpad_proxy_upstream_healthy{{service=\"svc\",upstream=\"{}\",state=\"active\"}} 1",
            blue.addr
        )),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_ejected_and_its_requests_retried_elsewhere() -> anyhow::Result<()> {
    let blue = Backend::start("blue").await;
    let dead = common::free_port(); // nothing listens there
    let proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;
    admin.route("app", &["retry.test"], "", "svc").await?;
    let req = pb::SwitchRequest {
        service_id: "svc".into(),
        upstreams: vec![
            pb::Upstream {
                address: format!("127.0.0.1:{dead}"),
                deployment_id: "dead".into(),
                weight: 1,
            },
            common::upstream(&blue),
        ],
        skip_health_wait: true, // both start healthy: the dead one is found out by traffic
        health_check: Some(pb::HealthCheck {
            interval_ms: 60_000,
            ..common::fast_health()
        }),
        ..Default::default()
    };
    admin.client.switch(authed(req)).await?;
    for i in 0..20 {
        assert_eq!(
            get(&proxy, "retry.test", "/").await?,
            (200, "blue".into()),
            "request {i}"
        );
    }
    let metrics = reqwest_free_metrics(&proxy).await?;
    assert!(
        metrics.contains("stackpad_proxy_passive_ejections_total 1"),
        "{metrics}"
    );
    Ok(())
}

async fn reqwest_free_metrics(proxy: &ProxyProcess) -> anyhow::Result<String> {
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        proxy.admin
    );
    common::raw(proxy.admin, req.as_bytes(), Duration::from_secs(3)).await
}

/// Drops every TCP packet to and from one loopback port (an nftables table of the test's own,
/// deleted on drop): the peer behind it goes silent as a killed node does, no reset ever comes.
struct Blackhole {
    table: String,
}

impl Blackhole {
    fn port(port: u16) -> anyhow::Result<Self> {
        let table = format!("stackpad_proxy_test_{port}");
        let script = format!(
            "add table inet {table}\n\
             add chain inet {table} input {{ type filter hook input priority -10; policy accept; }}\n\
             add rule inet {table} input tcp dport {port} drop\n\
             add rule inet {table} input tcp sport {port} drop\n"
        );
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("running nft (nftables, as root) failed: {e}"))?;
        std::io::Write::write_all(
            &mut child.stdin.take().expect("piped stdin"),
            script.as_bytes(),
        )?;
        let status = child.wait()?;
        let hole = Self { table };
        anyhow::ensure!(
            status.success(),
            "nft could not add the drop rules (root is needed)"
        );
        Ok(hole)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_to_an_upstream_gone_silent_is_retried_elsewhere() -> anyhow::Result<()>
{
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;
    admin.route("app", &["silent.test"], "", "svc").await?;
    let req = pb::SwitchRequest {
        service_id: "svc".into(),
        upstreams: vec![common::upstream(&blue), common::upstream(&green)],
        skip_health_wait: true,
        // Active checks out of the way: the silence is found out by the request's own connection.
        health_check: Some(pb::HealthCheck {
            interval_ms: 60_000,
            ..common::fast_health()
        }),
        ..Default::default()
    };
    admin.client.switch(authed(req)).await?;
    let arrived = |b: &Backend| b.seen.slow_arrived.load(Ordering::SeqCst);

    // A request that takes 1.5 s; its upstream goes silent while it is in flight.
    let started = Instant::now();
    let proxy_http = proxy.http;
    let request = tokio::spawn(async move {
        let req = "GET /slow?ms=1500 HTTP/1.1\r\nHost: silent.test\r\nConnection: close\r\n\r\n";
        common::raw(proxy_http, req.as_bytes(), Duration::from_secs(15)).await
    });
    let first = loop {
        if arrived(&blue) > 0 {
            break &blue;
        }
        if arrived(&green) > 0 {
            break &green;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3),
            "the request reached no upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let _hole = Blackhole::port(first.addr.port())?;
    let other = if first.name == "blue" { &green } else { &blue };

    let response = request.await??;
    let took = started.elapsed();
    assert!(
        response.starts_with("HTTP/1.1 200") && response.ends_with(&other.name),
        "the request was not answered by {} after {} went silent ({took:?}): {response:?}",
        other.name,
        first.name
    );
    // Silent for upstream_dead_after_ms (3 s by default), then 1.5 s on the other one.
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
    let metrics = reqwest_free_metrics(&proxy).await?;
    assert!(
        metrics.contains("stackpad_proxy_passive_ejections_total 1"),
        "{metrics}"
    );
    eprintln!("answered by the other upstream {took:?} after it was sent");
    Ok(())
}
