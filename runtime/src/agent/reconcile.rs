//! Reconcile after a start: what containerd, the address table and the log directories hold
//! is compared with what should be, and a plan (pure) says what to adopt, restart, keep
//! stopped or remove. The containers keep running through an agent restart.

use std::collections::HashSet;
use std::sync::Arc;

use super::record::{self, Entry, State, Status};
use super::task::TaskState;
use super::{Agent, ContainerEngine};
use crate::error::Result;
use crate::network::ContainerNetwork;
use crate::spec::DeploySpec;
use crate::userns::IdMap;

/// A container as found in containerd.
#[derive(Debug, Clone)]
pub struct Observed {
    pub id: String,
    pub spec: Option<DeploySpec>,
    pub wanted_running: bool,
    pub bridge: String,
    pub task: TaskState,
    pub image_digest: String,
    pub created_ms: i64,
    /// The host id range its labels name (`None`: made before user namespaces).
    pub id_map: Option<IdMap>,
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Running as it should: watch it again, touch nothing.
    Adopt(String),
    /// Should run but does not: start a new task.
    Restart(String),
    /// Was stopped on purpose: track it, clear its dead task.
    KeepStopped(String),
    /// Ours but unreadable: remove with everything it holds.
    RemoveContainer { id: String, bridge: String },
    /// An address whose container is gone: free it (and its endpoint and bridge).
    ReleaseLease { id: String, bridge: String },
    /// Logs of a container that is gone.
    RemoveLogs(String),
}

/// The plan, from what was observed.
pub fn plan(
    containers: &[Observed],
    leases: &[(String, String)],
    log_dirs: &[String],
) -> Vec<Action> {
    let mut actions = Vec::new();
    let known: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    for c in containers {
        let action = match (&c.spec, c.task) {
            (None, _) => Action::RemoveContainer {
                id: c.id.clone(),
                bridge: c.bridge.clone(),
            },
            (Some(_), TaskState::Running { .. }) if c.wanted_running => Action::Adopt(c.id.clone()),
            (Some(_), _) if c.wanted_running => Action::Restart(c.id.clone()),
            (Some(_), _) => Action::KeepStopped(c.id.clone()),
        };
        actions.push(action);
    }
    for (bridge, id) in leases {
        if !known.contains(id.as_str()) {
            actions.push(Action::ReleaseLease {
                id: id.clone(),
                bridge: bridge.clone(),
            });
        }
    }
    for id in log_dirs {
        if !known.contains(id.as_str()) {
            actions.push(Action::RemoveLogs(id.clone()));
        }
    }
    actions
}

impl<E: ContainerEngine, N: ContainerNetwork> Agent<E, N> {
    /// Observes, plans and carries out the plan; returns what was done.
    pub async fn reconcile(self: &Arc<Self>) -> Result<Vec<Action>> {
        let observed = self.observe().await?;
        let leases = self.networks.leases()?;
        let actions = plan(&observed, &leases, &self.logs.known());
        self.reconcile_ranges(&observed, &actions)?;
        for action in &actions {
            if let Err(e) = self.apply(action, &observed).await {
                tracing::warn!(?action, error = %e, "reconcile step failed");
            } else {
                tracing::info!(?action, "reconciled");
            }
        }
        Ok(actions)
    }

