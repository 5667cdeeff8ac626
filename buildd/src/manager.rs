//! The node's builds: queue, run (with timeout and cancel), history for watchers, metrics.
//!
//! Decisions about order and slots are the pure [`BuildQueue`]; this file performs them and
//! keeps each build's status and event history (replayed to every watcher from the start).

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use crate::build::{
    BuildOutcome, BuildRequest, BuildRunner, BuildState, LogLine, LogStream, Progress, now_nanos,
};
use crate::buildkit::Step;
use crate::metrics::{Metrics, Outcome};
use crate::queue::{BuildQueue, QueueAction};
use tenant::redact::Redactor;

/// A build's status as callers see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildStatus {
    pub id: String,
    pub state: BuildState,
    pub queue_position: u32,
    pub commit: String,
    pub framework: String,
    pub port: u16,
    pub image: String,
    pub digest: String,
    pub failure_reason: String,
    pub queued_at_ms: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub cached_steps: u32,
    pub total_steps: u32,
}

/// What a watcher receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    Status(BuildStatus),
    Log(LogLine),
    Step(Step),
}

/// Limits applied to builds that do not set their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_running: usize,
    pub default_timeout: Duration,
    pub default_memory_bytes: u64,
    /// Ended builds kept for GetBuild/WatchBuild; older ones are forgotten first.
    pub keep_ended: usize,
}

struct Record {
    status: BuildStatus,
    events: Vec<BuildEvent>,
    notify: Arc<Notify>,
    request: Option<BuildRequest>,
    cancel: Option<oneshot::Sender<()>>,
}

struct Shared {
    queue: BuildQueue,
    records: HashMap<String, Record>,
    /// Ended builds, oldest first.
    ended: VecDeque<String>,
}

struct Inner<R> {
    runner: R,
    limits: Limits,
    shared: Mutex<Shared>,
    metrics: Metrics,
}

/// The builds of this node. Cheap to clone.
pub struct Builds<R> {
    inner: Arc<Inner<R>>,
}

impl<R> Clone for Builds<R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<R> std::fmt::Debug for Builds<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builds")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    now_nanos() / 1_000_000
}

/// How a running build ended.
enum End {
    Done(BuildOutcome),
    Failed(String),
    TimedOut(Duration),
    Cancelled,
}

