//! The node agent (`stackpad-node`): runs a compute node's containers through containerd.
//!
//! Owns: image pulls into containerd, hardened container specs, per-project user namespaces
//! (host id ranges and remapped snapshots), per-project bridges and addresses, health checks, restart policy, container logs on disk, reconcile after a restart,
//! and the `stackpad.node.v1.NodeAgent` gRPC service. The agent acts through seams: the
//! container engine ([`agent::ContainerEngine`], containerd), the container network
//! ([`network::ContainerNetwork`], bridges and addresses, health probes) and the isolation
//! programs ([`isolation::IsolationHook`], the `ebpf` crate fills it).
//! Does not own: where containers run (the control plane schedules) or how traffic reaches them
//! (the proxy routes).
#![forbid(unsafe_code)]

pub mod agent;
pub mod cli;
pub mod config;
pub mod containerd;
pub mod daemon;
pub mod error;
pub mod grpc;
pub mod health;
pub mod image;
pub mod isolation;
pub mod isolation_ebpf;
pub mod join;
pub mod logs;
pub mod logship;
pub mod metrics;
pub mod network;
pub mod restart;
pub mod spec;
pub mod state_file;
pub mod usage;
pub mod userns;
pub mod volume;

pub use config::NodeConfig;
pub use error::{Result, RuntimeError};
