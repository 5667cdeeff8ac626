//! Placement decisions as pure functions: which build node builds, which compute node runs a
//! container, which nodes are down. The store gathers the views; these functions decide.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A build node never runs more than this many builds at once.
pub const MAX_BUILDS_PER_NODE: u32 = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct BuildNodeView {
    pub id: Uuid,
    pub up: bool,
    /// Configured slots (capped at [`MAX_BUILDS_PER_NODE`]).
    pub slots: u32,
    pub builds_running: u32,
    /// How many times this node built the repository (its layer cache is warm for it).
    pub repo_builds: u32,
    pub repo_last_built: Option<DateTime<Utc>>,
}

/// The up build node with a free slot and the warmest cache for the repository; ties go to the
/// least busy node, then the lowest id (deterministic).
pub fn pick_build_node(nodes: &[BuildNodeView]) -> Option<Uuid> {
    nodes
        .iter()
        .filter(|n| n.up && n.builds_running < n.slots.min(MAX_BUILDS_PER_NODE))
        .max_by(|a, b| {
            (a.repo_builds > 0)
                .cmp(&(b.repo_builds > 0))
                .then(a.repo_last_built.cmp(&b.repo_last_built))
                .then(b.builds_running.cmp(&a.builds_running))
                .then(b.id.cmp(&a.id))
        })
        .map(|n| n.id)
}

#[derive(Debug, Clone, PartialEq)]
pub struct ComputeNodeView {
    pub id: Uuid,
    pub up: bool,
    /// 0 = not declared: the node is not limited on that axis.
    pub cpu_millis_total: u64,
    pub cpu_millis_allocated: u64,
    pub memory_bytes_total: u64,
    pub memory_bytes_allocated: u64,
    /// Containers of the same service already on this node.
    pub replicas_of_service: u32,
    /// The share of the allocation above held by the set a new deployment of the service
    /// replaces (its serving deployment's containers here): it goes once the new set is
    /// switched in, so [`place_replicas`] does not count it (#15).
    pub outgoing_cpu_millis: u64,
    pub outgoing_memory_bytes: u64,
}

impl ComputeNodeView {
    fn fits(&self, cpu: u64, mem: u64) -> bool {
        let cpu_ok =
            self.cpu_millis_total == 0 || self.cpu_millis_allocated + cpu <= self.cpu_millis_total;
        let mem_ok = self.memory_bytes_total == 0
            || self.memory_bytes_allocated + mem <= self.memory_bytes_total;
        cpu_ok && mem_ok
    }

    /// Free share of the scarcer resource, in thousandths (undeclared counts as all free).
    fn free_permille(&self) -> u64 {
        let free = |total: u64, used: u64| {
            (total.saturating_sub(used) * 1000)
                .checked_div(total)
                .unwrap_or(1000)
        };
        free(self.cpu_millis_total, self.cpu_millis_allocated)
            .min(free(self.memory_bytes_total, self.memory_bytes_allocated))
    }
}

/// The up compute node with room for the request; replicas of one service spread (fewest of its
/// replicas first), then the emptiest node, then the lowest id.
pub fn pick_compute_node(
    nodes: &[ComputeNodeView],
    cpu_millis: u64,
    memory_bytes: u64,
) -> Option<Uuid> {
    nodes
        .iter()
        .filter(|n| n.up && n.fits(cpu_millis, memory_bytes))
        .min_by(|a, b| {
            a.replicas_of_service
                .cmp(&b.replicas_of_service)
                .then(b.free_permille().cmp(&a.free_permille()))
                .then(a.id.cmp(&b.id))
        })
        .map(|n| n.id)
}

/// Where a container of a service goes: the node holding the service's volumes when it has one
/// (the volumes live there; its old container is stopped before the new one starts, so its
/// share frees first and room is not asked), else [`pick_compute_node`]. `None` when that node
/// is not up.
pub fn place_container(
    nodes: &[ComputeNodeView],
    cpu_millis: u64,
    memory_bytes: u64,
    volume_node: Option<Uuid>,
) -> Option<Uuid> {
    match volume_node {
        Some(pinned) => nodes.iter().find(|n| n.id == pinned && n.up).map(|n| n.id),
        None => pick_compute_node(nodes, cpu_millis, memory_bytes),
    }
}

/// Compute nodes for the `count` replicas of one deployment (#15). `placed` are the nodes of
/// the replicas it already placed (a resumed deployment keeps them; their share is already in
/// the views), the rest are picked one at a time: the up node with room holding the fewest
/// replicas of this set (distinct nodes first), then the emptiest, then the lowest id; each
/// pick takes its share of its node. The set being replaced counts neither in the spread nor
/// in the room (its `outgoing_*` share): room is asked for the service as it runs after the
/// switch, not for the old and the new set at once (they overlap only until the old set is
/// drained). So after a node loss the survivors need room for the set only, not for a second
/// one beside the replicas still serving. `Err(i)`: no node has room for replica `i` (from 0).
pub fn place_replicas(
    nodes: &[ComputeNodeView],
    placed: &[Uuid],
    count: u32,
    cpu_millis: u64,
    memory_bytes: u64,
) -> Result<Vec<Uuid>, u32> {
    let mut views: Vec<ComputeNodeView> = nodes
        .iter()
        .map(|n| ComputeNodeView {
            replicas_of_service: placed.iter().filter(|p| **p == n.id).count() as u32,
            cpu_millis_allocated: n.cpu_millis_allocated.saturating_sub(n.outgoing_cpu_millis),
            memory_bytes_allocated: n
                .memory_bytes_allocated
                .saturating_sub(n.outgoing_memory_bytes),
            outgoing_cpu_millis: 0,
            outgoing_memory_bytes: 0,
            ..n.clone()
        })
        .collect();
    let mut picks: Vec<Uuid> = placed.iter().take(count as usize).copied().collect();
    for replica in picks.len() as u32..count {
        let pick = pick_compute_node(&views, cpu_millis, memory_bytes).ok_or(replica)?;
        if let Some(v) = views.iter_mut().find(|v| v.id == pick) {
            v.replicas_of_service += 1;
            v.cpu_millis_allocated += cpu_millis;
            v.memory_bytes_allocated += memory_bytes;
        }
        picks.push(pick);
    }
    Ok(picks)
}

