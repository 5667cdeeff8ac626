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

    #[test]
    fn layouts_match_the_c_header() {
        assert_eq!(size_of::<EndpointValue>(), 16);
        assert_eq!(size_of::<IfaceValue>(), 24);
        assert_eq!(size_of::<PairKey>(), 24);
        assert_eq!(size_of::<CountersValue>(), 8 * (4 + 2 * DROP_REASONS));
    }

    #[test]
    fn ip_keys_keep_network_order_in_memory() {
        let ip = Ipv4Addr::new(10, 201, 3, 4);
        assert_eq!(ip_key(ip).to_ne_bytes(), [10, 201, 3, 4]);
        assert_eq!(ip_from_key(ip_key(ip)), ip);
    }
}
