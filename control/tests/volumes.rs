//! Service volumes (#14) through the API on a real PostgreSQL: stored and shown as given,
//! refused with the field named (and nothing stored) when they are bad, and sent to the node
//! agent with every deployment of the service (the real tonic client against an in-process
//! node agent); their figures on `/metrics` come from a cache a hung node cannot stall.

mod common;

use std::time::Duration;

use common::grpc_fakes::Daemons;
use common::{Harness, fake_clients, fakes::Fakes};
use serde_json::{Value, json};

const PROXY_TOKEN: &str = "proxy-admin-token";

fn volume(name: &str, path: &str, size: u64) -> Value {
    json!({ "name": name, "mount_path": path, "size_bytes": size })
}

async fn services(h: &Harness) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM services")
        .fetch_one(&h.store().pool)
        .await
        .unwrap()
}

/// Control on its own database with one node, `n1`, served by in-process gRPC fakes, and a
/// tenant of organization `org`; `tweak` adjusts the config before control starts.
struct WithNode {
    daemons: Daemons,
    config: control::config::Config,
    h: Harness,
    t: String,
}

async fn with_node(
    org: &str,
    tweak: impl FnOnce(&mut control::config::Config),
) -> anyhow::Result<WithNode> {
    let daemons = Daemons::default();
    let db = common::database().await?;
    let (mut config, address) = common::config_with_daemons(&db, &daemons, PROXY_TOKEN).await?;
    tweak(&mut config);
    let h = Harness::start_with(db, &config, control::daemon::grpc_clients(&config)).await?;
    h.register_node("n1", "compute", &address).await;
    let (_, t) = h.org(org).await;
    Ok(WithNode {
        daemons,
        config,
        h,
        t,
    })
}

/// A database service `name` with a 64 MiB volume `data` at /var/lib/data, deployed once
/// (ready); its id.
async fn deployed_with_volume(h: &Harness, t: &str, name: &str) -> String {
    let (_, service) = h
        .service(
            t,
            json!({ "name": name, "kind": "database", "image": "o/db:1",
                    "volumes": [volume("data", "/var/lib/data", 64 << 20)] }),
        )
        .await;
    let d = h.deploy(t, &service, json!({})).await;
    let v = h.wait_terminal(t, &d, Duration::from_secs(20)).await;
    assert_eq!(v["state"], "ready", "{v}");
    service
}

