//! The host's own addresses are denied to containers; the node agent's address, registered with
//! the NODE role, reaches a container's service port (health checks) and nothing else.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::Ordering;
use std::time::Duration;

use ebpf::{Cidr, ContainerEndpoint, DropReason, EndpointPolicy, Identity, Isolation, Roles};

use crate::netns::{TestNet, Threads, sh};
use crate::probes::{run_in, serve, tcp_ok};

#[test]
fn host_addresses_are_denied_and_the_node_reaches_only_service_ports() -> anyhow::Result<()> {
    let mut net = TestNet::new()?;
    let host = Ipv4Addr::new(10, 201, 7, 1);
    // An address of the host itself, on the test's bridge (gone with the bridge).
    sh(&["ip", "addr", "add", "10.201.7.1/24", "dev", &net.bridge])?;
    let ctl = net.node(Ipv4Addr::new(10, 201, 7, 50), 24, &[])?;
    let c = net.node(Ipv4Addr::new(10, 201, 7, 10), 24, &[])?;

    let hosts = ebpf::host_addresses()?;
    assert!(
        hosts.contains(&Cidr::host(host)),
        "{host} not among the host addresses {hosts:?}"
    );
    let mut config = net.config();
    config.deny_cidrs.extend(hosts);
    let mut iso = Isolation::load(&config)?;
    let policy = EndpointPolicy::internal(Identity::of("p1", "production"), 8080);
    iso.attach(&ContainerEndpoint {
        veth: c.veth.clone(),
        ip: c.ip,
        policy,
    })?;

    let mut threads = Threads::default();
    serve(&mut threads, &c.ns, c.ip, &[8080, 9090], &[]);
    let listener = TcpListener::bind((host, 0))?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    threads.spawn_host(move |stop| {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(b"ok");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });

    assert!(
        run_in(&ctl.ns, move || tcp_ok(host, port)),
        "the host listener is not reachable"
    );
    assert!(
        !run_in(&c.ns, move || tcp_ok(host, port)),
        "container reached a host address"
    );
    assert!(iso.counters(&c.veth)?.drops_out(DropReason::DenyCidr) >= 1);
    // Unregistered, the host is "the world": it gets replies only.
    assert!(
        !tcp_ok(c.ip, 8080),
        "the host reached a container before it had the NODE role"
    );

    let node = EndpointPolicy {
        identity: Identity::of("stackpad", "node"),
        roles: Roles::NODE,
        service_port: None,
    };
    iso.set_endpoint(host, &node)?;
    assert!(tcp_ok(c.ip, 8080), "the node cannot reach the service port");
    assert!(
        !tcp_ok(c.ip, 9090),
        "the node reached a port that is not the service's"
    );
    assert!(
        !run_in(&c.ns, move || tcp_ok(host, port)),
        "container reached the node address"
    );
    Ok(())
}
