//! Counters match the bytes sent, survive the loader being dropped and re-created (an agent
//! restart) together with the enforcement, and go away with `detach`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use aya::programs::{SchedClassifier, tc::TcAttachType};
use ebpf::{ContainerEndpoint, Counters, EndpointPolicy, Error, Identity, Isolation};

use crate::netns::{Node, TestNet, Threads};
use crate::probes::{record_udp, run_in, serve, tcp_ok};

const DATAGRAMS: u64 = 2000;
const PAYLOAD: u64 = 1000;
/// Ethernet + IPv4 + UDP headers around each payload.
const FRAME_OVERHEAD: u64 = 14 + 20 + 8;

fn send_udp(from: &Node, to: Ipv4Addr, count: u64) {
    run_in(&from.ns, move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let buf = vec![7u8; PAYLOAD as usize];
        for i in 0..count {
            s.send_to(&buf, (to, 7000)).unwrap();
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(1)); // stay under the veth backlog
            }
        }
    });
}

/// The counters of `veth` once they stop moving (two reads 50 ms apart agree; at most 5 s): the
/// kernel counts a packet in softirq, a moment after the sender's call has returned.
fn settled(iso: &Isolation, veth: &str) -> anyhow::Result<Counters> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut last = iso.counters(veth)?;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = iso.counters(veth)?;
        if now == last {
            return Ok(now);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the counters of {veth} still move after 5 s: {now:?}"
        );
        last = now;
    }
}

fn within_1pct(what: &str, got: u64, want: u64) {
    let diff = got.abs_diff(want) as f64 / want as f64;
    assert!(
        diff <= 0.01,
        "{what}: counted {got}, expected {want} ({:.3}% off)",
        diff * 100.0
    );
}

fn iface_stat(veth: &str, stat: &str) -> u64 {
    let p = format!("/sys/class/net/{veth}/statistics/{stat}");
    std::fs::read_to_string(&p).unwrap().trim().parse().unwrap()
}

