//! The node's DNS responder (#15): containers resolve `<service>.<environment>.internal` (and
//! the bare service name, for their own environment) to every replica of that service in the
//! cluster, whatever node it runs on.
//!
//! Each project bridge's gateway gets a small authoritative responder on port 53 (UDP and TCP),
//! written as the bridge's `resolv.conf` nameserver. The bridge tells whose question it is: a
//! bridge is one project+environment, and only its own subnet's addresses are answered (the
//! eBPF programs stop a container from spoofing another address). Answers come from two
//! sources: the network's own leases (what its hosts file lists, there as soon as a container
//! is plugged in) and control's pushed endpoint set ([`ClusterView`]: every healthy container
//! of every node), both limited to the asking project, so another tenant's names are NXDOMAIN.
//! Nothing is forwarded: names outside `.internal` are REFUSED (containers never had a
//! resolver for public names).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::Subnet;
use super::cluster::{ClusterEndpoint, ClusterView};

/// The DNS port containers ask on.
pub const DNS_PORT: u16 = 53;
/// The zone every name of the platform is under.
pub const ZONE: &str = "internal";
/// Answers change on every deploy: kept short.
const TTL_SECS: u32 = 5;
/// A TCP client that says nothing for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Answers over UDP stay within the classic 512-byte message (no EDNS): this many addresses.
const UDP_MAX_ANSWERS: usize = 24;

/// What one project network may ask and what it holds itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The project whose names are answered.
    pub project_id: String,
    /// The network's environment name (bare names are looked up in it); may be empty.
    pub environment_name: String,
    /// Only addresses of this subnet are answered (the bridge's containers).
    pub subnet: Subnet,
    /// The network's own containers: their names (as in its hosts file) and address.
    pub local: Vec<(Vec<String>, Ipv4Addr)>,
}

impl Zone {
    /// Whether `source` is one of the network's containers (not its gateway, not elsewhere).
    pub fn admits(&self, source: Ipv4Addr) -> bool {
        self.subnet.contains(source) && source != self.subnet.gateway()
    }
}

/// The answer to one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name exists: these addresses (sorted, distinct).
    Found(Vec<Ipv4Addr>),
    /// A name of the platform's zone that the asking project does not have.
    NoSuchName,
    /// Not a platform name: not answered (no recursion).
    NotOurs,
}

/// Looks `name` up for a container of `zone`'s network in the network's own leases and the
/// cluster's `endpoints` (only the zone's project).
pub fn lookup(zone: &Zone, endpoints: &[ClusterEndpoint], name: &str) -> Lookup {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    let (service, environment) = match labels.as_slice() {
        [service, environment, zone_label] if *zone_label == ZONE => (*service, *environment),
        [.., last] if *last == ZONE => return Lookup::NoSuchName,
        [service] if !service.is_empty() && !zone.environment_name.is_empty() => {
            (*service, zone.environment_name.as_str())
        }
        _ => return Lookup::NotOurs,
    };
    let full = format!("{service}.{environment}.{ZONE}");
    let mut ips: Vec<Ipv4Addr> = zone
        .local
        .iter()
        .filter(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(&full)))
        .map(|(_, ip)| *ip)
        .collect();
    ips.extend(
        endpoints
            .iter()
            .filter(|e| {
                e.project_id == zone.project_id
                    && e.service_name == service
                    && e.environment_name == environment
            })
            .map(|e| e.ip),
    );
    ips.sort_unstable();
    ips.dedup();
    if ips.is_empty() {
        Lookup::NoSuchName
    } else {
        Lookup::Found(ips)
    }
}

/// The wire answer to one request from a container of `zone`; `None` when the bytes are not a
/// DNS query worth an answer. `max_answers` bounds the addresses (UDP's message size).
pub fn respond(
    zone: &Zone,
    endpoints: &[ClusterEndpoint],
    request: &[u8],
    max_answers: usize,
) -> Option<Vec<u8>> {
    let req = Message::from_vec(request).ok()?;
    if req.message_type() != MessageType::Query {
        return None;
    }
    if req.op_code() != OpCode::Query {
        return Message::error_msg(req.id(), req.op_code(), ResponseCode::NotImp)
            .to_vec()
            .ok();
    }
    let [query] = req.queries() else {
        return Message::error_msg(req.id(), req.op_code(), ResponseCode::FormErr)
            .to_vec()
            .ok();
    };
    let mut resp = Message::new();
    resp.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(false)
        .add_query(query.clone());
    let name = query.name().to_ascii();
    match lookup(zone, endpoints, &name) {
        Lookup::Found(ips) => {
            resp.set_authoritative(true);
            let class_ok = matches!(query.query_class(), DNSClass::IN | DNSClass::ANY);
            if class_ok && matches!(query.query_type(), RecordType::A | RecordType::ANY) {
                for ip in ips.into_iter().take(max_answers) {
                    resp.add_answer(Record::from_rdata(
                        query.name().clone(),
                        TTL_SECS,
                        RData::A(A(ip)),
                    ));
                }
            }
            // Any other type of an existing name: NOERROR without answers (an AAAA asked beside
            // the A must not say the name does not exist).
        }
        Lookup::NoSuchName => {
            resp.set_authoritative(true)
                .set_response_code(ResponseCode::NXDomain);
        }
        Lookup::NotOurs => {
            resp.set_response_code(ResponseCode::Refused);
        }
    }
    resp.to_vec().ok()
}

