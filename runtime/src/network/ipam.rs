//! Address management: one subnet per project network, one address per container, persisted
//! in a file shared by every agent of the machine (under an exclusive lock) so an address or
//! subnet is never handed out twice while in use.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Subnet;
use crate::error::{Result, RuntimeError};

/// One container's address on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ip: Ipv4Addr,
    /// The name other containers of the network reach it by.
    pub hostname: String,
}

/// A project+environment network: its subnet and the leases on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAlloc {
    pub subnet: Subnet,
    /// containerd namespace of the agent that owns the network.
    pub namespace: String,
    /// container id -> lease
    pub leases: BTreeMap<String, Lease>,
    /// Host index the next search starts at: addresses go round the subnet, so the address a
    /// container just freed is the last one handed out again (peers' ARP caches and
    /// connection tracking still point at the old container for a while).
    #[serde(default)]
    pub next: u64,
    /// The project and environment name the network is for (its DNS responder answers the
    /// project's names; tables written before #15's DNS lack them until the next attach).
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub environment_name: String,
}

impl NetworkAlloc {
    /// The names and address of each container on it.
    pub fn names(&self) -> Vec<(Vec<String>, Ipv4Addr)> {
        self.leases
            .values()
            .map(|l| {
                (
                    l.hostname.split_whitespace().map(str::to_owned).collect(),
                    l.ip,
                )
            })
            .collect()
    }
}

/// The whole allocation table: bridge name -> network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamState {
    pub networks: BTreeMap<String, NetworkAlloc>,
}

impl IpamState {
    /// The subnet of `bridge`, allocating the first free one of the pool if it has none.
    /// `routed` are subnets the host already routes (from any source): never handed out.
    pub fn ensure_network(
        &mut self,
        bridge: &str,
        namespace: &str,
        pool: Subnet,
        prefix: u8,
        routed: &[Subnet],
    ) -> Result<Subnet> {
        if let Some(n) = self.networks.get(bridge) {
            return Ok(n.subnet);
        }
        let mut used: Vec<Subnet> = self.networks.values().map(|n| n.subnet).collect();
        used.extend_from_slice(routed);
        let free = (0..pool.children(prefix))
            .filter_map(|i| pool.nth_child(prefix, i))
            .find(|s| !used.iter().any(|u| u.overlaps(s)))
            .ok_or_else(|| RuntimeError::PoolExhausted {
                pool: pool.to_string(),
                subject: bridge.to_owned(),
            })?;
        self.networks.insert(
            bridge.to_owned(),
            NetworkAlloc {
                subnet: free,
                namespace: namespace.to_owned(),
                leases: BTreeMap::new(),
                next: 0,
                project_id: String::new(),
                environment_name: String::new(),
            },
        );
        Ok(free)
    }

    /// The address of `container` on `bridge` (the same one again for a retried call).
    pub fn lease(&mut self, bridge: &str, container: &str, hostname: &str) -> Result<Ipv4Addr> {
        let net = self
            .networks
            .get_mut(bridge)
            .ok_or_else(|| RuntimeError::network(bridge, "no subnet allocated"))?;
        if let Some(l) = net.leases.get(container) {
            return Ok(l.ip);
        }
        let subnet = net.subnet;
        // .0 network, .1 gateway, last broadcast.
        let first = 2;
        let count = subnet.size().saturating_sub(3);
        let start = net.next.max(first);
        let (index, ip) = (0..count)
            .map(|k| first + (start - first + k) % count)
            .filter_map(|i| subnet.host(i).map(|ip| (i, ip)))
            .find(|(_, ip)| !net.leases.values().any(|l| l.ip == *ip))
            .ok_or_else(|| RuntimeError::PoolExhausted {
                pool: subnet.to_string(),
                subject: container.to_owned(),
            })?;
        net.next = index + 1;
        net.leases.insert(
            container.to_owned(),
            Lease {
                ip,
                hostname: hostname.to_owned(),
            },
        );
        Ok(ip)
    }

    /// Frees a container's address; returns whether the network is now empty.
    pub fn release(&mut self, bridge: &str, container: &str) -> bool {
        match self.networks.get_mut(bridge) {
            Some(n) => {
                n.leases.remove(container);
                n.leases.is_empty()
            }
            None => true,
        }
    }

    /// Frees a network's subnet if nothing is leased on it.
    pub fn drop_network_if_empty(&mut self, bridge: &str) -> bool {
        if self
            .networks
            .get(bridge)
            .is_some_and(|n| n.leases.is_empty())
        {
            self.networks.remove(bridge);
            return true;
        }
        false
    }

    /// The names and address of each container of a network (its DNS responder's own part).
    pub fn names(&self, bridge: &str) -> Vec<(Vec<String>, Ipv4Addr)> {
        self.networks
            .get(bridge)
            .map(NetworkAlloc::names)
            .unwrap_or_default()
    }

