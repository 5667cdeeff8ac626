//! The isolation seam filled by the `ebpf` crate: tc programs on every container's host-side
//! veth enforce per-project isolation from policy held in pinned BPF maps.
//!
//! Identities are `(project, environment)`. A `web` container is reachable by the proxy on its
//! service port; the node (health checks) reaches any container on its service port. On one
//! machine both connect from the project bridge's gateway address, so each gateway is
//! registered with the PROXY and NODE roles when its first container attaches. In a cluster the
//! proxies connect over the private network from their own addresses (`cluster.proxy_addresses`):
//! those are registered with the PROXY role at start. The node's own addresses, 169.254.0.0/16
//! (cloud metadata) and the container pool are denied as destinations, and so are the other
//! nodes' pools: their containers are known one by one from control's pushed endpoint set
//! ([`IsolationHook::set_remote_endpoints`]), each with its identity, so the same project is
//! reachable across nodes and every other address of those pools is not.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

use ebpf::{Cidr, EndpointPolicy, Identity, Isolation, IsolationConfig, PairRule, Protocol, Roles};

use crate::isolation::{ContainerEndpoint, IsolationError, IsolationHook, RemoteEndpoint};

/// `stackpad.node.v1.ServiceType::Web`.
const SERVICE_TYPE_WEB: i32 = 1;

/// The identity of the node itself (bridge gateways: the proxy and the health checks).
fn node_identity() -> Identity {
    Identity::of("stackpad-node", "")
}

/// The policy of a container: web services are reachable by the proxy on their port.
fn policy_of(
    project: &str,
    environment: &str,
    service_type: i32,
    service_port: Option<u16>,
) -> EndpointPolicy {
    let identity = Identity::of(project, environment);
    match service_port {
        Some(port) if service_type == SERVICE_TYPE_WEB => EndpointPolicy::web(identity, port),
        port => EndpointPolicy {
            service_port: port,
            ..EndpointPolicy::member(identity)
        },
    }
}

/// eBPF isolation, loaded once per agent.
pub struct EbpfIsolation {
    loader: Mutex<Isolation>,
    pool: Cidr,
    subnet_prefix: u8,
    gateways: Mutex<HashSet<Ipv4Addr>>,
    /// The deny list as loaded (the other nodes' pools join it in a cluster).
    deny: Mutex<Vec<Cidr>>,
    /// Containers of other nodes registered from the pushed set, with their policy.
    remote: Mutex<HashMap<Ipv4Addr, EndpointPolicy>>,
}

impl std::fmt::Debug for EbpfIsolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfIsolation")
            .field("subnet_prefix", &self.subnet_prefix)
            .finish_non_exhaustive()
    }
}

/// Why the programs could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("eBPF isolation: {0}")]
pub struct LoadError(String);

impl EbpfIsolation {
    /// Loads (or reuses the pinned) programs and maps under `pin_dir`; `pool` is the container
    /// address pool, cut into `/subnet_prefix` project subnets.
    pub fn load(pin_dir: PathBuf, pool: &str, subnet_prefix: u8) -> Result<Self, LoadError> {
        let pool: Cidr = pool
            .parse()
            .map_err(|e| LoadError(format!("subnet_pool {pool:?}: {e}")))?;
        let mut deny_cidrs = vec![
            Cidr::new(Ipv4Addr::new(169, 254, 0, 0), 16).map_err(|e| LoadError(e.to_string()))?,
            pool,
        ];
        deny_cidrs.extend(ebpf::host_addresses().map_err(|e| LoadError(e.to_string()))?);
        let config = IsolationConfig {
            pin_dir,
            deny_cidrs: deny_cidrs.clone(),
            allow_cidrs: Vec::new(),
        };
        let loader = Isolation::load(&config).map_err(|e| LoadError(e.to_string()))?;
        Ok(Self {
            loader: Mutex::new(loader),
            pool,
            subnet_prefix,
            gateways: Mutex::new(HashSet::new()),
            deny: Mutex::new(deny_cidrs),
            remote: Mutex::new(HashMap::new()),
        })
    }

    /// Denies the other nodes' container pools as destinations (idempotent): an address there
    /// is reachable only once the pushed endpoint set names it with the same identity.
    pub fn deny_cluster_pools(&self, pools: &[String]) -> Result<(), LoadError> {
        let mut deny = self.deny.lock().unwrap_or_else(|p| p.into_inner());
        for pool in pools {
            let cidr: Cidr = pool
                .parse()
                .map_err(|e| LoadError(format!("cluster subnet {pool:?}: {e}")))?;
            if !deny.contains(&cidr) {
                deny.push(cidr);
            }
        }
        self.loader()
            .set_deny_list(&ebpf::DenyList::new(&deny, &[]))
            .map_err(|e| LoadError(format!("denying the cluster's pools: {e}")))
    }

