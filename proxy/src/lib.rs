//! The ingress proxy (`stackpad-proxy`): HTTPS on :80/:443 in front of every `web` service.
//!
//! Owns: the Pingora server, the route table and its atomic switch with draining, upstream
//! health and load balancing, request hardening, per-SNI certificates and ACME, the
//! `stackpad.proxy.v1.ProxyAdmin` gRPC service, and access log rows to ClickHouse.
//! Does not own: which upstreams exist or which domains are verified (the control plane says).
//!
//! Unsafe code is denied everywhere except `sockets` (one `shutdown(2)` call).
#![deny(unsafe_code)]

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod certs;
pub mod config;
pub mod drain;
pub mod hardening;
pub mod health;
pub mod http;
pub mod keepalive;
pub mod metrics;
pub mod pages;
pub mod public_tls;
pub mod routes;
pub mod server;
mod sockets;
pub mod state;
pub mod store;
pub mod switch;
pub mod tickets;
pub mod upstream;
pub mod wake;
pub mod write_buffer;
