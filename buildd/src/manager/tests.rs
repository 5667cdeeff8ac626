//! The queue and its executor with a fake runner and paused time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;
use crate::build::BuildError;

#[derive(Default)]
struct FakeRunner {
    running: AtomicUsize,
    max_seen: AtomicUsize,
    started: Mutex<Vec<String>>,
    dropped_unfinished: AtomicBool,
}

struct Guard<'a>(&'a FakeRunner, bool);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        if !self.1 {
            self.0.dropped_unfinished.store(true, Ordering::SeqCst);
        }
    }
}

impl BuildRunner for Arc<FakeRunner> {
    async fn run(
        &self,
        req: BuildRequest,
        events: mpsc::UnboundedSender<Progress>,
    ) -> Result<BuildOutcome, crate::build::BuildError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_seen.fetch_max(now, Ordering::SeqCst);
        self.started.lock().unwrap().push(req.id.clone());
        let mut guard = Guard(self, false);
        let _ = events.send(Progress::State(BuildState::Building));
        let _ = events.send(Progress::Log(LogLine {
            timestamp_nanos: 1,
            step: "fake".into(),
            line: format!("building {}", req.id),
            stream: LogStream::Stdout,
        }));
        // A step that prints its secrets (e.g. `cat /run/secrets/NAME`).
        for (name, value) in &req.secrets {
            let _ = events.send(Progress::Log(LogLine {
                timestamp_nanos: 2,
                step: "fake".into(),
                line: format!("{name}={value}"),
                stream: LogStream::Stderr,
            }));
        }
        let secs: u64 = req.source.reference.parse().unwrap_or(10);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        guard.1 = true;
        if req.id.contains("fail") {
            let printed: String = req.secrets.iter().map(|(_, v)| format!(" {v}")).collect();
            return Err(BuildError::Solve {
                id: req.id,
                message: format!("boom{printed}"),
            });
        }
        Ok(BuildOutcome {
            commit: "c".into(),
            image: format!("r/{}:c", req.id),
            digest: "sha256:d".into(),
            cached_steps: 1,
            total_steps: 2,
            ..Default::default()
        })
    }
}

fn builds(max: usize) -> (Builds<Arc<FakeRunner>>, Arc<FakeRunner>) {
    builds_keeping(max, 100)
}

fn builds_keeping(max: usize, keep_ended: usize) -> (Builds<Arc<FakeRunner>>, Arc<FakeRunner>) {
    let runner = Arc::new(FakeRunner::default());
    let limits = Limits {
        max_running: max,
        default_timeout: Duration::from_secs(600),
        default_memory_bytes: 0,
        keep_ended,
    };
    (Builds::new(runner.clone(), limits), runner)
}

fn request(id: &str, secs: u64) -> BuildRequest {
    let mut r = BuildRequest {
        id: id.into(),
        ..Default::default()
    };
    r.source.reference = secs.to_string();
    r
}

async fn wait_final(b: &Builds<Arc<FakeRunner>>, id: &str) -> BuildStatus {
    let mut rx = b.watch(id).unwrap();
    let mut last = None;
    while let Some(ev) = rx.recv().await {
        if let BuildEvent::Status(s) = ev {
            last = Some(s);
        }
    }
    last.unwrap()
}

