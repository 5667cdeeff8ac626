//! Health checks: the pass/fail threshold machine (pure) and the HTTP and TCP probes.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::spec::{HealthSpec, Probe};

/// Where a container stands with its health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not yet passed `healthy_threshold` probes in a row.
    Starting,
    Healthy,
    Unhealthy,
}

/// Consecutive-result counting with thresholds.
#[derive(Debug, Clone)]
pub struct Thresholds {
    healthy: u32,
    unhealthy: u32,
    passes: u32,
    failures: u32,
    verdict: Verdict,
}

impl Thresholds {
    pub fn new(spec: &HealthSpec) -> Self {
        Self {
            healthy: spec.healthy_threshold.max(1),
            unhealthy: spec.unhealthy_threshold.max(1),
            passes: 0,
            failures: 0,
            verdict: Verdict::Starting,
        }
    }

    /// Feeds one probe result; returns the verdict after it.
    pub fn observe(&mut self, passed: bool) -> Verdict {
        if passed {
            self.passes += 1;
            self.failures = 0;
            if self.passes >= self.healthy {
                self.verdict = Verdict::Healthy;
            }
        } else {
            self.failures += 1;
            self.passes = 0;
            // Before the first healthy verdict failures only delay it (the deadline decides).
            if self.verdict != Verdict::Starting && self.failures >= self.unhealthy {
                self.verdict = Verdict::Unhealthy;
            }
        }
        self.verdict
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }
}

/// One probe against the container's address; `Err` carries what was seen.
pub async fn probe(ip: Ipv4Addr, spec: &HealthSpec) -> Result<(), String> {
    let timeout = Duration::from_millis(u64::from(spec.timeout_ms));
    match tokio::time::timeout(timeout, probe_once(ip, &spec.probe)).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe timed out after {} ms", spec.timeout_ms)),
    }
}

async fn probe_once(ip: Ipv4Addr, probe: &Probe) -> Result<(), String> {
    match probe {
        Probe::Tcp { port } => {
            let addr = SocketAddr::from((ip, *port as u16));
            TcpStream::connect(addr)
                .await
                .map(|_| ())
                .map_err(|e| format!("tcp connect {addr}: {e}"))
        }
        Probe::Exec { .. } => {
            Err("an exec probe runs inside the container, not over the network".into())
        }
        Probe::Http { path, port } => {
            let addr = SocketAddr::from((ip, *port as u16));
            let mut s = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("http connect {addr}: {e}"))?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: stackpad-node-health\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("http write {addr}: {e}"))?;
            let mut buf = [0u8; 64];
            let mut n = 0;
            while n < 12 {
                let read = s
                    .read(&mut buf[n..])
                    .await
                    .map_err(|e| format!("http read {addr}: {e}"))?;
                if read == 0 {
                    break;
                }
                n += read;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let status: u16 = head
                .strip_prefix("HTTP/1.")
                .and_then(|r| r.get(2..5))
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("http {addr}{path}: not an HTTP answer: {head:?}"))?;
            if (200..400).contains(&status) {
                Ok(())
            } else {
                Err(format!("http {addr}{path}: status {status}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(h: u32, u: u32) -> HealthSpec {
        HealthSpec {
            probe: Probe::Tcp { port: 1 },
            interval_ms: 100,
            timeout_ms: 100,
            healthy_threshold: h,
            unhealthy_threshold: u,
            deadline_ms: 1000,
        }
    }

    #[test]
    fn thresholds_need_consecutive_results() {
        let mut t = Thresholds::new(&spec(2, 2));
        assert_eq!(t.observe(false), Verdict::Starting);
        assert_eq!(t.observe(true), Verdict::Starting);
        assert_eq!(t.observe(false), Verdict::Starting);
        assert_eq!(t.observe(true), Verdict::Starting);
        assert_eq!(t.observe(true), Verdict::Healthy);
        assert_eq!(t.observe(false), Verdict::Healthy);
        assert_eq!(t.observe(true), Verdict::Healthy);
        assert_eq!(t.observe(false), Verdict::Healthy);
        assert_eq!(t.observe(false), Verdict::Unhealthy);
        assert_eq!(t.observe(true), Verdict::Unhealthy);
        assert_eq!(t.observe(true), Verdict::Healthy);
    }

    #[tokio::test]
    async fn probes_a_real_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port() as u32;
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    let _ = s.read(&mut buf).await;
                    let answer: &[u8] = if buf.starts_with(b"GET /ok") {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 503 Unavailable\r\ncontent-length: 0\r\n\r\n"
                    };
                    let _ = s.write_all(answer).await;
                });
            }
        });
        let lo = Ipv4Addr::LOCALHOST;
        let mut s = spec(1, 1);
        s.probe = Probe::Http {
            path: "/ok".into(),
            port,
        };
        probe(lo, &s).await.unwrap();
        s.probe = Probe::Http {
            path: "/bad".into(),
            port,
        };
        assert!(probe(lo, &s).await.unwrap_err().contains("503"));
        s.probe = Probe::Tcp { port };
        probe(lo, &s).await.unwrap();
    }
}
