//! The deploy pipeline on a real PostgreSQL: the durable queue, the driver through recording
//! fakes of the three daemons, supersede, cancel, failure, rollback and crash resume.

mod common;

use std::time::Duration;

use common::fakes::{Call, Fakes};
use common::{Harness, fake_clients, phases};
use control::pipeline::driver::{Driver, DriverConfig};
use control::pipeline::monitor::Monitor;
use control::pipeline::queue::take_build_slot;
use control::store::{NewDeployment, NewService, Store};
use serde_json::json;
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn image_deploy_switches_traffic_and_replaces_the_old_version() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, a) = h.org("org-a").await;
    let (_, service) = h
        .service(
            &a,
            json!({ "name": "web", "image": "app:v1", "port": 8080,
            "health_check": { "path": "/healthz" }, "secrets": { "TOKEN": "s3" } }),
        )
        .await;
    let d1 = h.deploy(&a, &service, json!({})).await;
    let v1 = h.wait_terminal(&a, &d1, LIMIT).await;
    assert_eq!(v1["state"], "ready", "{v1}");
    assert_eq!(
        phases(&v1),
        ["queued", "starting", "switching", "stopping_old", "ready"]
    );
    let d2 = h.deploy(&a, &service, json!({ "image": "app:v2" })).await;
    let v2 = h.wait_terminal(&a, &d2, LIMIT).await;
    assert_eq!(v2["state"], "ready", "{v2}");
    let (_, v1) = h.call("GET", &format!("/deployments/{d1}"), &a, None).await;
    assert_eq!(v1["state"], "superseded");
    let (_, s) = h
        .call("GET", &format!("/services/{service}"), &a, None)
        .await;
    assert_eq!(s["current_deployment_id"], d2.as_str());

    let calls = fakes.calls();
    let pos = |c: &Call| {
        calls
            .iter()
            .position(|x| x == c)
            .unwrap_or_else(|| panic!("{c:?} not in {calls:?}"))
    };
    let deploy2 = calls
        .iter()
        .position(|c| matches!(c, Call::Deploy { deployment, .. } if *deployment == d2))
        .unwrap();
    let switch2 = pos(&Call::Switch {
        service: service.clone(),
        deployment: d2.clone(),
        address: "10.0.0.1:8080".into(),
    });
    let remove1 = pos(&Call::Remove {
        node: "http://127.0.0.1:9".into(),
        deployment: d1.clone(),
    });
    assert!(
        deploy2 < switch2 && switch2 < remove1,
        "new beside old, switch, then stop old: {calls:?}"
    );
    assert!(calls.iter().any(
        |c| matches!(c, Call::Deploy { env, .. } if env.contains(&("TOKEN".into(), "s3".into())))
    ));
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, Call::Route { hosts, .. } if hosts[0].starts_with("web-")))
    );
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn git_deploy_builds_then_runs_the_pushed_digest() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("b1", "build", "http://127.0.0.1:7").await;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (org, a) = h.org("org-a").await;
    let (_, service) = h
        .service(
            &a,
            json!({ "name": "web", "git": { "url": "file:///srv/app.git" } }),
        )
        .await;
    let commit = "abcdef0123456789abcdef0123456789abcdef01";
    let d = h
        .deploy(&a, &service, json!({ "git_commit": commit }))
        .await;
    let v = h.wait_terminal(&a, &d, LIMIT).await;
    assert_eq!(v["state"], "ready", "{v}");
    assert_eq!(
        phases(&v),
        [
            "queued",
            "building",
            "starting",
            "switching",
            "stopping_old",
            "ready"
        ]
    );
    assert_eq!(v["image_digest"], "sha256:feed");
    let expected = format!("127.0.0.1:5000/{org}/{service}@sha256:feed");
    assert!(
        fakes
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Deploy { image, .. } if *image == expected)),
        "{:?}",
        fakes.calls()
    );
    let warm: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM build_cache WHERE repository = 'file:///srv/app.git'",
    )
    .fetch_one(&h.store().pool)
    .await?;
    assert_eq!(
        warm, 1,
        "the build node's cache counts as warm for the repo"
    );
    let slots: i64 = sqlx::query_scalar("SELECT count(*) FROM build_slots")
        .fetch_one(&h.store().pool)
        .await?;
    assert_eq!(slots, 0, "the build slot is freed");

    let (_, broken) = h
        .service(
            &a,
            json!({ "name": "broken", "git": { "url": "file:///srv/broken.git" } }),
        )
        .await;
    let d = h.deploy(&a, &broken, json!({})).await;
    let v = h.wait_terminal(&a, &d, LIMIT).await;
    assert_eq!(v["state"], "failed");
    assert!(
        v["failure_reason"]
            .as_str()
            .unwrap()
            .contains("npm ci exited 1"),
        "{v}"
    );
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn failed_health_check_keeps_the_old_version_and_rollback_works() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, a) = h.org("org-a").await;
    let (_, service) = h
        .service(&a, json!({ "name": "web", "image": "app:v1" }))
        .await;
    let d1 = h.deploy(&a, &service, json!({})).await;
    assert_eq!(h.wait_terminal(&a, &d1, LIMIT).await["state"], "ready");

    let d2 = h
        .deploy(&a, &service, json!({ "image": "app:unhealthy" }))
        .await;
    let v2 = h.wait_terminal(&a, &d2, LIMIT).await;
    assert_eq!(v2["state"], "failed", "{v2}");
    assert!(
        v2["failure_reason"]
            .as_str()
            .unwrap()
            .contains("answered 500: boom"),
        "{v2}"
    );
    assert_eq!(
        phases(&v2),
        ["queued", "starting", "cleanup_then_failed", "failed"]
    );
    let (_, s) = h
        .call("GET", &format!("/services/{service}"), &a, None)
        .await;
    assert_eq!(
        s["current_deployment_id"],
        d1.as_str(),
        "the old version keeps serving"
    );
    let (_, v1) = h.call("GET", &format!("/deployments/{d1}"), &a, None).await;
    assert_eq!(v1["state"], "ready");
    let calls = fakes.calls();
    assert!(calls.contains(&Call::Remove {
        node: "http://127.0.0.1:9".into(),
        deployment: d2.clone()
    }));
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::Switch { deployment, .. } if *deployment == d2))
    );
    assert!(!calls.contains(&Call::Remove {
        node: "http://127.0.0.1:9".into(),
        deployment: d1.clone()
    }));

    let (status, v) = h
        .call("POST", &format!("/deployments/{d2}/rollback"), &a, None)
        .await;
    assert_eq!(
        status, 409,
        "a failed deployment is no rollback target: {v}"
    );
    let d3 = h.deploy(&a, &service, json!({ "image": "app:v3" })).await;
    assert_eq!(h.wait_terminal(&a, &d3, LIMIT).await["state"], "ready");
    let (status, r) = h
        .call("POST", &format!("/deployments/{d1}/rollback"), &a, None)
        .await;
    assert_eq!(status, 201, "{r}");
    let r = r["id"].as_str().unwrap().to_owned();
    let vr = h.wait_terminal(&a, &r, LIMIT).await;
    assert_eq!(vr["state"], "ready", "{vr}");
    assert_eq!(vr["rollback_of"], d1.as_str());
    assert_eq!(vr["image"], "app:v1");
    let (_, s) = h
        .call("GET", &format!("/services/{service}"), &a, None)
        .await;
    assert_eq!(s["current_deployment_id"], r.as_str());
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_built_app_runs_on_the_port_its_build_detected_unless_the_service_gives_one()
-> anyhow::Result<()> {
    let fakes = Fakes::new();
    *fakes.builder.container_port.lock().unwrap() = 3000;
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("b1", "build", "http://127.0.0.1:7").await;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, a) = h.org("org-a").await;
    let commit = "abcdef0123456789abcdef0123456789abcdef01";
    // The port a deployment's container was started, checked and routed on.
    let ran_on = |deployment: &str| {
        let calls = fakes.calls();
        let env_port = calls.iter().find_map(|c| match c {
            Call::Deploy {
                deployment: d, env, ..
            } if d == deployment => env
                .iter()
                .find(|(k, _)| k == "PORT")
                .map(|(_, v)| v.clone()),
            _ => None,
        });
        let routed = calls.iter().find_map(|c| match c {
            Call::Switch {
                deployment: d,
                address,
                ..
            } if d == deployment => address.rsplit(':').next().map(str::to_owned),
            _ => None,
        });
        (env_port, routed)
    };
    let three = (Some("3000".to_owned()), Some("3000".to_owned()));
    let eighty = (Some("8080".to_owned()), Some("8080".to_owned()));

    // No port given: the detected one, recorded on the deployment.
    let (_, auto) = h
        .service(
            &a,
            json!({ "name": "auto", "git": { "url": "file:///srv/app.git" },
            "health_check": { "path": "/" } }),
        )
        .await;
    let d1 = h.deploy(&a, &auto, json!({ "git_commit": commit })).await;
    let v1 = h.wait_terminal(&a, &d1, LIMIT).await;
    assert_eq!(v1["state"], "ready", "{v1}");
    assert_eq!(v1["container_port"], 3000, "{v1}");
    assert_eq!(ran_on(&d1), three);
    let (_, s) = h.call("GET", &format!("/services/{auto}"), &a, None).await;
    assert_eq!(
        (&s["port"], &s["port_explicit"]),
        (&json!(8080), &json!(false))
    );

    // A port set later wins over the detected one from then on.
    let (status, s) = h
        .call(
            "PATCH",
            &format!("/services/{auto}"),
            &a,
            Some(json!({ "port": 8080 })),
        )
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["port_explicit"], true, "{s}");
    let d3 = h.deploy(&a, &auto, json!({ "git_commit": commit })).await;
    let v3 = h.wait_terminal(&a, &d3, LIMIT).await;
    assert_eq!(v3["state"], "ready", "{v3}");
    assert_eq!(ran_on(&d3), eighty);

    // A port given at creation wins; a build that detected nothing runs on the service's port.
    let (_, given) = h
        .service(
            &a,
            json!({ "name": "given", "port": 8080,
            "git": { "url": "file:///srv/app.git" } }),
        )
        .await;
    let d4 = h.deploy(&a, &given, json!({ "git_commit": commit })).await;
    assert_eq!(h.wait_terminal(&a, &d4, LIMIT).await["state"], "ready");
    assert_eq!(ran_on(&d4), eighty);
    *fakes.builder.container_port.lock().unwrap() = 0;
    let (_, unknown) = h
        .service(
            &a,
            json!({ "name": "unknown", "git": { "url": "file:///srv/app.git" } }),
        )
        .await;
    let d5 = h
        .deploy(&a, &unknown, json!({ "git_commit": commit }))
        .await;
    let v5 = h.wait_terminal(&a, &d5, LIMIT).await;
    assert_eq!(v5["container_port"], json!(null), "{v5}");
    assert_eq!(ran_on(&d5), eighty);
    h.stop().await;
    Ok(())
}