/// One network's responder: its zone and the tasks serving it (stopped when dropped).
#[derive(Debug)]
struct Served {
    address: Ipv4Addr,
    zone: Arc<RwLock<Zone>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The responders of the node's project networks, sharing the cluster view control pushes.
#[derive(Debug)]
pub struct Dns {
    view: Arc<ClusterView>,
    port: u16,
    served: Mutex<HashMap<String, Served>>,
}

/// Where a network's responder listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

impl Dns {
    /// Responders on port 53 reading `view`.
    pub fn new(view: Arc<ClusterView>) -> Self {
        Self::on_port(view, DNS_PORT)
    }

    /// Responders on `port` (0: any free port, for tests).
    pub fn on_port(view: Arc<ClusterView>, port: u16) -> Self {
        Self {
            view,
            port,
            served: Mutex::new(HashMap::new()),
        }
    }

    /// The cluster view the answers read.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.clone()
    }

    fn served(&self) -> std::sync::MutexGuard<'_, HashMap<String, Served>> {
        self.served.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers `network`'s containers on `address` (its gateway) from `zone`, or only replaces
    /// the zone when it is served there already. Must run inside a Tokio runtime.
    pub fn serve(
        &self,
        network: &str,
        address: Ipv4Addr,
        zone: Zone,
    ) -> std::io::Result<Option<Listening>> {
        let mut served = self.served();
        if let Some(s) = served.get(network)
            && s.address == address
            && s.tasks.iter().all(|t| !t.is_finished())
        {
            *s.zone.write().unwrap_or_else(|p| p.into_inner()) = zone;
            return Ok(None);
        }
        served.remove(network);
        let udp = std::net::UdpSocket::bind(SocketAddrV4::new(address, self.port))?;
        udp.set_nonblocking(true)?;
        let udp = UdpSocket::from_std(udp)?;
        let tcp = TcpSocket::new_v4()?;
        tcp.set_reuseaddr(true)?;
        tcp.bind(SocketAddr::V4(SocketAddrV4::new(address, self.port)))?;
        let tcp = tcp.listen(64)?;
        let listening = Listening {
            udp: udp.local_addr()?,
            tcp: tcp.local_addr()?,
        };
        let zone = Arc::new(RwLock::new(zone));
        let tasks = vec![
            tokio::spawn(serve_udp(udp, zone.clone(), self.view.clone())),
            tokio::spawn(serve_tcp(tcp, zone.clone(), self.view.clone())),
        ];
        tracing::debug!(network, %address, "dns responder listening");
        served.insert(
            network.to_owned(),
            Served {
                address,
                zone,
                tasks,
            },
        );
        Ok(Some(listening))
    }

    /// Replaces the network's own containers (after one came or went).
    pub fn set_local(&self, network: &str, local: Vec<(Vec<String>, Ipv4Addr)>) {
        if let Some(s) = self.served().get(network) {
            s.zone.write().unwrap_or_else(|p| p.into_inner()).local = local;
        }
    }

    /// Stops answering `network` (its bridge is gone).
    pub fn stop(&self, network: &str) {
        self.served().remove(network);
    }

    /// Whether `network` is answered.
    pub fn is_serving(&self, network: &str) -> bool {
        self.served().contains_key(network)
    }
}

fn answer(
    zone: &RwLock<Zone>,
    view: &ClusterView,
    from: SocketAddr,
    request: &[u8],
    max: usize,
) -> Option<Vec<u8>> {
    let SocketAddr::V4(from) = from else {
        return None;
    };
    let zone = zone.read().unwrap_or_else(|p| p.into_inner());
    if !zone.admits(*from.ip()) {
        tracing::debug!(source = %from, "dns question from outside the network ignored");
        return None;
    }
    respond(&zone, &view.endpoints(), request, max)
}

async fn serve_udp(socket: UdpSocket, zone: Arc<RwLock<Zone>>, view: Arc<ClusterView>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors of earlier sends surface here; the socket itself is fine.
                tracing::debug!(error = %e, "dns udp receive");
                continue;
            }
        };
        if let Some(reply) = answer(&zone, &view, from, &buf[..n], UDP_MAX_ANSWERS) {
            let _ = socket.send_to(&reply, from).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<RwLock<Zone>>, view: Arc<ClusterView>) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(serve_tcp_client(stream, from, zone.clone(), view.clone()));
    }
}

