//! The agent's deploy, stop and reconcile on the recording fakes, with paused time: what it
//! asks of the engine and the network, in which order and when. The real engine and network
//! are tested against containerd and the kernel in `runtime/tests/`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::fakes::{Call, FakeEngine, FakeNetwork, NetCall, SIGKILL, SIGTERM};
use super::reconcile::Action;
use super::record::{self, State};
use super::task::TaskState;
use super::{Agent, ContainerEngine};
use crate::config::NodeConfig;
use crate::error::RuntimeError;
use crate::isolation::IsolationDisabled;
use crate::logs::NoShipping;
use crate::spec::deploy::tests::sample;
use crate::spec::{DeploySpec, RestartMode};
use crate::userns::IdMap;

type TestAgent = Agent<FakeEngine, FakeNetwork>;

/// An agent on the fakes, its directories in a temporary folder of its own.
fn agent() -> (Arc<TestAgent>, tempfile::TempDir) {
    let dirs = tempfile::tempdir().expect("temporary directory");
    let config = NodeConfig {
        namespace: "unit".into(),
        state_dir: dirs.path().join("state"),
        run_dir: dirs.path().join("run"),
        ipam_dir: dirs.path().join("ipam"),
        userns_dir: dirs.path().join("userns"),
        ..NodeConfig::default()
    };
    let networks = FakeNetwork::new(&config.namespace, config.run_dir.clone());
    let agent = Agent::with_parts(
        config,
        FakeEngine::new(),
        networks,
        Arc::new(IsolationDisabled),
        Arc::new(NoShipping),
    )
    .expect("agent on fakes");
    (agent, dirs)
}

fn spec(deployment: &str) -> DeploySpec {
    let mut s = sample();
    s.workload.deployment_id = deployment.into();
    s
}

