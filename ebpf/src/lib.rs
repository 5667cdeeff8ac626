//! Stackpad's eBPF programs and their loader: per-project network isolation and per-container
//! traffic counters.
//!
//! Owns: the C programs under `programs/` (compiled by clang at build time and embedded), the
//! BPF maps that hold the policy as data, and the Rust API to load once, attach per container,
//! update policy and read counters.
//! Does not own: knowing which containers exist; the node agent (`runtime`) calls this crate.
