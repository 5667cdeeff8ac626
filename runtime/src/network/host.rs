//! The host side of container networking, through iproute2 and nftables: bridges, network
//! namespaces, veth pairs, addresses, routes and the forward/egress firewall.

use std::net::Ipv4Addr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::Subnet;
use crate::config::ClusterConfig;
use crate::error::{Result, RuntimeError};

/// Where a container's network endpoint lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub netns: String,
    pub host_veth: String,
    pub bridge: String,
    pub ip: Ipv4Addr,
    pub subnet: Subnet,
}

/// Runs `ip`/`nft` with a batch on stdin; the error names the subject and quotes stderr.
async fn run(program: &str, args: &[&str], stdin: &str, subject: &str) -> Result<()> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RuntimeError::network(subject, format!("cannot run {program}: {e}")))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .await
            .map_err(|e| RuntimeError::network(subject, format!("{program} stdin: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| RuntimeError::network(subject, format!("{program}: {e}")))?;
    if !out.status.success() {
        return Err(RuntimeError::network(
            subject,
            format!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// Names of the links of the calling thread's network namespace. `/proc/self/net/dev` follows
/// the namespace the agent runs in; `/sys/class/net` shows the one sysfs was mounted in, which is
/// not the agent's when it is started with `nsenter --net` (a node of `scripts/cluster`).
fn link_names() -> Vec<String> {
    std::fs::read_to_string("/proc/self/net/dev")
        .map(|text| parse_net_dev(&text))
        .unwrap_or_default()
}

/// The interface names of a `/proc/net/dev` table (two header lines, then `name: counters`).
fn parse_net_dev(text: &str) -> Vec<String> {
    text.lines()
        .skip(2)
        .filter_map(|line| Some(line.split_once(':')?.0.trim().to_owned()))
        .filter(|name| !name.is_empty())
        .collect()
}

fn link_exists(name: &str) -> bool {
    link_names().iter().any(|n| n == name)
}

pub fn netns_path(netns: &str) -> String {
    format!("/run/netns/{netns}")
}

/// Creates the bridge with the subnet's gateway address, if it is not there yet.
pub async fn ensure_bridge(bridge: &str, subnet: Subnet) -> Result<()> {
    if link_exists(bridge) {
        return Ok(());
    }
    let batch = format!(
        "link add {bridge} type bridge\naddr replace {}/{} dev {bridge}\nlink set {bridge} up\n",
        subnet.gateway(),
        subnet.prefix
    );
    match run("ip", &["-batch", "-"], &batch, bridge).await {
        // Lost a race with another deploy of the same project: fine if it is there now.
        Err(_) if link_exists(bridge) => {}
        other => other?,
    }
    allow_intra_bridge(bridge).await
}

pub async fn delete_bridge(bridge: &str) -> Result<()> {
    if !link_exists(bridge) {
        return Ok(());
    }
    run("ip", &["link", "del", bridge], "", bridge).await?;
    let cmd = format!(
        "delete element inet stackpad intra {}\n",
        intra_element(bridge)
    );
    // Absent element (firewall reinstalled since) is fine.
    let _ = run("nft", &["-f", "-"], &cmd, bridge).await;
    Ok(())
}

/// A network namespace with a veth into the bridge, the address and the default route.
pub async fn create_endpoint(ep: &EndpointSpec) -> Result<()> {
    let _ = delete_endpoint(&ep.netns, &ep.host_veth).await;
    let host = format!(
        "netns add {ns}\nlink add {veth} type veth peer name eth0 netns {ns}\nlink set {veth} master {br} up\n",
        ns = ep.netns,
        veth = ep.host_veth,
        br = ep.bridge
    );
    run("ip", &["-batch", "-"], &host, &ep.netns).await?;
    let inner = format!(
        "link set lo up\naddr add {ip}/{p} dev eth0\nlink set eth0 up\nroute add default via {gw}\n",
        ip = ep.ip,
        p = ep.subnet.prefix,
        gw = ep.subnet.gateway()
    );
    if let Err(e) = run("ip", &["-n", &ep.netns, "-batch", "-"], &inner, &ep.netns).await {
        let _ = delete_endpoint(&ep.netns, &ep.host_veth).await;
        return Err(e);
    }
    Ok(())
}

/// Removes the veth (both ends) and the namespace; absent parts are fine.
pub async fn delete_endpoint(netns: &str, host_veth: &str) -> Result<()> {
    if link_exists(host_veth) {
        run("ip", &["link", "del", host_veth], "", host_veth).await?;
    }
    if std::path::Path::new(&netns_path(netns)).exists() {
        run("ip", &["netns", "del", netns], "", netns).await?;
    }
    Ok(())
}

/// Names of links (bridges, veths) starting with `prefix`.
pub fn links_with_prefix(prefix: &str) -> Vec<String> {
    link_names()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Names of network namespaces under /run/netns starting with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// The nftables rules every project bridge lives under: no forwarding between project
/// bridges, nothing in from outside, no new connections from containers to the host itself,
/// and out to the world only when egress is allowed
/// (masqueraded). Traffic inside one bridge passes: with `bridge-nf-call-iptables` on, bridged
/// frames cross this forward hook too, so each bridge is listed in the `intra` set.
/// Idempotent and safe to run while other agents add set elements (the set is never flushed).
///
/// In a cluster (`cluster`), connections from the private interface may reach the project
/// bridges (the proxies and other nodes' containers: the eBPF programs on each container's veth
/// decide who may reach whom), replies go back over it, and containers may open connections
/// to the other nodes' container pools, nothing else over it.
pub fn firewall_rules(
    bridge_prefix: &str,
    pool: Subnet,
    allow_egress: bool,
    cluster: Option<&ClusterConfig>,
) -> String {
    let p = format!("\"{bridge_prefix}*\"");
    let mut out = String::from(
        "add table inet stackpad\n\
         add set inet stackpad intra { type ifname . ifname; }\n\
         add chain inet stackpad forward { type filter hook forward priority filter; policy accept; }\n\
         flush chain inet stackpad forward\n\
         add chain inet stackpad postrouting { type nat hook postrouting priority srcnat; policy accept; }\n\
         flush chain inet stackpad postrouting\n\
         add chain inet stackpad input { type filter hook input priority filter; policy accept; }\n\
         flush chain inet stackpad input\n",
    );
    // Containers reach none of the host's own services; answers to the host's connections
    // (health checks, the proxy) pass.
    // Except their network's DNS responder on its gateway (#15, in the pool).
    out.push_str(&format!(
        "add rule inet stackpad input iifname {p} ct state established,related accept\n\
         add rule inet stackpad input iifname {p} ip daddr {pool} meta l4proto {{ tcp, udp }} th dport 53 accept\n\
         add rule inet stackpad input iifname {p} drop\n"
    ));
    let rule = |r: String| format!("add rule inet stackpad forward {r}\n");
    out.push_str(&rule("iifname . oifname @intra accept".into()));
    out.push_str(&rule(format!("iifname {p} oifname {p} drop")));
    out.push_str(&rule(format!(
        "oifname {p} ct state established,related accept"
    )));
    if let Some(cluster) = cluster {
        let wg = format!("\"{}\"", cluster.interface);
        out.push_str(&rule(format!("iifname {wg} oifname {p} accept")));
        out.push_str(&rule(format!(
            "iifname {p} oifname {wg} ct state established,related accept"
        )));
        if !cluster.subnets.is_empty() {
            let subnets: Vec<String> = cluster.subnets.iter().map(|s| s.to_string()).collect();
            out.push_str(&rule(format!(
                "iifname {p} oifname {wg} ip daddr {{ {} }} accept",
                subnets.join(", ")
            )));
        }
    }
    out.push_str(&rule(format!("oifname {p} drop")));
    if allow_egress {
        out.push_str(&rule(format!("iifname {p} accept")));
        out.push_str(&format!(
            "add rule inet stackpad postrouting ip saddr {pool} oifname != {p} masquerade\n"
        ));
    }
    out.push_str(&rule(format!("iifname {p} drop")));
    out
}

/// The set element that lets a bridge's own traffic through the forward hook.
fn intra_element(bridge: &str) -> String {
    format!("{{ \"{bridge}\" . \"{bridge}\" }}")
}

/// Lets traffic within `bridge` pass the firewall.
pub async fn allow_intra_bridge(bridge: &str) -> Result<()> {
    let cmd = format!(
        "add element inet stackpad intra {}\n",
        intra_element(bridge)
    );
    run("nft", &["-f", "-"], &cmd, bridge).await
}

/// Installs [`firewall_rules`], lists every existing project bridge in the `intra` set, and,
/// with egress or in a cluster, turns on IPv4 forwarding.
pub async fn install_firewall(
    bridge_prefix: &str,
    pool: Subnet,
    allow_egress: bool,
    cluster: Option<&ClusterConfig>,
) -> Result<()> {
    let mut rules = firewall_rules(bridge_prefix, pool, allow_egress, cluster);
    for bridge in links_with_prefix(bridge_prefix) {
        rules.push_str(&format!(
            "add element inet stackpad intra {}\n",
            intra_element(&bridge)
        ));
    }
    run("nft", &["-f", "-"], &rules, "nftables table inet stackpad").await?;
    if allow_egress || cluster.is_some() {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| RuntimeError::io("/proc/sys/net/ipv4/ip_forward", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firewall_drops_cross_project_and_egress_by_default() {
        let pool: Subnet = "10.200.0.0/16".parse().unwrap();
        let closed = firewall_rules("spb", pool, false, None);
        assert!(closed.contains("iifname \"spb*\" oifname \"spb*\" drop"));
        let intra = closed.find("@intra accept").unwrap();
        assert!(
            intra < closed.find("oifname \"spb*\" drop").unwrap(),
            "same-bridge accept comes first"
        );
        assert!(closed.contains("iifname \"spb*\" drop"));
        assert!(!closed.contains("masquerade"));
        assert!(closed.contains("add rule inet stackpad input iifname \"spb*\" drop"));
        let open = firewall_rules("spb", pool, true, None);
        assert!(open.contains("ip saddr 10.200.0.0/16 oifname != \"spb*\" masquerade"));
        assert!(open.contains("iifname \"spb*\" accept"));
        assert!(!closed.contains("wg0"));
    }

    #[test]
    fn in_a_cluster_the_private_interface_reaches_the_bridges_and_the_other_pools_only() {
        let pool: Subnet = "10.96.16.0/20".parse().unwrap();
        let cluster = ClusterConfig {
            interface: "wg0".into(),
            proxy_addresses: vec![Ipv4Addr::new(10, 77, 0, 1)],
            subnets: vec!["10.96.32.0/20".parse().unwrap()],
        };
        let rules = firewall_rules("spb", pool, false, Some(&cluster));
        let inbound = rules
            .find("iifname \"wg0\" oifname \"spb*\" accept")
            .expect("the private interface reaches the bridges");
        assert!(inbound < rules.find("forward oifname \"spb*\" drop").unwrap());
        let out = rules
            .find("iifname \"spb*\" oifname \"wg0\" ip daddr { 10.96.32.0/20 } accept")
            .expect("containers reach the other pools");
        assert!(
            out < rules
                .find("add rule inet stackpad forward iifname \"spb*\" drop")
                .unwrap()
        );
        assert!(
            rules.contains("iifname \"spb*\" oifname \"wg0\" ct state established,related accept")
        );
        assert!(!rules.contains("masquerade"));
    }

    #[test]
    fn link_names_come_from_the_namespace_table() {
        let table = "Inter-|   Receive                 |  Transmit\n \
                     face |bytes    packets errs drop|bytes    packets\n    \
                     lo: 1 2 3 4 5 6\n spk0w2: 7 8 9 1 2 3\nspb1234567890a:1 2 3 4 5 6\n";
        assert_eq!(parse_net_dev(table), vec!["lo", "spk0w2", "spb1234567890a"]);
        assert!(link_names().iter().any(|n| n == "lo"));
    }
}
