//! A Stackpad cluster on this machine (#15): `scripts/cluster` namespaces joined by WireGuard,
//! control and the proxy on the host. A binary of its own, so it runs beside the other suites;
//! every test owns its cluster (a unique `--name`) and removes it on drop.

mod build;
mod control_failover;
mod dns;
mod harness;
mod isolation;
// Node loss runs with `scripts/test --full` (feature `full-tests`) for now: under the whole
// suite's load on two cores the node monitor marked every node down (heartbeats late against
// `node_down_after_ms` = 5 s), so the replicas had nowhere to go (CI run of stop 28).
#[cfg(feature = "full-tests")]
mod node_loss;
mod replicas;
mod routing;