    /// Keeps the id ranges the namespace's containers (those the plan keeps) carry, frees
    /// the ranges of projects with none left.
    fn reconcile_ranges(&self, observed: &[Observed], actions: &[Action]) -> Result<()> {
        let removed: HashSet<&str> = actions
            .iter()
            .filter_map(|a| match a {
                Action::RemoveContainer { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        let in_use: Vec<(String, IdMap)> = observed
            .iter()
            .filter(|o| !removed.contains(o.id.as_str()))
            .filter_map(|o| Some((o.spec.as_ref()?.workload.project_id.clone(), o.id_map?)))
            .collect();
        let freed = self
            .userns
            .update(|s| Ok(s.retain_in_use(&self.config.namespace, &in_use)))?;
        for a in freed {
            tracing::info!(project = %a.project, base = a.base, "id range freed: no container left");
        }
        Ok(())
    }

    async fn observe(&self) -> Result<Vec<Observed>> {
        let list = self.engine.containers().await?;
        let mut out = Vec::new();
        for c in list {
            if c.labels.get(record::LABEL_MANAGED).map(String::as_str) != Some("true") {
                continue;
            }
            out.push(Observed {
                spec: record::spec_from_extensions(&c.extensions),
                wanted_running: c.labels.get(record::LABEL_DESIRED).map(String::as_str)
                    != Some("stopped"),
                bridge: c
                    .labels
                    .get(record::LABEL_BRIDGE)
                    .cloned()
                    .unwrap_or_default(),
                image_digest: c
                    .labels
                    .get(record::LABEL_IMAGE_DIGEST)
                    .cloned()
                    .unwrap_or_default(),
                created_ms: c
                    .labels
                    .get(record::LABEL_CREATED_MS)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                id_map: record::id_map_from_labels(&c.labels),
                task: self.engine.task_state(&c.id).await?,
                id: c.id,
            });
        }
        Ok(out)
    }

    async fn apply(self: &Arc<Self>, action: &Action, observed: &[Observed]) -> Result<()> {
        let find = |id: &str| observed.iter().find(|o| o.id == id);
        match action {
            Action::Adopt(id) | Action::Restart(id) | Action::KeepStopped(id) => {
                let Some(o) = find(id) else { return Ok(()) };
                let Some(spec) = o.spec.clone() else {
                    return Ok(());
                };
                let _op = self.op_lock(id).await;
                let ip = self.networks.address_of(&o.bridge, id)?;
                let pid = match o.task {
                    TaskState::Running { pid } => pid,
                    _ => 0,
                };
                let state = match action {
                    Action::Adopt(_) if spec.health.is_some() => State::Starting,
                    Action::Adopt(_) => State::Healthy,
                    _ => State::Stopped,
                };
                let entry = Arc::new(Entry::new(Status {
                    container_id: id.clone(),
                    spec: spec.clone(),
                    image_digest: o.image_digest.clone(),
                    state,
                    ip,
                    bridge: o.bridge.clone(),
                    exit_code: 0,
                    oom_killed: false,
                    restart_count: 0,
                    message: String::new(),
                    created_ms: o.created_ms,
                    started_ms: 0,
                    pid,
                    wanted_running: o.wanted_running,
                    generation: 1,
                    id_map: o.id_map,
                }));
                self.logs.open(&self.log_labels(id, &spec))?;
                match action {
                    Action::Restart(_) => {
                        // The network namespace does not survive a reboot: plug it in again.
                        if !self.networks.is_plugged_in(id) {
                            let w = &spec.workload;
                            let ep = self
                                .networks
                                .attach(id, &w.project_id, &w.environment_id, &w.host_names())
                                .await?;
                            entry.update(|s| s.ip = Some(ep.ip));
                        }
                        self.start_new_task(&entry).await?;
                    }
                    Action::KeepStopped(_) => self.engine.delete_task(id).await?,
                    _ => {
                        // Adopted while running: make sure its isolation is attached (a no-op
                        // when the pinned programs already are: they outlive the agent).
                        let endpoint = self.isolation_endpoint(&entry.status());
                        if let Err(e) = self.isolation.attach(&endpoint) {
                            tracing::warn!(container = %id, error = %e, "re-attaching isolation");
                        }
                    }
                }
                self.insert_entry(id, entry.clone());
                self.watch(&entry);
                Ok(())
            }
            Action::RemoveContainer { id, bridge } => self.teardown(id, bridge).await,
            Action::ReleaseLease { id, bridge } => self.networks.detach(id, bridge).await,
            Action::RemoveLogs(id) => {
                self.logs.remove(id);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::deploy::tests::sample;

    fn obs(id: &str, spec: bool, wanted: bool, task: TaskState) -> Observed {
        Observed {
            id: id.into(),
            spec: spec.then(sample),
            wanted_running: wanted,
            bridge: "spb1".into(),
            task,
            image_digest: String::new(),
            created_ms: 0,
            id_map: None,
        }
    }

    #[test]
    fn adopts_running_restarts_dead_and_clears_orphans() {
        let running = TaskState::Running { pid: 7 };
        let dead = TaskState::Stopped { exit_code: 137 };
        let containers = vec![
            obs("a", true, true, running),
            obs("b", true, true, dead),
            obs("c", true, true, TaskState::Missing),
            obs("d", true, false, dead),
            obs("e", false, true, running),
        ];
        let leases = vec![
            ("spb1".to_owned(), "a".to_owned()),
            ("spb1".to_owned(), "gone".to_owned()),
        ];
        let logs = vec!["a".to_owned(), "old".to_owned()];
        let p = plan(&containers, &leases, &logs);
        assert_eq!(
            p,
            vec![
                Action::Adopt("a".into()),
                Action::Restart("b".into()),
                Action::Restart("c".into()),
                Action::KeepStopped("d".into()),
                Action::RemoveContainer {
                    id: "e".into(),
                    bridge: "spb1".into()
                },
                Action::ReleaseLease {
                    id: "gone".into(),
                    bridge: "spb1".into()
                },
                Action::RemoveLogs("old".into()),
            ]
        );
    }
}