/// Org, project, environment and an image service straight through the store.
async fn setup(store: &Store, image: &str) -> anyhow::Result<(Uuid, Uuid)> {
    let org = store
        .create_organization(&stackpad_tests::unique_name("o"))
        .await?;
    let project = store.create_project(org.id, "app").await?;
    let env = store
        .create_environment(
            org.id,
            project.id,
            "production",
            &tenant::git::GitRef::parse("main")?,
        )
        .await?;
    let service = store
        .create_service(
            org.id,
            &NewService {
                environment_id: env.id,
                name: "web".into(),
                kind: api::ServiceKind::Web,
                image: Some(tenant::image::ImageRef::parse(image)?),
                port: 8080,
                replicas: 1,
                ..Default::default()
            },
        )
        .await?;
    Ok((org.id, service.id))
}

fn image(i: &str) -> NewDeployment {
    NewDeployment {
        image: Some(tenant::image::ImageRef::parse(i).expect("a test image reference")),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_newer_deployment_supersedes_a_queued_one_and_queued_ones_cancel() -> anyhow::Result<()> {
    let db = common::database().await?;
    let store = common::store(&db).await?;
    let (org, service) = setup(&store, "i:1").await?;
    let d1 = store.create_deployment(org, service, &image("i:1")).await?;
    let d2 = store.create_deployment(org, service, &image("i:2")).await?;
    let d1 = store.deployment(org, d1.id).await?;
    assert_eq!(d1.state.as_str(), "superseded");
    assert_eq!(
        d1.failure_reason.as_deref(),
        Some(&*format!("superseded by deployment {}", d2.id))
    );
    let d2 = store.cancel_deployment(org, d2.id).await?;
    assert_eq!(d2.state.as_str(), "cancelled");
    assert!(
        store.cancel_deployment(org, d2.id).await.is_err(),
        "a cancelled deployment cannot be cancelled"
    );
    // Nothing left to claim.
    assert!(
        store
            .claim(Uuid::new_v4(), Duration::from_secs(5))
            .await?
            .is_none()
    );
    Ok(())
}

#[tokio::test]
async fn queue_claims_each_deployment_once_and_one_per_service_at_a_time() -> anyhow::Result<()> {
    let db = common::database().await?;
    let store = common::store(&db).await?;
    let mut ids = vec![];
    for i in 0..6 {
        let (org, service) = setup(&store, "i").await?;
        ids.push(
            store
                .create_deployment(org, service, &image(&format!("i:{i}")))
                .await?
                .id,
        );
    }
    let claims = futures::future::join_all((0..10).map(|_| {
        let store = store.clone();
        async move { store.claim(Uuid::new_v4(), Duration::from_secs(30)).await }
    }))
    .await;
    let mut claimed: Vec<Uuid> = claims
        .into_iter()
        .filter_map(|c| c.unwrap())
        .map(|d| d.id)
        .collect();
    claimed.sort();
    ids.sort();
    assert_eq!(claimed, ids, "each queued deployment claimed exactly once");
    Ok(())
}

fn fast_config() -> DriverConfig {
    DriverConfig {
        lease: Duration::from_millis(600),
        retry_backoff: Duration::from_millis(10),
        poll: Duration::from_millis(50),
        ..DriverConfig::default()
    }
}

#[tokio::test]
async fn a_driver_killed_mid_step_is_resumed_by_another_from_postgres() -> anyhow::Result<()> {
    let db = common::database().await?;
    let store = common::store(&db).await?;
    store
        .register_node(
            "n1",
            api::NodeRole::Compute,
            "http://127.0.0.1:9",
            4000,
            8 << 30,
        )
        .await?;
    let (org, service) = setup(&store, "i:1").await?;
    let d = store.create_deployment(org, service, &image("i:1")).await?;

    // Worker A: its node call hangs; it is killed (its future dropped, lease not released).
    let hung = Fakes::new();
    *hung.node.hang.lock().unwrap() = true;
    let a = Driver::new(store.clone(), fake_clients(&hung), fast_config());
    let claimed = store
        .claim(a.owner, a.config.lease)
        .await?
        .expect("queued deployment");
    let task = tokio::spawn(async move { a.drive(claimed).await });
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !hung
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Deploy { .. }))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker A never reached the deploy step"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    let _ = task.await;
    assert_eq!(
        store.deployment(org, d.id).await?.phase.as_str(),
        "starting"
    );

    // Worker B: claims once A's lease expired and finishes.
    let fakes = Fakes::new();
    let b = Driver::new(store.clone(), fake_clients(&fakes), fast_config());
    assert!(
        store.claim(b.owner, b.config.lease).await?.is_none(),
        "A's lease still holds"
    );
    let claimed = loop {
        if let Some(c) = store.claim(b.owner, b.config.lease).await? {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never got the deployment"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(claimed.id, d.id);
    let phase = b.drive(claimed).await?;
    assert_eq!(phase.as_str(), "ready");
    let done = store.deployment(org, d.id).await?;
    assert_eq!(done.attempts, 2);
    assert_eq!(
        done.failure_reason, None,
        "the takeover left a failure reason behind"
    );
    let events = store.deployment_events(org, d.id).await?;
    assert!(
        !events.iter().any(|e| e.phase.as_str() == "failed"),
        "the takeover left a failure event behind: {events:?}"
    );
    let timeline: Vec<&str> = events.iter().map(|e| e.phase.as_str()).collect();
    assert_eq!(
        timeline,
        ["queued", "starting", "switching", "stopping_old", "ready"]
    );
    assert!(
        fakes.calls().iter().any(
            |c| matches!(c, Call::Deploy { deployment, .. } if *deployment == d.id.to_string())
        ),
        "B redid the idempotent deploy of the same deployment id"
    );
    Ok(())
}

#[tokio::test]
async fn a_stale_worker_cannot_record_a_step_after_losing_its_lease() -> anyhow::Result<()> {
    let db = common::database().await?;
    let store = common::store(&db).await?;
    let (org, service) = setup(&store, "i:1").await?;
    let d = store.create_deployment(org, service, &image("i:1")).await?;
    let stale = Uuid::new_v4();
    store
        .claim(stale, Duration::from_millis(500))
        .await?
        .unwrap();
    let fresh = Uuid::new_v4();
    let deadline = tokio::time::Instant::now() + LIMIT;
    let claimed = loop {
        if let Some(c) = store.claim(fresh, Duration::from_secs(30)).await? {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stale worker's lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(claimed.id, d.id);
    let t = control::pipeline::machine::decide(
        control::pipeline::machine::Phase::Queued,
        &control::pipeline::machine::Event::Claimed { needs_build: false },
    )?;
    let err = store
        .apply_transition(
            d.id,
            stale,
            control::pipeline::machine::Phase::Queued,
            &t,
            &Default::default(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no longer holds its lease"),
        "{err}"
    );
    store
        .apply_transition(
            d.id,
            fresh,
            control::pipeline::machine::Phase::Queued,
            &t,
            &Default::default(),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn build_nodes_never_take_more_than_four_builds() -> anyhow::Result<()> {
    let db = common::database().await?;
    let store = common::store(&db).await?;
    store
        .register_node("b1", api::NodeRole::Build, "http://127.0.0.1:7", 0, 0)
        .await?;
    store
        .register_node("b2", api::NodeRole::Build, "http://127.0.0.1:8", 0, 0)
        .await?;
    let mut ids = vec![];
    for i in 0..10 {
        let (org, service) = setup(&store, "i").await?;
        ids.push(
            store
                .create_deployment(org, service, &image(&format!("i:{i}")))
                .await?
                .id,
        );
    }
    let taken = futures::future::join_all(ids.iter().map(|id| {
        let store = store.clone();
        async move { take_build_slot(&store, *id, "file:///r.git").await }
    }))
    .await;
    let nodes: Vec<String> = taken
        .into_iter()
        .filter_map(|t| t.unwrap())
        .map(|n| n.name)
        .collect();
    assert_eq!(nodes.len(), 8, "two nodes, four slots each: {nodes:?}");
    assert_eq!(nodes.iter().filter(|n| *n == "b1").count(), 4);
    // Taking again for a deployment that holds a slot returns the same node (idempotent).
    let again = take_build_slot(&store, ids[0], "file:///r.git").await?;
    assert!(again.is_some());
    // A freed slot on the node that built the repo: the next build of it goes there.
    let holder: Uuid =
        sqlx::query_scalar("SELECT node_id FROM build_slots WHERE deployment_id = $1")
            .bind(ids[0])
            .fetch_one(&store.pool)
            .await?;
    store
        .release_build_slot(ids[0], Some("file:///r.git"))
        .await?;
    let waiting: Uuid = sqlx::query_scalar(
        "SELECT id FROM deployments WHERE id = ANY($1) AND id NOT IN (SELECT deployment_id FROM build_slots) LIMIT 1",
    )
    .bind(&ids)
    .fetch_one(&store.pool)
    .await?;
    let next = take_build_slot(&store, waiting, "file:///r.git")
        .await?
        .unwrap();
    assert_eq!(next.id, holder);
    Ok(())
}

#[tokio::test]
async fn the_monitor_marks_down_a_node_failing_its_probes_only_while_another_answers()
-> anyhow::Result<()> {
    let db = common::database().await?;
    let store = common::store(&db).await?;
    let fakes = Fakes::new();
    let clients = fake_clients(&fakes);
    let (a_address, b_address) = ("http://127.0.0.1:9", "http://127.0.0.1:10");
    let a = store
        .register_node("a", api::NodeRole::Compute, a_address, 0, 0)
        .await?;
    let b = store
        .register_node("b", api::NodeRole::Compute, b_address, 0, 0)
        .await?;
    // Probes wait 500 ms; down after 600 ms of failed probes.
    let mut monitor = Monitor::new(Duration::from_millis(600));

    // Neither answers (control's side is the likelier fault): nobody is marked down.
    fakes
        .node
        .hung
        .lock()
        .unwrap()
        .extend([a_address.to_owned(), b_address.to_owned()]);
    for _ in 0..3 {
        let round = monitor.round(&store, &clients).await?;
        assert_eq!(round.answered, [] as [Uuid; 0], "{round:?}");
        assert_eq!(round.marked_down, [] as [Uuid; 0], "{round:?}");
    }
    assert_eq!(store.node(b.id).await?.status.as_str(), "up");

    // a answers again: b's silence is believed (it failed every probe for longer than 600 ms).
    fakes.node.hung.lock().unwrap().retain(|n| n == b_address);
    let deadline = tokio::time::Instant::now() + LIMIT;
    let round = loop {
        let round = monitor.round(&store, &clients).await?;
        if !round.marked_down.is_empty() || round.stalled.is_none() {
            break round;
        }
        // A starved round (a loaded machine) decides nothing; the next one does.
        assert!(tokio::time::Instant::now() < deadline, "{round:?}");
    };
    assert_eq!(round.answered, [a.id], "{round:?}");
    assert_eq!(round.marked_down, [b.id], "{round:?}");
    assert_eq!(store.node(b.id).await?.status.as_str(), "down");
    let a_now = store.node(a.id).await?;
    assert_eq!(a_now.status.as_str(), "up");
    assert!(a_now.last_heartbeat_at.is_some());
    assert_eq!(a_now.cpu_millis, 4000, "the answer's capacity is recorded");

    // b answers again: up at once.
    fakes.node.hung.lock().unwrap().clear();
    let round = monitor.round(&store, &clients).await?;
    assert_eq!(round.failed, [] as [Uuid; 0], "{round:?}");
    assert_eq!(store.node(b.id).await?.status.as_str(), "up");
    Ok(())
}

#[tokio::test]
async fn a_worker_service_is_not_routed_and_down_nodes_get_nothing() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    let (_, a) = h.org("org-a").await;
    let (_, service) = h
        .service(
            &a,
            json!({ "name": "jobs", "kind": "worker", "image": "i:1" }),
        )
        .await;
    let d = h.deploy(&a, &service, json!({})).await;
    let v = h.wait_terminal(&a, &d, LIMIT).await;
    assert_eq!(v["state"], "failed", "no compute node registered: {v}");
    assert!(
        v["failure_reason"]
            .as_str()
            .unwrap()
            .contains("no compute node"),
        "{v}"
    );
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let d = h.deploy(&a, &service, json!({})).await;
    let v = h.wait_terminal(&a, &d, LIMIT).await;
    assert_eq!(v["state"], "ready", "{v}");
    assert_eq!(phases(&v), ["queued", "starting", "stopping_old", "ready"]);
    assert!(
        !fakes
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Switch { .. }))
    );
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn deleting_a_service_takes_it_off_the_proxy_and_the_nodes_first() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = fake_clients(&fakes);
    clients.proxy = Some(std::sync::Arc::new(common::fakes::FlakyProxy {
        inner: fakes.proxy.clone(),
        down: down.clone(),
    }));
    let h = Harness::start(clients).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, a) = h.org("org-a").await;
    let (_, service) = h
        .service(&a, json!({ "name": "web", "image": "app:v1" }))
        .await;
    for _ in 0..2 {
        let d = h.deploy(&a, &service, json!({})).await;
        assert_eq!(h.wait_terminal(&a, &d, LIMIT).await["state"], "ready");
    }
    let (_, s) = h
        .call("GET", &format!("/services/{service}"), &a, None)
        .await;
    let host = s["hosts"][0].as_str().unwrap().to_owned();

    // With the proxy down the delete is refused, naming the step, and the service is kept.
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = h
        .call("DELETE", &format!("/services/{service}"), &a, None)
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("removing route"), "{body}");
    let (status, _) = h
        .call("GET", &format!("/services/{service}"), &a, None)
        .await;
    assert_eq!(status, 200, "the service was kept");

    down.store(false, std::sync::atomic::Ordering::SeqCst);
    let before = fakes.calls().len();
    let (status, body) = h
        .call("DELETE", &format!("/services/{service}"), &a, None)
        .await;
    assert_eq!(status, 204, "{body}");
    let calls = fakes.calls()[before..].to_vec();
    let unroute = calls.iter().position(|c| {
        *c == Call::Unroute {
            route_id: format!("{service}/default"),
        }
    });
    let disallow = calls.iter().position(|c| {
        *c == Call::Disallow {
            domain: host.clone(),
        }
    });
    let removals = calls
        .iter()
        .filter(|c| matches!(c, Call::Remove { .. }))
        .count();
    assert!(
        unroute.is_some() && disallow.is_some() && removals == 2,
        "route, certificate permission and both deployments' containers removed: {calls:?}"
    );
    let first_removal = calls.iter().position(|c| matches!(c, Call::Remove { .. }));
    assert!(
        unroute < first_removal,
        "traffic stops before containers go: {calls:?}"
    );
    let (status, _) = h
        .call("GET", &format!("/services/{service}"), &a, None)
        .await;
    assert_eq!(status, 404);
    h.stop().await;
    Ok(())
}

/// A local git source stored before #13 (or for an organization since taken off
/// `local_sources_organizations`) fails its deployment before buildd is called.
#[tokio::test]
async fn a_stored_local_source_of_an_organization_not_allowed_fails_before_building()
-> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("b1", "build", "http://127.0.0.1:7").await;
    let (_, b) = h.org("org-not-listed").await;
    let (_, service) = h
        .service(&b, json!({ "name": "web", "image": "nginx:1" }))
        .await;
    // As stored before the API refused local sources for this organization.
    sqlx::query(
        "UPDATE services SET image = NULL, git_url = '/srv/other-org.git' WHERE id = $1::uuid",
    )
    .bind(&service)
    .execute(&h.store().pool)
    .await?;
    let d = h.deploy(&b, &service, json!({ "git_ref": "main" })).await;
    let v = h.wait_terminal(&b, &d, LIMIT).await;
    assert_eq!(v["state"], "failed", "{v}");
    let reason = v["failure_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("local_sources_organizations"), "{reason}");
    assert!(
        !fakes
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Build { .. })),
        "buildd was called: {:?}",
        fakes.calls()
    );
    h.stop().await;
    Ok(())
}