#[tokio::test]
async fn volumes_are_stored_and_bad_ones_are_refused_by_field() -> anyhow::Result<()> {
    let h = Harness::start(fake_clients(&Fakes::new())).await?;
    let (_, t) = h.org("vol-a").await;
    let data = volume("data", "/var/lib/data", 1 << 30);
    let (pid, id) = h
        .service(
            &t,
            json!({ "name": "db", "kind": "database", "image": "o/db:1", "volumes": [data] }),
        )
        .await;
    let (status, v) = h.call("GET", &format!("/services/{id}"), &t, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["volumes"], json!([data]), "{v}");

    let path = format!("/projects/{pid}/services");
    let gib = 1u64 << 30;
    let many: Vec<Value> = (0..9)
        .map(|i| volume(&format!("v{i}"), &format!("/v{i}"), gib))
        .collect();
    let cases = [
        (
            json!([volume("data", "data", gib)]),
            "volumes[0].mount_path",
        ),
        (
            json!([volume("data", "/srv/../etc", gib)]),
            "volumes[0].mount_path",
        ),
        (
            json!([volume("data", "/proc/self", gib)]),
            "volumes[0].mount_path",
        ),
        (
            json!([volume("data", "/dev", gib)]),
            "volumes[0].mount_path",
        ),
        (json!([volume("data", "/", gib)]), "volumes[0].mount_path"),
        (
            json!([volume("data", "/srv//x", gib)]),
            "volumes[0].mount_path",
        ),
        (
            json!([volume("data", "/data", 1 << 20)]),
            "volumes[0].size_bytes",
        ),
        (
            json!([volume("data", "/data", 4 << 40)]),
            "volumes[0].size_bytes",
        ),
        (json!([volume("Data_1", "/data", gib)]), "volumes[0].name"),
        (
            json!([volume("a", "/data", gib), volume("a", "/other", gib)]),
            "volumes[1].name",
        ),
        (
            json!([volume("a", "/data", gib), volume("b", "/data/sub", gib)]),
            "volumes[1].mount_path",
        ),
        (json!(many), "volumes"),
        (
            json!([{ "name": "a", "mount_path": "/a", "size_bytes": gib, "host_path": "/etc" }]),
            "",
        ),
    ];
    let before = services(&h).await;
    for (volumes, field) in cases {
        let body = json!({ "name": "bad", "image": "o/db:1", "volumes": volumes });
        let (status, v) = h.call("POST", &path, &t, Some(body)).await;
        assert!(status == 400 || status == 422, "{volumes}: {status} {v}");
        if !field.is_empty() {
            assert_eq!(v["error"]["field"], field, "{volumes}: {v}");
        }
    }
    assert_eq!(
        services(&h).await,
        before,
        "a refused service is not stored"
    );
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn every_deployment_of_a_service_with_volumes_carries_them_to_the_node() -> anyhow::Result<()>
{
    let WithNode { daemons, h, t, .. } = with_node("vol-b", |_| {}).await?;
    let service = deployed_with_volume(&h, &t, "db").await;
    let d = h.deploy(&t, &service, json!({})).await;
    let v = h.wait_terminal(&t, &d, Duration::from_secs(20)).await;
    assert_eq!(v["state"], "ready", "{v}");
    let rec = daemons.recorded();
    assert_eq!(rec.deploys.len(), 2);
    for deploy in &rec.deploys {
        assert_eq!(
            deploy.volumes,
            [proto::node::v1::Volume {
                name: "data".into(),
                mount_path: "/var/lib/data".into(),
                size_bytes: 64 << 20,
            }]
        );
    }
    // The first deployment's container went before (or while) the second started.
    let first = rec.deploys[0].workload.clone().unwrap().deployment_id;
    assert!(
        rec.removes.iter().any(|c| c.contains(&first)),
        "{:?}",
        rec.removes
    );
    h.stop().await;
    Ok(())
}

/// The test sweeps by itself: control's own housekeeping (a sweep every heartbeat interval)
/// runs once at start and not again within the test, or both sweeps could take a deletion (the
/// node asked twice) or the background one take it first (the test's finding none).
fn sweeps_only_by_the_test(config: &mut control::config::Config) {
    config.heartbeat_interval_ms = 600_000;
    config.node_down_after_ms = 1_200_000;
}

#[tokio::test]
async fn a_deleted_services_volumes_go_after_the_grace_period() -> anyhow::Result<()> {
    let WithNode {
        daemons,
        config,
        h,
        t,
    } = with_node("vol-c", sweeps_only_by_the_test).await?;
    let clients = control::daemon::grpc_clients(&config);
    let service = deployed_with_volume(&h, &t, "db").await;
    let (status, v) = h
        .call("DELETE", &format!("/services/{service}"), &t, None)
        .await;
    assert!((200..300).contains(&status), "{status} {v}");

    let pool = &h.store().pool;
    let days: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM delete_after - now())::float8 / 86400 FROM volume_deletions \
         WHERE service_id = $1::uuid",
    )
    .bind(&service)
    .fetch_one(pool)
    .await?;
    assert!((6.9..=7.0).contains(&days), "kept {days} days");
    // Within the grace period a sweep removes nothing.
    assert_eq!(control::volumes::sweep(&h.store(), &clients).await?, 0);
    assert!(daemons.recorded().volume_removals.is_empty());

    sqlx::query("UPDATE volume_deletions SET delete_after = now() - interval '1 second'")
        .execute(pool)
        .await?;
    assert_eq!(control::volumes::sweep(&h.store(), &clients).await?, 1);
    assert_eq!(
        daemons.recorded().volume_removals,
        [(service.clone(), String::new())]
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM volume_deletions")
        .fetch_one(pool)
        .await?;
    assert_eq!(left, 0);

    // With purge, the volumes go with the service.
    let purged = deployed_with_volume(&h, &t, "db2").await;
    let (status, v) = h
        .call(
            "DELETE",
            &format!("/services/{purged}?purge=true"),
            &t,
            None,
        )
        .await;
    assert!((200..300).contains(&status), "{status} {v}");
    assert_eq!(
        daemons.recorded().volume_removals.last(),
        Some(&(purged.clone(), String::new()))
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM volume_deletions")
        .fetch_one(pool)
        .await?;
    assert_eq!(left, 0);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn volumes_are_added_and_removed_after_create_and_kind_stays() -> anyhow::Result<()> {
    let WithNode {
        daemons,
        config,
        h,
        t,
    } = with_node("vol-d", sweeps_only_by_the_test).await?;
    let clients = control::daemon::grpc_clients(&config);
    let (_, service) = h
        .service(
            &t,
            json!({ "name": "app", "image": "o/app:1", "replicas": 2 }),
        )
        .await;
    let path = format!("/services/{service}");
    let d = h.deploy(&t, &service, json!({})).await;
    let v = h.wait_terminal(&t, &d, Duration::from_secs(20)).await;
    assert_eq!(v["state"], "ready", "{v}");
    let data = volume("data", "/var/lib/data", 64 << 20);
    let patch = |body: Value| {
        let (h, t, path) = (&h, &t, &path);
        async move { h.call("PATCH", path, t, Some(body)).await }
    };

    // Two replicas cannot share a volume: refused, naming what to send.
    let (status, v) = patch(json!({ "volumes": [data] })).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["field"], "volumes", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("replicas: 1"),
        "{v}"
    );
    let (status, v) = patch(json!({ "volumes": [data], "replicas": 1 })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["volumes"], json!([data]), "{v}");
    assert_eq!(v["replicas"], 1, "{v}");
    assert!(
        v["note"].as_str().unwrap().contains("next deployment"),
        "{v}"
    );
    // Applied at the next deployment: the node gets the volume with it, on one replica.
    let d = h.deploy(&t, &service, json!({})).await;
    let v = h.wait_terminal(&t, &d, Duration::from_secs(20)).await;
    assert_eq!(v["state"], "ready", "{v}");
    let last = daemons.recorded().deploys.last().cloned().unwrap();
    assert_eq!(last.volumes.len(), 1, "{last:?}");
    assert_eq!(last.volumes[0].mount_path, "/var/lib/data");

    // Kind and engine are what the service is: unchanged they pass, changed they are refused
    // saying what to do instead.
    let (status, v) = patch(json!({ "kind": "web" })).await;
    assert_eq!(status, 200, "{v}");
    for (field, value) in [("kind", "worker"), ("engine", "postgres")] {
        let (status, v) = patch(json!({ field: value })).await;
        assert_eq!(status, 422, "{field}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("fixed at create") && message.contains("backups restore --into"),
            "{message}"
        );
    }
    // A kept volume keeps its path and size; a left-out one needs the purge.
    let (status, v) =
        patch(json!({ "volumes": [volume("data", "/var/lib/data", 128 << 20)] })).await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (422, Some("volumes[0]")),
        "{v}"
    );
    let (status, v) = patch(json!({ "volumes": [] })).await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (422, Some("volumes")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("purge_volumes"),
        "{v}"
    );
    let (status, v) = patch(json!({ "purge_volumes": true })).await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (422, Some("purge_volumes")),
        "{v}"
    );
    let (_, kept) = h.call("GET", &path, &t, None).await;
    assert_eq!(kept["volumes"], json!([data]), "nothing changed: {kept}");

    let (status, v) = patch(json!({ "volumes": [], "purge_volumes": true })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["volumes"], json!([]), "{v}");
    let due: Vec<String> = sqlx::query_scalar(
        "SELECT volume_name FROM volume_deletions WHERE service_id = $1::uuid \
         AND delete_after <= now()",
    )
    .bind(&service)
    .fetch_all(&h.store().pool)
    .await?;
    assert_eq!(due, ["data"]);
    // The same name cannot come back while its old data is being deleted.
    let (status, v) = patch(json!({ "volumes": [data] })).await;
    assert_eq!(status, 409, "{v}");
    // The node monitor's sweep removes that one volume, not the service's others.
    assert_eq!(control::volumes::sweep(&h.store(), &clients).await?, 1);
    assert_eq!(
        daemons.recorded().volume_removals,
        [(service.clone(), "data".to_owned())]
    );
    let (status, v) = patch(json!({ "volumes": [data] })).await;
    assert_eq!(status, 200, "gone, so the name is free again: {v}");
    h.stop().await;
    Ok(())
}

