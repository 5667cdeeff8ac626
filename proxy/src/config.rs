//! The proxy's configuration: a JSON file and/or command-line flags, with defaults and
//! validation that names the key at fault.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hardening::HeadLimits;

/// Everything `stackpad-proxy serve` needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Plain HTTP listener (HTTP/1.1 and h2c).
    pub http_listen: Option<String>,
    /// TLS listener (HTTP/1.1 and HTTP/2 by ALPN); needs the certificate files.
    pub tls_listen: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Admin gRPC (`ProxyAdmin`) and `/metrics`.
    pub admin_listen: String,
    /// mTLS of the admin listener (`{"cert", "key", "ca"}` PEM files of the platform CA, from the
    /// node's join): only `stackpad-control`'s certificate is accepted, the bearer token is
    /// still checked; the files are reloaded when they change. Required off loopback.
    pub admin_tls: Option<pki::TlsFiles>,
    /// File holding the admin bearer token (alternative: env `STACKPAD_PROXY_TOKEN`).
    pub admin_token_file: Option<PathBuf>,
    #[serde(skip_serializing)]
    pub admin_token: String,
    pub state_file: PathBuf,
    /// Pingora worker threads.
    pub threads: usize,
    /// Let idle Pingora threads steal work from busy ones (off: one single-threaded runtime
    /// per thread, which wastes fewer wake-ups).
    pub work_stealing: bool,
    /// One `tracing` line per request (target `stackpad_proxy::access`).
    pub access_log: bool,
    /// One ClickHouse row per request (the store the control plane queries); absent = none.
    pub access_log_clickhouse: Option<crate::access_log::AccessLogSettings>,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub upstream_connect_timeout_ms: u64,
    pub upstream_idle_timeout_ms: u64,
    /// Idle upstream connections kept for reuse, per worker thread, over all upstreams
    /// (Pingora's `upstream_keepalive_pool_size`). Pingora's default, 128, is below the
    /// requests one busy h2 client set keeps in flight to one service (20 connections x 10
    /// streams in bench/h2): past it, each answered request's upstream connection was closed
    /// and the next one connected anew (a third of the requests). Each idle one holds Pingora's
    /// 64 KiB read buffer, so 512 cost at most ~33 MiB, and only after such a burst (they close
    /// after `upstream_idle_timeout_ms`).
    pub upstream_keepalive_pool_size: usize,
    /// An upstream connection whose peer answers nothing for this long fails (TCP keep-alive
    /// probes every second, and `TCP_USER_TIMEOUT` for data never acknowledged): a request in
    /// flight to a node that died fails over instead of hanging, while a slow but live upstream
    /// is unaffected (its kernel answers the probes). At least 2000.
    pub upstream_dead_after_ms: u64,
    /// Further upstreams tried after a connect failure.
    pub connect_retries: usize,
    /// How long a request to a sleeping service (an idle preview, #17) is held while the
    /// control plane starts it; then it is answered 503 with Retry-After.
    pub wake_timeout_ms: u64,
    /// A wake the control plane has not answered after this long is asked for again (the
    /// next held request asks; a control plane that missed the first ask).
    pub wake_reask_ms: u64,
    /// Seconds Pingora waits for connections at shutdown/upgrade (the process exits earlier,
    /// as soon as none is left).
    pub grace_period_secs: u64,
    /// At shutdown/upgrade, idle keep-alive connections are closed after this many
    /// milliseconds; a request already on its way is still answered (with `Connection: close`).
    pub shutdown_idle_close_ms: u64,
    /// Read buffer per downstream connection on the plain listener (0 = none).
    pub plain_read_buffer_bytes: usize,
    /// Read buffer per downstream connection on the TLS listener (0 = none). rustls reads
    /// records into its own buffer (4 KiB at a time) anyway; a buffer here saves read calls
    /// on large request bodies only, and is kept for the connection's life: 16 KiB cost
    /// ~16 KiB of RSS per idle keep-alive HTTPS connection (bench/proxy's idle step).
    pub tls_read_buffer_bytes: usize,
    /// Pingora's fd-handover socket for graceful binary upgrades.
    pub upgrade_sock: PathBuf,
    pub pid_file: PathBuf,
    /// Shared certificate store and ACME; absent = certificates from files only.
    pub acme: Option<crate::acme::AcmeSettings>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            http_listen: Some("0.0.0.0:80".into()),
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            admin_listen: "127.0.0.1:9180".into(),
            admin_tls: None,
            admin_token_file: None,
            admin_token: String::new(),
            state_file: "/var/lib/stackpad/proxy/state.json".into(),
            threads: 2,
            work_stealing: false,
            access_log: true,
            access_log_clickhouse: None,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            upstream_connect_timeout_ms: 2_000,
            upstream_idle_timeout_ms: 60_000,
            upstream_keepalive_pool_size: 512,
            upstream_dead_after_ms: 3_000,
            connect_retries: 2,
            wake_timeout_ms: crate::wake::WAKE_TIMEOUT.as_millis() as u64,
            wake_reask_ms: crate::wake::REASK_AFTER.as_millis() as u64,
            grace_period_secs: 30,
            shutdown_idle_close_ms: 200,
            plain_read_buffer_bytes: 0,
            tls_read_buffer_bytes: 0,
            upgrade_sock: "/tmp/stackpad-proxy-upgrade.sock".into(),
            pid_file: "/tmp/stackpad-proxy.pid".into(),
            acme: None,
        }
    }
}

