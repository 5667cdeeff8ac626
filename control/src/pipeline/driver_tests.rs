//! The driver on a recording fake queue and fake daemons, on paused time: what it records, in
//! which order, what it stops at, and how long it waits.

use std::sync::Arc;
use std::time::Duration;

use ::api::{DeploymentState, Phase};
use tenant::address::AddressPolicy;
use tokio::time::Instant;

use super::*;
use crate::api::sources::{SourcePolicy, SystemLookup};
use crate::pipeline::fakes::{
    COMPUTE_NODE, Call, CallLog, FakeBuilder, FakeNode, FakeProxy, FakeQueue, Write,
    healthy_daemons, unreachable,
};

fn driver(q: &FakeQueue, daemons: (FakeBuilder, FakeNode, FakeProxy)) -> Driver<FakeQueue> {
    let (builder, node, proxy) = daemons;
    let clients = Clients {
        builder: Arc::new(builder),
        node: Arc::new(node),
        proxy: Some(Arc::new(proxy)),
    };
    let config = DriverConfig {
        lease: Duration::from_secs(3),
        retry_backoff: Duration::from_millis(200),
        ..DriverConfig::default()
    };
    // The fake service builds a local repository of organization "acme": allowed.
    let sources = SourcePolicy::new(
        AddressPolicy::default(),
        vec!["acme".into()],
        Arc::new(SystemLookup),
    );
    Driver::new(q.clone(), clients, config).with_sources(sources)
}

#[tokio::test(start_paused = true)]
async fn a_service_with_volumes_stops_the_old_container_before_starting_the_new_on_its_node() {
    for with_volume in [true, false] {
        let (q, service) = FakeQueue::new();
        if with_volume {
            q.add_volume(service);
        }
        let old = q.serving(service);
        let id = q.queue(service, Some("127.0.0.1:5000/acme/web:2"));
        let log = CallLog::default();
        let d = driver(&q, healthy_daemons(&log));
        assert_eq!(d.drive(claim(&d).await).await.unwrap(), Phase::Ready);
        let calls = calls(&log);
        let old_removed = calls
            .iter()
            .position(
                |c| matches!(c, Call::Remove { deployment, .. } if *deployment == old.to_string()),
            )
            .expect("the old container is removed");
        let deployed = calls
            .iter()
            .position(|c| matches!(c, Call::Deploy { .. }))
            .expect("the new container is started");
        let switched = calls
            .iter()
            .position(|c| matches!(c, Call::Switch { .. }))
            .expect("traffic switched");
        if with_volume {
            assert!(old_removed < deployed, "stop old, then start: {calls:?}");
        } else {
            assert!(deployed < switched && switched < old_removed, "{calls:?}");
        }
        assert_eq!(q.deployment_now(id).node_id, Some(COMPUTE_NODE));
        assert_eq!(q.deployment_now(id).previous_deployment_id, Some(old));
    }
}

/// The address of the fake's first compute node ([`COMPUTE_NODE`]).
const COMPUTE_ADDRESS: &str = "http://127.0.0.1:193";

fn calls(log: &CallLog) -> Vec<Call> {
    log.lock().unwrap().iter().map(|(_, c)| c.clone()).collect()
}

async fn claim(d: &Driver<FakeQueue>) -> Deployment {
    d.queue
        .claim(d.owner, d.config.lease)
        .await
        .unwrap()
        .expect("a queued deployment")
}

