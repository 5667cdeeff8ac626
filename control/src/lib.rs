//! The control plane (`stackpad-control`): the public REST API and the deploy pipeline.
//!
//! Owns: state in PostgreSQL (organizations to deployments, nodes, tokens, audit), the durable
//! deploy queue and its state machine, scheduling of builds and containers, GitHub webhooks,
//! custom-domain verification and log search over ClickHouse. Drives buildd, the node agents
//! and the proxy over their `proto` APIs.
//! Does not own: running anything itself; every effect on a node goes through a daemon's API.
#![forbid(unsafe_code)]
