//! The node agent (`stackpad-node`): runs a compute node's containers through containerd.
//!
//! Owns: image pulls into containerd, hardened container specs, per-project bridges and
//! addresses, health checks, restart policy, container logs on disk, reconcile after a restart,
//! and the `stackpad.node.v1.NodeAgent` gRPC service. Attaches each container to the isolation
//! programs through the `ebpf` crate.
//! Does not own: where containers run (the control plane schedules) or how traffic reaches them
//! (the proxy routes).
#![forbid(unsafe_code)]
