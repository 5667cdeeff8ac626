//! The rule every daemon applies to its listeners: plain text on loopback only.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "config key {tls_key}: {listen_key} = {address} is off loopback and needs TLS (platform certificate, key and CA)"
)]
pub struct ListenError {
    pub listen_key: &'static str,
    pub tls_key: &'static str,
    pub address: SocketAddr,
}

/// A daemon may listen without TLS only on a loopback address.
pub fn require_tls_off_loopback(
    listen_key: &'static str,
    address: SocketAddr,
    tls_key: &'static str,
    has_tls: bool,
) -> Result<(), ListenError> {
    if has_tls || address.ip().is_loopback() {
        Ok(())
    } else {
        Err(ListenError {
            listen_key,
            tls_key,
            address,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_only_on_loopback() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert!(require_tls_off_loopback("listen", at("127.0.0.1:1"), "tls", false).is_ok());
        assert!(require_tls_off_loopback("listen", at("[::1]:1"), "tls", false).is_ok());
        assert!(require_tls_off_loopback("listen", at("0.0.0.0:1"), "tls", true).is_ok());
        let err = require_tls_off_loopback("listen", at("0.0.0.0:7070"), "tls", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config key tls") && err.contains("0.0.0.0:7070"),
            "{err}"
        );
        assert!(require_tls_off_loopback("listen", at("10.1.2.3:1"), "tls", false).is_err());
    }
}
