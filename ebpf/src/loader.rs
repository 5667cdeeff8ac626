//! The loader: loads the programs once per process, reuses the pinned maps, attaches the
//! classifiers per container and writes policy into the maps.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, LpmTrie, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key};
use aya::programs::links::FdLink;
use aya::programs::{ProgramError, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};

use crate::cidr::{CidrAction, DenyList, TrieOp, plan_update};
use crate::config::IsolationConfig;
use crate::counters::Counters;
use crate::error::Error;
use crate::host::{attached_here, check_veth, ensure_bpffs_dir, ifindex, remove_pin};
use crate::maps::{self, CountersValue, EndpointValue, IfaceValue, PairKey, ip_key};
use crate::policy::{EndpointPolicy, PairRule};
use crate::programs::{FROM_CONTAINER, ISOLATION, TO_CONTAINER};

/// A container as the loader needs it: its host-side veth, its address and its policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEndpoint {
    /// Host-side veth name (in the agent's network namespace).
    pub veth: String,
    pub ip: Ipv4Addr,
    pub policy: EndpointPolicy,
}

/// The loaded programs and their maps. One per node agent process; dropping it leaves every
/// attachment and map in place (they are pinned), so a restarted agent picks them up again.
pub struct Isolation {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    endpoints: HashMap<MapData, u32, EndpointValue>,
    ifaces: HashMap<MapData, u32, IfaceValue>,
    pairs: HashMap<MapData, PairKey, u8>,
    deny: LpmTrie<MapData, u32, u8>,
    counters: PerCpuArray<MapData, CountersValue>,
}

impl std::fmt::Debug for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Isolation")
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

