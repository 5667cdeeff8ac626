//! IPv4 subnets: parsing, containment, and cutting a pool into equal parts.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 network, `addr/prefix`, with the host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.prefix) == u32::from(self.addr)
    }
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        u32::from(self.addr) & Self::mask(p) == u32::from(other.addr) & Self::mask(p)
    }
    /// The `i`-th subnet of length `prefix` inside this one.
    pub fn nth_child(&self, prefix: u8, i: u64) -> Option<Subnet> {
        if prefix < self.prefix || prefix > 32 || i >= 1u64 << (prefix - self.prefix) {
            return None;
        }
        let base = u32::from(self.addr) as u64 + i * (1u64 << (32 - prefix));
        Some(Subnet {
            addr: Ipv4Addr::from(base as u32),
            prefix,
        })
    }
    pub fn children(&self, prefix: u8) -> u64 {
        if prefix < self.prefix {
            0
        } else {
            1u64 << (prefix - self.prefix)
        }
    }
    /// The `i`-th address (0 = network address).
    pub fn host(&self, i: u64) -> Option<Ipv4Addr> {
        (i < self.size()).then(|| Ipv4Addr::from(u32::from(self.addr) + i as u32))
    }
    /// The gateway: the first usable address, held by the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1).expect("subnets are at most /30")
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not addr/prefix"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 30)
            .ok_or_else(|| format!("prefix {p:?} must be 0..=30"))?;
        if u32::from(addr) & !Self::mask(prefix) != 0 {
            return Err(format!("{s} has host bits set"));
        }
        Ok(Self { addr, prefix })
    }
}

impl TryFrom<String> for Subnet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_cuts() {
        let pool: Subnet = "10.200.0.0/16".parse().unwrap();
        assert_eq!(pool.children(24), 256);
        let third = pool.nth_child(24, 3).unwrap();
        assert_eq!(third.to_string(), "10.200.3.0/24");
        assert_eq!(third.gateway(), Ipv4Addr::new(10, 200, 3, 1));
        assert!(pool.contains(Ipv4Addr::new(10, 200, 9, 9)));
        assert!(!pool.overlaps(&"10.88.0.0/16".parse().unwrap()));
        assert!("10.200.0.1/16".parse::<Subnet>().is_err());
        assert!("10.200.0.0/31".parse::<Subnet>().is_err());
    }
}
