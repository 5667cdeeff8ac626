//! Per-project networks: one Linux bridge per project+environment with its own subnet, a
//! network namespace and veth per container, a hosts file naming every service of the network,
//! and the firewall that keeps projects apart and traffic on the node unless egress is allowed.

pub mod cluster;
pub mod dns;
pub mod host;
pub mod ipam;
pub mod subnet;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use host::EndpointSpec;
pub use ipam::{IpamFile, IpamState};
pub use subnet::Subnet;

use crate::error::{Result, RuntimeError};
use crate::spec::HealthSpec;

/// Every bridge this agent family creates starts with this (the firewall matches on it).
pub const BRIDGE_PREFIX: &str = "spb";
/// Host ends of container veths.
pub const VETH_PREFIX: &str = "spv";

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..11].to_owned()
}

/// The bridge of a project+environment (at most 15 characters, as Linux wants).
pub fn bridge_name(namespace: &str, project: &str, environment: &str) -> String {
    format!(
        "{BRIDGE_PREFIX}{}",
        short_hash(&[namespace, project, environment])
    )
}

/// The host end of a container's veth.
pub fn veth_name(container_id: &str) -> String {
    format!("{VETH_PREFIX}{}", short_hash(&[container_id]))
}

/// A container's place on its project network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub container_id: String,
    pub netns: String,
    pub netns_path: String,
    pub host_veth: String,
    pub bridge: String,
    pub ip: Ipv4Addr,
    pub subnet: Subnet,
    /// The network's hosts file, bind-mounted read-only at /etc/hosts.
    pub hosts_path: PathBuf,
}

/// Creates and removes container endpoints and the bridges under them.
#[derive(Debug)]
pub struct Networks {
    ipam: IpamFile,
    namespace: String,
    pool: Subnet,
    prefix: u8,
    run_dir: PathBuf,
    /// Serialises bridge creation/removal with the leases that keep bridges alive.
    bridges: tokio::sync::Mutex<()>,
    /// The DNS responders on the bridges' gateways (#15).
    dns: dns::Dns,
}

impl Networks {
    pub fn new(
        ipam_dir: &Path,
        run_dir: &Path,
        namespace: &str,
        pool: Subnet,
        prefix: u8,
    ) -> Result<Self> {
        Ok(Self {
            ipam: IpamFile::new(ipam_dir)?,
            namespace: namespace.to_owned(),
            pool,
            prefix,
            run_dir: run_dir.join("networks"),
            bridges: tokio::sync::Mutex::new(()),
            dns: dns::Dns::new(Arc::default()),
        })
    }

    /// Control's pushed endpoint set, read by the DNS responders (the gRPC service fills it).
    pub fn cluster_view(&self) -> Arc<cluster::ClusterView> {
        self.dns.view()
    }

    /// The resolver configuration of a network, bind-mounted read-only at /etc/resolv.conf.
    pub fn resolv_path(&self, bridge: &str) -> PathBuf {
        self.run_dir.join(bridge).join("resolv.conf")
    }

    /// Starts the DNS responder of every network this agent's namespace holds whose bridge
    /// is up (after a restart; [`Networks::attach`] starts the others). Must run inside a
    /// Tokio runtime.
    pub fn serve_dns(&self) -> Result<()> {
        let networks: Vec<(String, ipam::NetworkAlloc)> = self.ipam.update(|s| {
            Ok(s.networks
                .iter()
                .filter(|(_, n)| n.namespace == self.namespace && !n.project_id.is_empty())
                .map(|(b, n)| (b.clone(), n.clone()))
                .collect())
        })?;
        for (bridge, n) in networks {
            let names = n.names();
            self.serve_network_dns(&bridge, n.subnet, &n.project_id, &n.environment_name, names);
        }
        Ok(())
    }

    /// Answers the network's containers on its gateway (or updates what is answered); a
    /// responder that cannot listen is logged: the hosts file still names the network's own
    /// containers.
    fn serve_network_dns(
        &self,
        bridge: &str,
        subnet: Subnet,
        project: &str,
        environment_name: &str,
        names: Vec<(Vec<String>, Ipv4Addr)>,
    ) {
        let zone = dns::Zone {
            project_id: project.to_owned(),
            environment_name: environment_name.to_owned(),
            subnet,
            local: names,
        };
        if let Err(e) = self.dns.serve(bridge, subnet.gateway(), zone) {
            tracing::warn!(bridge, gateway = %subnet.gateway(), error = %e, "the network's DNS responder cannot listen");
        }
    }

