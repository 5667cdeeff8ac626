use super::*;

fn set(lb: LoadBalancing, weights: &[u32]) -> Arc<UpstreamSet> {
    let specs = weights
        .iter()
        .enumerate()
        .map(|(i, w)| UpstreamSpec {
            address: format!("127.0.0.1:{}", 1000 + i),
            deployment_id: format!("d{i}"),
            weight: *w,
        })
        .collect();
    let ups = validate_upstreams(specs).unwrap();
    Arc::new(UpstreamSet::new(
        "s".into(),
        1,
        ups,
        lb,
        HealthCheckSpec::default(),
        true,
        Default::default(),
    ))
}

fn port(u: &Arc<Upstream>) -> u16 {
    u.addr.port()
}

#[test]
fn round_robin_follows_weights_and_skips_unhealthy() {
    let s = set(LoadBalancing::RoundRobin, &[1, 2, 1]);
    let picks: Vec<u16> = (0..8).map(|_| port(&s.pick(&[]).unwrap())).collect();
    assert_eq!(picks, [1000, 1001, 1001, 1002, 1000, 1001, 1001, 1002]);
    s.upstreams[1].eject();
    let picks: Vec<u16> = (0..4).map(|_| port(&s.pick(&[]).unwrap())).collect();
    assert!(!picks.contains(&1001), "{picks:?}");
    s.upstreams[0].eject();
    s.upstreams[2].eject();
    assert!(s.pick(&[]).is_none());
}

#[test]
fn least_connections_prefers_the_idle_upstream() {
    let s = set(LoadBalancing::LeastConnections, &[1, 1]);
    let busy = UpstreamGuard::new(s.upstreams[0].clone());
    assert_eq!(port(&s.pick(&[]).unwrap()), 1001);
    drop(busy);
    let _a = UpstreamGuard::new(s.upstreams[1].clone());
    assert_eq!(port(&s.pick(&[]).unwrap()), 1000);
}

#[test]
fn tried_upstreams_are_skipped_for_retries() {
    let s = set(LoadBalancing::RoundRobin, &[1, 1]);
    let tried = [s.upstreams[0].addr];
    for _ in 0..4 {
        assert_eq!(port(&s.pick(&tried).unwrap()), 1001);
    }
}

#[test]
fn admission_counts_in_flight_and_is_refused_after_retirement() {
    let s = set(LoadBalancing::RoundRobin, &[1]);
    let g = s.admit().unwrap();
    assert_eq!(s.in_flight(), 1);
    s.retire();
    assert!(s.admit().is_none());
    assert_eq!(s.in_flight(), 1, "a refused admission gives its slot back");
    drop(g);
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn bad_upstreams_are_refused() {
    let bad = |a: &str| UpstreamSpec {
        address: a.into(),
        deployment_id: String::new(),
        weight: 0,
    };
    assert_eq!(
        validate_upstreams(vec![bad("localhost:80")]),
        Err(UpstreamError::InvalidAddress {
            address: "localhost:80".into()
        })
    );
    assert!(matches!(
        validate_upstreams(vec![bad("127.0.0.1:80"), bad("127.0.0.1:80")]),
        Err(UpstreamError::Duplicate { .. })
    ));
    assert_eq!(
        validate_upstreams(vec![bad("127.0.0.1:80")]).unwrap()[0]
            .0
            .weight,
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_drain_wakes_when_the_last_request_ends() {
    let s = set(LoadBalancing::RoundRobin, &[1]);
    let (a, b) = (s.admit().unwrap(), s.admit().unwrap());
    s.retire();
    let start = tokio::time::Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        drop(a);
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        drop(b);
    });
    assert!(
        s.wait_drained(start + std::time::Duration::from_secs(30))
            .await
    );
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(3));
    assert_eq!(s.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_drain_gives_up_at_its_deadline() {
    let s = set(LoadBalancing::RoundRobin, &[1]);
    let guard = s.admit().unwrap();
    let start = tokio::time::Instant::now();
    assert!(
        !s.wait_drained(start + std::time::Duration::from_secs(2))
            .await
    );
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(2));
    drop(guard);
    assert!(
        s.wait_drained(tokio::time::Instant::now()).await,
        "drained now"
    );
}

/// A set whose upstreams start unhealthy, as a switch's new set does.
fn unhealthy_set(n: usize) -> Arc<UpstreamSet> {
    let specs = (0..n)
        .map(|i| UpstreamSpec {
            address: format!("127.0.0.1:{}", 2000 + i),
            deployment_id: format!("d{i}"),
            weight: 1,
        })
        .collect();
    Arc::new(UpstreamSet::new(
        "s".into(),
        2,
        validate_upstreams(specs).unwrap(),
        LoadBalancing::RoundRobin,
        HealthCheckSpec::default(),
        false,
        Default::default(),
    ))
}

#[tokio::test(start_paused = true)]
async fn a_health_wait_wakes_when_the_last_upstream_turns_healthy() {
    let s = unhealthy_set(2);
    let spec = HealthCheckSpec::default();
    let start = tokio::time::Instant::now();
    let checker = Arc::clone(&s);
    tokio::spawn(async move {
        // Two passes each (the default threshold): one upstream after 1 s, the other after 3 s.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        checker.upstreams[0].observe(true, &spec);
        checker.upstreams[0].observe(true, &spec);
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        checker.upstreams[1].observe(true, &spec);
        assert!(!checker.all_healthy(), "one pass is below the threshold");
        checker.upstreams[1].observe(true, &spec);
    });
    assert!(
        s.wait_healthy(start + std::time::Duration::from_secs(30))
            .await
    );
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_health_wait_gives_up_at_its_deadline() {
    let s = unhealthy_set(2);
    let spec = HealthCheckSpec::default();
    s.upstreams[0].observe(true, &spec);
    s.upstreams[0].observe(true, &spec);
    let start = tokio::time::Instant::now();
    assert!(
        !s.wait_healthy(start + std::time::Duration::from_secs(2))
            .await
    );
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(2));
    s.upstreams[1].observe(true, &spec);
    s.upstreams[1].observe(true, &spec);
    assert!(
        s.wait_healthy(tokio::time::Instant::now()).await,
        "healthy now"
    );
}
