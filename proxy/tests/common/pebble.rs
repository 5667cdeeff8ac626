//! Pebble (the ACME test CA from `scripts/services`) for the certificate tests: the shared
//! helpers of `stackpad_tests::acme` (a `PostgresDb` of the test's own for the shared store, the
//! lock on Pebble's http-01 port, TLS clients trusting Pebble's current root, the proxy with
//! ACME) and the proxy's own ACME settings for Pebble.

#![allow(unused_imports, reason = "each test binary uses a different subset")]

use proxy::acme::AcmeConfig;
pub use stackpad_tests::acme::{
    AcmeProxy, HTTP01_PORT, STORE_KEY, https_get, listener_ca, lock_http01_port, pebble_client,
    pebble_roots,
};
pub use stackpad_tests::db::PostgresDb;

pub fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn pebble() -> AcmeConfig {
    AcmeConfig {
        directory_url: stackpad_tests::acme::directory_url(),
        contact_email: Some("ops@stackpad.test".into()),
        ca_roots: Some(listener_ca().into()),
    }
}
