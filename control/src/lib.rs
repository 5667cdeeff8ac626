//! The control plane (`stackpad-control`): the public REST API and the deploy pipeline.
//!
//! Owns: state in PostgreSQL (organizations to deployments, nodes, tokens with their roles and
//! expiry, audit), who may call which route ([`api::roles`]), the durable deploy queue and its
//! state machine, scheduling of builds and containers, GitHub webhooks (signed, replay-checked,
//! rate-limited),
//! custom-domain verification (which domains the proxy may route and certify, [`domains`]).
//! Drives buildd, the node agents and the proxy over their
//! `proto` APIs through narrow traits ([`clients`]).
//! Does not own: running anything itself; every effect on a node goes through a daemon's API.
#![forbid(unsafe_code)]
// The OpenAPI document is one `json!` literal, deeper than the default limit of 128.
#![recursion_limit = "256"]

pub mod accesslogs;
pub mod api;
pub mod backups;
pub mod buildlogs;
pub mod clients;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod dashboard;
pub mod deploy_keys;
pub mod domains;
pub mod endpoints;
pub mod github;
pub mod idle;
pub mod logretention;
pub mod logsearch;
pub mod managed;
pub mod metrics;
pub mod pipeline;
pub mod previews;
pub mod schedule;
pub mod store;
pub mod volumes;
