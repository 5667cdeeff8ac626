//! Upstream sets: the containers serving a service, their health, load balancing, and the
//! in-flight tracking that lets a switch drain the old set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::health::{HealthCheckSpec, HealthCounter};
use crate::metrics::ServiceMetrics;

/// One upstream as the admin API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamSpec {
    /// "ip:port".
    pub address: String,
    #[serde(default)]
    pub deployment_id: String,
    /// Relative weight, at least 1.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// How requests are spread over a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    LeastConnections,
}

/// Why an upstream set was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("upstream address {address:?} is not ip:port")]
    InvalidAddress { address: String },
    #[error("upstream address {address} appears twice")]
    Duplicate { address: String },
}

/// Parses and checks a set of upstream specs (weight 0 becomes 1).
pub fn validate_upstreams(
    specs: Vec<UpstreamSpec>,
) -> Result<Vec<(UpstreamSpec, SocketAddr)>, UpstreamError> {
    let mut out: Vec<(UpstreamSpec, SocketAddr)> = Vec::with_capacity(specs.len());
    for mut spec in specs {
        let addr: SocketAddr =
            spec.address
                .trim()
                .parse()
                .map_err(|_| UpstreamError::InvalidAddress {
                    address: spec.address.clone(),
                })?;
        if out.iter().any(|(_, a)| *a == addr) {
            return Err(UpstreamError::Duplicate {
                address: spec.address,
            });
        }
        spec.address = addr.to_string();
        spec.weight = spec.weight.max(1);
        out.push((spec, addr));
    }
    Ok(out)
}

/// One upstream of a set, with its live state.
#[derive(Debug)]
pub struct Upstream {
    pub spec: UpstreamSpec,
    pub addr: SocketAddr,
    healthy: AtomicBool,
    counter: Mutex<HealthCounter>,
    /// Requests currently proxied to it (for least-connections).
    active: AtomicUsize,
    /// The set's, woken whenever this upstream's health flips.
    health_changed: Arc<tokio::sync::Notify>,
}

impl Upstream {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Feeds one active check result; returns the new state when it changed.
    pub fn observe(&self, passed: bool, spec: &HealthCheckSpec) -> Option<bool> {
        let mut counter = self.counter.lock().unwrap_or_else(|e| e.into_inner());
        let changed = counter.observe(passed, spec);
        self.healthy.store(counter.healthy, Ordering::Release);
        if changed.is_some() {
            self.health_changed.notify_waiters();
        }
        changed
    }

    /// Passive ejection after a connect error; true when it was healthy before.
    pub fn eject(&self) -> bool {
        let mut counter = self.counter.lock().unwrap_or_else(|e| e.into_inner());
        let changed = counter.eject();
        self.healthy.store(false, Ordering::Release);
        if changed {
            self.health_changed.notify_waiters();
        }
        changed
    }
}

/// The upstreams serving one service at one generation. A set is created by a switch, is active
/// until the next switch, then drains: it counts requests and long-lived connections in flight.
#[derive(Debug)]
pub struct UpstreamSet {
    pub service_id: String,
    pub generation: u64,
    pub upstreams: Vec<Arc<Upstream>>,
    pub load_balancing: LoadBalancing,
    pub health_check: HealthCheckSpec,
    pub metrics: Arc<ServiceMetrics>,
    total_weight: u64,
    next: AtomicU64,
    in_flight: AtomicUsize,
    /// Woken when `in_flight` drops to zero (a drain waits on it instead of polling).
    drained: tokio::sync::Notify,
    /// Woken when an upstream's health flips (a switch waits on it for the new set's health).
    health_changed: Arc<tokio::sync::Notify>,
    /// Set (SeqCst) by the switch after the swap; an admission that sees it retries on the new set.
    retired: AtomicBool,
    /// Set at the drain deadline: streaming bodies still running are cut.
    closing: AtomicBool,
    /// Stopped sets are no longer health-checked.
    stopped: AtomicBool,
    long_lived: Mutex<HashMap<u64, RawFd>>,
    next_conn: AtomicU64,
}

impl UpstreamSet {
    /// Builds a set from validated upstreams. `healthy` is the initial state of every upstream:
    /// false when the set must pass its health checks before it serves.
    pub fn new(
        service_id: String,
        generation: u64,
        upstreams: Vec<(UpstreamSpec, SocketAddr)>,
        load_balancing: LoadBalancing,
        health_check: HealthCheckSpec,
        healthy: bool,
        metrics: Arc<ServiceMetrics>,
    ) -> Self {
        let total_weight = upstreams.iter().map(|(s, _)| u64::from(s.weight)).sum();
        let health_changed = Arc::new(tokio::sync::Notify::new());
        Self {
            service_id,
            generation,
            upstreams: upstreams
                .into_iter()
                .map(|(spec, addr)| {
                    Arc::new(Upstream {
                        spec,
                        addr,
                        healthy: AtomicBool::new(healthy),
                        counter: Mutex::new(HealthCounter::new(healthy)),
                        active: AtomicUsize::new(0),
                        health_changed: Arc::clone(&health_changed),
                    })
                })
                .collect(),
            load_balancing,
            health_check,
            metrics,
            total_weight,
            next: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
            health_changed,
            retired: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            long_lived: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        }
    }

