//! Health of upstreams: the check settings, the pure threshold state machine, and the prober.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How a service's upstreams are checked (proto `HealthCheck`, zeros already replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckSpec {
    /// GET path; any 2xx/3xx passes. Empty = TCP connect only.
    pub path: String,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckSpec {
    fn default() -> Self {
        Self {
            path: String::new(),
            interval_ms: 1000,
            timeout_ms: 1000,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// Why a health check setting was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("health check: {0}")]
pub struct HealthCheckError(pub String);

impl HealthCheckSpec {
    /// Replaces zeros by defaults and checks the values.
    pub fn validate(mut self) -> Result<Self, HealthCheckError> {
        let d = Self::default();
        if self.interval_ms == 0 {
            self.interval_ms = d.interval_ms;
        }
        if self.timeout_ms == 0 {
            self.timeout_ms = d.timeout_ms;
        }
        if self.healthy_threshold == 0 {
            self.healthy_threshold = d.healthy_threshold;
        }
        if self.unhealthy_threshold == 0 {
            self.unhealthy_threshold = d.unhealthy_threshold;
        }
        if !self.path.is_empty() && !self.path.starts_with('/') {
            return Err(HealthCheckError(format!(
                "path {:?} must start with '/'",
                self.path
            )));
        }
        if self
            .path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(HealthCheckError(format!(
                "path {:?} has spaces or controls",
                self.path
            )));
        }
        if self.interval_ms < 10 {
            return Err(HealthCheckError(format!(
                "interval_ms {} is below 10",
                self.interval_ms
            )));
        }
        Ok(self)
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_ms))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms))
    }
}

/// Consecutive passes/failures of one upstream: a pure state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCounter {
    pub healthy: bool,
    passes: u32,
    failures: u32,
}

impl HealthCounter {
    pub fn new(healthy: bool) -> Self {
        Self {
            healthy,
            passes: 0,
            failures: 0,
        }
    }

    /// Records one check result; returns the new state when it changed.
    pub fn observe(&mut self, passed: bool, spec: &HealthCheckSpec) -> Option<bool> {
        if passed {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            if !self.healthy && self.passes >= spec.healthy_threshold {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.healthy && self.failures >= spec.unhealthy_threshold {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }

    /// A passive ejection (connect error while proxying): unhealthy at once, and the passes
    /// needed to come back start from zero.
    pub fn eject(&mut self) -> bool {
        let changed = self.healthy;
        self.healthy = false;
        self.passes = 0;
        changed
    }
}

/// One active check of `addr`: a TCP connect, then (with a path) `GET path` whose status must
/// be 2xx or 3xx, all within the timeout.
pub async fn probe(addr: SocketAddr, spec: &HealthCheckSpec) -> bool {
    tokio::time::timeout(spec.timeout(), probe_inner(addr, &spec.path))
        .await
        .unwrap_or(false)
}

async fn probe_inner(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if path.is_empty() {
        return true;
    }
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: stackpad-proxy-health\r\n\
         Connection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => len += n,
        }
    }
    // "HTTP/1.x NNN"
    buf.starts_with(b"HTTP/1.") && matches!(buf[9], b'2' | b'3')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_need_consecutive_results() {
        let spec = HealthCheckSpec {
            healthy_threshold: 3,
            unhealthy_threshold: 2,
            ..Default::default()
        };
        let mut c = HealthCounter::new(false);
        assert_eq!(c.observe(true, &spec), None);
        assert_eq!(c.observe(true, &spec), None);
        assert_eq!(c.observe(false, &spec), None, "a failure resets the passes");
        assert_eq!(c.observe(true, &spec), None);
        assert_eq!(c.observe(true, &spec), None);
        assert_eq!(c.observe(true, &spec), Some(true));
        assert_eq!(c.observe(false, &spec), None);
        assert_eq!(c.observe(true, &spec), None, "a pass resets the failures");
        assert_eq!(c.observe(false, &spec), None);
        assert_eq!(c.observe(false, &spec), Some(false));
        assert!(!c.healthy);
    }

    #[test]
    fn ejection_restarts_the_pass_count() {
        let spec = HealthCheckSpec::default();
        let mut c = HealthCounter::new(true);
        assert!(c.eject());
        assert!(!c.eject());
        assert_eq!(c.observe(true, &spec), None);
        assert_eq!(c.observe(true, &spec), Some(true));
    }

    #[test]
    fn zeros_become_defaults_and_bad_paths_are_refused() {
        let s = HealthCheckSpec {
            interval_ms: 0,
            timeout_ms: 0,
            healthy_threshold: 0,
            unhealthy_threshold: 0,
            path: "/up".into(),
        }
        .validate()
        .unwrap();
        assert_eq!(
            s,
            HealthCheckSpec {
                path: "/up".into(),
                ..Default::default()
            }
        );
        let err = HealthCheckSpec {
            path: "up".into(),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("\"up\""), "{err}");
    }
}
