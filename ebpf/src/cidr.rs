//! The deny list of destination prefixes (cloud metadata, the host's own addresses) and the
//! order in which an update is written so that it never opens a deny-to-allow window.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::error::Error;

/// An IPv4 prefix such as `169.254.0.0/16`; host bits must be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, Error> {
        let shown = format!("{addr}/{prefix}");
        if prefix > 32 {
            return Err(Error::InvalidCidr {
                cidr: shown,
                reason: "prefix longer than 32",
            });
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        if u32::from(addr) & !mask != 0 {
            return Err(Error::InvalidCidr {
                cidr: shown,
                reason: "host bits set",
            });
        }
        Ok(Cidr { addr, prefix })
    }

    /// A single address (`/32`).
    pub fn host(addr: Ipv4Addr) -> Self {
        Cidr { addr, prefix: 32 }
    }

    pub fn addr(self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this prefix.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr)
    }
}

impl FromStr for Cidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason| Error::InvalidCidr {
            cidr: s.to_owned(),
            reason,
        };
        let (addr, prefix) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("prefix is not a number"))?;
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What the trie says about a prefix; the longest matching prefix wins, so an `Allow` /32 can
/// open one address inside a denied range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CidrAction {
    Deny,
    Allow,
}

/// The desired deny list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DenyList(pub BTreeMap<Cidr, CidrAction>);

impl DenyList {
    /// Denies every prefix of `deny`, except the holes in `allow`.
    pub fn new(deny: &[Cidr], allow: &[Cidr]) -> Self {
        let mut m: BTreeMap<Cidr, CidrAction> =
            deny.iter().map(|c| (*c, CidrAction::Deny)).collect();
        m.extend(allow.iter().map(|c| (*c, CidrAction::Allow)));
        DenyList(m)
    }
}

/// One write to the deny trie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrieOp {
    Put(Cidr, CidrAction),
    Remove(Cidr),
}

/// The writes that turn `current` into `desired`, strictest first: new denies, then removal of
/// holes that go away, then new holes, then removal of denies that go away. Every intermediate
/// state denies at least what both the old and the new list deny, minus the new holes only at
/// the end.
pub fn plan_update(current: &DenyList, desired: &DenyList) -> Vec<TrieOp> {
    let mut ops = Vec::new();
    let changed = |c: &Cidr, a: &CidrAction| current.0.get(c) != Some(a);
    for (c, a) in &desired.0 {
        if *a == CidrAction::Deny && changed(c, a) {
            ops.push(TrieOp::Put(*c, *a));
        }
    }
    for (c, a) in &current.0 {
        if *a == CidrAction::Allow && !desired.0.contains_key(c) {
            ops.push(TrieOp::Remove(*c));
        }
    }
    for (c, a) in &desired.0 {
        if *a == CidrAction::Allow && changed(c, a) {
            ops.push(TrieOp::Put(*c, *a));
        }
    }
    for (c, a) in &current.0 {
        if *a == CidrAction::Deny && !desired.0.contains_key(c) {
            ops.push(TrieOp::Remove(*c));
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn contains_is_the_prefix_match() {
        let pool = c("10.97.16.0/20");
        assert!(pool.contains(Ipv4Addr::new(10, 97, 16, 0)));
        assert!(pool.contains(Ipv4Addr::new(10, 97, 31, 255)));
        assert!(!pool.contains(Ipv4Addr::new(10, 97, 32, 1)));
        assert!(!pool.contains(Ipv4Addr::new(10, 97, 15, 255)));
        assert!(c("0.0.0.0/0").contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert!(Cidr::host(Ipv4Addr::new(1, 2, 3, 4)).contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert!(!Cidr::host(Ipv4Addr::new(1, 2, 3, 4)).contains(Ipv4Addr::new(1, 2, 3, 5)));
    }

    #[test]
    fn parses_and_refuses_bad_prefixes() {
        assert_eq!(c("169.254.0.0/16").to_string(), "169.254.0.0/16");
        assert_eq!(c("10.0.0.1").prefix(), 32);
        for bad in ["10.0.0.1/16", "10.0.0.0/33", "nope/8", "10.0.0.0/x"] {
            let err = bad.parse::<Cidr>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn updates_go_strictest_first() {
        let current = DenyList::new(
            &[c("169.254.0.0/16"), c("10.0.0.1/32")],
            &[c("169.254.1.1")],
        );
        let desired = DenyList::new(
            &[c("169.254.0.0/16"), c("192.168.1.1/32")],
            &[c("169.254.2.2")],
        );
        assert_eq!(
            plan_update(&current, &desired),
            vec![
                TrieOp::Put(c("192.168.1.1/32"), CidrAction::Deny),
                TrieOp::Remove(c("169.254.1.1/32")),
                TrieOp::Put(c("169.254.2.2/32"), CidrAction::Allow),
                TrieOp::Remove(c("10.0.0.1/32")),
            ]
        );
        assert!(plan_update(&desired, &desired).is_empty());
    }

    #[test]
    fn a_hole_turning_into_a_deny_is_written_first() {
        let current = DenyList::new(&[], &[c("10.1.0.0/16")]);
        let desired = DenyList::new(&[c("10.1.0.0/16")], &[]);
        assert_eq!(
            plan_update(&current, &desired),
            vec![TrieOp::Put(c("10.1.0.0/16"), CidrAction::Deny)]
        );
    }
}
