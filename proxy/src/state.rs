//! The live state of the proxy: the current [`Snapshot`] (routes + active upstream sets) behind
//! one `ArcSwap`, the sets still draining, and the executors of route changes and switches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::health;
use crate::metrics::{Metrics, UpstreamHealth};
use crate::routes::{RouteError, RouteSpec, RouteTable};
use crate::store::{Generations, PersistedService, PersistedState, StateFile, StoreError};
use crate::switch::{self, DrainStep, SwitchCommand, SwitchError};
use crate::upstream::{UpstreamError, UpstreamSet, validate_upstreams};

/// How long sessions cut at the drain deadline get to end before the old set is stopped.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What requests are routed by: immutable, replaced as a whole.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub routes: RouteTable,
    pub services: HashMap<String, Arc<UpstreamSet>>,
}

/// The result of a switch.
#[derive(Debug, Clone)]
pub struct SwitchOutcome {
    pub generation: u64,
    pub previous: Vec<crate::upstream::UpstreamSpec>,
    pub swap_after: Duration,
    pub drained_after: Duration,
    pub closed_at_deadline: usize,
}

/// What an ordered route update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteUpdate<T> {
    Applied(T),
    /// The proxy holds `held`, newer than the update's generation: nothing changed.
    Superseded {
        held: u64,
    },
}

/// A route change failed; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("service {service_id} in the state file: {source}")]
    StoredUpstream {
        service_id: String,
        source: UpstreamError,
    },
}

/// The proxy's state and the executors that change it.
#[derive(Debug)]
pub struct ProxyState {
    current: ArcSwap<Snapshot>,
    draining: Mutex<Vec<Arc<UpstreamSet>>>,
    /// Serialises changes (never held on the request path, nor during health waits or drains).
    mutate: tokio::sync::Mutex<()>,
    store: Option<StateFile>,
    /// Generations of removed routes and of switches; changed only under `mutate`.
    generations: Mutex<Generations>,
    pub metrics: Arc<Metrics>,
    /// Sleeping services and the requests held for them (#17).
    pub wakes: crate::wake::Wakes,
    runtime: tokio::runtime::Handle,
}

