//! Rate limit of webhook calls that did not prove who they are (no or a wrong signature, an
//! unknown service): per service and per source address, in fixed windows, in a bounded map.
//! A call with a valid signature is never counted. The source's budget is checked before any
//! work; the service's only once a call failed the signature check, so anonymous callers can
//! never make a correctly signed delivery wait. Pure: the caller passes the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// How many unauthenticated calls a window allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Per service (whatever the source).
    pub per_service: u32,
    /// Per source address (an IPv6 source counts by its /48, a typical site's allocation).
    pub per_source: u32,
    pub window: Duration,
    /// Most keys remembered; past it, expired windows go first, then the oldest.
    pub max_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_service: 120,
            per_source: 30,
            window: Duration::from_secs(60),
            max_keys: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Service(Uuid),
    Source(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

/// The counters; share it behind an `Arc`.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    windows: Mutex<HashMap<Key, Window>>,
}

fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[6..].fill(0);
                IpAddr::V6(o.into())
            }
        },
        v4 => v4,
    }
}

impl Limiter {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn keys(service: Option<Uuid>, source: Option<IpAddr>) -> impl Iterator<Item = (Key, bool)> {
        service
            .map(|s| (Key::Service(s), true))
            .into_iter()
            .chain(source.map(|ip| (Key::Source(source_key(ip)), false)))
    }

    fn limit(&self, is_service: bool) -> u32 {
        if is_service {
            self.limits.per_service
        } else {
            self.limits.per_source
        }
    }

    /// `Err(retry_after)` when the service or the source used up its window.
    pub fn check(
        &self,
        service: Uuid,
        source: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Duration> {
        self.check_keys(Some(service), source, now)
    }

    /// `Err(retry_after)` when the source used up its window (checked before any work).
    pub fn check_source(&self, source: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        self.check_keys(None, source, now)
    }

    /// `Err(retry_after)` when the service used up its window (checked only for a call that
    /// failed the signature check).
    pub fn check_service(&self, service: Uuid, now: Instant) -> Result<(), Duration> {
        self.check_keys(Some(service), None, now)
    }

    fn check_keys(
        &self,
        service: Option<Uuid>,
        source: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Duration> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = None::<Duration>;
        for (key, is_service) in Self::keys(service, source) {
            if let Some(w) = windows.get(&key) {
                let end = w.start + self.limits.window;
                if now < end && w.count >= self.limit(is_service) {
                    let left = end - now;
                    wait = Some(wait.map_or(left, |x| x.max(left)));
                }
            }
        }
        wait.map_or(Ok(()), Err)
    }

    /// Counts one unauthenticated call against the source and, when `service` exists, against
    /// it (calls naming made-up services count against their source only, so they cannot fill
    /// the map with keys of their own choosing).
    pub fn record(&self, service: Option<Uuid>, source: Option<IpAddr>, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        for (key, _) in Self::keys(service, source) {
            if !windows.contains_key(&key) && windows.len() >= self.limits.max_keys {
                let window = self.limits.window;
                windows.retain(|_, w| now < w.start + window);
                if windows.len() >= self.limits.max_keys
                    && let Some(oldest) =
                        windows.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k)
                {
                    windows.remove(&oldest);
                }
            }
            let w = windows.entry(key).or_insert(Window {
                start: now,
                count: 0,
            });
            if now >= w.start + self.limits.window {
                *w = Window {
                    start: now,
                    count: 0,
                };
            }
            w.count = w.count.saturating_add(1);
        }
    }

    /// How many keys are remembered (for tests and metrics).
    pub fn len(&self) -> usize {
        self.windows.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            per_service: 5,
            per_source: 3,
            window: Duration::from_secs(10),
            max_keys: 4,
        }
    }

    #[test]
    fn a_source_is_limited_then_let_in_again_after_its_window() {
        let l = Limiter::new(limits());
        let (svc, ip) = (Uuid::new_v4(), Some("192.0.2.1".parse().unwrap()));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check(svc, ip, t0).is_ok());
            l.record(Some(svc), ip, t0);
        }
        let wait = l.check(svc, ip, t0 + Duration::from_secs(4)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(6));
        // Another source is not limited by this one...
        let other = Some("192.0.2.2".parse().unwrap());
        assert!(l.check(svc, other, t0).is_ok());
        // ...until the service's own budget is used up.
        l.record(Some(svc), other, t0);
        l.record(Some(svc), other, t0);
        assert!(l.check(svc, other, t0).is_err());
        assert!(l.check(Uuid::new_v4(), other, t0).is_ok());
        assert!(l.check(svc, ip, t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn ipv6_sources_count_by_their_48() {
        let l = Limiter::new(limits());
        let svc = Uuid::new_v4();
        let t0 = Instant::now();
        for i in 1..=3u16 {
            // Three different /64s of one /48.
            let ip = format!("2001:db8:0:{i:x}::1").parse().ok();
            l.record(None, ip, t0);
        }
        assert!(
            l.check_source("2001:db8:0:ffff::9".parse().ok(), t0)
                .is_err()
        );
        assert!(l.check(svc, "2001:db8:1::1".parse().ok(), t0).is_ok());
    }

    #[test]
    fn the_service_budget_is_apart_from_the_source_budget() {
        let l = Limiter::new(limits());
        let svc = Uuid::new_v4();
        let t0 = Instant::now();
        // Two sources within their budgets (3) use up the service's (5).
        for n in [1u8, 1, 2, 2, 2] {
            l.record(Some(svc), Some(IpAddr::from([192, 0, 2, n])), t0);
        }
        let fresh = Some(IpAddr::from([192, 0, 2, 200]));
        assert!(
            l.check_source(fresh, t0).is_ok(),
            "a new source may still call"
        );
        assert!(l.check_service(svc, t0).is_err(), "the service is used up");
        assert!(l.check_service(Uuid::new_v4(), t0).is_ok());
    }

    #[test]
    fn the_map_stays_bounded() {
        let l = Limiter::new(limits());
        let t0 = Instant::now();
        for i in 0..100u8 {
            let ip = Some(IpAddr::from([198, 51, 100, i]));
            l.record(
                Some(Uuid::new_v4()),
                ip,
                t0 + Duration::from_millis(i.into()),
            );
            assert!(l.len() <= 4, "{} keys", l.len());
        }
        // Made-up services add no keys; their source is still counted.
        let l = Limiter::new(limits());
        let ip = Some(IpAddr::from([203, 0, 113, 7]));
        for _ in 0..3 {
            l.record(None, ip, t0);
        }
        assert_eq!(l.len(), 1);
        assert!(l.check(Uuid::new_v4(), ip, t0).is_err());
    }
}