impl Isolation {
    /// Loads the programs and opens (or creates and pins) the maps under `config.pin_dir`,
    /// then brings the deny list to `config`'s.
    pub fn load(config: &IsolationConfig) -> Result<Self, Error> {
        config.validate()?;
        ensure_bpffs_dir(&config.pin_dir)?;
        ensure_bpffs_dir(&config.pin_dir.join("links"))?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&config.pin_dir)
            .load(ISOLATION)
            .map_err(|source| Error::Load {
                pin_dir: config.pin_dir.clone(),
                source: Box::new(source),
            })?;
        for name in [FROM_CONTAINER, TO_CONTAINER] {
            load_classifier(&mut ebpf, name)?;
        }
        let mut me = Isolation {
            endpoints: take_map(&mut ebpf, maps::ENDPOINTS)?,
            ifaces: take_map(&mut ebpf, maps::IFACES)?,
            pairs: take_map(&mut ebpf, maps::PAIRS)?,
            deny: take_map(&mut ebpf, maps::DENY)?,
            counters: take_map(&mut ebpf, maps::COUNTERS)?,
            ebpf,
            pin_dir: config.pin_dir.clone(),
        };
        me.set_deny_list(&DenyList::new(&config.deny_cidrs, &config.allow_cidrs))?;
        Ok(me)
    }

    /// The directory holding the pinned maps and links.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Attaches the classifiers to a container's host-side veth, after writing its endpoint
    /// entries (so its first packet already meets its policy). Call it after the veth exists
    /// and before the container starts. Idempotent: when both classifiers of this loader's
    /// kind are already attached (pinned by an earlier process), only the entries are
    /// refreshed; counters are kept.
    pub fn attach(&mut self, c: &ContainerEndpoint) -> Result<(), Error> {
        check_veth(&c.veth)?;
        let ifindex = ifindex(&c.veth)?;
        let ip = ip_key(c.ip);
        self.endpoints
            .insert(ip, c.policy.to_value(), 0)
            .map_err(|source| Error::Map {
                map: maps::ENDPOINTS,
                source,
            })?;
        // The same container attached again (agent restart) keeps its counter slot.
        let slot = match self.ifaces.get(&ifindex, 0) {
            Ok(v) if v.ip == ip => v.slot,
            _ => self.new_counter_slot(&c.veth)?,
        };
        let iface = IfaceValue {
            ip,
            slot,
            endpoint: c.policy.to_value(),
        };
        self.ifaces
            .insert(ifindex, iface, 0)
            .map_err(|source| Error::Map {
                map: maps::IFACES,
                source,
            })?;
        for (program, dir) in directions() {
            if attached_here(&c.veth, program, dir)? {
                tracing::debug!(veth = %c.veth, program, "already attached");
            } else {
                self.attach_one(&c.veth, program, dir)?;
            }
        }
        tracing::info!(veth = %c.veth, ip = %c.ip, identity = %c.policy.identity, "isolation attached");
        Ok(())
    }

    /// A counter slot no interface uses, zeroed.
    fn new_counter_slot(&mut self, veth: &str) -> Result<u32, Error> {
        let used: std::collections::BTreeSet<u32> = self
            .ifaces
            .iter()
            .filter_map(Result::ok)
            .map(|(_, v)| v.slot)
            .collect();
        let slot = (0..maps::MAX_IFACES)
            .find(|s| !used.contains(s))
            .ok_or_else(|| Error::Full {
                map: maps::COUNTERS,
                veth: veth.to_owned(),
            })?;
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| Error::Interface {
            veth: veth.to_owned(),
            source,
        })?;
        let zero = PerCpuValues::try_from(vec![CountersValue::default(); cpus]).map_err(|e| {
            Error::Map {
                map: maps::COUNTERS,
                source: aya::maps::MapError::IoError(e),
            }
        })?;
        self.counters
            .set(slot, zero, 0)
            .map_err(|source| Error::Map {
                map: maps::COUNTERS,
                source,
            })?;
        Ok(slot)
    }

    fn attach_one(
        &mut self,
        veth: &str,
        program: &'static str,
        dir: TcAttachType,
    ) -> Result<(), Error> {
        let path = self.link_path(veth, program);
        let prog: &mut SchedClassifier = classifier(&mut self.ebpf, program)?;
        let id = prog.attach(veth, dir).map_err(|source| Error::Attach {
            program,
            veth: veth.to_owned(),
            source: Box::new(source),
        })?;
        let link = prog.take_link(id).map_err(|source| Error::Attach {
            program,
            veth: veth.to_owned(),
            source: Box::new(source),
        })?;
        let link = FdLink::try_from(link).map_err(|source| Error::Link {
            program,
            veth: veth.to_owned(),
            source,
        })?;
        // A stale pin (an earlier veth of the same name) is replaced only after the new link
        // is in place.
        remove_pin(&path)?;
        ensure_bpffs_dir(path.parent().expect("link paths have a parent"))?;
        link.pin(&path).map_err(|source| Error::PinLink {
            path: path.clone(),
            source,
        })?;
        Ok(())
    }

    /// Detaches the classifiers from `veth` and removes the container's entries (endpoint,
    /// interface, counters). The veth may already be gone with its namespace.
    pub fn detach(&mut self, veth: &str, ip: Ipv4Addr) -> Result<(), Error> {
        check_veth(veth)?;
        for (program, _) in directions() {
            remove_pin(&self.link_path(veth, program))?;
        }
        let dir = self.pin_dir.join("links").join(veth);
        if dir.exists() {
            std::fs::remove_dir(&dir).map_err(|source| Error::Unpin { path: dir, source })?;
        }
        let key = ip_key(ip);
        let ifindexes: Vec<u32> = match ifindex(veth) {
            Ok(i) => vec![i],
            Err(_) => self
                .ifaces
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, v)| v.ip == key)
                .map(|(k, _)| k)
                .collect(),
        };
        for i in ifindexes {
            ignore_missing(self.ifaces.remove(&i), maps::IFACES)?;
            // Its counter slot is free again; the next attach that takes it zeroes it.
        }
        ignore_missing(self.endpoints.remove(&key), maps::ENDPOINTS)?;
        tracing::info!(veth, %ip, "isolation detached");
        Ok(())
    }

    /// Veths with pinned attachments, for the agent's reconcile after a restart.
    pub fn attached(&self) -> Result<Vec<String>, Error> {
        let dir = self.pin_dir.join("links");
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::PinDir {
            path: dir.clone(),
            source,
        })?;
        let mut veths: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join(FROM_CONTAINER).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        veths.sort();
        Ok(veths)
    }

    /// Sets (or atomically replaces) the policy of an address: a local container's new
    /// identity, the proxy, the node agent, or a container on another node.
    ///
    /// For a local container, the copy its own veth's programs use is updated right after; in
    /// between, a packet between it and another local container is still judged by the other
    /// side's fresh entry too, since both veths run the programs.
    pub fn set_endpoint(&mut self, ip: Ipv4Addr, policy: &EndpointPolicy) -> Result<(), Error> {
        let key = ip_key(ip);
        let value = policy.to_value();
        self.endpoints
            .insert(key, value, 0)
            .map_err(|source| Error::Map {
                map: maps::ENDPOINTS,
                source,
            })?;
        let local: Vec<(u32, IfaceValue)> = self
            .ifaces
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.ip == key && v.endpoint != value)
            .collect();
        for (ifindex, iface) in local {
            self.ifaces
                .insert(
                    ifindex,
                    IfaceValue {
                        endpoint: value,
                        ..iface
                    },
                    0,
                )
                .map_err(|source| Error::Map {
                    map: maps::IFACES,
                    source,
                })?;
        }
        Ok(())
    }

    /// Forgets an address that is not a local container (see [`Isolation::detach`] for those).
    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), Error> {
        ignore_missing(self.endpoints.remove(&ip_key(ip)), maps::ENDPOINTS)
    }

    /// Adds an allow rule between two identities.
    pub fn allow(&mut self, rule: &PairRule) -> Result<(), Error> {
        self.pairs
            .insert(rule.key(), 1, 0)
            .map_err(|source| Error::Map {
                map: maps::PAIRS,
                source,
            })
    }

    /// Removes an allow rule; the next packet of the pair is judged without it.
    pub fn revoke(&mut self, rule: &PairRule) -> Result<(), Error> {
        ignore_missing(self.pairs.remove(&rule.key()), maps::PAIRS)
    }

    /// Replaces the deny list, strictest writes first (see [`plan_update`]).
    pub fn set_deny_list(&mut self, desired: &DenyList) -> Result<(), Error> {
        let current = self.deny_list()?;
        for op in plan_update(&current, desired) {
            match op {
                TrieOp::Put(c, a) => {
                    let v = if a == CidrAction::Deny {
                        maps::CIDR_DENY
                    } else {
                        maps::CIDR_ALLOW
                    };
                    self.deny
                        .insert(&trie_key(c), v, 0)
                        .map_err(|source| Error::Map {
                            map: maps::DENY,
                            source,
                        })?;
                }
                TrieOp::Remove(c) => ignore_missing(self.deny.remove(&trie_key(c)), maps::DENY)?,
            }
        }
        Ok(())
    }

    /// The deny list as stored in the map.
    pub fn deny_list(&self) -> Result<DenyList, Error> {
        let mut list = DenyList::default();
        for kv in self.deny.iter() {
            let (k, v) = kv.map_err(|source| Error::Map {
                map: maps::DENY,
                source,
            })?;
            let cidr = crate::cidr::Cidr::new(maps::ip_from_key(k.data()), k.prefix_len() as u8)?;
            let action = if v == maps::CIDR_DENY {
                CidrAction::Deny
            } else {
                CidrAction::Allow
            };
            list.0.insert(cidr, action);
        }
        Ok(list)
    }

    /// The counters of the container on `veth`, summed over CPUs.
    pub fn counters(&self, veth: &str) -> Result<Counters, Error> {
        check_veth(veth)?;
        let i = ifindex(veth)?;
        let iface = self.ifaces.get(&i, 0).map_err(|source| match source {
            aya::maps::MapError::KeyNotFound => Error::NotAttached {
                veth: veth.to_owned(),
            },
            source => Error::Map {
                map: maps::IFACES,
                source,
            },
        })?;
        let values = self
            .counters
            .get(&iface.slot, 0)
            .map_err(|source| Error::Map {
                map: maps::COUNTERS,
                source,
            })?;
        Ok(Counters::sum(values.iter()))
    }

    fn link_path(&self, veth: &str, program: &str) -> PathBuf {
        self.pin_dir.join("links").join(veth).join(program)
    }
}