impl ProxyState {
    /// Starts from the state file (when given and present). Restored upstreams start healthy
    /// so the proxy serves at once; their active checks then run as usual. Health checkers are
    /// spawned on `runtime`. Requests to sleeping services are held as `wakes` says.
    pub fn restore(
        store: Option<StateFile>,
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
        wakes: crate::wake::Wakes,
    ) -> Result<Arc<Self>, StateError> {
        let persisted = match &store {
            Some(file) => file.load()?.unwrap_or_default(),
            None => PersistedState::default(),
        };
        let routes = RouteTable::build(persisted.routes)?;
        let mut services = HashMap::new();
        for s in persisted.services {
            let ups =
                validate_upstreams(s.upstreams).map_err(|source| StateError::StoredUpstream {
                    service_id: s.service_id.clone(),
                    source,
                })?;
            let set = UpstreamSet::new(
                s.service_id.clone(),
                s.generation,
                ups,
                s.load_balancing,
                s.health_check,
                true,
                metrics.service(&s.service_id),
            );
            services.insert(s.service_id, Arc::new(set));
        }
        let state = Arc::new(Self {
            current: ArcSwap::from_pointee(Snapshot { routes, services }),
            draining: Mutex::new(Vec::new()),
            mutate: tokio::sync::Mutex::new(()),
            store,
            generations: Mutex::new(persisted.generations),
            metrics,
            wakes,
            runtime,
        });
        for set in state.current.load().services.values() {
            state.spawn_health_checks(set);
        }
        Ok(state)
    }

    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Sets still draining after a switch.
    pub fn draining(&self) -> Vec<Arc<UpstreamSet>> {
        self.draining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn generations(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.generations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation held for `route_id`: the live route's, else its removal's.
    fn route_generation(&self, snap: &Snapshot, route_id: &str) -> u64 {
        let live = snap
            .routes
            .routes()
            .iter()
            .find(|r| r.route_id == route_id)
            .map_or(0, |r| r.generation);
        let removed = self
            .generations()
            .removed_routes
            .get(route_id)
            .copied()
            .unwrap_or(0);
        live.max(removed)
    }

    /// Creates or replaces the route with `spec.route_id`, unless the proxy holds a newer
    /// generation of it. Persisted before it is swapped in.
    pub async fn upsert_route(
        &self,
        spec: RouteSpec,
    ) -> Result<RouteUpdate<RouteSpec>, StateError> {
        let mut spec = spec.validate()?;
        let _lock = self.mutate.lock().await;
        let snap = self.current.load_full();
        let held = self.route_generation(&snap, &spec.route_id);
        if spec.generation == 0 {
            spec.generation = held;
        } else if spec.generation < held {
            return Ok(RouteUpdate::Superseded { held });
        }
        let mut routes: Vec<RouteSpec> = snap
            .routes
            .routes()
            .iter()
            .map(|r| RouteSpec::clone(r))
            .collect();
        match routes.iter_mut().find(|r| r.route_id == spec.route_id) {
            Some(slot) => *slot = spec.clone(),
            None => routes.push(spec.clone()),
        }
        let removed = self.generations().removed_routes.remove(&spec.route_id);
        if let Err(e) = self.commit_routes(&snap, routes) {
            if let Some(generation) = removed {
                self.generations()
                    .removed_routes
                    .insert(spec.route_id.clone(), generation);
            }
            return Err(e);
        }
        Ok(RouteUpdate::Applied(spec))
    }

    /// Removes a route (false when there was none with that id), unless the proxy holds a newer
    /// generation of it; the removal's generation is kept so an older push cannot bring it back.
    pub async fn remove_route(
        &self,
        route_id: &str,
        generation: u64,
    ) -> Result<RouteUpdate<bool>, StateError> {
        let _lock = self.mutate.lock().await;
        let snap = self.current.load_full();
        let held = self.route_generation(&snap, route_id);
        if generation != 0 && generation < held {
            return Ok(RouteUpdate::Superseded { held });
        }
        let routes: Vec<RouteSpec> = snap
            .routes
            .routes()
            .iter()
            .filter(|r| r.route_id != route_id)
            .map(|r| RouteSpec::clone(r))
            .collect();
        let removed = routes.len() != snap.routes.routes().len();
        let keep = generation.max(held);
        let before = (keep > 0).then(|| {
            self.generations()
                .removed_routes
                .insert(route_id.to_owned(), keep)
        });
        let unchanged = before.is_none() || before == Some(Some(keep));
        if !removed && unchanged {
            return Ok(RouteUpdate::Applied(false));
        }
        if let Err(e) = self.commit_routes(&snap, routes) {
            match before {
                Some(Some(old)) => {
                    self.generations()
                        .removed_routes
                        .insert(route_id.to_owned(), old);
                }
                Some(None) => {
                    self.generations().removed_routes.remove(route_id);
                }
                None => {}
            }
            return Err(e);
        }
        Ok(RouteUpdate::Applied(removed))
    }

    fn commit_routes(&self, snap: &Snapshot, routes: Vec<RouteSpec>) -> Result<(), StateError> {
        let table = RouteTable::build(routes)?;
        let next = Snapshot {
            routes: table,
            services: snap.services.clone(),
        };
        self.persist(&next)?;
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// The newest switch generation applied to `service_id` (0 = none).
    pub fn switch_generation(&self, service_id: &str) -> u64 {
        self.generations()
            .switches
            .get(service_id)
            .copied()
            .unwrap_or(0)
    }

    fn persist(&self, snap: &Snapshot) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let mut services: Vec<PersistedService> = snap
            .services
            .values()
            .map(|s| PersistedService {
                service_id: s.service_id.clone(),
                upstreams: s.specs(),
                health_check: s.health_check.clone(),
                load_balancing: s.load_balancing,
                generation: s.generation,
            })
            .collect();
        services.sort_by(|a, b| a.service_id.cmp(&b.service_id));
        store.save(&PersistedState {
            version: 1,
            routes: snap
                .routes
                .routes()
                .iter()
                .map(|r| RouteSpec::clone(r))
                .collect(),
            services,
            generations: self.generations().clone(),
        })
    }

    /// Replaces a service's upstream set: waits for the new set's health (unless skipped),
    /// swaps atomically, then drains the old set until idle or the deadline, and only then
    /// returns.
    pub async fn switch(&self, cmd: SwitchCommand) -> Result<SwitchOutcome, SwitchError> {
        let result = self.switch_inner(cmd).await;
        let counter = if result.is_ok() {
            &self.metrics.switches_ok
        } else {
            &self.metrics.switches_failed
        };
        counter.inc();
        result
    }

    async fn switch_inner(&self, cmd: SwitchCommand) -> Result<SwitchOutcome, SwitchError> {
        let started = Instant::now();
        let current = self
            .current
            .load()
            .services
            .get(cmd.service_id.trim())
            .cloned();
        let route_generation = cmd.route_generation;
        let superseded = |service_id: String, held: u64| SwitchError::Superseded {
            service_id,
            generation: route_generation,
            held,
        };
        let held = self.switch_generation(cmd.service_id.trim());
        if route_generation != 0 && route_generation < held {
            return Err(superseded(cmd.service_id.trim().to_owned(), held));
        }
        let plan = switch::plan(current.as_deref(), cmd)?;
        let new_set = Arc::new(UpstreamSet::new(
            plan.service_id.clone(),
            plan.generation,
            plan.upstreams.clone(),
            plan.load_balancing,
            plan.health_check.clone(),
            !plan.wait_for_health,
            self.metrics.service(&plan.service_id),
        ));
        self.spawn_health_checks(&new_set);
        if plan.wait_for_health
            && !new_set
                .wait_healthy(tokio::time::Instant::now() + plan.health_timeout)
                .await
        {
            new_set.stop();
            let unhealthy = new_set
                .upstreams
                .iter()
                .filter(|u| !u.is_healthy())
                .map(|u| u.spec.address.clone())
                .collect();
            return Err(SwitchError::Unhealthy {
                service_id: plan.service_id,
                unhealthy,
                timeout_ms: plan.health_timeout.as_millis(),
            });
        }

        let (old, swap_after) = {
            let _lock = self.mutate.lock().await;
            let snap = self.current.load_full();
            let old = snap.services.get(&plan.service_id).cloned();
            let held = self.switch_generation(&plan.service_id);
            if route_generation != 0 && route_generation < held {
                new_set.stop();
                return Err(superseded(plan.service_id, held));
            }
            let found = old.as_ref().map_or(0, |o| o.generation);
            if found + 1 != plan.generation {
                new_set.stop();
                return Err(SwitchError::Concurrent {
                    service_id: plan.service_id,
                    expected: plan.generation - 1,
                    found,
                });
            }
            let mut services = snap.services.clone();
            services.insert(plan.service_id.clone(), Arc::clone(&new_set));
            let next = Snapshot {
                routes: snap.routes.clone(),
                services,
            };
            let next = Arc::new(next);
            if route_generation > held {
                self.generations()
                    .switches
                    .insert(plan.service_id.clone(), route_generation);
            }
            self.current.store(Arc::clone(&next));
            self.wakes
                .switched(&plan.service_id, !plan.upstreams.is_empty());
            let swap_after = started.elapsed();
            if let Some(old) = &old {
                old.retire();
                self.draining
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Arc::clone(old));
            }
            // Persisted after the swap so the switch is not delayed by fsync; a failure is logged
            // (routing is already right in memory and the next change writes the file again).
            if let Err(e) = self.persist(&next) {
                tracing::error!(error = %e, service_id = %plan.service_id, "state file not written after switch");
            }
            (old, swap_after)
        };
        tracing::info!(service_id = %plan.service_id, generation = plan.generation, swap_us = swap_after.as_micros() as u64, "switched");

        let (drained_after, closed) = match &old {
            Some(old) => self.drain(old, plan.drain_deadline).await,
            None => (Duration::ZERO, 0),
        };
        Ok(SwitchOutcome {
            generation: plan.generation,
            previous: old.map(|o| o.specs()).unwrap_or_default(),
            swap_after,
            drained_after,
            closed_at_deadline: closed,
        })
    }

    async fn drain(&self, old: &Arc<UpstreamSet>, deadline: Duration) -> (Duration, usize) {
        // tokio's clock, so paused-time tests drive the deadline and the grace.
        let start = tokio::time::Instant::now();
        let deadline = start + deadline;
        let mut closed = 0;
        loop {
            let now = tokio::time::Instant::now();
            match switch::drain_step(old.in_flight(), now.into_std(), deadline.into_std()) {
                DrainStep::Done => break,
                DrainStep::Wait => {
                    old.wait_drained(deadline).await;
                }
                DrainStep::CloseAtDeadline => {
                    closed = old.close_long_lived().max(old.in_flight());
                    // Give the cut sessions a moment to end before the caller stops the backend.
                    old.wait_drained(now + DRAIN_GRACE).await;
                    break;
                }
            }
        }
        old.stop();
        self.draining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| !Arc::ptr_eq(s, old));
        let took = start.elapsed();
        self.metrics.drains.inc();
        self.metrics.drain_closed_at_deadline.inc_by(closed as u64);
        self.metrics.drain_seconds.inc_by(took.as_secs_f64());
        tracing::info!(service_id = %old.service_id, generation = old.generation, drain_ms = took.as_millis() as u64, closed_at_deadline = closed, "old upstream set drained");
        (took, closed)
    }

