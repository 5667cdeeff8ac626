//! Tests of the isolation programs against the real kernel: network namespaces this test
//! binary creates ("containers"), the classifiers attached to their host-side veths, real
//! TCP/UDP/ICMP traffic between them. Needs root and bpffs at /sys/fs/bpf.

mod counters;
mod host_access;
mod live_policy;
mod loading;
mod metadata_spoof;
mod netns;
mod probes;
mod truth_table;
