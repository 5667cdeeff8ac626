//! The id-range table: which host range each project of each agent (containerd namespace)
//! holds. Shared by every agent of the machine, read-modify-written under an exclusive
//! `flock`, saved by write + fsync + rename ([`crate::state_file`]), so a range is never
//! handed out twice and an agent finds its projects' ranges again after a restart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{IdMap, RANGE_SIZE};
use crate::error::{Result, RuntimeError};

/// The lowest base ever handed out: well above the ids distributions give to users.
pub const MIN_BASE: u32 = 100_000;

/// One range and who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub base: u32,
    /// containerd namespace of the agent that holds it.
    pub namespace: String,
    pub project: String,
}

/// The whole table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsernsState {
    pub ranges: Vec<Allocation>,
}

/// The first base a new range may start at: `MIN_BASE` and above every id the host already
/// uses (`host_max`: users, groups, subordinate ranges), rounded up to a whole range.
pub fn floor(host_max: u32) -> u64 {
    let above = u64::from(host_max.max(MIN_BASE - 1)) + 1;
    above.div_ceil(u64::from(RANGE_SIZE)) * u64::from(RANGE_SIZE)
}

impl UsernsState {
    /// The project's range, allocating the lowest free one at or above `floor` if it has none.
    pub fn ensure(&mut self, namespace: &str, project: &str, floor: u64) -> Result<IdMap> {
        if let Some(a) = self
            .ranges
            .iter()
            .find(|a| a.namespace == namespace && a.project == project)
        {
            return Ok(IdMap { base: a.base });
        }
        let used: BTreeSet<u32> = self.ranges.iter().map(|a| a.base).collect();
        let size = u64::from(RANGE_SIZE);
        // The last range must end below u32::MAX (-1 is "no id" to the kernel).
        let last = u64::from(u32::MAX) - size;
        let base = (floor.div_ceil(size)..=last / size)
            .map(|k| k * size)
            .find(|b| !used.contains(&(*b as u32)))
            .ok_or_else(|| RuntimeError::PoolExhausted {
                pool: "host id ranges".into(),
                subject: project.to_owned(),
            })? as u32;
        self.ranges.push(Allocation {
            base,
            namespace: namespace.to_owned(),
            project: project.to_owned(),
        });
        Ok(IdMap { base })
    }

    /// After a restart: `in_use` are the (project, range) pairs the namespace's containers
    /// carry. Those are kept (and written back if the table lost them); every other range of
    /// the namespace is freed. Returns the freed ones.
    pub fn retain_in_use(
        &mut self,
        namespace: &str,
        in_use: &[(String, IdMap)],
    ) -> Vec<Allocation> {
        let (freed, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.ranges).into_iter().partition(|a| {
                a.namespace == namespace
                    && !in_use
                        .iter()
                        .any(|(p, m)| *p == a.project && m.base == a.base)
            });
        self.ranges = kept;
        for (project, map) in in_use {
            let held = self.ranges.iter().any(|a| a.base == map.base);
            if !held {
                self.ranges.push(Allocation {
                    base: map.base,
                    namespace: namespace.to_owned(),
                    project: project.clone(),
                });
            }
        }
        freed
    }

    /// Frees every range of a namespace (its agent is gone for good).
    pub fn release_namespace(&mut self, namespace: &str) {
        self.ranges.retain(|a| a.namespace != namespace);
    }
}

/// The highest id in the host's user and group databases and subordinate id files; `None`
/// entries (missing files) count as nothing.
pub fn host_max_id(passwd: &str, group: &str, subuid: &str, subgid: &str) -> u32 {
    let db = |text: &str| -> u32 {
        text.lines()
            .filter_map(|l| l.split(':').nth(2)?.trim().parse::<u32>().ok())
            // The overflow ids near u32::MAX (e.g. 4294967294) are not real users.
            .filter(|id| *id < 0xFFFF_0000)
            .max()
            .unwrap_or(0)
    };
    let sub = |text: &str| -> u32 {
        text.lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                let _name = f.next()?;
                let start: u64 = f.next()?.trim().parse().ok()?;
                let count: u64 = f.next()?.trim().parse().ok()?;
                Some((start + count.saturating_sub(1)).min(u64::from(u32::MAX)) as u32)
            })
            .max()
            .unwrap_or(0)
    };
    db(passwd).max(db(group)).max(sub(subuid)).max(sub(subgid))
}

/// The table on disk.
#[derive(Debug, Clone)]
pub struct UsernsFile {
    dir: PathBuf,
    etc: PathBuf,
}

impl UsernsFile {
    pub fn new(dir: &Path) -> Result<Self> {
        Self::with_etc(dir, Path::new("/etc"))
    }