/// The calls about one container, in order.
fn calls_of(agent: &TestAgent, id: &str) -> Vec<Call> {
    agent
        .engine
        .calls()
        .into_iter()
        .filter(|c| match c {
            Call::Pull(_) | Call::Remap(_) => true,
            Call::CreateContainer(i)
            | Call::DeleteContainer(i)
            | Call::SetLabels(i, _)
            | Call::PrepareRootfs(i)
            | Call::RemoveRootfs(i)
            | Call::CreateTask(i)
            | Call::StartTask(i)
            | Call::Kill(i, _)
            | Call::DeleteTask(i) => i == id,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn deploy_creates_then_starts_and_waits_healthy() {
    let (agent, _dirs) = agent();
    agent.networks.set_healthy(true);
    let spec = spec("d-ok");
    let id = spec.container_id();
    let status = agent.deploy(spec.clone()).await.expect("deploy");
    assert_eq!(status.state, State::Healthy);
    assert_eq!(status.ip, Some("10.9.0.2".parse().unwrap()));
    let image = spec.image.clone();
    assert_eq!(
        calls_of(&agent, &id),
        [
            Call::Pull(image.clone()),
            Call::CreateContainer(id.clone()),
            Call::Remap(image),
            Call::PrepareRootfs(id.clone()),
            Call::CreateTask(id.clone()),
            Call::StartTask(id.clone()),
        ]
    );
    assert_eq!(agent.networks.calls(), [NetCall::Attach(id.clone())]);
    assert_eq!(
        agent.engine.label(&id, record::LABEL_DESIRED).as_deref(),
        Some("running")
    );
    assert_eq!(
        agent.engine.task_state(&id).await.unwrap(),
        TaskState::Running { pid: 101 }
    );

    // A retried deploy finds the container it made: nothing is created again.
    let again = agent.deploy(spec).await.expect("retried deploy");
    assert_eq!(again.container_id, id);
    assert_eq!(calls_of(&agent, &id).len(), 6, "{:?}", agent.engine.calls());
}

#[tokio::test(start_paused = true)]
async fn health_probes_back_off_from_2_ms_until_the_container_answers() {
    let (agent, _dirs) = agent();
    let net_agent = agent.clone();
    // The app listens 20 ms after its start.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        net_agent.networks.set_healthy(true);
    });
    let started = Instant::now();
    let status = agent.deploy(spec("d-slow")).await.expect("deploy");
    assert_eq!(status.state, State::Healthy);
    let offsets: Vec<u128> = agent
        .networks
        .probes()
        .iter()
        .map(|t| (*t - started).as_millis())
        .collect();
    // 2 ms, doubling, up to the interval (100 ms): the fifth probe is the first to pass.
    assert_eq!(offsets, [0, 2, 6, 14, 30]);
    assert_eq!(started.elapsed(), Duration::from_millis(30));
}

#[tokio::test(start_paused = true)]
async fn failing_health_check_stops_the_new_container_and_says_why() {
    let (agent, _dirs) = agent();
    let mut spec = spec("d-sick");
    spec.health.as_mut().unwrap().deadline_ms = 1000;
    let id = spec.container_id();
    let started = Instant::now();
    let err = agent.deploy(spec).await.expect_err("never healthy");
    assert_eq!(started.elapsed(), Duration::from_millis(1000));
    let RuntimeError::Unhealthy {
        container_id,
        reason,
    } = &err
    else {
        panic!("not an unhealthy error: {err}");
    };
    assert_eq!(container_id, &id);
    assert!(
        reason.starts_with(
            "no healthy verdict within 1000 ms (state starting, last: tcp connect 10.9.0.2"
        ),
        "{reason}"
    );
    let calls = calls_of(&agent, &id);
    let stopped = Call::SetLabels(
        id.clone(),
        vec![(record::LABEL_DESIRED.to_owned(), "stopped".to_owned())],
    );
    let at = calls
        .iter()
        .position(|c| *c == stopped)
        .expect("desired=stopped");
    assert_eq!(calls[at + 1], Call::Kill(id.clone(), SIGKILL), "{calls:?}");
    let status = agent.status(&id).unwrap();
    assert_eq!(status.state, State::Failed);
    assert!(!status.wanted_running);
    assert_eq!(status.message, *reason);
    // The process is gone; the record stays for the control plane's remove.
    assert!(!matches!(
        agent.engine.task_state(&id).await.unwrap(),
        TaskState::Running { .. }
    ));
    assert!(agent.engine.has_container(&id));
}

#[tokio::test(start_paused = true)]
async fn a_container_that_exits_before_healthy_fails_the_deploy_with_its_exit_code() {
    let (agent, _dirs) = agent();
    let mut spec = spec("d-exit");
    spec.restart.mode = RestartMode::Never;
    let id = spec.container_id();
    let exiting = agent.clone();
    let exit_id = id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        exiting.engine.exit(&exit_id, 3);
    });
    let err = agent.deploy(spec).await.expect_err("exited");
    assert!(
        matches!(&err, RuntimeError::Unhealthy { reason, .. } if reason.starts_with("exited with code 3;")),
        "{err}"
    );
    assert_eq!(agent.status(&id).unwrap().exit_code, 3);
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_removes_everything_the_deploy_made() {
    let (agent, _dirs) = agent();
    agent.engine.fail_pulls("manifest unknown");
    let spec = spec("d-nopull");
    let id = spec.container_id();
    let err = agent.deploy(spec).await.expect_err("pull fails");
    assert!(
        matches!(&err, RuntimeError::Image { reason, .. } if reason == "manifest unknown"),
        "{err}"
    );
    let calls = calls_of(&agent, &id);
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::CreateTask(_) | Call::CreateContainer(_)))
    );
    assert!(calls.ends_with(&[
        Call::DeleteTask(id.clone()),
        Call::DeleteContainer(id.clone()),
        Call::RemoveRootfs(id.clone()),
    ]));
    assert_eq!(
        agent.networks.calls(),
        [NetCall::Attach(id.clone()), NetCall::Detach(id.clone())]
    );
    assert!(!agent.networks.has_lease(&id));
    assert!(matches!(
        agent.status(&id),
        Err(RuntimeError::NotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn stop_sends_sigterm_waits_the_grace_period_then_sigkill() {
    let (agent, _dirs) = agent();
    agent.networks.set_healthy(true);
    let spec = spec("d-stubborn");
    let id = spec.container_id();
    agent.deploy(spec).await.expect("deploy");
    agent.engine.ignore_signal(SIGTERM);
    let started = Instant::now();
    let status = agent
        .stop(&id, Some(Duration::from_secs(5)))
        .await
        .expect("stop");
    assert_eq!(status.state, State::Stopped);
    assert!(!status.wanted_running);
    let kills: Vec<(Duration, u32)> = agent
        .engine
        .timed_calls()
        .into_iter()
        .filter_map(|(t, c)| match c {
            Call::Kill(i, sig) if i == id => Some((t - started, sig)),
            _ => None,
        })
        .collect();
    assert_eq!(
        kills,
        [(Duration::ZERO, SIGTERM), (Duration::from_secs(5), SIGKILL)]
    );
    assert_eq!(
        agent.engine.task_state(&id).await.unwrap(),
        TaskState::Missing
    );
    assert_eq!(
        agent.engine.label(&id, record::LABEL_DESIRED).as_deref(),
        Some("stopped")
    );
}

#[tokio::test(start_paused = true)]
async fn stop_of_a_process_that_honours_sigterm_needs_no_sigkill() {
    let (agent, _dirs) = agent();
    agent.networks.set_healthy(true);
    let spec = spec("d-polite");
    let id = spec.container_id();
    agent.deploy(spec).await.expect("deploy");
    let started = Instant::now();
    agent
        .stop(&id, Some(Duration::from_secs(5)))
        .await
        .expect("stop");
    assert_eq!(started.elapsed(), Duration::ZERO);
    let kills: Vec<Call> = calls_of(&agent, &id)
        .into_iter()
        .filter(|c| matches!(c, Call::Kill(..)))
        .collect();
    assert_eq!(kills, [Call::Kill(id.clone(), SIGTERM)]);
    // The exit waiter saw the exit and applies no restart: the container was stopped on purpose.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(agent.status(&id).unwrap().state, State::Stopped);
    let starts = calls_of(&agent, &id)
        .iter()
        .filter(|c| matches!(c, Call::StartTask(_)))
        .count();
    assert_eq!(starts, 1);
}

/// A container record as a previous agent left it.
fn left_behind(
    spec: Option<&DeploySpec>,
    id: &str,
    bridge: &str,
    desired: &str,
) -> containerd_client::services::v1::Container {
    let mut labels = match spec {
        Some(s) => record::labels(s, bridge, "sha256:old", 1, IdMap { base: 131_072 }),
        None => [
            (record::LABEL_MANAGED.to_owned(), "true".to_owned()),
            (record::LABEL_BRIDGE.to_owned(), bridge.to_owned()),
        ]
        .into(),
    };
    labels.insert(record::LABEL_DESIRED.to_owned(), desired.to_owned());
    containerd_client::services::v1::Container {
        id: id.to_owned(),
        labels,
        extensions: spec
            .map(|s| [(record::EXT_DEPLOY.to_owned(), record::spec_extension(s))].into())
            .unwrap_or_default(),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn reconcile_adopts_running_containers_untouched_and_removes_orphans() {
    let (agent, _dirs) = agent();
    agent.networks.set_healthy(true);
    let bridge = crate::network::bridge_name("unit", "p1", "prod");
    let (running, dead, off) = (spec("d-run"), spec("d-dead"), spec("d-off"));
    let (run_id, dead_id, off_id) = (
        running.container_id(),
        dead.container_id(),
        off.container_id(),
    );
    let e = &agent.engine;
    e.add(
        left_behind(Some(&running), &run_id, &bridge, "running"),
        TaskState::Running { pid: 7 },
    );
    e.add(
        left_behind(Some(&dead), &dead_id, &bridge, "running"),
        TaskState::Stopped { exit_code: 137 },
    );
    e.add(
        left_behind(Some(&off), &off_id, &bridge, "stopped"),
        TaskState::Stopped { exit_code: 0 },
    );
    e.add(
        left_behind(None, "sp-unreadable", &bridge, "running"),
        TaskState::Missing,
    );
    let mut foreign = left_behind(None, "not-ours", &bridge, "running");
    foreign.labels.clear();
    e.add(foreign, TaskState::Running { pid: 9 });
    agent
        .networks
        .add_lease(&bridge, &run_id, "10.9.0.7".parse().unwrap());
    agent
        .networks
        .add_lease(&bridge, "sp-gone", "10.9.0.8".parse().unwrap());

    let actions = agent.reconcile().await.expect("reconcile");
    let mut expected = vec![
        Action::Adopt(run_id.clone()),
        Action::Restart(dead_id.clone()),
        Action::KeepStopped(off_id.clone()),
        Action::RemoveContainer {
            id: "sp-unreadable".into(),
            bridge: bridge.clone(),
        },
        Action::ReleaseLease {
            id: "sp-gone".into(),
            bridge: bridge.clone(),
        },
    ];
    let mut got = actions.clone();
    let key = |a: &Action| format!("{a:?}");
    expected.sort_by_key(key);
    got.sort_by_key(key);
    assert_eq!(got, expected);

    // The running one: adopted as it runs, not signalled, not restarted.
    assert!(
        calls_of(&agent, &run_id).is_empty(),
        "{:?}",
        calls_of(&agent, &run_id)
    );
    let adopted = agent.status(&run_id).unwrap();
    assert_eq!(adopted.pid, 7);
    assert_eq!(adopted.ip, Some("10.9.0.7".parse().unwrap()));
    assert!(adopted.state.is_running());
    // The dead one gets a new task (and its network namespace back: it was gone).
    assert_eq!(
        calls_of(&agent, &dead_id),
        [
            Call::DeleteTask(dead_id.clone()),
            Call::CreateTask(dead_id.clone()),
            Call::StartTask(dead_id.clone()),
        ]
    );
    // The one stopped on purpose stays stopped; its dead task is cleared.
    assert_eq!(
        calls_of(&agent, &off_id),
        [Call::DeleteTask(off_id.clone())]
    );
    assert_eq!(agent.status(&off_id).unwrap().state, State::Stopped);
    // Orphans: the unreadable record with its snapshot, the lease without a container.
    assert!(!e.has_container("sp-unreadable") && !e.has_snapshot("sp-unreadable"));
    assert!(e.has_container("not-ours"));
    assert!(calls_of(&agent, "not-ours").is_empty());
    assert!(!agent.networks.has_lease("sp-gone"));
    let net = agent.networks.calls();
    assert!(net.contains(&NetCall::Attach(dead_id.clone())), "{net:?}");
    assert!(net.contains(&NetCall::Detach("sp-gone".into())), "{net:?}");
    assert!(
        net.contains(&NetCall::Detach("sp-unreadable".into())),
        "{net:?}"
    );
    assert!(!net.contains(&NetCall::Attach(run_id.clone())), "{net:?}");

    // Adopted health: the running one turns healthy on its probes, still untouched.
    let healthy = agent.await_health(&agent.entry(&run_id).unwrap()).await;
    assert_eq!(
        healthy.expect("adopted container healthy").state,
        State::Healthy
    );
    assert!(calls_of(&agent, &run_id).is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_exit_pauses_the_probes_and_the_restarted_task_is_probed_at_once() {
    let (agent, _dirs) = agent();
    agent.networks.set_healthy(true);
    let mut spec = spec("d-crash");
    // Probes 1 s apart: the restart comes in the middle of a wait.
    spec.health.as_mut().unwrap().interval_ms = 1000;
    let id = spec.container_id();
    let started = Instant::now();
    agent.deploy(spec).await.expect("deploy");
    tokio::time::sleep(Duration::from_millis(30)).await;
    agent.engine.exit(&id, 1);
    // The policy restarts it after the first backoff; the new task turns healthy.
    let entry = agent.entry(&id).unwrap();
    let mut changes = entry.subscribe();
    while entry.status().generation < 2 {
        changes.changed().await.unwrap();
    }
    let healthy = agent.await_health(&entry).await.expect("healthy again");
    assert_eq!(healthy.restart_count, 1);
    let offsets: Vec<Duration> = agent
        .networks
        .probes()
        .iter()
        .map(|t| *t - started)
        .collect();
    let restarted = Duration::from_millis(30) + crate::restart::BASE_BACKOFF;
    // The first task's probe, then none while nothing runs, then the new task's at its start
    // (woken by the status change, not at the next tick 1 s after the first).
    assert_eq!(offsets, [Duration::ZERO, restarted]);
    assert_eq!(
        calls_of(&agent, &id)
            .iter()
            .filter(|c| matches!(c, Call::StartTask(_)))
            .count(),
        2
    );
}
