//! Host-side effects of the loader besides the maps: interface names and indexes, TCX
//! queries, pinned links, the bpffs directory.

use std::path::Path;

use aya::programs::links::PinnedLink;
use aya::programs::{SchedClassifier, TcAttachType};

use crate::error::Error;
use crate::programs::{FROM_CONTAINER, TO_CONTAINER};

/// Whether a classifier named `program` is attached to `veth` in direction `dir`.
pub(crate) fn attached_here(veth: &str, program: &str, dir: TcAttachType) -> Result<bool, Error> {
    let (_, progs) = SchedClassifier::query_tcx(veth, dir).map_err(|source| Error::Attach {
        program: if dir == TcAttachType::Ingress {
            FROM_CONTAINER
        } else {
            TO_CONTAINER
        },
        veth: veth.to_owned(),
        source: Box::new(source),
    })?;
    Ok(progs.iter().any(|p| p.name_as_str() == Some(program)))
}

pub(crate) fn remove_pin(path: &Path) -> Result<(), Error> {
    match PinnedLink::from_pin(path) {
        Ok(link) => {
            link.unpin().map_err(|source| Error::Unpin {
                path: path.to_owned(),
                source,
            })?;
            Ok(())
        }
        Err(_) if !path.exists() => Ok(()),
        Err(_) => std::fs::remove_file(path).map_err(|source| Error::Unpin {
            path: path.to_owned(),
            source,
        }),
    }
}

pub(crate) fn check_veth(veth: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::InvalidInterface {
            veth: veth.to_owned(),
            reason,
        })
    };
    if veth.is_empty() || veth.len() > 15 {
        return bad("must be 1 to 15 bytes long");
    }
    // bpffs refuses names with '.', and the name becomes a directory of pinned links.
    if !veth
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return bad("only letters, digits, '-' and '_' are allowed");
    }
    Ok(())
}

/// The index of `veth` in the calling thread's network namespace.
pub(crate) fn ifindex(veth: &str) -> Result<u32, Error> {
    nix::net::if_::if_nametoindex(veth).map_err(|errno| Error::Interface {
        veth: veth.to_owned(),
        source: std::io::Error::from(errno),
    })
}

/// Creates `dir` (and parents) and checks it lies on a bpffs mount.
pub(crate) fn ensure_bpffs_dir(dir: &Path) -> Result<(), Error> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(|source| Error::PinDir {
        path: dir.to_owned(),
        source,
    })?;
    let on_bpffs = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, mnt, fstype) = (f.next(), f.next(), f.next());
        fstype == Some("bpf") && mnt.is_some_and(|m| dir.starts_with(m))
    });
    if !on_bpffs {
        return Err(Error::NoBpffs {
            path: dir.to_owned(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::PinDir {
        path: dir.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_checked() {
        check_veth("spv1234abcd").unwrap();
        for bad in [
            "",
            "a-name-longer-than-15",
            "../etc",
            "a b",
            "..",
            "eth0.100",
        ] {
            assert!(check_veth(bad).is_err(), "{bad}");
        }
    }
}