    /// The hosts file of a network (bind-mounted read-only at /etc/hosts).
    pub fn hosts_path(&self, bridge: &str) -> PathBuf {
        self.run_dir.join(bridge).join("hosts")
    }

    /// Writes a network's hosts file in place (containers bind-mount the inode).
    fn write_hosts(&self, bridge: &str, content: &str) -> Result<()> {
        let path = self.hosts_path(bridge);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io(dir, e))?;
        }
        std::fs::write(&path, content).map_err(|e| RuntimeError::io(&path, e))
    }

    /// Writes a network's resolv.conf (its gateway's responder) unless it says that already.
    fn write_resolv(&self, bridge: &str, subnet: Subnet, environment_name: &str) -> Result<()> {
        let path = self.resolv_path(bridge);
        let content = dns::resolv_conf(subnet.gateway(), environment_name);
        if std::fs::read_to_string(&path).is_ok_and(|c| c == content) {
            return Ok(());
        }
        std::fs::write(&path, content).map_err(|e| RuntimeError::io(&path, e))
    }

    /// Gives the container an address on its project network and plugs it in. Idempotent:
    /// a retry gets the same address.
    pub async fn attach(
        &self,
        container_id: &str,
        project: &str,
        environment: &str,
        hostname: &str,
    ) -> Result<Endpoint> {
        let bridge = bridge_name(&self.namespace, project, environment);
        let environment_name = dns::environment_of(hostname);
        let (subnet, ip, hosts, names) = {
            let _guard = self.bridges.lock().await;
            let routed = ipam::routed_subnets();
            let (subnet, ip, hosts, names) = self.ipam.update(|s| {
                let subnet =
                    s.ensure_network(&bridge, &self.namespace, self.pool, self.prefix, &routed)?;
                let ip = s.lease(&bridge, container_id, hostname)?;
                if let Some(n) = s.networks.get_mut(&bridge) {
                    n.project_id = project.to_owned();
                    if !environment_name.is_empty() {
                        n.environment_name = environment_name.clone();
                    }
                }
                Ok((subnet, ip, s.hosts_file(&bridge), s.names(&bridge)))
            })?;
            if let Err(e) = host::ensure_bridge(&bridge, subnet).await {
                self.release(&bridge, container_id).await;
                return Err(e);
            }
            (subnet, ip, hosts, names)
        };
        let ep = Endpoint {
            container_id: container_id.to_owned(),
            netns: container_id.to_owned(),
            netns_path: host::netns_path(container_id),
            host_veth: veth_name(container_id),
            bridge: bridge.clone(),
            ip,
            subnet,
            hosts_path: self.hosts_path(&bridge),
        };
        let created = async {
            self.write_hosts(&bridge, &hosts)?;
            self.write_resolv(&bridge, subnet, &environment_name)?;
            self.serve_network_dns(&bridge, subnet, project, &environment_name, names);
            host::create_endpoint(&EndpointSpec {
                netns: ep.netns.clone(),
                host_veth: ep.host_veth.clone(),
                bridge: bridge.clone(),
                ip,
                subnet,
            })
            .await
        }
        .await;
        if let Err(e) = created {
            let _ = self.detach(container_id, &bridge).await;
            return Err(e);
        }
        Ok(ep)
    }

    /// Frees the lease, and the bridge with its subnet when it was the last one.
    async fn release(&self, bridge: &str, container_id: &str) {
        let _ = self.ipam.update(|s| {
            s.release(bridge, container_id);
            Ok(())
        });
    }

    /// Unplugs the container and gives its address back; removes the bridge when it was the
    /// network's last container. Absent parts are fine (idempotent).
    pub async fn detach(&self, container_id: &str, bridge: &str) -> Result<()> {
        host::delete_endpoint(container_id, &veth_name(container_id)).await?;
        let _guard = self.bridges.lock().await;
        let (empty, hosts, names) = self.ipam.update(|s| {
            s.release(bridge, container_id);
            let empty = s.drop_network_if_empty(bridge);
            Ok((empty, s.hosts_file(bridge), s.names(bridge)))
        })?;
        if empty {
            self.dns.stop(bridge);
            host::delete_bridge(bridge).await?;
            let _ = std::fs::remove_dir_all(self.run_dir.join(bridge));
        } else {
            self.write_hosts(bridge, &hosts)?;
            self.dns.set_local(bridge, names);
        }
        Ok(())
    }

    /// The address a container holds, if any.
    pub fn address_of(&self, bridge: &str, container_id: &str) -> Result<Option<Ipv4Addr>> {
        self.ipam.update(|s| {
            Ok(s.networks
                .get(bridge)
                .and_then(|n| n.leases.get(container_id))
                .map(|l| l.ip))
        })
    }

    /// Leases this agent's namespace holds: (bridge, container id).
    pub fn leases(&self) -> Result<Vec<(String, String)>> {
        self.ipam.update(|s| {
            Ok(s.networks
                .iter()
                .filter(|(_, n)| n.namespace == self.namespace)
                .flat_map(|(b, n)| n.leases.keys().map(move |c| (b.clone(), c.clone())))
                .collect())
        })
    }

    /// Bridges this agent's namespace owns according to the allocation table.
    pub fn bridges(&self) -> Result<Vec<String>> {
        self.ipam.update(|s| {
            Ok(s.networks
                .iter()
                .filter(|(_, n)| n.namespace == self.namespace)
                .map(|(b, _)| b.clone())
                .collect())
        })
    }

    /// The pool subnets are cut from.
    pub fn pool(&self) -> Subnet {
        self.pool
    }
}