#[tokio::test(start_paused = true)]
async fn a_git_deployment_is_claimed_built_deployed_and_ready_with_each_transition_once_in_order() {
    let (q, service) = FakeQueue::new();
    let id = q.queue(service, None);
    let log = CallLog::default();
    let d = driver(&q, healthy_daemons(&log));
    let phase = d.drive(claim(&d).await).await.unwrap();
    assert_eq!(phase, Phase::Ready);
    assert_eq!(
        q.transitions(),
        [
            (Phase::Queued, Phase::Building),
            (Phase::Building, Phase::Starting),
            (Phase::Starting, Phase::Switching),
            (Phase::Switching, Phase::StoppingOld),
            (Phase::StoppingOld, Phase::Ready),
        ]
    );
    let states: Vec<DeploymentState> = q.transitions().iter().map(|(_, to)| to.state()).collect();
    assert_eq!(
        states,
        [
            DeploymentState::Building,
            DeploymentState::Deploying,
            DeploymentState::Deploying,
            DeploymentState::Deploying,
            DeploymentState::Ready
        ]
    );
    // The queue's other writes sit where the steps make them: the slot is taken before the
    // build and freed (warm) with it, the node recorded before the container starts.
    let writes: Vec<Write> = q
        .writes()
        .into_iter()
        .filter(|w| !matches!(w, Write::RenewLease))
        .collect();
    let build_node = uuid::Uuid::from_u128(0xb1);
    let compute_node = uuid::Uuid::from_u128(0xc1);
    assert_eq!(writes[1], Write::TakeBuildSlot(build_node));
    assert_eq!(writes[2], Write::ReleaseBuildSlot { warm: true });
    assert!(matches!(
        writes[3],
        Write::Transition {
            from: Phase::Building,
            to: Phase::Starting,
            ..
        }
    ));
    assert_eq!(writes[4], Write::RecordNode(compute_node));
    assert_eq!(
        writes[5],
        Write::RecordInstance {
            replica: 0,
            node: compute_node,
            healthy: false
        }
    );
    assert_eq!(
        writes[6],
        Write::RecordInstance {
            replica: 0,
            node: compute_node,
            healthy: true
        }
    );
    assert_eq!(writes.len(), 10, "{writes:#?}");
    // The container runs the pushed image pinned to its digest; traffic moves to it.
    assert_eq!(
        calls(&log),
        [
            Call::Build {
                build_id: id.to_string()
            },
            Call::Deploy {
                image: "127.0.0.1:5000/acme/web@sha256:feed".into(),
                node: COMPUTE_ADDRESS.into(),
                replica: 0,
            },
            Call::UpsertRoute {
                hosts: vec!["web-shop-acme.stackpad.localhost".into()]
            },
            Call::Switch {
                addresses: vec!["10.0.0.2:8080".into()]
            },
        ]
    );
    let done = q.deployment_now(id);
    assert_eq!(done.state, DeploymentState::Ready);
    assert_eq!(done.node_id, Some(compute_node));
    assert_eq!(done.build_node_id, Some(build_node));
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_stops_the_driver_without_a_further_write_or_call() {
    let (q, service) = FakeQueue::new();
    let id = q.queue(service, Some("127.0.0.1:5000/acme/web:v1"));
    let log = CallLog::default();
    let (builder, mut node, proxy) = healthy_daemons(&log);
    // While the container starts, another worker takes the deployment over.
    let stolen = q.clone();
    node.deploy.on_call = Box::new(move || stolen.steal_lease(id));
    let d = driver(&q, (builder, node, proxy));
    let err = d.drive(claim(&d).await).await.unwrap_err();
    assert!(
        matches!(err, DriverError::Store(StoreError::LeaseLost { deployment }) if deployment == id),
        "{err}"
    );
    // Claimed -> starting was recorded, and the placement before the deploy; nothing after.
    assert_eq!(q.transitions(), [(Phase::Queued, Phase::Starting)]);
    assert!(matches!(
        q.writes().last(),
        Some(Write::RecordInstance { healthy: false, .. })
    ));
    assert_eq!(
        calls(&log),
        [Call::Deploy {
            image: "127.0.0.1:5000/acme/web:v1".into(),
            node: COMPUTE_ADDRESS.into(),
            replica: 0,
        }],
        "no switch after the lease was lost"
    );
    assert_eq!(q.deployment_now(id).phase, Phase::Starting);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_node_is_called_again_after_the_backoff_which_doubles() {
    let (q, service) = FakeQueue::new();
    q.queue(service, Some("127.0.0.1:5000/acme/web:v1"));
    let log = CallLog::default();
    let (builder, node, proxy) = healthy_daemons(&log);
    node.deploy.answers.lock().unwrap().extend([
        Err(unreachable("node agent")),
        Err(unreachable("node agent")),
    ]);
    let d = driver(&q, (builder, node, proxy));
    assert_eq!(d.drive(claim(&d).await).await.unwrap(), Phase::Ready);
    let deploys: Vec<Instant> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, c)| matches!(c, Call::Deploy { .. }))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(deploys.len(), 3);
    // retry_backoff = 200 ms, then twice that.
    assert_eq!(deploys[1] - deploys[0], Duration::from_millis(200));
    assert_eq!(deploys[2] - deploys[1], Duration::from_millis(400));
}

