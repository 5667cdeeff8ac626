//! Every ordered pair of 7 endpoints (3 projects x 2 containers, one project split across two
//! environments, plus the proxy) over TCP, UDP and ICMP, compared cell by cell with the
//! expected table.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ebpf::{ContainerEndpoint, EndpointPolicy, Identity, PairRule, Protocol, Roles};

use crate::netns::{Node, TestNet, Threads, in_ns};
use crate::probes::{icmp_ok, serve, tcp_ok, udp_ok};

struct Ep {
    name: &'static str,
    project: &'static str,
    env: &'static str,
    roles: Roles,
    port: Option<u16>,
}

const PROBES: [&str; 4] = ["tcp/8080", "tcp/9090", "udp/8080", "icmp"];

fn endpoints() -> Vec<Ep> {
    let ep = |name, project, env, roles, port| Ep {
        name,
        project,
        env,
        roles,
        port,
    };
    vec![
        ep("p1-web", "p1", "production", Roles::WEB, Some(8080)),
        ep("p1-db", "p1", "production", Roles::NONE, Some(9090)),
        ep("p2-web", "p2", "production", Roles::WEB, Some(8080)),
        ep("p2-db", "p2", "production", Roles::NONE, Some(9090)),
        ep("p3-web", "p3", "production", Roles::WEB, Some(8080)),
        ep("p3-stg", "p3", "staging", Roles::WEB, Some(8080)),
        ep("proxy", "platform", "ingress", Roles::PROXY, None),
    ]
}

/// The policy the issue asks for, written independently of the programs: same project and
/// environment; the proxy to `web` services on their port; the explicit rule p1 -> p2 on
/// tcp/9090; nothing else.
fn expected(src: &Ep, dst: &Ep, probe: &str) -> bool {
    if (src.project, src.env) == (dst.project, dst.env) {
        return true;
    }
    if src.roles.contains(Roles::PROXY) && dst.roles.contains(Roles::WEB) {
        return dst.port.map(|p| format!("tcp/{p}")).as_deref() == Some(probe);
    }
    (src.project, dst.project, probe) == ("p1", "p2", "tcp/9090")
}

#[test]
fn truth_table_matches_policy_for_tcp_udp_icmp() -> anyhow::Result<()> {
    let mut net = TestNet::new()?;
    let eps = endpoints();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..eps.len() {
        nodes.push(net.node(Ipv4Addr::new(10, 201, 1, 10 + i as u8), 24, &[])?);
    }
    let mut iso = net.load()?;
    for (ep, node) in eps.iter().zip(&nodes) {
        let policy = EndpointPolicy {
            identity: Identity::of(ep.project, ep.env),
            roles: ep.roles,
            service_port: ep.port,
        };
        iso.attach(&ContainerEndpoint {
            veth: node.veth.clone(),
            ip: node.ip,
            policy,
        })?;
    }
    iso.allow(&PairRule {
        from: Identity::of("p1", "production"),
        to: Identity::of("p2", "production"),
        port: Some((Protocol::Tcp, 9090)),
    })?;

    let mut threads = Threads::default();
    for node in &nodes {
        serve(&mut threads, &node.ns, node.ip, &[8080, 9090], &[8080]);
    }

    // All probes at once: a denied one costs its full timeout.
    let mut handles = Vec::new();
    for (si, src) in nodes.iter().enumerate() {
        for (di, dst) in nodes.iter().enumerate() {
            if si == di {
                continue;
            }
            for (pi, probe) in PROBES.iter().enumerate() {
                let ip = dst.ip;
                let probe = *probe;
                let h = in_ns(&src.ns, move || match probe {
                    "tcp/8080" => tcp_ok(ip, 8080),
                    "tcp/9090" => tcp_ok(ip, 9090),
                    "udp/8080" => udp_ok(ip, 8080),
                    _ => icmp_ok(ip),
                });
                handles.push(((si, di, pi), h));
            }
        }
    }
    let mut mismatches = 0;
    let mut actual = vec![vec![[None; 4]; eps.len()]; eps.len()];
    for ((si, di, pi), h) in handles {
        let got = h.join().expect("probe thread");
        if got != expected(&eps[si], &eps[di], PROBES[pi]) {
            mismatches += 1;
        }
        actual[si][di][pi] = Some(got);
    }
    let table = render(&eps, &actual);
    assert_eq!(
        mismatches, 0,
        "{mismatches} cells differ from the policy:\n{table}"
    );
    println!("{table}");
    let allowed = actual
        .iter()
        .flatten()
        .flatten()
        .filter(|c| **c == Some(true))
        .count();
    assert!(allowed > 0 && allowed < eps.len() * (eps.len() - 1) * PROBES.len());
    Ok(())
}

/// Rows are sources, columns destinations; a cell shows the probes in `PROBES` order as
/// `+` (connected) or `.` (blocked), with `!` after a cell that differs from the policy.
fn render(eps: &[Ep], actual: &[Vec<[Option<bool>; 4]>]) -> String {
    let mut s = format!("src \\ dst (cells: {})\n{:8}", PROBES.join(" "), "");
    for d in eps {
        let _ = write!(s, "{:>9}", d.name);
    }
    s.push('\n');
    for (si, src) in eps.iter().enumerate() {
        let _ = write!(s, "{:8}", src.name);
        for (di, dst) in eps.iter().enumerate() {
            if si == di {
                let _ = write!(s, "{:>9}", "-");
                continue;
            }
            let mut cell = String::new();
            let mut wrong = false;
            for (pi, probe) in PROBES.iter().enumerate() {
                let got = actual[si][di][pi].unwrap_or(false);
                wrong |= got != expected(src, dst, probe);
                cell.push(if got { '+' } else { '.' });
            }
            if wrong {
                cell.push('!');
            }
            let _ = write!(s, "{cell:>9}");
        }
        s.push('\n');
    }
    s
}