    pub fn specs(&self) -> Vec<UpstreamSpec> {
        self.upstreams.iter().map(|u| u.spec.clone()).collect()
    }

    pub fn any_healthy(&self) -> bool {
        self.upstreams.iter().any(|u| u.is_healthy())
    }

    pub fn all_healthy(&self) -> bool {
        self.upstreams.iter().all(|u| u.is_healthy())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until nothing is in flight or `until` passes; true when nothing is in flight.
    pub async fn wait_drained(&self, until: tokio::time::Instant) -> bool {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drop to zero in between is not missed.
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    /// Waits until every upstream is healthy or `until` passes; true when all are healthy.
    pub async fn wait_healthy(&self, until: tokio::time::Instant) -> bool {
        loop {
            let notified = self.health_changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a flip in between is not missed.
            notified.as_mut().enable();
            if self.all_healthy() {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.all_healthy();
            }
        }
    }

    /// Admits one request (or long-lived connection) to this set. `None` when the set was
    /// retired by a switch in the meantime: the caller looks the service up again.
    pub fn admit(self: &Arc<Self>) -> Option<SetGuard> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = SetGuard {
            set: Arc::clone(self),
            long_lived: None,
        };
        if self.retired.load(Ordering::SeqCst) {
            return None; // the guard's drop gives the slot back
        }
        Some(guard)
    }

    /// Marks the set retired (after the swap). From now on `in_flight` only decreases.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// At the drain deadline: flags streaming bodies to stop and shuts down the upstream sockets
    /// of long-lived connections (websockets) still open. Returns how many were shut down.
    pub fn close_long_lived(&self) -> usize {
        self.closing.store(true, Ordering::SeqCst);
        let conns = self.long_lived.lock().unwrap_or_else(|e| e.into_inner());
        let mut closed = 0;
        for fd in conns.values() {
            if crate::sockets::shutdown(*fd) {
                closed += 1;
            }
        }
        closed
    }

    /// Picks an upstream for a request: healthy ones only, skipping those in `tried`.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<Arc<Upstream>> {
        let usable = |u: &&Arc<Upstream>| u.is_healthy() && !tried.contains(&u.addr);
        match self.load_balancing {
            LoadBalancing::LeastConnections => self
                .upstreams
                .iter()
                .filter(usable)
                .min_by_key(|u| (u.active() as u64 * 1000) / u64::from(u.spec.weight))
                .cloned(),
            LoadBalancing::RoundRobin => {
                if self.total_weight == 0 {
                    return None;
                }
                let start = self.next.fetch_add(1, Ordering::Relaxed) % self.total_weight;
                // Walk the weighted ring from `start` until a usable upstream comes up.
                let mut position = 0u64;
                let mut first = None;
                for (index, u) in self.upstreams.iter().enumerate() {
                    position += u64::from(u.spec.weight);
                    if position > start {
                        first = Some(index);
                        break;
                    }
                }
                let first = first.unwrap_or(0);
                let n = self.upstreams.len();
                (0..n)
                    .map(|k| &self.upstreams[(first + k) % n])
                    .find(|u| usable(u))
                    .cloned()
            }
        }
    }
}

/// Holds one admission to a set until the request (or connection) ends.
#[derive(Debug)]
pub struct SetGuard {
    set: Arc<UpstreamSet>,
    long_lived: Option<u64>,
}

impl SetGuard {
    pub fn set(&self) -> &Arc<UpstreamSet> {
        &self.set
    }

    /// Registers the upstream socket of a long-lived connection so the drain deadline can close
    /// it. Unregistered when the guard drops.
    pub fn register_long_lived(&mut self, fd: RawFd) {
        let id = self.set.next_conn.fetch_add(1, Ordering::Relaxed);
        self.set
            .long_lived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, fd);
        self.long_lived = Some(id);
    }
}

impl Drop for SetGuard {
    fn drop(&mut self) {
        if let Some(id) = self.long_lived.take() {
            self.set
                .long_lived
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }
        if self.set.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.set.drained.notify_waiters();
        }
    }
}

/// Counts one request proxied to one upstream (least-connections).
#[derive(Debug)]
pub struct UpstreamGuard(Arc<Upstream>);

impl UpstreamGuard {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        upstream.active.fetch_add(1, Ordering::Relaxed);
        Self(upstream)
    }

    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.0
    }
}

impl Drop for UpstreamGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