    /// The hosts-file lines of a network: `ip hostname` per lease (a lease's hostname may be
    /// several names separated by spaces: the name and its aliases).
    pub fn hosts_file(&self, bridge: &str) -> String {
        let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
        if let Some(n) = self.networks.get(bridge) {
            let mut seen = std::collections::BTreeSet::new();
            for l in n.leases.values() {
                if seen.insert((l.hostname.clone(), l.ip)) {
                    out.push_str(&format!("{}\t{}\n", l.ip, l.hostname));
                }
            }
        }
        out
    }
}

/// Subnets in the host's IPv4 routing table (`/proc/net/route`), without the default route.
pub fn routed_subnets() -> Vec<Subnet> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let prefix = mask.count_ones() as u8;
            if prefix == 0 || prefix > 30 {
                return None;
            }
            format!("{}/{prefix}", Ipv4Addr::from(dest.to_le_bytes()))
                .parse()
                .ok()
        })
        .collect()
}

/// The allocation table on disk, read-modify-written under an exclusive `flock`.
#[derive(Debug, Clone)]
pub struct IpamFile {
    dir: PathBuf,
}

impl IpamFile {
    pub fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io(dir, e))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Runs `f` on the table with the machine-wide lock held and saves what it leaves
    /// ([`crate::state_file::update`]).
    pub fn update<T>(&self, f: impl FnOnce(&mut IpamState) -> Result<T>) -> Result<T> {
        crate::state_file::update(&self.dir.join("ipam.json"), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Subnet {
        "10.200.0.0/22".parse().unwrap()
    }

    #[test]
    fn networks_get_distinct_subnets_and_reuse_freed_ones() {
        let mut s = IpamState::default();
        let a = s.ensure_network("a", "ns", pool(), 24, &[]).unwrap();
        let b = s.ensure_network("b", "ns", pool(), 24, &[]).unwrap();
        assert_ne!(a, b);
        assert_eq!(s.ensure_network("a", "ns", pool(), 24, &[]).unwrap(), a);
        s.ensure_network("c", "ns", pool(), 24, &[]).unwrap();
        s.ensure_network("d", "ns", pool(), 24, &[]).unwrap();
        assert!(matches!(
            s.ensure_network("e", "ns", pool(), 24, &[]),
            Err(RuntimeError::PoolExhausted { .. })
        ));
        assert!(s.drop_network_if_empty("b"));
        assert_eq!(s.ensure_network("e", "ns", pool(), 24, &[]).unwrap(), b);
    }

    #[test]
    fn subnets_the_host_already_routes_are_skipped() {
        let mut s = IpamState::default();
        let routed: Vec<Subnet> = vec![
            "10.200.0.0/24".parse().unwrap(),
            "10.200.1.0/25".parse().unwrap(),
        ];
        let got = s.ensure_network("a", "ns", pool(), 24, &routed).unwrap();
        assert_eq!(got.to_string(), "10.200.2.0/24");
    }

    #[test]
    fn addresses_are_unique_stable_and_released() {
        let mut s = IpamState::default();
        let p: Subnet = "10.200.0.0/16".parse().unwrap();
        s.ensure_network("a", "ns", p, 29, &[]).unwrap();
        let ips: Vec<_> = (0..5)
            .map(|i| s.lease("a", &format!("c{i}"), "svc").unwrap())
            .collect();
        assert_eq!(ips[0], Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(s.lease("a", "c0", "svc").unwrap(), ips[0]);
        assert!(
            s.lease("a", "c5", "svc").is_err(),
            "a /29 has 5 container addresses"
        );
        assert!(!s.release("a", "c2"));
        assert_eq!(s.lease("a", "c9", "svc").unwrap(), ips[2]);
        assert!(s.hosts_file("a").contains("10.200.0.2\tsvc"));
    }

    #[test]
    fn a_freed_address_is_handed_out_last() {
        let mut s = IpamState::default();
        let p: Subnet = "10.200.0.0/16".parse().unwrap();
        s.ensure_network("a", "ns", p, 29, &[]).unwrap();
        let first = s.lease("a", "c0", "svc").unwrap();
        let second = s.lease("a", "c1", "svc").unwrap();
        s.release("a", "c0");
        let third = s.lease("a", "c2", "svc").unwrap();
        assert!(third != first && third != second, "{first} reused at once");
        s.release("a", "c1");
        let later: Vec<_> = (3..7)
            .map(|i| s.lease("a", &format!("c{i}"), "svc").unwrap())
            .collect();
        // Only once the search wrapped round do the freed addresses come back.
        assert_eq!(later[2..], [first, second]);
    }

    #[test]
    fn file_round_trips_under_lock() {
        let dir = tempfile::tempdir().unwrap();
        let f = IpamFile::new(dir.path()).unwrap();
        let ip = f
            .update(|s| {
                s.ensure_network("a", "ns", pool(), 24, &[])?;
                s.lease("a", "c", "web")
            })
            .unwrap();
        let again = f.update(|s| s.lease("a", "c", "web")).unwrap();
        assert_eq!(ip, again);
    }
}
