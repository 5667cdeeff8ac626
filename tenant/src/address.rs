//! Which network addresses a tenant-chosen host may resolve to: public unicast only.
//!
//! A build node fetches tenant repositories and a control node resolves their hosts; neither may
//! be pointed at itself, at the platform's private network, at a cloud metadata service or at
//! another tenant's private address. Callers resolve a name, check *every* address it has with
//! [`AddressPolicy::check`] (one refused address refuses the name) and connect to an address they
//! checked, never resolving again between check and connect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{Invalid, echo};

/// An address refused by the policy, with the range it falls in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {ip} is {range}")]
pub struct Refused {
    pub ip: IpAddr,
    /// What the range is, e.g. `loopback`, `private (10.0.0.0/8)`, `a platform address`.
    pub range: String,
}

/// An address block, e.g. `10.0.0.0/8` or `fd00::/8`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let bad = || {
            Invalid(format!(
                "{} is not an address block like 10.0.0.0/8",
                echo(value)
            ))
        };
        let (addr, prefix) = match value.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (value, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()) << 96,
                u128::from(ip.to_bits()) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(net.to_bits(), ip.to_bits(), self.prefix)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::parse(s)
    }
}

/// `a` and `b` (left-aligned in 128 bits) agree on their first `prefix` bits.
fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix));
    a & mask == b & mask
}

/// Public unicast only, minus the platform's own addresses (`deny`); `allow` names blocks an
/// operator deliberately opens (an internal git server, a test's own listener). `deny` always
/// wins over `allow`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    pub deny: Vec<Cidr>,
    pub allow: Vec<Cidr>,
}

impl AddressPolicy {
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = ip.to_canonical();
        if let Some(block) = self.deny.iter().find(|c| c.contains(ip)) {
            return Err(Refused {
                ip,
                range: format!("a platform address ({block})"),
            });
        }
        if self.allow.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        match special(ip) {
            Some(range) => Err(Refused {
                ip,
                range: range.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// Checks every address a name resolved to; an empty answer is refused too.
    pub fn check_all(&self, ips: &[IpAddr]) -> Result<(), Refused> {
        ips.iter().try_for_each(|ip| self.check(*ip))
    }
}

/// The special-purpose range `ip` is in (IANA's registries), or `None` for public unicast.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

const V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "unspecified (0.0.0.0/8)"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private (10.0.0.0/8)"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "carrier-grade NAT (100.64.0.0/10)",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local or cloud metadata (169.254.0.0/16)",
    ),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private (172.16.0.0/12)"),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        "reserved for protocols (192.0.0.0/24)",
    ),
    (
        Ipv4Addr::new(192, 0, 2, 0),
        24,
        "documentation (192.0.2.0/24)",
    ),
    (
        Ipv4Addr::new(192, 88, 99, 0),
        24,
        "6to4 relay (192.88.99.0/24)",
    ),
    (
        Ipv4Addr::new(192, 168, 0, 0),
        16,
        "private (192.168.0.0/16)",
    ),
    (
        Ipv4Addr::new(198, 18, 0, 0),
        15,
        "benchmarking (198.18.0.0/15)",
    ),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "documentation (198.51.100.0/24)",
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        "documentation (203.0.113.0/24)",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast (224.0.0.0/4)"),
    (
        Ipv4Addr::new(240, 0, 0, 0),
        4,
        "reserved or broadcast (240.0.0.0/4)",
    ),
];

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    V4.iter()
        .find(|(net, prefix, _)| {
            prefix_eq(
                u128::from(net.to_bits()) << 96,
                u128::from(ip.to_bits()) << 96,
                *prefix,
            )
        })
        .map(|(_, _, name)| *name)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = ip.to_bits();
    let within = |net: u128, prefix: u8| prefix_eq(net, bits, prefix);
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Forms that embed an IPv4 address are judged by that address.
    if within(0x0064_ff9b << 96, 96) {
        let v4 = Ipv4Addr::from_bits(bits as u32);
        return special_v4(v4).map(|_| "NAT64 of a non-public IPv4 address");
    }
    if within(0x2002 << 112, 16) {
        let v4 = Ipv4Addr::from_bits((bits >> 80) as u32);
        return special_v4(v4).map(|_| "6to4 of a non-public IPv4 address");
    }
    if within(0, 96) {
        return Some("IPv4-compatible (::/96)");
    }
    const V6: &[(u128, u8, &str)] = &[
        (0x0064_ff9b_0001 << 80, 48, "local NAT64 (64:ff9b:1::/48)"),
        (0x0100 << 112, 64, "discard (100::/64)"),
        (0x2001 << 112, 23, "reserved for protocols (2001::/23)"),
        (0x2001_0db8 << 96, 32, "documentation (2001:db8::/32)"),
        (0x3fff << 112, 20, "documentation (3fff::/20)"),
        (0xfc00 << 112, 7, "unique local (fc00::/7)"),
        (0xfe80 << 112, 10, "link-local (fe80::/10)"),
        (0xfec0 << 112, 10, "site-local (fec0::/10)"),
        (0xff00 << 112, 8, "multicast (ff00::/8)"),
    ];
    if let Some((_, _, name)) = V6.iter().find(|(net, prefix, _)| within(*net, *prefix)) {
        return Some(name);
    }
    if !within(0x2000 << 112, 3) {
        return Some("not global unicast (outside 2000::/3)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_every_non_public_range() {
        let policy = AddressPolicy::default();
        for bad in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "100::1",
        ] {
            assert!(policy.check(ip(bad)).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn accepts_public_unicast() {
        let policy = AddressPolicy::default();
        for good in [
            "140.82.121.3",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2a01:4f8::1",
            "64:ff9b::8c52:7903",
            "2002:8c52:7903::1",
        ] {
            assert_eq!(policy.check(ip(good)), Ok(()), "{good}");
        }
    }

    #[test]
    fn deny_wins_and_allow_opens() {
        let policy = AddressPolicy {
            deny: vec![
                Cidr::parse("1.1.1.0/24").unwrap(),
                Cidr::parse("127.0.0.3").unwrap(),
            ],
            allow: vec![Cidr::parse("127.0.0.0/30").unwrap()],
        };
        let err = policy.check(ip("1.1.1.1")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "address 1.1.1.1 is a platform address (1.1.1.0/24)"
        );
        assert!(policy.check(ip("127.0.0.2")).is_ok());
        assert!(policy.check(ip("::ffff:127.0.0.2")).is_ok());
        assert!(policy.check(ip("127.0.0.3")).is_err());
        assert!(policy.check(ip("127.0.0.4")).is_err());
        assert_eq!(
            policy.check(ip("127.0.0.9")).unwrap_err().to_string(),
            "address 127.0.0.9 is loopback"
        );
        assert!(policy.check_all(&[ip("8.8.8.8"), ip("10.0.0.1")]).is_err());
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("::1").unwrap().to_string(), "::1/128");
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["", "10.0.0.0/33", "x/8", "10.0.0.0/", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn mapped_forms_are_judged_like_their_ipv4(a: u8, b: u8, c: u8, d: u8) {
            let v4 = Ipv4Addr::new(a, b, c, d);
            let policy = AddressPolicy::default();
            prop_assert_eq!(
                policy.check(IpAddr::V4(v4)).is_ok(),
                policy.check(IpAddr::V6(v4.to_ipv6_mapped())).is_ok()
            );
        }
    }
}
