//! Watching a running container: the exit waiter that applies the restart policy, and the
//! health loop that keeps the state healthy/unhealthy.

use std::sync::Arc;
use std::time::Duration;

use super::record::{Entry, State};
use super::{Agent, ContainerEngine};
use crate::health::{Thresholds, Verdict};
use crate::network::ContainerNetwork;
use crate::restart::{self, AfterExit, Exit};

impl<E: ContainerEngine, N: ContainerNetwork> Agent<E, N> {
    /// Starts the exit waiter and the health loop of a container.
    pub(crate) fn watch(self: &Arc<Self>, entry: &Arc<Entry>) {
        let supervisor = tokio::spawn(self.clone().supervise(entry.clone()));
        let health = tokio::spawn(self.clone().health_loop(entry.clone()));
        let mut w = entry.watchers.lock().expect("watchers lock");
        w.push(supervisor);
        w.push(health);
    }

    async fn supervise(self: Arc<Self>, entry: Arc<Entry>) {
        let id = entry.status().container_id;
        let mut changes = entry.subscribe();
        loop {
            if !entry.status().state.is_running() {
                // Nothing runs: wait until a deploy or restart starts a task again.
                if changes.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let code = match self.engine.wait(&id).await {
                Ok(code) => code,
                Err(e) if e.is_not_found() => {
                    // The task vanished (deleted behind our back): count it as a failure.
                    tracing::warn!(container_id = %id, "task disappeared");
                    255
                }
                Err(e) => {
                    // containerd restarting: the container keeps running; wait again.
                    tracing::debug!(container_id = %id, error = %e, "wait interrupted; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let oom = self.engine.oom_killed(&id);
            let status = entry.status();
            let endpoint = self.isolation_endpoint(&status);
            if let Err(e) = self.engine.delete_task(&id).await {
                tracing::warn!(container_id = %id, error = %e, "cannot delete exited task");
            }
            let _ = self.isolation.detach(&endpoint);
            let exit = Exit {
                code,
                oom_killed: oom,
            };
            let decision = restart::after_exit(
                status.spec.restart,
                exit,
                status.wanted_running,
                status.restart_count,
            );
            self.metrics.count_exit(oom);
            tracing::info!(container_id = %id, exit_code = code, oom_killed = oom, ?decision, "container exited");
            entry.update(|s| {
                s.exit_code = code as i32;
                s.oom_killed = oom;
                s.pid = 0;
                let what = if oom {
                    "killed: out of memory".to_owned()
                } else {
                    format!("exited with code {code}")
                };
                match decision {
                    AfterExit::Restart { after } => {
                        s.state = State::Restarting;
                        s.message = format!("{what}; restarting in {} ms", after.as_millis());
                    }
                    AfterExit::StayStopped => {
                        if s.state != State::Failed {
                            s.state = State::Stopped;
                        }
                    }
                    AfterExit::Completed => {
                        s.state = State::Stopped;
                        s.message = what;
                    }
                    AfterExit::GiveUp { reason } => {
                        s.state = State::Failed;
                        s.message = format!("{what}; {reason}");
                    }
                }
            });
            if let AfterExit::Restart { after } = decision {
                tokio::time::sleep(after).await;
                let _op = self.op_lock(&id).await;
                let current = entry.status();
                if !current.wanted_running || current.state != State::Restarting {
                    continue;
                }
                entry.update(|s| s.restart_count += 1);
                if let Err(e) = self.start_new_task(&entry).await {
                    tracing::warn!(container_id = %id, error = %e, "restart failed");
                    entry.update(|s| {
                        s.state = State::Failed;
                        s.message = format!("restart failed: {e}");
                    });
                }
            }
        }
    }

    /// Probes while a process runs. Before the first healthy verdict it probes quickly (2 ms,
    /// doubling up to the interval) so a deploy sees its container healthy soon after it
    /// listens. Between probes it waits for the next probe's time or a change of the
    /// container's status (an exit, a stop, a new task), whichever comes first; while no
    /// process runs it waits for a change only. Timers are tokio's (paused-time tests).
    async fn health_loop(self: Arc<Self>, entry: Arc<Entry>) {
        let spec = entry.status().spec;
        let Some(h) = spec.health else { return };
        let interval = Duration::from_millis(u64::from(h.interval_ms));
        let mut changes = entry.subscribe();
        let mut generation = u64::MAX;
        let mut thresholds = Thresholds::new(&h);
        let mut fast = Duration::from_millis(2);
        loop {
            // Every status change bumps this count: what is read below is seen.
            let seen = *changes.borrow_and_update();
            let s = entry.status();
            if !s.state.is_running() {
                if changes.changed().await.is_err() {
                    return;
                }
                continue;
            }
            if s.generation != generation {
                generation = s.generation;
                thresholds = Thresholds::new(&h);
                fast = Duration::from_millis(2);
            }
            let Some(ip) = s.ip else { return };
            let result = match &h.probe {
                crate::spec::Probe::Exec { command } => {
                    let timeout = Duration::from_millis(u64::from(h.timeout_ms));
                    self.engine
                        .exec_probe(&s.container_id, command, timeout)
                        .await
                }
                _ => self.networks.probe(ip, &h).await,
            };
            let verdict = thresholds.observe(result.is_ok());
            let state = match verdict {
                Verdict::Starting => State::Starting,
                Verdict::Healthy => State::Healthy,
                Verdict::Unhealthy => State::Unhealthy,
            };
            let current = entry.status();
            let message = result.err().unwrap_or_default();
            let mut ours = 0;
            if current.generation == generation
                && current.state.is_running()
                && (current.state != state || current.message != message)
            {
                entry.update(|st| {
                    st.state = state;
                    st.message = message;
                });
                ours = 1;
            }
            let delay = if verdict == Verdict::Starting {
                let d = fast.min(interval);
                fast = (fast * 2).min(interval);
                d
            } else {
                interval
            };
            // A change made by someone else since `seen` is news: look at it now.
            if *changes.borrow_and_update() != seen + ours {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