    /// Runs the active checks of `set` until it is stopped or dropped.
    fn spawn_health_checks(&self, set: &Arc<UpstreamSet>) {
        if set.upstreams.is_empty() {
            return;
        }
        let weak: Weak<UpstreamSet> = Arc::downgrade(set);
        let interval = set.health_check.interval();
        self.runtime.spawn(async move {
            loop {
                let Some(set) = weak.upgrade().filter(|s| !s.is_stopped()) else { return };
                let service_id = set.service_id.clone();
                let probes = set.upstreams.iter().map(|u| {
                    let spec = set.health_check.clone();
                    let service_id = service_id.clone();
                    let u = Arc::clone(u);
                    async move {
                        let passed = health::probe(u.addr, &spec).await;
                        if let Some(now) = u.observe(passed, &spec) {
                            tracing::info!(service_id = %service_id, upstream = %u.addr, healthy = now, "upstream health changed");
                        }
                    }
                });
                futures::future::join_all(probes).await;
                drop(set);
                tokio::time::sleep(interval).await;
            }
        });
    }

    /// Health of every upstream, active and draining, for `/metrics`.
    pub fn health(&self) -> Vec<UpstreamHealth> {
        let snap = self.current.load();
        let mut out = Vec::new();
        let mut push = |set: &UpstreamSet, draining: bool| {
            for u in &set.upstreams {
                out.push(UpstreamHealth {
                    service_id: set.service_id.clone(),
                    address: u.spec.address.clone(),
                    healthy: u.is_healthy(),
                    draining,
                });
            }
        };
        for set in snap.services.values() {
            push(set, false);
        }
        for set in self.draining() {
            push(&set, true);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(hosts: &[&str], generation: u64) -> RouteSpec {
        RouteSpec {
            route_id: "r".into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            service_id: "s".into(),
            generation,
            ..Default::default()
        }
    }

    fn hosts(state: &ProxyState) -> Vec<String> {
        state
            .snapshot()
            .routes
            .routes()
            .iter()
            .flat_map(|r| r.hosts.clone())
            .collect()
    }

    #[tokio::test]
    async fn a_removed_route_keeps_its_generation_against_older_pushes() {
        let dir = std::env::temp_dir().join(format!("stackpad-generations-{}", std::process::id()));
        let file = StateFile::new(dir.join("state.json"));
        let state = ProxyState::restore(
            Some(file.clone()),
            Arc::default(),
            tokio::runtime::Handle::current(),
            crate::wake::Wakes::default(),
        )
        .unwrap();
        assert!(matches!(
            state.upsert_route(route(&["a.test"], 5)).await.unwrap(),
            RouteUpdate::Applied(_)
        ));
        assert_eq!(
            state.remove_route("r", 4).await.unwrap(),
            RouteUpdate::Superseded { held: 5 }
        );
        assert_eq!(hosts(&state), ["a.test"]);
        assert_eq!(
            state.remove_route("r", 6).await.unwrap(),
            RouteUpdate::Applied(true)
        );
        assert_eq!(
            state.upsert_route(route(&["a.test"], 5)).await.unwrap(),
            RouteUpdate::Superseded { held: 6 }
        );
        assert!(hosts(&state).is_empty());
        // Unordered removals of what is not there change nothing and keep the generation.
        assert_eq!(
            state.remove_route("r", 0).await.unwrap(),
            RouteUpdate::Applied(false)
        );
        let restored = ProxyState::restore(
            Some(file),
            Arc::default(),
            tokio::runtime::Handle::current(),
            crate::wake::Wakes::default(),
        )
        .unwrap();
        assert_eq!(
            restored.upsert_route(route(&["b.test"], 6)).await.unwrap(),
            RouteUpdate::Applied(route(&["b.test"], 6).validate().unwrap())
        );
        assert_eq!(hosts(&restored), ["b.test"]);
        assert!(restored.generations().removed_routes.is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
