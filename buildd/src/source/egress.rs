//! The fetch sandbox's only way out: an HTTP CONNECT proxy inside buildd, one Unix socket per
//! checkout. For every connection git asks for, it resolves the name (the configured
//! nameserver, else the system's), checks *every* address with the [`AddressPolicy`] (one
//! refused address refuses the name) and connects to an address it checked, so there is no
//! window for DNS rebinding; a redirect to another host is a new CONNECT and is checked the same
//! way. What it refused or could not reach is recorded for the checkout's error: the tenant
//! learns what was refused, never what was found on the network.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use tenant::address::{AddressPolicy, Refused};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UnixListener, UnixStream};

/// The most connections one checkout may hold open through the proxy at once.
const MAX_CONNECTIONS: usize = 32;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const HEAD_LIMIT: usize = 8 * 1024;

/// How names are resolved.
#[derive(Debug, Clone)]
pub enum Resolver {
    /// `getaddrinfo` (the system's configuration).
    System,
    /// One nameserver (`dns_resolver`), no cache.
    Nameserver(Box<TokioResolver>),
}

impl Resolver {
    pub fn nameserver(addr: SocketAddr) -> Self {
        let mut config = ResolverConfig::new();
        config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
        config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
        let mut opts = ResolverOpts::default();
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        Self::Nameserver(Box::new(
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(opts)
                .build(),
        ))
    }

    /// Every address of `host` (empty when it has none).
    pub async fn resolve(&self, host: &str) -> Vec<IpAddr> {
        match self {
            Resolver::System => tokio::net::lookup_host((host, 0))
                .await
                .map(|addrs| addrs.map(|a| a.ip()).collect())
                .unwrap_or_default(),
            Resolver::Nameserver(r) => {
                let fqdn = format!("{}.", host.trim_end_matches('.'));
                r.lookup_ip(fqdn)
                    .await
                    .map(|l| l.iter().collect())
                    .unwrap_or_default()
            }
        }
    }
}

/// Where git may connect: the address policy and the resolver.
#[derive(Debug, Clone)]
pub struct Egress {
    pub policy: AddressPolicy,
    pub resolver: Resolver,
}

/// What happened to one connection git asked for (kept for the checkout's error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressEvent {
    /// An address of `host` is not allowed; nothing was connected.
    Refused {
        host: String,
        refused: Refused,
    },
    /// `host` has no address.
    Unresolvable {
        host: String,
    },
    /// No checked address of `host` answered on `port`.
    Unreachable {
        host: String,
        port: u16,
    },
    /// `host` is not one of the hosts this proxy serves (a dependency fetch reaches the package
    /// registry and nothing else; an SSH fetch its repository's host and port).
    HostNotAllowed {
        host: String,
        allowed: Vec<String>,
    },
    /// Not a CONNECT the proxy understands.
    BadRequest,
    Connected {
        host: String,
        addr: SocketAddr,
    },
}

impl EgressEvent {
    /// The message a tenant sees, for events that explain a failed fetch.
    pub fn explain(&self) -> Option<String> {
        match self {
            EgressEvent::Refused { host, refused } => Some(match host.parse::<IpAddr>() {
                Ok(_) => format!("{refused}: refused"),
                Err(_) => format!(
                    "address {} of {host} is {}: refused",
                    refused.ip, refused.range
                ),
            }),
            EgressEvent::Unresolvable { host } => Some(format!("{host} has no address")),
            EgressEvent::Unreachable { host, port } => {
                Some(format!("could not connect to {host} port {port}"))
            }
            EgressEvent::HostNotAllowed { host, allowed } => Some(format!(
                "{host} is not an allowed host (only {}): refused",
                allowed.join(", ")
            )),
            EgressEvent::BadRequest => {
                Some("the sandbox made a request the egress proxy refuses".into())
            }
            EgressEvent::Connected { .. } => None,
        }
    }
}

