//! Small servers and clients run inside test namespaces: TCP (answers "ok"), UDP echo, ICMP
//! echo through a raw socket, and a raw-IP sender for spoofed packets.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::{Threads, in_ns};

/// Long enough for an allowed probe on a loaded 2-core machine; denied probes run in parallel.
pub const TIMEOUT: Duration = Duration::from_millis(2000);

/// TCP servers answering "ok" on each port, and a UDP echo on each UDP port, bound to `ip`.
pub fn serve(threads: &mut Threads, ns: &str, ip: Ipv4Addr, tcp: &[u16], udp: &[u16]) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for &port in tcp {
        let ready = ready_tx.clone();
        threads.spawn(ns, move |stop| {
            let l = TcpListener::bind((ip, port)).expect("bind tcp");
            l.set_nonblocking(true).unwrap();
            ready.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(b"ok");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }
    for &port in udp {
        let ready = ready_tx.clone();
        threads.spawn(ns, move |stop| {
            let s = UdpSocket::bind((ip, port)).expect("bind udp");
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            ready.send(()).unwrap();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        });
    }
    for _ in 0..tcp.len() + udp.len() {
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("server ready");
    }
}

pub fn tcp_ok(dst: Ipv4Addr, port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::from((dst, port)), TIMEOUT) else {
        return false;
    };
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).is_ok() && &buf == b"ok"
}

pub fn udp_ok(dst: Ipv4Addr, port: u16) -> bool {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    if s.send_to(b"probe", (dst, port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.recv_from(&mut buf), Ok((5, _)))
}

pub fn icmp_ok(dst: Ipv4Addr) -> bool {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let id = (std::process::id() as u16) ^ (rand_u16());
    let mut pkt = [
        8u8,
        0,
        0,
        0,
        (id >> 8) as u8,
        id as u8,
        0,
        1,
        b'p',
        b'i',
        b'n',
        b'g',
    ];
    let sum = checksum(&pkt);
    pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    if s.send_to(&pkt, &SockAddr::from(SocketAddrV4::new(dst, 0)))
        .is_err()
    {
        return false;
    }
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let Ok(n) = (&s).read(&mut buf) else { continue };
        let b = &buf[..n];
        let ihl = usize::from(b[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
        if b.len() >= ihl + 8 && src == dst && b[ihl] == 0 && b[ihl + 4..ihl + 6] == pkt[4..6] {
            return true;
        }
    }
    false
}

fn rand_u16() -> u16 {
    uuid::Uuid::new_v4().as_u128() as u16
}

pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one UDP datagram with a hand-made IPv4 header (any source address) from the calling
/// thread's namespace.
pub fn send_raw_udp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    port: u16,
    payload: &[u8],
) -> std::io::Result<()> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))?; // IPPROTO_RAW
    let total = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    let ulen = (8 + payload.len()) as u16;
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&ulen.to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no UDP checksum
    p.extend_from_slice(payload);
    s.send_to(&p, &SockAddr::from(SocketAddrV4::new(dst, 0)))?;
    Ok(())
}

/// A UDP receiver recording every payload it gets.
pub fn record_udp(
    threads: &mut Threads,
    ns: &str,
    ip: Ipv4Addr,
    port: u16,
) -> Arc<std::sync::Mutex<Vec<Vec<u8>>>> {
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    threads.spawn(ns, move |stop: Arc<AtomicBool>| {
        let s = UdpSocket::bind((ip, port)).expect("bind recorder");
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                sink.lock().unwrap().push(buf[..n].to_vec());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("recorder ready");
    got
}

/// Runs `f` in `ns` and waits for its answer.
pub fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_ns(ns, f).join().expect("probe thread")
}
