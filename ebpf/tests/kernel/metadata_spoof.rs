//! The cloud metadata address is unreachable from containers, and a container cannot send
//! with another source address.

use std::net::Ipv4Addr;
use std::time::Duration;

use ebpf::{Cidr, ContainerEndpoint, DenyList, DropReason, EndpointPolicy, Identity};

use crate::netns::{TestNet, Threads};
use crate::probes::{icmp_ok, record_udp, run_in, send_raw_udp, serve, tcp_ok, udp_ok};

const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

#[test]
fn metadata_address_is_unreachable_from_containers() -> anyhow::Result<()> {
    let mut net = TestNet::new()?;
    let meta = net.node(METADATA, 16, &["10.201.2.0/24"])?;
    let ctl = net.node(Ipv4Addr::new(10, 201, 2, 50), 24, &["169.254.0.0/16"])?;
    let c1 = net.node(Ipv4Addr::new(10, 201, 2, 10), 24, &["169.254.0.0/16"])?;
    let c2 = net.node(Ipv4Addr::new(10, 201, 2, 11), 24, &["169.254.0.0/16"])?;
    let mut iso = net.load()?;
    for (c, project) in [(&c1, "p1"), (&c2, "p2")] {
        let policy = EndpointPolicy::web(Identity::of(project, "production"), 8080);
        iso.attach(&ContainerEndpoint {
            veth: c.veth.clone(),
            ip: c.ip,
            policy,
        })?;
    }
    let mut threads = Threads::default();
    serve(&mut threads, &meta.ns, METADATA, &[80], &[80]);

    // The listener answers a namespace without the programs: the blocks below are the programs'.
    assert!(
        run_in(&ctl.ns, || tcp_ok(METADATA, 80)),
        "control namespace cannot reach the listener"
    );
    assert!(
        run_in(&ctl.ns, || udp_ok(METADATA, 80)),
        "control namespace: udp"
    );
    for c in [&c1, &c2] {
        let r = run_in(&c.ns, || {
            (
                tcp_ok(METADATA, 80),
                udp_ok(METADATA, 80),
                icmp_ok(METADATA),
            )
        });
        assert_eq!(
            r,
            (false, false, false),
            "{} reached the metadata address (tcp, udp, icmp)",
            c.ns
        );
        let drops = iso.counters(&c.veth)?.drops_out(DropReason::DenyCidr);
        assert!(drops >= 3, "{}: {drops} deny_cidr drops counted", c.veth);
    }

    // A hole for one address opens it; closing the hole denies again.
    let default = net.config();
    let hole = Cidr::host(METADATA);
    iso.set_deny_list(&DenyList::new(&default.deny_cidrs, &[hole]))?;
    assert!(
        run_in(&c1.ns, || tcp_ok(METADATA, 80)),
        "allow hole did not open the address"
    );
    iso.set_deny_list(&DenyList::new(&default.deny_cidrs, &[]))?;
    assert!(
        !run_in(&c1.ns, || tcp_ok(METADATA, 80)),
        "closed hole still lets traffic through"
    );
    Ok(())
}

#[test]
fn spoofed_source_addresses_are_dropped() -> anyhow::Result<()> {
    let mut net = TestNet::new()?;
    let c1 = net.node(Ipv4Addr::new(10, 201, 3, 10), 24, &[])?;
    let c2 = net.node(Ipv4Addr::new(10, 201, 3, 11), 24, &[])?;
    let c3 = net.node(Ipv4Addr::new(10, 201, 3, 12), 24, &[])?;
    let mut iso = net.load()?;
    let id = Identity::of("p1", "production");
    for c in [&c1, &c2, &c3] {
        let policy = EndpointPolicy::member(id);
        iso.attach(&ContainerEndpoint {
            veth: c.veth.clone(),
            ip: c.ip,
            policy,
        })?;
    }
    let mut threads = Threads::default();
    let got = record_udp(&mut threads, &c2.ns, c2.ip, 7000);

    let (own, peer, dst) = (c1.ip, c3.ip, c2.ip);
    run_in(&c1.ns, move || -> std::io::Result<()> {
        send_raw_udp(own, dst, 7000, b"honest")?;
        send_raw_udp(peer, dst, 7000, b"spoof-peer")?;
        send_raw_udp(Ipv4Addr::new(10, 201, 3, 99), dst, 7000, b"spoof-unknown")?;
        send_raw_udp(Ipv4Addr::new(192, 0, 2, 1), dst, 7000, b"spoof-world")?;
        // Sent last on the same path: once it is in, a spoofed packet let through would be too.
        send_raw_udp(own, dst, 7000, b"end")
    })?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !got.lock().unwrap().iter().any(|p| p == b"end") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let got: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert_eq!(
        got,
        vec!["honest".to_owned(), "end".to_owned()],
        "the raw sender's honest packets arrive, no other"
    );
    let spoof = iso.counters(&c1.veth)?.drops_out(DropReason::Spoof);
    assert_eq!(spoof, 3, "spoof drops counted on {}", c1.veth);
    Ok(())
}
