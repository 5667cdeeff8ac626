//! User namespaces: every container's uid/gid 0..65535 map to an unprivileged host range of
//! its project. The ranges are handed out from a table shared by every agent of the machine
//! (host ids are machine-wide, like routes), and each image is given to a range as remapped
//! snapshots: each layer unpacked again with its files chowned by the range's base, committed
//! once per layer and range and shared by every container (and image) of that range.

pub mod shift;
pub mod snapshot;
pub mod table;

pub use snapshot::Remapper;
pub use table::{UsernsFile, UsernsState};

use serde::{Deserialize, Serialize};

/// How many ids one range holds: container ids 0..65535.
pub const RANGE_SIZE: u32 = 65_536;

/// Where a container's ids live on the host: container id `n` is host id `base + n`, for
/// `n < RANGE_SIZE` (uids and gids alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdMap {
    pub base: u32,
}

impl IdMap {
    /// The host id of container id `id`; ids outside the range become the range's
    /// `nobody` (65534), as the kernel shows unmapped ids.
    pub fn host_id(self, id: u32) -> u32 {
        let inside = if id < RANGE_SIZE { id } else { 65_534 };
        self.base + inside
    }

    /// Whether a host id already lies in this range.
    pub fn contains(self, host_id: u32) -> bool {
        host_id >= self.base && host_id - self.base < RANGE_SIZE
    }

    /// The OCI spec's `uidMappings` / `gidMappings` entry.
    pub fn oci_mapping(self) -> serde_json::Value {
        serde_json::json!([{ "containerID": 0, "hostID": self.base, "size": RANGE_SIZE }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_shift_into_the_range_and_stay_there() {
        let m = IdMap { base: 131_072 };
        assert_eq!(m.host_id(0), 131_072);
        assert_eq!(m.host_id(1000), 132_072);
        assert_eq!(m.host_id(70_000), 131_072 + 65_534);
        assert!(m.contains(131_072) && m.contains(131_072 + 65_535));
        assert!(!m.contains(131_071) && !m.contains(131_072 + 65_536));
        assert_eq!(m.oci_mapping()[0]["hostID"], 131_072);
    }
}
