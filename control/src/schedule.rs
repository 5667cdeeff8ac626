//! Placement decisions as pure functions: which build node builds, which compute node runs a
//! container, which nodes are down. The store gathers the views; these functions decide.

use std::time::Duration;

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
/// replicas of this set (distinct nodes first; the set being replaced does not count, it goes),
/// then the emptiest, then the lowest id; each pick takes its share of its node. `Err(i)`: no
/// node has room for replica `i` (from 0).
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

#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatView {
    pub id: Uuid,
    pub up: bool,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub registered_at: DateTime<Utc>,
}

/// Nodes that are up but have not answered for longer than `down_after` (a node that never
/// answered counts from its registration).
pub fn nodes_to_mark_down(
    nodes: &[HeartbeatView],
    now: DateTime<Utc>,
    down_after: Duration,
) -> Vec<Uuid> {
    let limit = chrono::Duration::from_std(down_after).unwrap_or(chrono::Duration::MAX);
    nodes
        .iter()
        .filter(|n| n.up && now - n.last_heartbeat.unwrap_or(n.registered_at) > limit)
        .map(|n| n.id)
        .collect()
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
