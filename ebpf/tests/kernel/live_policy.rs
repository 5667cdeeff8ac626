//! Allow -> deny -> allow on live flows: no packet sent after a revoke returns gets through,
//! and the flows resume after the allow.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use ebpf::{ContainerEndpoint, EndpointPolicy, Identity, PairRule};

use crate::netns::{TestNet, Threads};
use crate::probes::{record_udp, run_in};

/// Phases the sender stamps on each datagram. `CHANGING` covers the time a map update is in
/// flight, when either verdict is correct.
const CHANGING: u8 = 0;
const ALLOWED: u8 = 1;
const DENIED: u8 = 2;
const CYCLES: u8 = 10;

#[test]
fn allow_deny_allow_on_live_flows_has_no_window() -> anyhow::Result<()> {
    let mut net = TestNet::new()?;
    let a = net.node(Ipv4Addr::new(10, 201, 4, 10), 24, &[])?;
    let b = net.node(Ipv4Addr::new(10, 201, 4, 11), 24, &[])?;
    let mut iso = net.load()?;
    let (pa, pb) = (
        Identity::of("p1", "production"),
        Identity::of("p2", "production"),
    );
    iso.attach(&ContainerEndpoint {
        veth: a.veth.clone(),
        ip: a.ip,
        policy: EndpointPolicy::member(pa),
    })?;
    iso.attach(&ContainerEndpoint {
        veth: b.veth.clone(),
        ip: b.ip,
        policy: EndpointPolicy::member(pb),
    })?;
    let rule = PairRule {
        from: pa,
        to: pb,
        port: None,
    };
    iso.allow(&rule)?;

    let mut threads = Threads::default();
    let got = record_udp(&mut threads, &b.ns, b.ip, 7000);
    let listener_ready = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = listener_ready;
    let b_ip = b.ip;
    threads.spawn(&b.ns, move |stop| {
        let l = TcpListener::bind((b_ip, 7001)).expect("bind echo");
        ready_tx.send(()).unwrap();
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = s.write_all(&buf[..n]);
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5))?;

    // The TCP flow, opened while allowed, lives in A's namespace for the whole test.
    let tcp = run_in(&a.ns, move || TcpStream::connect((b_ip, 7001)))?;
    tcp.set_read_timeout(Some(Duration::from_millis(500)))?;
    assert_eq!(echo(&tcp, b"a")?, Some(b"a".to_vec()), "echo while allowed");

    // UDP: a sender stamping (phase, cycle) every 200 us while the rule flips.
    let phase = Arc::new(AtomicU8::new(ALLOWED));
    let cycle = Arc::new(AtomicU8::new(0));
    let (ph, cy) = (phase.clone(), cycle.clone());
    threads.spawn(&a.ns, move |stop| {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        while !stop.load(Ordering::Relaxed) {
            let msg = [ph.load(Ordering::SeqCst), cy.load(Ordering::SeqCst)];
            let _ = s.send_to(&msg, (b_ip, 7000));
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    for c in 1..=CYCLES {
        phase.store(CHANGING, Ordering::SeqCst);
        iso.revoke(&rule)?;
        phase.store(DENIED, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        phase.store(CHANGING, Ordering::SeqCst);
        iso.allow(&rule)?;
        cycle.store(c, Ordering::SeqCst);
        phase.store(ALLOWED, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(100));
    let got = got.lock().unwrap().clone();
    let leaked = got.iter().filter(|m| m[0] == DENIED).count();
    assert_eq!(
        leaked, 0,
        "{leaked} datagrams sent after a revoke returned got through"
    );
    for c in 0..=CYCLES {
        let n = got.iter().filter(|m| m[0] == ALLOWED && m[1] == c).count();
        assert!(
            n > 0,
            "no datagram arrived in allowed window {c} ({} total)",
            got.len()
        );
    }

    // TCP: the same connection stalls while denied and resumes (by retransmission) after.
    iso.revoke(&rule)?;
    assert_eq!(echo(&tcp, b"b")?, None, "echo got through while denied");
    iso.allow(&rule)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 1];
    (&tcp).read_exact(&mut buf)?;
    assert_eq!(&buf, b"b", "the stalled byte arrives after the allow");
    assert_eq!(
        echo(&tcp, b"c")?,
        Some(b"c".to_vec()),
        "echo after re-allow"
    );
    Ok(())
}

/// Writes `msg` and reads its echo; `None` when nothing came back within the read timeout.
fn echo(mut s: &TcpStream, msg: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    s.write_all(msg)?;
    let mut buf = vec![0u8; msg.len()];
    match s.read_exact(&mut buf) {
        Ok(()) => Ok(Some(buf)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[test]
fn identity_change_of_a_local_container_applies_both_ways() -> anyhow::Result<()> {
    use crate::probes::{serve, udp_ok};
    let mut net = TestNet::new()?;
    let a = net.node(Ipv4Addr::new(10, 201, 6, 10), 24, &[])?;
    let b = net.node(Ipv4Addr::new(10, 201, 6, 11), 24, &[])?;
    let mut iso = net.load()?;
    let (p1, p2) = (
        Identity::of("p1", "production"),
        Identity::of("p2", "production"),
    );
    for (n, id) in [(&a, p1), (&b, p2)] {
        let policy = EndpointPolicy::member(id);
        iso.attach(&ContainerEndpoint {
            veth: n.veth.clone(),
            ip: n.ip,
            policy,
        })?;
    }
    let mut threads = Threads::default();
    serve(&mut threads, &a.ns, a.ip, &[], &[8080]);
    serve(&mut threads, &b.ns, b.ip, &[], &[8080]);
    let both = |a: &crate::netns::Node, b: &crate::netns::Node| {
        let (ai, bi) = (a.ip, b.ip);
        (
            run_in(&a.ns, move || udp_ok(bi, 8080)),
            run_in(&b.ns, move || udp_ok(ai, 8080)),
        )
    };
    assert_eq!(
        both(&a, &b),
        (false, false),
        "p1 and p2 talk before the change"
    );
    iso.set_endpoint(b.ip, &EndpointPolicy::member(p1))?;
    assert_eq!(
        both(&a, &b),
        (true, true),
        "b moved to p1 but is still isolated"
    );
    iso.set_endpoint(b.ip, &EndpointPolicy::member(p2))?;
    assert_eq!(
        both(&a, &b),
        (false, false),
        "b moved back to p2 but still reaches p1"
    );
    Ok(())
}
