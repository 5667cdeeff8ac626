//! Stackpad's eBPF programs and their loader: per-project network isolation and per-container
//! traffic counters.
//!
//! Owns: the C programs under `programs/` (compiled by clang at build time and embedded), the
//! BPF maps that hold the policy as data (pinned under bpffs so they outlive the agent), and the
//! Rust API to load once, attach per container, update policy and read counters.
//! Does not own: knowing which containers exist; the node agent (`runtime`) calls this crate.
//!
//! ```text
//! let mut iso = Isolation::load(&IsolationConfig::default())?;        // once per agent start
//! iso.attach(&ContainerEndpoint { veth, ip, policy })?;               // before the task starts
//! iso.set_endpoint(proxy_ip, &EndpointPolicy { roles: Roles::PROXY, .. })?;
//! let c = iso.counters(&veth)?;                                       // for /metrics
//! iso.detach(&veth, ip)?;                                             // at removal
//! ```
#![deny(unsafe_code)] // Only `maps` opts out, for the `aya::Pod` marker impls.

mod cidr;
mod config;
mod counters;
mod error;
mod host;
mod host_addrs;
mod loader;
mod maps;
mod policy;
pub mod programs;

pub use cidr::{Cidr, CidrAction, DenyList, TrieOp, plan_update};
pub use config::IsolationConfig;
pub use counters::{Counters, DropReason, render_prometheus};
pub use error::Error;
pub use host_addrs::{host_addresses, parse_fib_trie};
pub use loader::{ContainerEndpoint, Isolation, check_object};
pub use policy::{EndpointPolicy, Identity, PairRule, Protocol, Roles};
