//! A Stackpad cluster on this machine (#15): `scripts/cluster` namespaces joined by WireGuard,
//! control and the proxy on the host. A binary of its own, so it runs beside the other suites;
//! every test owns its cluster (a unique `--name`) and removes it on drop.

mod build;
mod control_failover;
mod dns;
mod harness;
mod isolation;
mod node_loss;
mod replicas;
mod routing;