/// How a deployment that found no room for a replica says so (the start's failure reason
/// and the reason a move waits for room begin with it).
pub const NO_ROOM: &str = "no compute node is up with room for";

/// Why replica `replica` (from 0) of `count`, each of `cpu_millis` and `memory_bytes`, has
/// no room.
pub fn no_room(cpu_millis: u64, memory_bytes: u64, replica: u32, count: u32) -> String {
    let which = if count > 1 {
        format!(" (replica {} of {count})", replica + 1)
    } else {
        String::new()
    };
    format!("{NO_ROOM} {cpu_millis} cpu millis and {memory_bytes} bytes of memory{which}")
}

/// What one direct probe of a node by control's monitor came to (#15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// It answered within the bound.
    Answered,
    /// Its call failed before the bound (connection refused or reset, TLS refused, an error
    /// status): something at its address said no.
    Refused,
    /// No answer within the bound.
    Silent,
}

/// One node's probe in a round of the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probed {
    pub id: Uuid,
    /// Up in the store now (a node already down is not marked again).
    pub up: bool,
    pub probe: Probe,
}

/// A node is marked down only after this many failed probes in a row (rounds the monitor
/// held conclusive), besides `down_after` without an answer.
pub const FAILED_PROBES_FOR_DOWN: u32 = 2;

/// A round whose timers fired later than this after their deadline (the monitor's own process
/// was starved: a loaded machine, a paused VM) proves nothing about the nodes.
pub const MONITOR_STALL_TOLERANCE: Duration = Duration::from_secs(1);

/// How long the monitor waits for a node's answer: half of `down_after` (two probes fit in
/// it), between 500 ms and 2.5 s (below the channels' 3 s connect timeout, so an address that
/// answers nothing is seen silent, not refused).
pub fn probe_timeout(down_after: Duration) -> Duration {
    (down_after / 2).clamp(Duration::from_millis(500), Duration::from_millis(2500))
}

/// Whether a round whose timers fired `lateness` after their deadline is inconclusive.
pub fn stalled(lateness: Duration) -> bool {
    lateness > MONITOR_STALL_TOLERANCE
}

#[derive(Debug, Clone, Copy)]
struct Watched {
    /// The last answer, or when this monitor first probed the node.
    last_answer: Instant,
    /// Failed probes in a row, counted in conclusive rounds only.
    failed: u32,
}

/// Control's monitor's memory of the nodes' answers and the rule that marks one down (#15).
/// A late answer alone never marks a node down; a node is down when all of these hold:
/// - it failed [`FAILED_PROBES_FOR_DOWN`] direct probes in a row (refused, or silent for the
///   [`probe_timeout`]) and has not answered for `down_after`;
/// - the round is conclusive: the monitor's own timers were not late (a starved control
///   process sees everything as silent: [`stalled`]);
/// - another node answered in the same round (a witness that control's own network and
///   process work): when every node fails at once the fault is more likely control's, and
///   the last live nodes are never marked down together. A lone node is believed on a refused
///   connection only.
///
/// The memory is the monitor's own (one instance runs it at a time): a monitor taking over
/// counts from its first probe, so a dead node is still marked down within `down_after`
/// plus two probes.
#[derive(Debug, Clone)]
pub struct NodeWatch {
    down_after: Duration,
    nodes: HashMap<Uuid, Watched>,
}

impl NodeWatch {
    pub fn new(down_after: Duration) -> Self {
        Self {
            down_after,
            nodes: HashMap::new(),
        }
    }

    /// Records one round of probes made at `at` (`stalled`: the round is inconclusive) and
    /// returns the up nodes to mark down. Nodes no longer probed are forgotten.
    pub fn round(&mut self, at: Instant, probes: &[Probed], stalled: bool) -> Vec<Uuid> {
        self.nodes
            .retain(|id, _| probes.iter().any(|p| p.id == *id));
        for p in probes {
            let w = self.nodes.entry(p.id).or_insert(Watched {
                last_answer: at,
                failed: 0,
            });
            match p.probe {
                Probe::Answered => {
                    *w = Watched {
                        last_answer: at,
                        failed: 0,
                    }
                }
                Probe::Refused | Probe::Silent if !stalled => w.failed += 1,
                Probe::Refused | Probe::Silent => {}
            }
        }
        if stalled {
            return vec![];
        }
        let witness = probes.iter().any(|p| p.probe == Probe::Answered);
        let lone = probes.len() == 1;
        probes
            .iter()
            .filter(|p| p.up && (witness || (lone && p.probe == Probe::Refused)))
            .filter(|p| {
                self.nodes.get(&p.id).is_some_and(|w| {
                    w.failed >= FAILED_PROBES_FOR_DOWN
                        && at.saturating_duration_since(w.last_answer) >= self.down_after
                })
            })
            .map(|p| p.id)
            .collect()
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
