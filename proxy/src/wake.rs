//! Sleeping services (#17): an idle preview's service is taken out of rotation and marked
//! sleeping (`ProxyAdmin.Sleep`). A request for it is held here: the first one asks the control
//! plane to wake the service (one [`WakeRequest`] per service, sent to `WatchWakes` watchers,
//! asked again only after the re-ask interval: config `wake_reask_ms`, default [`REASK_AFTER`]),
//! and every held request waits for the switch that brings a set back ([`Wakes::switched`],
//! called by the switch executor), or for the wake timeout (config `wake_timeout_ms`, default
//! [`WAKE_TIMEOUT`]), after which it is answered 503 with Retry-After.
//!
//! Only requests that found no healthy upstream reach this module (a mutex on that cold path);
//! a serving service costs nothing here. Sleep marks live in memory: after a restart the
//! control plane marks its sleeping services again (it does on every idle pass).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// How long a request waits for its service to wake, unless configured.
pub const WAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// A wake not answered after this long is asked for again (a watcher that missed it), unless
/// configured.
pub const REASK_AFTER: Duration = Duration::from_secs(10);

/// A service requests are waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeRequest {
    pub service_id: String,
    pub host: String,
}

/// What a held request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The service is not sleeping: nothing to wait for.
    NotSleeping,
    /// A switch brought the service's set back: route the request again.
    Woken,
    /// No switch came within the timeout.
    TimedOut,
}

#[derive(Debug)]
struct Sleeper {
    /// Becomes true when a switch brings a set back.
    awake: watch::Sender<bool>,
    /// When the control plane was last asked to wake it, and for which host.
    asked: Option<(Instant, String)>,
}

/// The sleeping services and the wakes asked for.
#[derive(Debug)]
pub struct Wakes {
    sleeping: Mutex<HashMap<String, Sleeper>>,
    requests: broadcast::Sender<WakeRequest>,
    timeout: Duration,
    reask_after: Duration,
}

impl Default for Wakes {
    fn default() -> Self {
        Self::new(WAKE_TIMEOUT, REASK_AFTER)
    }
}

/// Whether a held request asks the control plane (again) now: never asked, or asked at least
/// `reask_after` ago.
pub fn should_ask(asked_at: Option<Instant>, now: Instant, reask_after: Duration) -> bool {
    asked_at.is_none_or(|at| now.duration_since(at) >= reask_after)
}