/// The proxy of one checkout: serves its socket until dropped.
#[derive(Debug)]
pub struct EgressProxy {
    events: Arc<Mutex<Vec<EgressEvent>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EgressProxy {
    /// Listens on `socket` (a new path; mode 0600, owned by buildd).
    pub fn start(egress: Egress, socket: &Path) -> std::io::Result<Self> {
        Self::start_for_hosts(egress, None, socket)
    }

    /// Like [`EgressProxy::start`], serving only the names in `hosts` (exact, lowercase) when
    /// given: any other name, and any IP literal, is refused before it is resolved. The address
    /// policy still checks every address of an allowed name.
    pub fn start_for_hosts(
        egress: Egress,
        hosts: Option<Vec<String>>,
        socket: &Path,
    ) -> std::io::Result<Self> {
        Self::start_scoped(egress, hosts.map(Scope::Hosts), socket)
    }

    /// Like [`EgressProxy::start`], serving `host` (a lowercase name or an IP literal) on `port`
    /// and nothing else: a repository fetched over SSH reaches its own server's SSH port only.
    /// The address policy still checks every address of `host`.
    pub fn start_for_target(
        egress: Egress,
        host: String,
        port: u16,
        socket: &Path,
    ) -> std::io::Result<Self> {
        Self::start_scoped(egress, Some(Scope::Target(host, port)), socket)
    }

    fn start_scoped(egress: Egress, hosts: Option<Scope>, socket: &Path) -> std::io::Result<Self> {
        let listener = UnixListener::bind(socket)?;
        std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let egress = Arc::new(egress);
        let hosts = Arc::new(hosts);
        let task = {
            let events = events.clone();
            tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let (egress, events, hosts) = (egress.clone(), events.clone(), hosts.clone());
                    tokio::spawn(async move {
                        let record = |event: EgressEvent| {
                            if let Ok(mut e) = events.lock() {
                                e.push(event);
                            }
                        };
                        serve(&egress, (*hosts).as_ref(), conn, record).await;
                        drop(slot);
                    });
                }
            })
        };
        Ok(Self { events, task })
    }

    /// Every connection so far, in the order they ended their set-up.
    pub fn events(&self) -> Vec<EgressEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// What a scoped proxy serves.
#[derive(Debug)]
enum Scope {
    /// These names, on any port.
    Hosts(Vec<String>),
    /// This one host and port.
    Target(String, u16),
}

impl Scope {
    /// `None` when `host:port` is served, else what the refusal names as allowed.
    fn refuses(&self, host: &str, port: u16) -> Option<Vec<String>> {
        match self {
            Scope::Hosts(hosts) => (!hosts.iter().any(|h| h == host)).then(|| hosts.clone()),
            Scope::Target(h, p) => (h != host || *p != port).then(|| vec![format!("{h} port {p}")]),
        }
    }
}

/// `CONNECT host:port HTTP/1.1` -> (host without brackets, port).
pub fn parse_connect(head: &str) -> Option<(String, u16)> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if method != "CONNECT" || !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    let (host, port) = target.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']')?.to_owned(),
        None => host.to_ascii_lowercase(),
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    valid.then_some((host, port))
}

/// Resolves and checks `host`: the addresses to connect to, or what refuses it.
pub async fn decide(egress: &Egress, host: &str) -> Result<Vec<IpAddr>, EgressEvent> {
    let ips = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => egress.resolver.resolve(host).await,
    };
    if ips.is_empty() {
        return Err(EgressEvent::Unresolvable {
            host: host.to_owned(),
        });
    }
    egress
        .policy
        .check_all(&ips)
        .map_err(|refused| EgressEvent::Refused {
            host: host.to_owned(),
            refused,
        })?;
    Ok(ips)
}

/// Serves one connection; `record` gets its event before git gets the answer, so the event is
/// there when git exits.
async fn serve(
    egress: &Egress,
    hosts: Option<&Scope>,
    mut conn: UnixStream,
    record: impl FnOnce(EgressEvent),
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(CONNECT_TIMEOUT, conn.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && head.len() + n <= HEAD_LIMIT => head.extend_from_slice(&buf[..n]),
            // A connection closed before asking anything (a client's spare one) asked nothing.
            Ok(Ok(0)) if head.is_empty() => return,
            _ => return record(EgressEvent::BadRequest),
        }
    }
    let Some((host, port)) = parse_connect(&String::from_utf8_lossy(&head)) else {
        record(EgressEvent::BadRequest);
        let _ = conn
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    if let Some(allowed) = hosts.and_then(|scope| scope.refuses(&host, port)) {
        let host = match hosts {
            Some(Scope::Target(..)) => format!("{host} port {port}"),
            _ => host,
        };
        record(EgressEvent::HostNotAllowed { host, allowed });
        let _ = conn
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    }
    let ips = match decide(egress, &host).await {
        Ok(ips) => ips,
        Err(event) => {
            record(event);
            let _ = conn
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        }
    };
    for ip in ips {
        let addr = SocketAddr::new(ip, port);
        let Ok(Ok(mut upstream)) =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await
        else {
            continue;
        };
        record(EgressEvent::Connected { host, addr });
        if conn
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_ok()
        {
            let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
        }
        return;
    }
    record(EgressEvent::Unreachable { host, port });
    let _ = conn
        .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        .await;
}
