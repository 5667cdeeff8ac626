//! The ingress proxy (`stackpad-proxy`): HTTPS on :80/:443 in front of every `web` service.
//!
//! Owns: the Pingora server, the route table and its atomic switch with draining, upstream
//! health and load balancing, request hardening, per-SNI certificates and ACME, and the
//! `stackpad.proxy.v1.ProxyAdmin` gRPC service.
//! Does not own: which upstreams exist or which domains are verified (the control plane says).
#![forbid(unsafe_code)]