/// A configuration value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("config key {key}: {message}")]
pub struct ConfigError {
    pub key: &'static str,
    pub message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        message: message.into(),
    }
}

impl ProxyConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let addr = |key, v: &str| {
            v.parse::<SocketAddr>()
                .map(|_| ())
                .map_err(|_| err(key, format!("{v:?} is not ip:port")))
        };
        if self.http_listen.is_none() && self.tls_listen.is_none() {
            return Err(err(
                "http_listen",
                "neither http_listen nor tls_listen is set",
            ));
        }
        if let Some(v) = &self.http_listen {
            addr("http_listen", v)?;
        }
        if let Some(v) = &self.tls_listen {
            addr("tls_listen", v)?;
            if self.tls_cert_file.is_none() {
                return Err(err("tls_cert_file", "required with tls_listen"));
            }
            if self.tls_key_file.is_none() {
                return Err(err("tls_key_file", "required with tls_listen"));
            }
        }
        addr("admin_listen", &self.admin_listen)?;
        if let Some(tls) = &self.admin_tls {
            tls.validate().map_err(|e| err("admin_tls", e))?;
        }
        if let Ok(at) = self.admin_listen.parse::<SocketAddr>() {
            pki::require_tls_off_loopback(
                "admin_listen",
                at,
                "admin_tls",
                self.admin_tls.is_some(),
            )
            .map_err(|e| err("admin_tls", e.to_string()))?;
        }
        if let Some(acme) = &self.acme {
            acme.validate().map_err(|(key, reason)| err(key, reason))?;
        }
        if let Some(access) = &self.access_log_clickhouse {
            access
                .validate()
                .map_err(|(key, reason)| err(key, reason))?;
        }
        if self.admin_token.trim().len() < 16 {
            return Err(err(
                "admin_token",
                "missing or shorter than 16 characters (admin_token_file or STACKPAD_PROXY_TOKEN)",
            ));
        }
        if self.threads == 0 {
            return Err(err("threads", "must be at least 1"));
        }
        if self.max_header_bytes < 1024 {
            return Err(err("max_header_bytes", "must be at least 1024"));
        }
        if self.max_headers == 0 {
            return Err(err("max_headers", "must be at least 1"));
        }
        if self.upstream_keepalive_pool_size == 0 {
            return Err(err("upstream_keepalive_pool_size", "must be at least 1"));
        }
        for (key, v) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            (
                "upstream_connect_timeout_ms",
                self.upstream_connect_timeout_ms,
            ),
            ("upstream_idle_timeout_ms", self.upstream_idle_timeout_ms),
            ("wake_timeout_ms", self.wake_timeout_ms),
            ("wake_reask_ms", self.wake_reask_ms),
        ] {
            if v == 0 {
                return Err(err(key, "must be above 0"));
            }
        }
        if self.upstream_dead_after_ms < 2_000 {
            return Err(err(
                "upstream_dead_after_ms",
                "must be at least 2000 (keep-alive probes are a second apart)",
            ));
        }
        if self.state_file.as_os_str().is_empty() {
            return Err(err("state_file", "is empty"));
        }
        Ok(())
    }

    pub fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
        }
    }

    pub fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// The TCP keep-alive of upstream connections: a probe every second once a connection is
    /// silent, and the connection fails once its peer has answered nothing (probes or data)
    /// for `upstream_dead_after_ms`.
    pub fn upstream_keepalive(&self) -> pingora::protocols::TcpKeepalive {
        let second = Duration::from_secs(1);
        pingora::protocols::TcpKeepalive {
            idle: second,
            interval: second,
            count: (self.upstream_dead_after_ms / 1000)
                .saturating_sub(1)
                .max(1) as usize,
            user_timeout: Self::ms(self.upstream_dead_after_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> ProxyConfig {
        ProxyConfig {
            admin_token: "0123456789abcdef".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_validate_with_a_token() {
        ok().validate().unwrap();
        assert_eq!(
            ProxyConfig::default().validate().unwrap_err().key,
            "admin_token"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let c = ProxyConfig {
            http_listen: Some("nope".into()),
            ..ok()
        };
        assert_eq!(c.validate().unwrap_err().key, "http_listen");
        let c = ProxyConfig {
            tls_listen: Some("127.0.0.1:1".into()),
            ..ok()
        };
        assert_eq!(c.validate().unwrap_err().key, "tls_cert_file");
        let c = ProxyConfig { threads: 0, ..ok() };
        assert_eq!(c.validate().unwrap_err().key, "threads");
        let c = ProxyConfig {
            idle_timeout_ms: 0,
            ..ok()
        };
        assert_eq!(c.validate().unwrap_err().key, "idle_timeout_ms");
        let c = ProxyConfig {
            wake_reask_ms: 0,
            ..ok()
        };
        assert_eq!(c.validate().unwrap_err().key, "wake_reask_ms");
        let c = ProxyConfig {
            upstream_dead_after_ms: 1_500,
            ..ok()
        };
        assert_eq!(c.validate().unwrap_err().key, "upstream_dead_after_ms");
        let c = ProxyConfig {
            upstream_keepalive_pool_size: 0,
            ..ok()
        };
        assert_eq!(
            c.validate().unwrap_err().key,
            "upstream_keepalive_pool_size"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = serde_json::from_str::<ProxyConfig>(r#"{"htp_listen":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("htp_listen"), "{e}");
    }
}