#[tokio::test(start_paused = true)]
async fn six_builds_never_more_than_four_at_once_all_finish_in_order() {
    let (b, runner) = builds(4);
    let ids: Vec<String> = (0..6).map(|i| format!("b{i}")).collect();
    for id in &ids {
        b.start(request(id, 10));
    }
    assert_eq!(b.load(), (4, 2));
    assert_eq!(b.get("b4").unwrap().queue_position, 0);
    assert_eq!(b.get("b5").unwrap().queue_position, 1);
    assert_eq!(b.get("b5").unwrap().state, BuildState::Queued);
    for id in &ids {
        assert_eq!(
            wait_final(&b, id).await.state,
            BuildState::Succeeded,
            "{id}"
        );
    }
    assert_eq!(runner.max_seen.load(Ordering::SeqCst), 4);
    assert_eq!(*runner.started.lock().unwrap(), ids);
    assert_eq!(b.load(), (0, 0));
    let text = b.metrics().render(0, 0);
    assert!(
        text.contains("stackpad_buildd_builds_total{outcome=\"succeeded\"} 6"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_build_past_its_timeout_fails_with_a_message_and_frees_its_slot() {
    let (b, runner) = builds(1);
    let mut r = request("slow", 100);
    r.timeout = Duration::from_secs(10);
    b.start(r);
    b.start(request("next", 1));
    let st = wait_final(&b, "slow").await;
    assert_eq!(st.state, BuildState::Failed);
    assert_eq!(
        st.failure_reason,
        "build slow reached its time limit of 10s and was cancelled"
    );
    assert!(
        runner.dropped_unfinished.load(Ordering::SeqCst),
        "the run was stopped"
    );
    assert_eq!(wait_final(&b, "next").await.state, BuildState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_a_running_build_and_a_queued_one_never_starts() {
    let (b, runner) = builds(1);
    b.start(request("run", 100));
    b.start(request("wait", 1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queued = b.cancel("wait").await.unwrap();
    assert_eq!(queued.state, BuildState::Cancelled);
    let running = b.cancel("run").await.unwrap();
    assert_eq!(running.state, BuildState::Cancelled);
    assert_eq!(running.failure_reason, "build run was cancelled");
    assert!(runner.dropped_unfinished.load(Ordering::SeqCst));
    assert_eq!(*runner.started.lock().unwrap(), ["run"]);
    assert_eq!(b.load(), (0, 0));
    assert!(b.cancel("nope").await.is_none());
}

#[tokio::test(start_paused = true)]
async fn start_is_idempotent_and_watch_replays_from_the_start() {
    let (b, runner) = builds(2);
    b.start(request("x", 5));
    b.start(request("x", 5));
    let st = wait_final(&b, "x").await;
    assert_eq!(
        (st.state, st.digest.as_str(), st.cached_steps),
        (BuildState::Succeeded, "sha256:d", 1)
    );
    assert_eq!(runner.started.lock().unwrap().len(), 1);
    // A watcher arriving after the end still sees everything, in order.
    let mut rx = b.watch("x").unwrap();
    let mut events = Vec::new();
    while let Some(ev) = rx.recv().await {
        events.push(ev);
    }
    assert!(matches!(&events[0], BuildEvent::Status(s) if s.state == BuildState::Queued));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, BuildEvent::Log(l) if l.line == "building x"))
    );
    assert!(
        matches!(events.last(), Some(BuildEvent::Status(s)) if s.state == BuildState::Succeeded)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_run_reports_its_error() {
    let (b, _) = builds(1);
    b.start(request("will-fail", 1));
    let st = wait_final(&b, "will-fail").await;
    assert_eq!(st.state, BuildState::Failed);
    assert_eq!(
        st.failure_reason,
        "build will-fail: BuildKit solve failed: boom"
    );
}

#[tokio::test(start_paused = true)]
async fn only_the_newest_ended_builds_are_kept() {
    let (b, _) = builds_keeping(1, 3);
    for i in 0..5 {
        b.start(request(&format!("k{i}"), 1));
    }
    wait_final(&b, "k4").await;
    assert!(
        b.get("k0").is_none() && b.get("k1").is_none(),
        "the oldest are forgotten"
    );
    for i in 2..5 {
        assert_eq!(
            b.get(&format!("k{i}")).unwrap().state,
            BuildState::Succeeded
        );
    }
}

#[tokio::test(start_paused = true)]
async fn secret_values_never_leave_in_log_lines_or_the_failure() {
    let (b, _) = builds(4);
    let mut r = request("fail-secret", 1);
    r.secrets = vec![("NPM_TOKEN".into(), "npm_s3cr3t_value".into())];
    b.start(r);
    let mut rx = b.watch("fail-secret").unwrap();
    let mut seen = Vec::new();
    while let Some(ev) = rx.recv().await {
        seen.push(format!("{ev:?}"));
    }
    let all = seen.join("\n");
    assert!(!all.contains("npm_s3cr3t_value"), "{all}");
    assert!(all.contains("NPM_TOKEN=[redacted]"), "{all}");
    let st = b.get("fail-secret").unwrap();
    assert_eq!(
        st.failure_reason,
        "build fail-secret: BuildKit solve failed: boom [redacted]"
    );
}