    /// Registers the addresses the proxies of a cluster connect from: they reach web containers
    /// on their service port, nothing else (idempotent).
    pub fn register_proxies(&self, proxies: &[Ipv4Addr]) -> Result<(), LoadError> {
        let proxy = EndpointPolicy {
            identity: node_identity(),
            roles: Roles::PROXY,
            service_port: None,
        };
        let mut loader = self.loader();
        for address in proxies {
            loader
                .set_endpoint(*address, &proxy)
                .map_err(|e| LoadError(format!("registering proxy {address}: {e}")))?;
        }
        Ok(())
    }

    fn gateway(&self, ip: Ipv4Addr) -> Ipv4Addr {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.subnet_prefix))
            .unwrap_or(0);
        Ipv4Addr::from((u32::from(ip) & mask) + 1)
    }

    fn loader(&self) -> std::sync::MutexGuard<'_, Isolation> {
        self.loader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Traffic counters of a container's veth, in Prometheus text with its labels.
    pub fn counters(&self, host_veth: &str) -> Option<ebpf::Counters> {
        self.loader().counters(host_veth).ok()
    }
}

impl IsolationHook for EbpfIsolation {
    fn attach(&self, endpoint: &ContainerEndpoint) -> Result<(), IsolationError> {
        let fail = |reason: String| IsolationError {
            container_id: endpoint.container_id.clone(),
            reason,
        };
        if endpoint.ip.is_unspecified() {
            return Err(fail("the container has no address yet".into()));
        }
        let policy = policy_of(
            &endpoint.project_id,
            &endpoint.environment_id,
            endpoint.service_type,
            endpoint.service_port,
        );
        let gateway = self.gateway(endpoint.ip);
        let mut loader = self.loader();
        let mut gateways = self.gateways.lock().unwrap_or_else(|p| p.into_inner());
        if gateways.insert(gateway) {
            let node = EndpointPolicy {
                identity: node_identity(),
                roles: Roles::PROXY | Roles::NODE,
                service_port: None,
            };
            if let Err(e) = loader.set_endpoint(gateway, &node) {
                gateways.remove(&gateway);
                return Err(fail(format!("registering gateway {gateway}: {e}")));
            }
        }
        // Its network's DNS responder on the gateway (#15): port 53, nothing else of the node.
        let identity = Identity::of(&endpoint.project_id, &endpoint.environment_id);
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            let dns = PairRule {
                from: identity,
                to: node_identity(),
                port: Some((protocol, crate::network::dns::DNS_PORT)),
            };
            loader
                .allow(&dns)
                .map_err(|e| fail(format!("allowing dns to the gateway: {e}")))?;
        }
        let container = ebpf::ContainerEndpoint {
            veth: endpoint.host_veth.clone(),
            ip: endpoint.ip,
            policy,
        };
        loader.attach(&container).map_err(|e| fail(e.to_string()))
    }

    fn detach(&self, endpoint: &ContainerEndpoint) -> Result<(), IsolationError> {
        self.loader()
            .detach(&endpoint.host_veth, endpoint.ip)
            .map_err(|e| IsolationError {
                container_id: endpoint.container_id.clone(),
                reason: e.to_string(),
            })
    }

    fn describe(&self) -> &'static str {
        "eBPF isolation (tc programs per container veth, policy in pinned maps)"
    }

    fn set_remote_endpoints(&self, endpoints: &[RemoteEndpoint]) -> Result<usize, IsolationError> {
        let fail = |reason: String| IsolationError {
            container_id: "(cluster endpoints)".into(),
            reason,
        };
        let desired: HashMap<Ipv4Addr, EndpointPolicy> = endpoints
            .iter()
            .filter(|e| !self.pool.contains(e.ip))
            .map(|e| {
                let policy = policy_of(
                    &e.project_id,
                    &e.environment_id,
                    e.service_type,
                    e.service_port,
                );
                (e.ip, policy)
            })
            .collect();
        let mut remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        let mut loader = self.loader();
        // New and changed entries first (one atomic element update each), then the gone ones.
        for (ip, policy) in &desired {
            if remote.get(ip) != Some(policy) {
                loader
                    .set_endpoint(*ip, policy)
                    .map_err(|e| fail(format!("registering {ip}: {e}")))?;
                remote.insert(*ip, *policy);
            }
        }
        let gone: Vec<Ipv4Addr> = remote
            .keys()
            .filter(|ip| !desired.contains_key(ip))
            .copied()
            .collect();
        for ip in gone {
            loader
                .remove_endpoint(ip)
                .map_err(|e| fail(format!("forgetting {ip}: {e}")))?;
            remote.remove(&ip);
        }
        Ok(remote.len())
    }

    fn traffic_metrics(&self, containers: &[(String, Vec<(&'static str, String)>)]) -> String {
        let loader = self.loader();
        let rows: Vec<(Vec<(&str, String)>, ebpf::Counters)> = containers
            .iter()
            .filter_map(|(veth, labels)| Some((labels.clone(), loader.counters(veth).ok()?)))
            .collect();
        ebpf::render_prometheus(&rows)
    }
}