impl<R: BuildRunner> Builds<R> {
    pub fn new(runner: R, limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                runner,
                limits,
                shared: Mutex::new(Shared {
                    queue: BuildQueue::new(limits.max_running),
                    records: HashMap::new(),
                    ended: VecDeque::new(),
                }),
                metrics: Metrics::default(),
            }),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves consistent data (every update is one
        // assignment), so keep serving.
        self.inner.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// (running, waiting).
    pub fn load(&self) -> (usize, usize) {
        let s = self.lock();
        (s.queue.running(), s.queue.waiting())
    }

    /// Queues a build; a known id returns the existing build's status (idempotent).
    pub fn start(&self, mut request: BuildRequest) -> BuildStatus {
        if request.timeout.is_zero() {
            request.timeout = self.inner.limits.default_timeout;
        }
        if request.memory_limit_bytes == 0 {
            request.memory_limit_bytes = self.inner.limits.default_memory_bytes;
        }
        let id = request.id.clone();
        let actions = {
            let mut s = self.lock();
            if let Some(existing) = s.records.get(&id) {
                let mut status = existing.status.clone();
                status.queue_position = s.queue.position(&id).unwrap_or(0) as u32;
                return status;
            }
            let status = BuildStatus {
                id: id.clone(),
                state: BuildState::Queued,
                queued_at_ms: now_ms(),
                ..BuildStatus::default()
            };
            s.records.insert(
                id.clone(),
                Record {
                    events: vec![BuildEvent::Status(status.clone())],
                    status,
                    notify: Arc::new(Notify::new()),
                    request: Some(request),
                    cancel: None,
                },
            );
            s.queue.submit(&id)
        };
        self.perform(actions);
        self.get(&id).unwrap_or_else(|| unreachable_status(&id))
    }

    pub fn get(&self, id: &str) -> Option<BuildStatus> {
        let s = self.lock();
        let mut status = s.records.get(id)?.status.clone();
        status.queue_position = s.queue.position(id).unwrap_or(0) as u32;
        Some(status)
    }

    /// Cancels a waiting or running build and returns its final status (an ended build's status
    /// as is). `None` for an unknown id.
    pub async fn cancel(&self, id: &str) -> Option<BuildStatus> {
        let notify = {
            let mut s = self.lock();
            let waiting = s.queue.remove_waiting(id);
            let record = s.records.get_mut(id)?;
            if waiting {
                record.request = None;
                drop(s);
                self.finish(id, End::Cancelled);
                return self.get(id);
            }
            if let Some(cancel) = record.cancel.take() {
                let _ = cancel.send(());
            }
            record.notify.clone()
        };
        // Wait (bounded) for the running build to stop.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let status = self.get(id)?;
            if status.state.is_final() || tokio::time::Instant::now() >= deadline {
                return Some(status);
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// Every event of the build from its start, then live ones until it ends. `None` for an
    /// unknown id.
    pub fn watch(&self, id: &str) -> Option<mpsc::Receiver<BuildEvent>> {
        let notify = self.lock().records.get(id)?.notify.clone();
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let mut next = 0;
            loop {
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let (batch, done) = {
                    let s = this.lock();
                    let Some(r) = s.records.get(&id) else { return };
                    (r.events[next..].to_vec(), r.status.state.is_final())
                };
                next += batch.len();
                for ev in batch {
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                if done {
                    return;
                }
                notified.await;
            }
        });
        Some(rx)
    }

    fn perform(&self, actions: Vec<QueueAction>) {
        for QueueAction::Start(id) in actions {
            self.launch(id);
        }
    }

    fn push_event(&self, id: &str, f: impl FnOnce(&mut BuildStatus) -> Option<BuildEvent>) {
        let mut s = self.lock();
        let Some(r) = s.records.get_mut(id) else {
            return;
        };
        if let Some(ev) = f(&mut r.status) {
            r.events.push(ev);
        }
        r.notify.notify_waiters();
    }

    fn set_state(&self, id: &str, state: BuildState) {
        self.push_event(id, |st| {
            st.state = state;
            Some(BuildEvent::Status(st.clone()))
        });
    }

    fn launch(&self, id: String) {
        let (request, cancel_rx) = {
            let mut s = self.lock();
            let Some(r) = s.records.get_mut(&id) else {
                return;
            };
            let Some(request) = r.request.take() else {
                return;
            };
            let (tx, rx) = oneshot::channel();
            r.cancel = Some(tx);
            r.status.started_at_ms = now_ms();
            (request, rx)
        };
        let this = self.clone();
        tokio::spawn(async move {
            let timeout = request.timeout;
            // What the build reports never carries a secret's value (a step that prints one).
            let redactor = Redactor::new(request.secrets.iter().map(|(_, v)| v.as_str()));
            let (tx, mut rx) = mpsc::unbounded_channel();
            let run = tokio::time::timeout(timeout, this.inner.runner.run(request, tx));
            tokio::pin!(run);
            let mut cancel_rx = cancel_rx;
            let end = loop {
                tokio::select! {
                    biased;
                    Some(p) = rx.recv() => this.apply(&id, redacted(&redactor, p)),
                    r = &mut run => break match r {
                        Ok(Ok(outcome)) => End::Done(outcome),
                        Ok(Err(e)) => End::Failed(redactor.redact(&e.to_string()).into_owned()),
                        Err(_) => End::TimedOut(timeout),
                    },
                    Ok(()) = &mut cancel_rx => break End::Cancelled,
                }
            };
            // Dropping `run` above (on cancel/timeout) stopped the solve; keep what it said.
            while let Ok(p) = rx.try_recv() {
                this.apply(&id, redacted(&redactor, p));
            }
            this.finish(&id, end);
        });
    }

    fn apply(&self, id: &str, p: Progress) {
        match p {
            Progress::State(state) => self.set_state(id, state),
            Progress::Log(line) => self.push_event(id, |_| Some(BuildEvent::Log(line))),
            Progress::Step(step) => self.push_event(id, |_| Some(BuildEvent::Step(step))),
            Progress::Detected {
                commit,
                framework,
                port,
            } => self.push_event(id, |st| {
                st.commit = commit;
                st.framework = framework;
                st.port = port;
                None
            }),
        }
    }

    fn finish(&self, id: &str, end: End) {
        let (outcome, reason) = match &end {
            End::Done(_) => (Outcome::Succeeded, String::new()),
            End::Failed(reason) => (Outcome::Failed, reason.clone()),
            End::TimedOut(after) => (
                Outcome::TimedOut,
                format!(
                    "build {id} reached its time limit of {}s and was cancelled",
                    after.as_secs()
                ),
            ),
            End::Cancelled => (Outcome::Cancelled, format!("build {id} was cancelled")),
        };
        if !reason.is_empty() {
            self.push_event(id, |_| {
                Some(BuildEvent::Log(LogLine {
                    timestamp_nanos: now_nanos(),
                    step: "result".into(),
                    line: reason.clone(),
                    stream: LogStream::Stderr,
                }))
            });
        }
        let actions = {
            let mut s = self.lock();
            let was_running = s
                .records
                .get(id)
                .is_some_and(|r| r.status.started_at_ms > 0);
            let Some(r) = s.records.get_mut(id) else {
                return;
            };
            let st = &mut r.status;
            st.finished_at_ms = now_ms();
            st.failure_reason = reason;
            st.state = match outcome {
                Outcome::Succeeded => BuildState::Succeeded,
                Outcome::Cancelled => BuildState::Cancelled,
                Outcome::Failed | Outcome::TimedOut => BuildState::Failed,
            };
            if let End::Done(o) = end {
                st.commit = o.commit;
                st.framework = o.framework;
                st.port = o.port;
                st.image = o.image;
                st.digest = o.digest;
                st.cached_steps = o.cached_steps;
                st.total_steps = o.total_steps;
                self.inner
                    .metrics
                    .record_steps(o.cached_steps, o.total_steps);
            }
            let duration = if was_running {
                Duration::from_millis((st.finished_at_ms - st.started_at_ms).max(0) as u64)
            } else {
                Duration::ZERO
            };
            self.inner
                .metrics
                .record_outcome(outcome, was_running.then_some(duration));
            r.cancel = None;
            r.events.push(BuildEvent::Status(r.status.clone()));
            r.notify.notify_waiters();
            s.ended.push_back(id.to_owned());
            while s.ended.len() > self.inner.limits.keep_ended.max(1) {
                if let Some(old) = s.ended.pop_front() {
                    s.records.remove(&old);
                }
            }
            if was_running {
                s.queue.finished(id)
            } else {
                Vec::new()
            }
        };
        self.perform(actions);
    }
}

/// `p` with every secret value in its text replaced.
fn redacted(redactor: &Redactor, p: Progress) -> Progress {
    if redactor.is_empty() {
        return p;
    }
    let r = |text: &str| redactor.redact(text).into_owned();
    match p {
        Progress::Log(line) => Progress::Log(LogLine {
            step: r(&line.step),
            line: r(&line.line),
            ..line
        }),
        Progress::Step(step) => Progress::Step(Step {
            name: r(&step.name),
            error: step.error.as_deref().map(r),
            ..step
        }),
        other => other,
    }
}

fn unreachable_status(id: &str) -> BuildStatus {
    BuildStatus {
        id: id.to_owned(),
        state: BuildState::Failed,
        failure_reason: "build record vanished".into(),
        ..BuildStatus::default()
    }
}