fn directions() -> [(&'static str, TcAttachType); 2] {
    // tc ingress on the host veth sees what the container sends; tc egress what it receives.
    [
        (FROM_CONTAINER, TcAttachType::Ingress),
        (TO_CONTAINER, TcAttachType::Egress),
    ]
}

fn trie_key(c: crate::cidr::Cidr) -> Key<u32> {
    Key::new(u32::from(c.prefix()), ip_key(c.addr()))
}

fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier, Error> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::MissingProgram {
            program: name.to_owned(),
        })?;
    TryInto::<&mut SchedClassifier>::try_into(prog).map_err(|source| Error::Program {
        program: name.to_owned(),
        source: Box::new(source),
    })
}

/// Loads the classifier `program` of an object with no pinned maps into the kernel and unloads
/// it again: proves an object passes this kernel's verifier, or returns [`Error::Verifier`]
/// with the verifier's log.
pub fn check_object(object: &[u8], program: &str) -> Result<(), Error> {
    let mut ebpf = EbpfLoader::new()
        .load(object)
        .map_err(|source| Error::Load {
            pin_dir: PathBuf::new(),
            source: Box::new(source),
        })?;
    load_classifier(&mut ebpf, program)
}

/// Loads one classifier of `ebpf` into the kernel; a verifier rejection carries its log.
fn load_classifier(ebpf: &mut Ebpf, name: &str) -> Result<(), Error> {
    classifier(ebpf, name)?
        .load()
        .map_err(|source| match source {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => Error::Verifier {
                program: name.to_owned(),
                io_error,
                log: format!("{verifier_log:?}"),
            },
            source => Error::Program {
                program: name.to_owned(),
                source: Box::new(source),
            },
        })
}

fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, Error>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(Error::MissingMap { map: name })?;
    M::try_from(map).map_err(|source| Error::Map { map: name, source })
}

fn ignore_missing(r: Result<(), aya::maps::MapError>, map: &'static str) -> Result<(), Error> {
    match r {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(source) => Err(Error::Map { map, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_can_live_in_the_agents_shared_mutex() {
        // The runtime's `IsolationHook` is `Send + Sync`: it holds a `Mutex<Isolation>`.
        fn send<T: Send>() {}
        send::<Isolation>();
    }
}
