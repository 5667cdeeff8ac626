//! The programs load on this kernel; a verifier rejection reaches the caller with its log.

use ebpf::{Error, IsolationConfig, check_object, programs};

use crate::netns::{TestNet, require_root_and_bpffs};

#[test]
fn programs_load_and_maps_are_pinned() -> anyhow::Result<()> {
    let net = TestNet::new()?;
    let iso = net.load()?;
    for map in [
        "sp_endpoints",
        "sp_ifaces",
        "sp_pairs",
        "sp_deny",
        "sp_flows",
        "sp_counters",
    ] {
        assert!(
            iso.pin_dir().join(map).exists(),
            "{map} not pinned under {}",
            net.pin_dir.display()
        );
    }
    // The default deny list is in the trie.
    assert_eq!(
        iso.deny_list()?,
        ebpf::DenyList::new(&net.config().deny_cidrs, &[])
    );
    Ok(())
}

#[test]
fn verifier_rejection_reports_the_verifier_log() {
    require_root_and_bpffs();
    let err = check_object(programs::BAD_FOR_TESTS, "unchecked_read").unwrap_err();
    let Error::Verifier { program, log, .. } = &err else {
        panic!("not a verifier error: {err}")
    };
    assert_eq!(program, "unchecked_read");
    assert!(
        log.contains("invalid access to packet"),
        "verifier log: {log}"
    );
    assert!(err.to_string().contains("verifier log:"), "{err}");
}

#[test]
fn pin_dir_off_bpffs_is_refused_with_its_name() {
    require_root_and_bpffs();
    let config = IsolationConfig {
        pin_dir: "/tmp/not-bpffs".into(),
        ..Default::default()
    };
    let err = ebpf::Isolation::load(&config).unwrap_err().to_string();
    assert!(
        err.contains("pin_dir") && err.contains("/tmp/not-bpffs"),
        "{err}"
    );
}
