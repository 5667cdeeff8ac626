//! Control's node monitor (#15): each round it probes every compute and build node directly
//! (all at once, each call bounded by [`schedule::probe_timeout`]), records the answers as
//! heartbeats, and marks down the nodes [`schedule::NodeWatch`] holds dead: failed probes for
//! `down_after`, in rounds where the monitor's own timers were on time and another node
//! answered. Their replicas are placed again ([`reschedule::reschedule`]); a node answering
//! again after it was down has its orphaned containers removed ([`reschedule::clean_returned`]).
//! Each round ends by trying the services waiting for room again ([`reschedule::retry_waiting`]).

use std::time::{Duration, Instant};

use ::api::{NodeRole, NodeStatus};
use uuid::Uuid;

use super::driver::Clients;
use super::reschedule;
use crate::schedule::{self, NodeWatch, Probe, Probed};
use crate::store::{Node, Store, StoreError};

/// The monitor's state between rounds (one control instance runs it at a time).
#[derive(Debug)]
pub struct Monitor {
    watch: NodeWatch,
    probe_timeout: Duration,
    /// How late the monitor's last wait between rounds woke (its process was starved).
    late: Duration,
}

/// What one round saw and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    /// Nodes that answered.
    pub answered: Vec<Uuid>,
    /// Nodes whose probe failed (refused or silent).
    pub failed: Vec<Uuid>,
    /// The round proved nothing: the monitor's timers fired late by this much.
    pub stalled: Option<Duration>,
    /// Nodes marked down by this round.
    pub marked_down: Vec<Uuid>,
    /// What became of the services waiting for room, tried again this round.
    pub room: Vec<reschedule::Lost>,
}

impl Monitor {
    pub fn new(down_after: Duration) -> Self {
        Self {
            watch: NodeWatch::new(down_after),
            probe_timeout: schedule::probe_timeout(down_after),
            late: Duration::ZERO,
        }
    }

    /// Tells the monitor how late its wait for the next round woke (its process was starved).
    pub fn woke_late(&mut self, late: Duration) {
        self.late = self.late.max(late);
    }

    /// One round: probe, record heartbeats, mark down, reschedule, clean returned nodes.
    pub async fn round(&mut self, store: &Store, clients: &Clients) -> Result<Round, StoreError> {
        let nodes: Vec<Node> = store
            .nodes()
            .await?
            .into_iter()
            .filter(|n| n.role != NodeRole::Proxy)
            .collect();
        let bound = self.probe_timeout;
        let probes =
            futures::future::join_all(nodes.iter().map(|node| probe(clients, node, bound))).await;
        // Decided as of the probes' end: a failed one had until then to answer.
        let at = Instant::now();
        let late = probes
            .iter()
            .map(|p| p.late)
            .max()
            .unwrap_or_default()
            .max(std::mem::take(&mut self.late));
        let stalled = schedule::stalled(late);
        let mut round = Round {
            stalled: stalled.then_some(late),
            ..Round::default()
        };
        let seen: Vec<Probed> = nodes
            .iter()
            .zip(&probes)
            .map(|(node, p)| Probed {
                id: node.id,
                up: node.status == NodeStatus::Up,
                probe: p.probe,
            })
            .collect();
        if let Some(late) = round.stalled {
            tracing::warn!(
                ?late,
                "the node monitor was starved: this round marks no node down"
            );
        }
        let down = self.watch.round(at, &seen, stalled);
        if !down.is_empty() {
            store.mark_nodes_down(&down).await?;
            tracing::warn!(
                ?down,
                "nodes marked down: they failed every probe for down_after while others answered"
            );
            // Their replicas are placed again on the nodes that are up (#15).
            if let Err(e) = reschedule::reschedule(store, &down).await {
                tracing::warn!(error = %e, "rescheduling the replicas of lost nodes failed");
            }
        }
        for (node, p) in nodes.iter().zip(&probes) {
            if p.probe != Probe::Answered {
                tracing::debug!(node = %node.name, probe = ?p.probe, error = ?p.error, "node did not answer");
                round.failed.push(node.id);
                continue;
            }
            round.answered.push(node.id);
            store.heartbeat(node.id, p.capacity).await?;
            // Back after it was down: what it still runs of deployments replaced meanwhile
            // goes (#15).
            if node.status == NodeStatus::Down
                && node.role == NodeRole::Compute
                && let Err(e) = reschedule::clean_returned(store, clients, node).await
            {
                tracing::warn!(node = %node.name, error = %e, "cleaning a returned node failed");
            }
        }
        // The services waiting for room are tried again: room may have freed since (#15).
        match reschedule::retry_waiting(store).await {
            Ok(outcomes) => round.room = outcomes,
            Err(e) => tracing::warn!(error = %e, "trying the services waiting for room failed"),
        }
        round.marked_down = down;
        Ok(round)
    }
}

struct Probing {
    probe: Probe,
    capacity: Option<(i64, i64)>,
    error: Option<String>,
    /// How long after its deadline a timed-out probe was seen.
    late: Duration,
}

/// One direct call to the node (the agent's info, buildd's ping), bounded by `bound`.
async fn probe(clients: &Clients, node: &Node, bound: Duration) -> Probing {
    let started = Instant::now();
    let call = async {
        match node.role {
            NodeRole::Compute => clients.node.info(&node.address).await.map(|c| {
                Some((c.cpu_millis_total as i64, c.memory_bytes_total as i64))
                    .filter(|c| c.0 > 0 || c.1 > 0)
            }),
            _ => clients.builder.ping(&node.address).await.map(|_| None),
        }
    };
    match tokio::time::timeout(bound, call).await {
        Ok(Ok(capacity)) => Probing {
            probe: Probe::Answered,
            capacity,
            error: None,
            late: Duration::ZERO,
        },
        Ok(Err(e)) => Probing {
            probe: Probe::Refused,
            capacity: None,
            error: Some(e.to_string()),
            late: Duration::ZERO,
        },
        Err(_) => Probing {
            probe: Probe::Silent,
            capacity: None,
            error: None,
            late: started.elapsed().saturating_sub(bound),
        },
    }
}