    /// A table whose host ids come from `etc` (`passwd`, `group`, `subuid`, `subgid`).
    pub fn with_etc(dir: &Path, etc: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io(dir, e))?;
        Ok(Self {
            dir: dir.to_owned(),
            etc: etc.to_owned(),
        })
    }

    /// The floor for new ranges, from the host's files as they are now.
    pub fn floor(&self) -> u64 {
        let read = |name: &str| std::fs::read_to_string(self.etc.join(name)).unwrap_or_default();
        floor(host_max_id(
            &read("passwd"),
            &read("group"),
            &read("subuid"),
            &read("subgid"),
        ))
    }

    /// The project's range (allocated on first use).
    pub fn ensure(&self, namespace: &str, project: &str) -> Result<IdMap> {
        let floor = self.floor();
        self.update(|s| s.ensure(namespace, project, floor))
    }

    /// Runs `f` on the table with the machine-wide lock held and saves what it leaves
    /// ([`crate::state_file::update`]).
    pub fn update<T>(&self, f: impl FnOnce(&mut UsernsState) -> Result<T>) -> Result<T> {
        crate::state_file::update(&self.dir.join("userns.json"), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_is_above_host_ids_and_range_aligned() {
        assert_eq!(floor(0), 131_072);
        assert_eq!(floor(65_534), 131_072);
        assert_eq!(floor(131_071), 131_072);
        assert_eq!(floor(131_072), 196_608);
        let max = host_max_id(
            "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nbig:x:4294967294:1::/:/bin/false\n",
            "root:x:0:\nwheel:x:150000:\n",
            "alice:100000:65536\n",
            "alice:300000:65536\nbad line\n",
        );
        assert_eq!(max, 365_535);
        assert_eq!(floor(max), 393_216);
    }

    #[test]
    fn projects_get_disjoint_stable_ranges() {
        let mut s = UsernsState::default();
        let a = s.ensure("ns", "p1", 131_072).unwrap();
        let b = s.ensure("ns", "p2", 131_072).unwrap();
        let c = s.ensure("other-ns", "p1", 131_072).unwrap();
        assert_eq!(a.base, 131_072);
        assert_eq!(b.base, 196_608);
        assert_eq!(c.base, 262_144, "another agent's project of the same name");
        assert_eq!(s.ensure("ns", "p1", 131_072).unwrap(), a);
        // A higher floor (a new user on the host) does not move existing ranges.
        assert_eq!(s.ensure("ns", "p2", 1 << 30).unwrap(), b);
        let d = s.ensure("ns", "p3", 1 << 30).unwrap();
        assert_eq!(d.base, 1 << 30);
    }

    #[test]
    fn reconcile_keeps_ranges_in_use_and_frees_the_rest() {
        let mut s = UsernsState::default();
        let a = s.ensure("ns", "p1", 131_072).unwrap();
        let b = s.ensure("ns", "p2", 131_072).unwrap();
        let other = s.ensure("ns2", "p9", 131_072).unwrap();
        let freed = s.retain_in_use("ns", &[("p1".into(), a)]);
        assert_eq!(freed.len(), 1);
        assert_eq!(freed[0].base, b.base);
        assert_eq!(s.ensure("ns2", "p9", 131_072).unwrap(), other);
        // A range a container still carries but the table lost is written back.
        let lost = IdMap { base: 1 << 24 };
        s.retain_in_use("ns", &[("p1".into(), a), ("p4".into(), lost)]);
        assert_eq!(s.ensure("ns", "p4", 131_072).unwrap(), lost);
        // The freed range is handed out again.
        assert_eq!(s.ensure("ns", "p5", 131_072).unwrap(), b);
        s.release_namespace("ns");
        assert_eq!(s.ranges.len(), 1);
    }

    #[test]
    fn exhausted_space_is_an_error() {
        let mut s = UsernsState::default();
        let top = u64::from(u32::MAX) - u64::from(RANGE_SIZE);
        let top_base = top / u64::from(RANGE_SIZE) * u64::from(RANGE_SIZE);
        s.ensure("ns", "p1", top_base).unwrap();
        assert!(matches!(
            s.ensure("ns", "p2", top_base),
            Err(RuntimeError::PoolExhausted { .. })
        ));
    }

    #[test]
    fn file_survives_a_new_instance() {
        let dir = tempfile::tempdir().unwrap();
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(etc.path().join("subuid"), "u:200000:65536\n").unwrap();
        let f = UsernsFile::with_etc(dir.path(), etc.path()).unwrap();
        let a = f.ensure("ns", "p1").unwrap();
        assert_eq!(a.base, 327_680, "above the subordinate range");
        let again = UsernsFile::with_etc(dir.path(), etc.path()).unwrap();
        assert_eq!(again.ensure("ns", "p1").unwrap(), a);
        assert!(!dir.path().join("userns.json.tmp").exists());
    }
}
