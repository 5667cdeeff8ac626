//! The raw layout of the BPF maps, mirroring `programs/isolation.h` field for field.
//!
//! Addresses are stored as the kernel sees them in packets (network byte order in memory):
//! [`ip_key`] makes such a key from an [`Ipv4Addr`].
#![allow(unsafe_code)] // `aya::Pod` is an unsafe marker trait; each impl says why it holds.

use std::net::Ipv4Addr;

pub(crate) const ENDPOINTS: &str = "sp_endpoints";
pub(crate) const IFACES: &str = "sp_ifaces";
pub(crate) const PAIRS: &str = "sp_pairs";
pub(crate) const DENY: &str = "sp_deny";
pub(crate) const COUNTERS: &str = "sp_counters";

/// Number of drop reasons (`DROP_REASONS` in the header; index 0 means "allowed").
pub(crate) const DROP_REASONS: usize = 7;

/// `MAX_IFACES`: attached veths per node, and counter slots.
pub(crate) const MAX_IFACES: u32 = 16384;

pub(crate) const CIDR_ALLOW: u8 = 0;
pub(crate) const CIDR_DENY: u8 = 1;

/// `struct endpoint`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EndpointValue {
    pub identity: u64,
    pub service_port: u16,
    pub roles: u8,
    pub pad: [u8; 5],
}

/// `struct iface`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct IfaceValue {
    pub ip: u32,
    /// Index into `sp_counters`.
    pub slot: u32,
    /// A copy of the container's `sp_endpoints` entry.
    pub endpoint: EndpointValue,
}

/// `struct pair_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PairKey {
    pub src: u64,
    pub dst: u64,
    pub port: u16,
    pub proto: u8,
    pub pad: [u8; 5],
}

/// `struct counters`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CountersValue {
    pub out_bytes: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub in_packets: u64,
    pub drops_out: [u64; DROP_REASONS],
    pub drops_in: [u64; DROP_REASONS],
}

// SAFETY: plain `#[repr(C)]` structs of integers and integer arrays with explicit padding
// fields, so every bit pattern is valid and there are no implicit padding bytes.
unsafe impl aya::Pod for EndpointValue {}
// SAFETY: as above: two u32 and an `EndpointValue` (alignment 8, at offset 8), no padding.
unsafe impl aya::Pod for IfaceValue {}
// SAFETY: as above: 8 + 8 + 2 + 1 + 5 bytes, explicit padding, alignment 8 (24 bytes).
unsafe impl aya::Pod for PairKey {}
// SAFETY: as above: only u64 fields and u64 arrays.
unsafe impl aya::Pod for CountersValue {}

/// The map key of an IPv4 address: its octets in memory order, as in an IP header.
pub(crate) fn ip_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The inverse of [`ip_key`].
pub(crate) fn ip_from_key(key: u32) -> Ipv4Addr {
    Ipv4Addr::from(key.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout the C compiler gives `programs/isolation.h`: a small host program including
    /// the header prints every size, offset and shared constant, and each must equal Rust's.
    #[test]
    fn layouts_match_the_c_header() {
        use std::mem::offset_of;
        let probe = r#"
#include <stddef.h>
#include <stdio.h>
#include "isolation.h"
#define SIZE(t) printf(#t " %zu\n", sizeof(struct t))
#define OFF(t, f) printf(#t "." #f " %zu\n", offsetof(struct t, f))
int main(void) {
    SIZE(endpoint); OFF(endpoint, identity); OFF(endpoint, service_port); OFF(endpoint, roles);
    SIZE(iface); OFF(iface, ip); OFF(iface, slot); OFF(iface, self);
    SIZE(pair_key); OFF(pair_key, src); OFF(pair_key, dst); OFF(pair_key, port);
    OFF(pair_key, proto);
    SIZE(counters); OFF(counters, out_bytes); OFF(counters, out_packets);
    OFF(counters, in_bytes); OFF(counters, in_packets); OFF(counters, drops_out);
    OFF(counters, drops_in);
    printf("DROP_REASONS %d\nMAX_IFACES %d\nCIDR_ALLOW %d\nCIDR_DENY %d\n",
           DROP_REASONS, MAX_IFACES, CIDR_ALLOW, CIDR_DENY);
    return 0;
}
"#;
        let dir = std::env::temp_dir().join(format!("ebpf-layout-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("probe.c"), probe).unwrap();
        let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
        let programs = concat!(env!("CARGO_MANIFEST_DIR"), "/programs");
        let built = std::process::Command::new(&clang)
            .args(["-I", programs, "-I/usr/include/x86_64-linux-gnu", "-o"])
            .arg(dir.join("probe"))
            .arg(dir.join("probe.c"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {clang} (install clang): {e}"));
        assert!(
            built.status.success(),
            "compiling the layout probe: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let run = std::process::Command::new(dir.join("probe"))
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let printed = String::from_utf8(run.stdout).unwrap();
        let c: std::collections::BTreeMap<&str, usize> = printed
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k, v.parse().unwrap()))
            .collect();
        let rust: std::collections::BTreeMap<&str, usize> = [
            ("endpoint", size_of::<EndpointValue>()),
            ("endpoint.identity", offset_of!(EndpointValue, identity)),
            (
                "endpoint.service_port",
                offset_of!(EndpointValue, service_port),
            ),
            ("endpoint.roles", offset_of!(EndpointValue, roles)),
            ("iface", size_of::<IfaceValue>()),
            ("iface.ip", offset_of!(IfaceValue, ip)),
            ("iface.slot", offset_of!(IfaceValue, slot)),
            ("iface.self", offset_of!(IfaceValue, endpoint)),
            ("pair_key", size_of::<PairKey>()),
            ("pair_key.src", offset_of!(PairKey, src)),
            ("pair_key.dst", offset_of!(PairKey, dst)),
            ("pair_key.port", offset_of!(PairKey, port)),
            ("pair_key.proto", offset_of!(PairKey, proto)),
            ("counters", size_of::<CountersValue>()),
            ("counters.out_bytes", offset_of!(CountersValue, out_bytes)),
            (
                "counters.out_packets",
                offset_of!(CountersValue, out_packets),
            ),
            ("counters.in_bytes", offset_of!(CountersValue, in_bytes)),
            ("counters.in_packets", offset_of!(CountersValue, in_packets)),
            ("counters.drops_out", offset_of!(CountersValue, drops_out)),
            ("counters.drops_in", offset_of!(CountersValue, drops_in)),
            ("DROP_REASONS", DROP_REASONS),
            ("MAX_IFACES", MAX_IFACES as usize),
            ("CIDR_ALLOW", usize::from(CIDR_ALLOW)),
            ("CIDR_DENY", usize::from(CIDR_DENY)),
        ]
        .into_iter()
        .collect();
        assert_eq!(c, rust, "C (left) and Rust (right) disagree");
    }

    #[test]
    fn ip_keys_keep_network_order_in_memory() {
        let ip = Ipv4Addr::new(10, 201, 3, 4);
        assert_eq!(ip_key(ip).to_ne_bytes(), [10, 201, 3, 4]);
        assert_eq!(ip_from_key(ip_key(ip)), ip);
    }
}
