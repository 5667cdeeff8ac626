//! Errors of the isolation loader; each names the program, map, interface or path involved.

use std::path::PathBuf;

/// An error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid isolation config: {key}: {reason}")]
    Config { key: &'static str, reason: String },

    #[error("invalid cidr {cidr:?}: {reason}")]
    InvalidCidr { cidr: String, reason: &'static str },

    #[error("invalid interface name {veth:?}: {reason}")]
    InvalidInterface { veth: String, reason: &'static str },

    #[error("{path} is not on a bpffs (mount it: mount -t bpf bpf /sys/fs/bpf)")]
    NoBpffs { path: PathBuf },

    #[error("cannot read {path}: {source}")]
    HostFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot prepare pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot load the eBPF object (maps pinned under {pin_dir}): {source}")]
    Load {
        pin_dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },

    #[error("the verifier rejected program {program}: {io_error}\nverifier log:\n{log}")]
    Verifier {
        program: String,
        io_error: std::io::Error,
        log: String,
    },

    #[error("program {program} is missing from the eBPF object")]
    MissingProgram { program: String },

    #[error("program {program}: {source}")]
    Program {
        program: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },

    #[error("map {map} is missing from the eBPF object")]
    MissingMap { map: &'static str },

    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("interface {veth}: {source}")]
    Interface {
        veth: String,
        #[source]
        source: std::io::Error,
    },

    #[error("attach {program} to {veth}: {source}")]
    Attach {
        program: &'static str,
        veth: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },

    #[error("link of {program} on {veth}: {source}")]
    Link {
        program: &'static str,
        veth: String,
        #[source]
        source: aya::programs::links::LinkError,
    },

    #[error("pin link {path}: {source}")]
    PinLink {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },

    #[error("remove pinned link {path}: {source}")]
    Unpin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("map {map} is full: cannot attach {veth}")]
    Full { map: &'static str, veth: String },

    #[error("no container endpoint is attached on {veth}")]
    NotAttached { veth: String },
}