fn tcx_programs(veth: &str, dir: TcAttachType) -> Vec<String> {
    let (_, progs) = SchedClassifier::query_tcx(veth, dir).unwrap();
    progs
        .iter()
        .map(|p| p.name_as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn counters_match_bytes_sent_and_survive_a_restart() -> anyhow::Result<()> {
    let mut net = TestNet::new()?;
    let a = net.node(Ipv4Addr::new(10, 201, 5, 10), 24, &[])?;
    let b = net.node(Ipv4Addr::new(10, 201, 5, 11), 24, &[])?;
    let other = net.node(Ipv4Addr::new(10, 201, 5, 12), 24, &[])?;
    let mut iso = net.load()?;
    let id = Identity::of("p1", "production");
    let attach = |iso: &mut Isolation, n: &Node, id| {
        let policy = EndpointPolicy::internal(id, 9000);
        iso.attach(&ContainerEndpoint {
            veth: n.veth.clone(),
            ip: n.ip,
            policy,
        })
    };
    attach(&mut iso, &a, id)?;
    attach(&mut iso, &b, id)?;
    attach(&mut iso, &other, Identity::of("p2", "production"))?;
    let mut threads = Threads::default();
    let _got = record_udp(&mut threads, &b.ns, b.ip, 7000);
    serve(&mut threads, &b.ns, b.ip, &[9000], &[]);
    serve(&mut threads, &other.ns, other.ip, &[9000], &[]);

    // A counted UDP transfer: exact frame sizes are known.
    let a0 = iso.counters(&a.veth)?;
    let b0 = iso.counters(&b.veth)?;
    let rx0 = iface_stat(&a.veth, "rx_bytes");
    send_udp(&a, b.ip, DATAGRAMS);
    let a1 = settled(&iso, &a.veth)?;
    let b1 = settled(&iso, &b.veth)?;
    let sent = DATAGRAMS * (PAYLOAD + FRAME_OVERHEAD);
    within_1pct("a out_bytes", a1.out_bytes - a0.out_bytes, sent);
    within_1pct("a out_packets", a1.out_packets - a0.out_packets, DATAGRAMS);
    within_1pct("b in_bytes", b1.in_bytes - b0.in_bytes, sent);
    within_1pct(
        "host veth rx_bytes",
        a1.out_bytes - a0.out_bytes,
        iface_stat(&a.veth, "rx_bytes") - rx0,
    );

    // A TCP transfer, counted against the interface's own statistics.
    let rx1 = iface_stat(&a.veth, "rx_bytes");
    let b_ip = b.ip;
    let sink_ready = std::sync::mpsc::channel();
    let (tx, rx) = sink_ready;
    threads.spawn(&b.ns, move |stop| {
        let l = TcpListener::bind((b_ip, 7002)).unwrap();
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) && s.read(&mut buf).unwrap_or(0) > 0 {}
    });
    rx.recv_timeout(Duration::from_secs(5))?;
    let payload = 20u64 << 20;
    run_in(&a.ns, move || -> std::io::Result<()> {
        let mut s = TcpStream::connect((b_ip, 7002))?;
        let chunk = vec![1u8; 1 << 16];
        for _ in 0..payload / chunk.len() as u64 {
            s.write_all(&chunk)?;
        }
        s.shutdown(std::net::Shutdown::Write)
    })?;
    let a2 = settled(&iso, &a.veth)?;
    let counted = a2.out_bytes - a1.out_bytes;
    within_1pct(
        "tcp vs host veth rx_bytes",
        counted,
        iface_stat(&a.veth, "rx_bytes") - rx1,
    );
    assert!(
        counted >= payload,
        "tcp: counted {counted} < payload {payload}"
    );
    println!(
        "tcp: payload {payload} B, counted {counted} B ({:.2}% headers)",
        (counted - payload) as f64 * 100.0 / payload as f64
    );

    // "Agent restart": drop the loader. Programs stay attached, policy stays enforced.
    drop(iso);
    let (other_ip, b_ip) = (other.ip, b.ip);
    assert!(
        !run_in(&a.ns, move || tcp_ok(other_ip, 9000)),
        "cross-project allowed without a loader"
    );
    assert!(
        run_in(&a.ns, move || tcp_ok(b_ip, 9000)),
        "same project blocked without a loader"
    );
    let mut iso = net.load()?;
    let a3 = iso.counters(&a.veth)?;
    assert!(
        a3.out_bytes >= a2.out_bytes && a3.out_packets - a2.out_packets < 20,
        "{a2:?} -> {a3:?}"
    );
    // Re-attaching (the agent's reconcile) keeps one program per direction and the counters.
    attach(&mut iso, &a, id)?;
    assert_eq!(
        tcx_programs(&a.veth, TcAttachType::Ingress),
        ["from_container"]
    );
    assert_eq!(
        tcx_programs(&a.veth, TcAttachType::Egress),
        ["to_container"]
    );
    assert_eq!(iso.attached()?.len(), 3);
    send_udp(&a, b.ip, DATAGRAMS / 4);
    let a4 = settled(&iso, &a.veth)?;
    within_1pct(
        "after restart",
        a4.out_bytes - a3.out_bytes,
        DATAGRAMS / 4 * (PAYLOAD + FRAME_OVERHEAD),
    );

    // Detach removes the programs and the entries.
    iso.detach(&a.veth, a.ip)?;
    assert!(tcx_programs(&a.veth, TcAttachType::Ingress).is_empty());
    assert!(matches!(
        iso.counters(&a.veth),
        Err(Error::NotAttached { .. })
    ));
    assert_eq!(iso.attached()?.len(), 2);
    let b_before: Counters = iso.counters(&b.veth)?;

    // A container attached later starts from zero, even on the slot `a` left behind.
    attach(&mut iso, &a, id)?;
    let fresh = iso.counters(&a.veth)?;
    assert_eq!((fresh.out_bytes, fresh.in_bytes), (0, 0), "{fresh:?}");
    assert!(iso.counters(&b.veth)?.in_bytes >= b_before.in_bytes);
    Ok(())
}