/// Length-prefixed messages (RFC 1035 4.2.2) until the client closes or idles.
async fn serve_tcp_client(
    mut stream: TcpStream,
    from: SocketAddr,
    zone: Arc<RwLock<Zone>>,
    view: Arc<ClusterView>,
) {
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return;
        };
        let mut request = vec![0u8; usize::from(len)];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut request)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Some(reply) = answer(&zone, &view, from, &request, usize::MAX) else {
            return;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_u16(len).await.is_err() || stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// The `resolv.conf` of a network: its gateway's responder, and the environment's zone for
/// bare names.
pub fn resolv_conf(gateway: Ipv4Addr, environment_name: &str) -> String {
    let mut out = format!("nameserver {gateway}\n");
    if !environment_name.is_empty() {
        out.push_str(&format!("search {environment_name}.{ZONE}\n"));
    }
    out.push_str("options ndots:1 timeout:2 attempts:2\n");
    out
}

/// The environment name in a container's host names (`<service> <service>.<env>.internal`).
pub fn environment_of(host_names: &str) -> String {
    host_names
        .split_whitespace()
        .find_map(|n| {
            let rest = n.strip_suffix(&format!(".{ZONE}"))?;
            let (_, env) = rest.split_once('.')?;
            Some(env.to_owned())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    use super::*;

    fn remote(ip: [u8; 4], project: &str, service: &str, env: &str) -> ClusterEndpoint {
        ClusterEndpoint {
            ip: Ipv4Addr::from(ip),
            organization_id: "o".into(),
            project_id: project.into(),
            environment_id: format!("{project}-{env}"),
            service_id: service.into(),
            service_name: service.into(),
            environment_name: env.into(),
            service_type: 1,
            service_port: Some(8080),
            node_id: "n2".into(),
        }
    }

    fn zone(subnet: &str) -> Zone {
        Zone {
            project_id: "p".into(),
            environment_name: "production".into(),
            subnet: subnet.parse().unwrap(),
            local: vec![(
                vec!["web".into(), "web.production.internal".into()],
                Ipv4Addr::new(10, 97, 16, 2),
            )],
        }
    }

    fn endpoints() -> Vec<ClusterEndpoint> {
        vec![
            remote([10, 97, 32, 2], "p", "web", "production"),
            remote([10, 97, 32, 3], "p", "web", "production"),
            remote([10, 97, 32, 4], "p", "db", "staging"),
            remote([10, 97, 32, 9], "q", "secret", "production"),
            // The local replica is in the pushed set too once healthy: answered once.
            remote([10, 97, 16, 2], "p", "web", "production"),
        ]
    }

    #[test]
    fn names_resolve_to_every_replica_of_the_asking_project_only() {
        let z = zone("10.97.16.0/24");
        let all = endpoints();
        let web = Lookup::Found(vec![
            Ipv4Addr::new(10, 97, 16, 2),
            Ipv4Addr::new(10, 97, 32, 2),
            Ipv4Addr::new(10, 97, 32, 3),
        ]);
        assert_eq!(lookup(&z, &all, "web.production.internal."), web);
        assert_eq!(lookup(&z, &all, "WEB.Production.Internal"), web);
        assert_eq!(
            lookup(&z, &all, "web"),
            web,
            "a bare name is the own environment's"
        );
        assert_eq!(
            lookup(&z, &all, "db.staging.internal"),
            Lookup::Found(vec![Ipv4Addr::new(10, 97, 32, 4)])
        );
        assert_eq!(
            lookup(&z, &all, "secret.production.internal"),
            Lookup::NoSuchName,
            "another project's name does not exist for this one"
        );
        assert_eq!(lookup(&z, &all, "db"), Lookup::NoSuchName);
        assert_eq!(lookup(&z, &all, "a.b.c.internal"), Lookup::NoSuchName);
        assert_eq!(lookup(&z, &all, "example.com"), Lookup::NotOurs);
        assert_eq!(lookup(&z, &all, "."), Lookup::NotOurs);
    }

    #[test]
    fn resolv_conf_and_environment_names() {
        assert_eq!(environment_of("web web.production.internal"), "production");
        assert_eq!(environment_of("web"), "");
        let conf = resolv_conf(Ipv4Addr::new(10, 97, 16, 1), "production");
        assert!(conf.starts_with("nameserver 10.97.16.1\nsearch production.internal\n"));
        assert!(!resolv_conf(Ipv4Addr::new(10, 97, 16, 1), "").contains("search"));
    }

    fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(4242)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_str(name).unwrap(), kind));
        m.to_vec().unwrap()
    }

    fn addresses(m: &Message) -> Vec<Ipv4Addr> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    async fn ask_udp(server: SocketAddr, request: &[u8]) -> Option<Message> {
        // Not 127.0.0.1: that is the test subnet's gateway, never a container.
        let client = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        client.send_to(request, server).await.unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        Some(Message::from_vec(&buf[..n]).unwrap())
    }

    async fn ask_tcp(server: SocketAddr, request: &[u8]) -> Message {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = socket.connect(server).await.unwrap();
        s.write_u16(request.len() as u16).await.unwrap();
        s.write_all(request).await.unwrap();
        let len = s.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await.unwrap();
        Message::from_vec(&buf).unwrap()
    }

    /// Real sockets on loopback: the zone's subnet is 127.0.0.0/8 (gateway 127.0.0.1, where the
    /// responder listens) so the test client on 127.0.0.2 is one of the network's containers.
    #[tokio::test]
    async fn the_responder_answers_over_udp_and_tcp_and_follows_pushes() {
        let view = Arc::new(ClusterView::default());
        let dns = Dns::on_port(view.clone(), 0);
        let mut z = zone("127.0.0.0/8");
        z.local.clear();
        let at = dns
            .serve("spbtest", Ipv4Addr::LOCALHOST, z.clone())
            .unwrap()
            .expect("a new responder");
        assert!(dns.is_serving("spbtest"));

        // Nothing pushed yet: the name does not exist (authoritative NXDOMAIN).
        let m = ask_udp(at.udp, &query("web.production.internal.", RecordType::A))
            .await
            .unwrap();
        assert_eq!((m.id(), m.response_code()), (4242, ResponseCode::NXDomain));
        assert!(m.authoritative());

        view.replace("d1".into(), endpoints());
        let m = ask_udp(at.udp, &query("web.production.internal.", RecordType::A))
            .await
            .unwrap();
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert_eq!(
            addresses(&m),
            vec![
                Ipv4Addr::new(10, 97, 16, 2),
                Ipv4Addr::new(10, 97, 32, 2),
                Ipv4Addr::new(10, 97, 32, 3)
            ]
        );
        assert!(!m.recursion_available());
        // AAAA of an existing name: NOERROR, no answer.
        let m = ask_udp(at.udp, &query("web.production.internal.", RecordType::AAAA))
            .await
            .unwrap();
        assert_eq!(
            (m.response_code(), m.answers().len()),
            (ResponseCode::NoError, 0)
        );
        // Another project's name, and a public name (nothing forwarded).
        let m = ask_udp(at.udp, &query("secret.production.internal.", RecordType::A))
            .await
            .unwrap();
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        let m = ask_udp(at.udp, &query("example.com.", RecordType::A))
            .await
            .unwrap();
        assert_eq!(m.response_code(), ResponseCode::Refused);
        // TCP answers the same.
        let m = ask_tcp(at.tcp, &query("db.staging.internal.", RecordType::A)).await;
        assert_eq!(addresses(&m), vec![Ipv4Addr::new(10, 97, 32, 4)]);

        // A local container plugged in is answered at once, before any push names it.
        dns.set_local(
            "spbtest",
            vec![(
                vec!["new".into(), "new.production.internal".into()],
                Ipv4Addr::new(10, 97, 16, 7),
            )],
        );
        let m = ask_udp(at.udp, &query("new.production.internal.", RecordType::A))
            .await
            .unwrap();
        assert_eq!(addresses(&m), vec![Ipv4Addr::new(10, 97, 16, 7)]);

        // Serving again on the same address only replaces the zone.
        assert!(
            dns.serve("spbtest", Ipv4Addr::LOCALHOST, z.clone())
                .unwrap()
                .is_none()
        );
        // Garbage gets no answer; the responder keeps answering.
        assert!(ask_udp(at.udp, b"\x01\x02garbage").await.is_none());
        assert!(
            ask_udp(at.udp, &query("web.", RecordType::A))
                .await
                .is_some()
        );

        dns.stop("spbtest");
        assert!(!dns.is_serving("spbtest"));
        tokio::task::yield_now().await;
        assert!(
            ask_udp(at.udp, &query("web.", RecordType::A))
                .await
                .is_none(),
            "a stopped responder answers nothing"
        );
    }

    #[tokio::test]
    async fn questions_from_outside_the_network_are_not_answered() {
        let dns = Dns::on_port(Arc::new(ClusterView::default()), 0);
        let at = dns
            .serve("spbother", Ipv4Addr::LOCALHOST, zone("10.97.16.0/24"))
            .unwrap()
            .unwrap();
        assert!(
            ask_udp(at.udp, &query("web.production.internal.", RecordType::A))
                .await
                .is_none(),
            "127.0.0.2 is not on the network's subnet"
        );
    }
}