impl Wakes {
    /// Held requests wait `timeout` at most; an unanswered wake is asked again after
    /// `reask_after`.
    pub fn new(timeout: Duration, reask_after: Duration) -> Self {
        Self {
            sleeping: Mutex::new(HashMap::new()),
            requests: broadcast::channel(1024).0,
            timeout,
            reask_after,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sleeper>> {
        self.sleeping.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `service_id` sleeping (its set was just emptied). Marking it again keeps the
    /// requests already waiting.
    pub fn sleep(&self, service_id: &str) {
        self.lock()
            .entry(service_id.to_owned())
            .or_insert_with(|| Sleeper {
                awake: watch::channel(false).0,
                asked: None,
            });
    }

    pub fn is_sleeping(&self, service_id: &str) -> bool {
        self.lock().contains_key(service_id)
    }

    /// The switch executor swapped `service_id`'s set: a set with upstreams ends its sleep and
    /// releases the requests waiting for it.
    pub fn switched(&self, service_id: &str, has_upstreams: bool) {
        if !has_upstreams {
            return;
        }
        if let Some(sleeper) = self.lock().remove(service_id) {
            sleeper.awake.send_replace(true);
            tracing::info!(service_id, "sleeping service woken");
        }
    }

    /// Holds a request for `service_id` (matched at `host`) until it wakes or the timeout.
    pub async fn hold(&self, service_id: &str, host: &str) -> Held {
        let mut awake = {
            let mut sleeping = self.lock();
            let Some(sleeper) = sleeping.get_mut(service_id) else {
                return Held::NotSleeping;
            };
            let now = Instant::now();
            let asked_at = sleeper.asked.as_ref().map(|(at, _)| *at);
            if should_ask(asked_at, now, self.reask_after) {
                sleeper.asked = Some((now, host.to_owned()));
                // No watcher yet: the one that connects gets it from `watch`.
                let _ = self.requests.send(WakeRequest {
                    service_id: service_id.to_owned(),
                    host: host.to_owned(),
                });
                tracing::info!(service_id, host, "waking sleeping service");
            }
            sleeper.awake.subscribe()
        };
        match tokio::time::timeout(self.timeout, awake.wait_for(|a| *a)).await {
            // A closed channel means the sleeper was removed, which only a wake does.
            Ok(_) => Held::Woken,
            Err(_) => Held::TimedOut,
        }
    }

    /// A watcher's start: the wakes still waiting for an answer, then every new one.
    pub fn watch(&self) -> (Vec<WakeRequest>, broadcast::Receiver<WakeRequest>) {
        let sleeping = self.lock();
        // Subscribed under the lock, so no wake falls between the list and the receiver.
        let rx = self.requests.subscribe();
        let pending = sleeping
            .iter()
            .filter_map(|(id, s)| {
                let (_, host) = s.asked.as_ref()?;
                Some(WakeRequest {
                    service_id: id.clone(),
                    host: host.clone(),
                })
            })
            .collect();
        (pending, rx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_wake_per_service_and_every_holder_released_by_the_switch() {
        let wakes = Arc::new(Wakes::new(Duration::from_secs(30), REASK_AFTER));
        assert_eq!(wakes.hold("svc", "a.example").await, Held::NotSleeping);
        wakes.sleep("svc");
        let (pending, mut rx) = wakes.watch();
        assert!(pending.is_empty());
        let holders: Vec<_> = (0..5)
            .map(|_| {
                let w = Arc::clone(&wakes);
                tokio::spawn(async move { w.hold("svc", "a.example").await })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let first = rx.recv().await.unwrap();
        assert_eq!(first.service_id, "svc");
        assert!(rx.try_recv().is_err(), "one wake for five held requests");
        // A watcher connecting now learns of the pending wake.
        let (pending, _) = wakes.watch();
        assert_eq!(pending, vec![first]);
        // An empty set (the sleep's own switch) does not wake it.
        wakes.switched("svc", false);
        assert!(wakes.is_sleeping("svc"));
        wakes.switched("svc", true);
        for h in holders {
            assert_eq!(h.await.unwrap(), Held::Woken);
        }
        assert!(!wakes.is_sleeping("svc"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_that_never_comes_times_out_and_is_asked_again() {
        let wakes = Wakes::new(Duration::from_secs(12), REASK_AFTER);
        wakes.sleep("svc");
        let (_, mut rx) = wakes.watch();
        assert_eq!(wakes.hold("svc", "h").await, Held::TimedOut);
        assert!(rx.try_recv().is_ok());
        // 12 s later: past REASK_AFTER, so the next request asks again.
        assert_eq!(wakes.hold("svc", "h").await, Held::TimedOut);
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_configured_timeout_and_reask_interval_are_kept() {
        let wakes = Wakes::new(Duration::from_millis(1500), Duration::from_secs(2));
        wakes.sleep("svc");
        let (_, mut rx) = wakes.watch();
        let start = Instant::now();
        assert_eq!(wakes.hold("svc", "h").await, Held::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        assert!(rx.try_recv().is_ok());
        // 1.5 s after the ask: within the 2 s re-ask interval, so not asked again.
        assert_eq!(wakes.hold("svc", "h").await, Held::TimedOut);
        assert!(rx.try_recv().is_err());
        // 3 s after it: asked again.
        assert_eq!(wakes.hold("svc", "h").await, Held::TimedOut);
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn asks_again_only_after_the_reask_interval() {
        let now = Instant::now();
        assert!(should_ask(None, now, REASK_AFTER));
        assert!(!should_ask(
            Some(now),
            now + Duration::from_secs(1),
            REASK_AFTER
        ));
        assert!(should_ask(Some(now), now + REASK_AFTER, REASK_AFTER));
        assert!(should_ask(
            Some(now),
            now + Duration::from_secs(1),
            Duration::from_secs(1)
        ));
    }
}