/// The value of the `family` line naming `service` on a `/metrics` text.
fn gauge(text: &str, family: &str, service: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(service))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn volume_gauges_come_from_a_cache_a_hung_node_keeps_for_ten_intervals() -> anyhow::Result<()>
{
    let free = std::net::TcpListener::bind("127.0.0.1:0")?;
    let listen = free.local_addr()?;
    drop(free);
    let WithNode { daemons, h, t, .. } = with_node("vol-e", |config| {
        config.metrics_listen = Some(listen);
        // Refreshed every 200 ms: a silent node's figures stay 2 s.
        config.volume_metrics_interval_ms = 200;
    })
    .await?;
    let metrics = format!("http://{listen}/metrics");
    let service = deployed_with_volume(&h, &t, "db").await;
    let report = |used: u64| {
        *daemons.volumes.lock().unwrap() = vec![proto::node::v1::VolumeStatus {
            service_id: service.clone(),
            name: "data".into(),
            size_bytes: 64 << 20,
            used_bytes: used,
            held_by: "c1".into(),
        }];
    };
    // One scrape: how long it took and the (used, age) of the service's volume.
    let scrape = || async {
        let started = std::time::Instant::now();
        let text = reqwest::get(&metrics).await?.text().await?;
        let took = started.elapsed();
        let used = gauge(&text, "stackpad_control_volume_used_bytes", &service);
        let age = gauge(
            &text,
            "stackpad_control_volume_sample_age_seconds",
            &service,
        );
        anyhow::Ok((took, used.zip(age), text))
    };
    let until = |want: Option<f64>, what: &'static str| {
        let scrape = &scrape;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let (_, figures, text) = scrape().await?;
                if figures.map(|(used, _)| used) == want {
                    return anyhow::Ok(figures);
                }
                anyhow::ensure!(std::time::Instant::now() < deadline, "{what}: {text}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    report(4096);
    until(Some(4096.0), "the first figures").await?;

    // The node hangs (control bounds each ask by 5 s): scrapes answer at once with the last
    // figures, their age growing.
    daemons
        .volumes_hang
        .store(true, std::sync::atomic::Ordering::SeqCst);
    report(8192);
    let hung = std::time::Instant::now();
    let mut last_age = 0.0;
    while hung.elapsed() < Duration::from_millis(1200) {
        let (took, figures, text) = scrape().await?;
        assert!(took < Duration::from_millis(500), "a scrape took {took:?}");
        let (used, age) = figures.unwrap_or_else(|| panic!("figures gone early: {text}"));
        assert_eq!(used, 4096.0, "{text}");
        assert!(age >= last_age, "age {age} after {last_age}");
        last_age = age;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last_age >= 0.8, "the age did not grow: {last_age}");
    // Past ten intervals of silence: left out rather than shown as current.
    until(None, "the silent node's figures dropped").await?;
    assert!(
        hung.elapsed() < Duration::from_secs(4),
        "kept {:?}",
        hung.elapsed()
    );

    // The node answers again: its new figures, fresh.
    daemons
        .volumes_hang
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let (_, age) = until(Some(8192.0), "the figures back")
        .await?
        .expect("figures");
    assert!(age < 1.0, "{age}");
    h.stop().await;
    Ok(())
}