/// What the agent asks of the node's network for its containers: plug one in and out, the
/// addresses it holds, and reaching it for its health check. [`Networks`] is the real one
/// (bridges, veths and namespaces through iproute2, the machine-wide address table, TCP/HTTP
/// probes); the agent's unit tests use a recording fake.
pub trait ContainerNetwork: Send + Sync + std::fmt::Debug + 'static {
    /// Gives the container an address on its project network and plugs it in (idempotent).
    fn attach(
        &self,
        container_id: &str,
        project: &str,
        environment: &str,
        hostname: &str,
    ) -> impl Future<Output = Result<Endpoint>> + Send;
    /// Unplugs the container and frees its address (absent parts are fine).
    fn detach(&self, container_id: &str, bridge: &str) -> impl Future<Output = Result<()>> + Send;
    /// The hosts file of a network (bind-mounted read-only at /etc/hosts).
    fn hosts_path(&self, bridge: &str) -> PathBuf;
    /// The address a container holds, if any.
    fn address_of(&self, bridge: &str, container_id: &str) -> Result<Option<Ipv4Addr>>;
    /// Leases this agent's namespace holds: (bridge, container id).
    fn leases(&self) -> Result<Vec<(String, String)>>;
    /// Whether the container's network namespace exists (it does not survive a reboot).
    fn is_plugged_in(&self, container_id: &str) -> bool;
    /// One health probe of the container at `ip`; `Err` says what was seen.
    fn probe(
        &self,
        ip: Ipv4Addr,
        spec: &HealthSpec,
    ) -> impl Future<Output = std::result::Result<(), String>> + Send;
}

impl ContainerNetwork for Networks {
    async fn attach(
        &self,
        container_id: &str,
        project: &str,
        environment: &str,
        hostname: &str,
    ) -> Result<Endpoint> {
        Networks::attach(self, container_id, project, environment, hostname).await
    }

    async fn detach(&self, container_id: &str, bridge: &str) -> Result<()> {
        Networks::detach(self, container_id, bridge).await
    }

    fn hosts_path(&self, bridge: &str) -> PathBuf {
        Networks::hosts_path(self, bridge)
    }

    fn address_of(&self, bridge: &str, container_id: &str) -> Result<Option<Ipv4Addr>> {
        Networks::address_of(self, bridge, container_id)
    }

    fn leases(&self) -> Result<Vec<(String, String)>> {
        Networks::leases(self)
    }

    fn is_plugged_in(&self, container_id: &str) -> bool {
        Path::new(&host::netns_path(container_id)).exists()
    }

    async fn probe(&self, ip: Ipv4Addr, spec: &HealthSpec) -> std::result::Result<(), String> {
        crate::health::probe(ip, spec).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_limits_and_differ() {
        let a = bridge_name("stackpad", "p1", "prod");
        let b = bridge_name("stackpad", "p1", "staging");
        assert!(a.len() <= 15 && a.starts_with(BRIDGE_PREFIX));
        assert_ne!(a, b);
        assert_eq!(veth_name("sp-abc").len(), 14);
    }
}