#[tokio::test(start_paused = true)]
async fn a_node_unreachable_for_every_attempt_fails_the_step_and_removes_the_new_container() {
    let (q, service) = FakeQueue::new();
    let id = q.queue(service, Some("127.0.0.1:5000/acme/web:v1"));
    let log = CallLog::default();
    let (builder, mut node, proxy) = healthy_daemons(&log);
    node.deploy.otherwise = Err(unreachable("node agent"));
    let d = driver(&q, (builder, node, proxy));
    let started = Instant::now();
    assert_eq!(d.drive(claim(&d).await).await.unwrap(), Phase::Failed);
    // call_attempts = 5: four waits of 200, 400, 800 and 1600 ms.
    assert_eq!(started.elapsed(), Duration::from_millis(3000));
    assert_eq!(
        q.transitions(),
        [
            (Phase::Queued, Phase::Starting),
            (Phase::Starting, Phase::CleanupThenFailed),
            (Phase::CleanupThenFailed, Phase::Failed),
        ]
    );
    let failed = q.deployment_now(id);
    assert!(
        failed
            .failure_reason
            .as_deref()
            .is_some_and(|r| r.contains("connection refused")),
        "{failed:?}"
    );
    assert!(calls(&log).contains(&Call::Remove {
        deployment: id.to_string(),
        node: COMPUTE_ADDRESS.into(),
    }));
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_renewed_every_third_of_its_length_while_a_step_runs() {
    let (q, service) = FakeQueue::new();
    q.queue(service, None);
    let log = CallLog::default();
    let (mut builder, node, proxy) = healthy_daemons(&log);
    builder.build.delay = Duration::from_millis(10_500);
    let d = driver(&q, (builder, node, proxy));
    assert_eq!(d.drive(claim(&d).await).await.unwrap(), Phase::Ready);
    // lease = 3 s: renewed at 1 s, 2 s, ... 10 s of the 10.5 s build.
    let renewals = q
        .writes()
        .iter()
        .filter(|w| matches!(w, Write::RenewLease))
        .count();
    assert_eq!(renewals, 10);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_requested_during_the_build_cancels_it_and_ends_cancelled() {
    let (q, service) = FakeQueue::new();
    let id = q.queue(service, None);
    let log = CallLog::default();
    let (mut builder, node, proxy) = healthy_daemons(&log);
    builder.build.delay = Duration::from_secs(60);
    let d = driver(&q, (builder, node, proxy));
    let claimed = claim(&d).await;
    let canceller = q.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        canceller.request_cancel(id);
    });
    let started = Instant::now();
    assert_eq!(d.drive(claimed).await.unwrap(), Phase::Cancelled);
    // Seen at the first poll (every 500 ms) after the request, not at the build's end.
    assert!(started.elapsed() <= Duration::from_millis(2500));
    assert_eq!(
        q.transitions(),
        [
            (Phase::Queued, Phase::Building),
            (Phase::Building, Phase::Cancelled)
        ]
    );
    assert!(!calls(&log).iter().any(|c| matches!(c, Call::Deploy { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_worker_shut_down_mid_step_hands_the_deployment_back_for_another_to_resume() {
    let (q, service) = FakeQueue::new();
    let id = q.queue(service, Some("127.0.0.1:5000/acme/web:v1"));
    let log = CallLog::default();
    let (builder, mut node, proxy) = healthy_daemons(&log);
    node.deploy.delay = Duration::from_secs(60);
    let d = driver(&q, (builder, node, proxy));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(crate::pipeline::worker::run_worker(
        d,
        Arc::new(tokio::sync::Notify::new()),
        Duration::from_millis(500),
        stopped,
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls(&log).len(), 1, "the worker is in its deploy step");
    stop.send(true).unwrap();
    worker.await.unwrap();
    // Handed back at once (no wait for the lease to expire): another worker claims it where it
    // was, in `starting`.
    let other = q
        .claim(uuid::Uuid::new_v4(), Duration::from_secs(3))
        .await
        .unwrap()
        .expect("the deployment was released");
    assert_eq!((other.id, other.phase), (id, Phase::Starting));
}

#[tokio::test(start_paused = true)]
async fn three_replicas_spread_over_two_nodes_start_at_once_and_are_switched_as_one_set() {
    let (q, service) = FakeQueue::new();
    let second = q.add_compute_node(0xc2);
    q.set_replicas(service, 3);
    let old = q.serving(service);
    let id = q.queue(service, Some("127.0.0.1:5000/acme/web:2"));
    let log = CallLog::default();
    let (builder, mut node, proxy) = healthy_daemons(&log);
    node.deploy.delay = Duration::from_secs(1);
    let d = driver(&q, (builder, node, proxy));
    let started = Instant::now();
    assert_eq!(d.drive(claim(&d).await).await.unwrap(), Phase::Ready);
    let log = log.lock().unwrap().clone();
    let deploys: Vec<(Instant, String, u32)> = log
        .iter()
        .filter_map(|(at, c)| match c {
            Call::Deploy { node, replica, .. } => Some((*at, node.clone(), *replica)),
            _ => None,
        })
        .collect();
    // Distinct nodes first, then the emptier (a tie: the lowest id).
    let second_address = "http://127.0.0.1:194";
    assert_eq!(
        deploys
            .iter()
            .map(|(_, n, r)| (n.as_str(), *r))
            .collect::<Vec<_>>(),
        [
            (COMPUTE_ADDRESS, 0),
            (second_address, 1),
            (COMPUTE_ADDRESS, 2)
        ]
    );
    // All at once: the step took one start's time, not three.
    assert!(
        deploys.iter().all(|(at, _, _)| *at == started),
        "{deploys:?}"
    );
    let calls: Vec<Call> = log.iter().map(|(_, c)| c.clone()).collect();
    let switches: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c, Call::Switch { .. }))
        .collect();
    assert_eq!(
        switches,
        [&Call::Switch {
            addresses: vec![
                "10.0.0.2:8080".into(),
                "10.0.0.3:8080".into(),
                "10.0.0.4:8080".into()
            ]
        }],
        "one switch carrying the whole new set"
    );
    let switched = calls
        .iter()
        .position(|c| matches!(c, Call::Switch { .. }))
        .unwrap();
    let old_removed = calls
        .iter()
        .position(
            |c| matches!(c, Call::Remove { deployment, .. } if *deployment == old.to_string()),
        )
        .expect("the old set is removed");
    assert!(switched < old_removed, "{calls:?}");
    let instances = q.instances_now(id);
    assert_eq!(
        instances
            .iter()
            .map(|i| (i.replica, i.node_id, i.container_id.as_deref()))
            .collect::<Vec<_>>(),
        [
            (0, COMPUTE_NODE, Some("ctr-1")),
            (1, second, Some("ctr-1-1")),
            (2, COMPUTE_NODE, Some("ctr-1-2"))
        ]
    );
    assert_eq!(q.deployment_now(id).node_id, Some(COMPUTE_NODE));
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_fails_fails_the_set_and_every_replica_started_is_removed() {
    let (q, service) = FakeQueue::new();
    q.add_compute_node(0xc2);
    q.set_replicas(service, 3);
    let old = q.serving(service);
    let id = q.queue(service, Some("127.0.0.1:5000/acme/web:2"));
    let log = CallLog::default();
    let (builder, mut node, proxy) = healthy_daemons(&log);
    node.failing_replica = Some(1);
    let d = driver(&q, (builder, node, proxy));
    assert_eq!(d.drive(claim(&d).await).await.unwrap(), Phase::Failed);
    assert_eq!(
        q.transitions(),
        [
            (Phase::Queued, Phase::Starting),
            (Phase::Starting, Phase::CleanupThenFailed),
            (Phase::CleanupThenFailed, Phase::Failed),
        ]
    );
    let reason = q.deployment_now(id).failure_reason.unwrap_or_default();
    assert!(
        reason.contains("replica 2 of 3 on node compute-c2: health check: connection refused"),
        "{reason}"
    );
    let calls = calls(&log);
    assert!(!calls.iter().any(|c| matches!(c, Call::Switch { .. })));
    // The new set goes from both nodes; the old set is not touched (it keeps serving).
    let mut removed: Vec<(String, String)> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Remove { deployment, node } => Some((deployment.clone(), node.clone())),
            _ => None,
        })
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        [
            (id.to_string(), COMPUTE_ADDRESS.to_string()),
            (id.to_string(), "http://127.0.0.1:194".to_string())
        ]
    );
    assert!(!removed.iter().any(|(d, _)| *d == old.to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_resumed_deployment_starts_its_replicas_where_it_placed_them() {
    let (q, service) = FakeQueue::new();
    let second = q.add_compute_node(0xc2);
    q.set_replicas(service, 2);
    let id = q.queue(service, Some("127.0.0.1:5000/acme/web:2"));
    let log = CallLog::default();
    let (builder, mut node, proxy) = healthy_daemons(&log);
    node.deploy.delay = Duration::from_secs(60);
    let d = driver(&q, (builder, node, proxy));
    // The first worker places both replicas, then dies mid-start.
    let claimed = claim(&d).await;
    let first = tokio::spawn({
        let d = d.clone();
        async move { d.drive(claimed).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.abort();
    let placed: Vec<_> = q.instances_now(id).iter().map(|i| i.node_id).collect();
    assert_eq!(placed, [COMPUTE_NODE, second]);
    let (builder, node, proxy) = healthy_daemons(&log);
    let mut other = driver(&q, (builder, node, proxy));
    other.owner = uuid::Uuid::new_v4();
    q.steal_lease_for(id, other.owner);
    let resumed = q.deployment_now(id);
    assert_eq!(other.drive(resumed).await.unwrap(), Phase::Ready);
    let placed: Vec<_> = q.instances_now(id).iter().map(|i| i.node_id).collect();
    assert_eq!(placed, [COMPUTE_NODE, second]);
}
