//! A small command line over the loader, used by `bench/ebpf/run` (attachments and maps are
//! pinned, so each command can be a separate process, like an agent restarting).
//!
//! ```text
//! isolationctl attach   PIN_DIR VETH IP PROJECT ENV [WEB_PORT]
//! isolationctl detach   PIN_DIR VETH IP
//! isolationctl populate PIN_DIR PROJECTS        # 2 endpoints per project in 10.202/16 + rules
//! isolationctl counters PIN_DIR VETH
//! isolationctl stats    VETH                    # run_cnt and run_time_ns of the classifiers
//! ```

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use aya::programs::{SchedClassifier, tc::TcAttachType};
use ebpf::{
    ContainerEndpoint, DropReason, EndpointPolicy, Identity, Isolation, IsolationConfig, PairRule,
    Protocol,
};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let load = |dir: &str| -> Result<Isolation> {
        let config = IsolationConfig {
            pin_dir: dir.into(),
            ..Default::default()
        };
        Ok(Isolation::load(&config)?)
    };
    match a.as_slice() {
        ["attach", dir, veth, ip, project, env, rest @ ..] => {
            let identity = Identity::of(project, env);
            let policy = match rest {
                [port] => EndpointPolicy::web(identity, port.parse().context("web port")?),
                _ => EndpointPolicy::member(identity),
            };
            let ip = ip.parse().context("ip")?;
            load(dir)?.attach(&ContainerEndpoint {
                veth: veth.to_string(),
                ip,
                policy,
            })?;
        }
        ["detach", dir, veth, ip] => load(dir)?.detach(veth, ip.parse().context("ip")?)?,
        ["populate", dir, projects] => {
            let n: u32 = projects.parse().context("projects")?;
            let mut iso = load(dir)?;
            let base = u32::from(Ipv4Addr::new(10, 202, 0, 0));
            for i in 0..n {
                let id = Identity::of(&format!("bench-project-{i}"), "production");
                for k in 0..2 {
                    let ip = Ipv4Addr::from(base + 2 * i + k);
                    iso.set_endpoint(ip, &EndpointPolicy::internal(id, 5432))?;
                }
                let next = Identity::of(&format!("bench-project-{}", i + 1), "production");
                iso.allow(&PairRule {
                    from: id,
                    to: next,
                    port: Some((Protocol::Tcp, 5432)),
                })?;
            }
        }
        ["counters", dir, veth] => {
            let c = load(dir)?.counters(veth)?;
            println!(
                "out_bytes {} out_packets {} in_bytes {} in_packets {}",
                c.out_bytes, c.out_packets, c.in_bytes, c.in_packets
            );
            for r in DropReason::ALL {
                println!(
                    "drops {} out {} in {}",
                    r.as_str(),
                    c.drops_out(r),
                    c.drops_in(r)
                );
            }
        }
        ["stats", veth] => {
            for dir in [TcAttachType::Ingress, TcAttachType::Egress] {
                let (_, progs) = SchedClassifier::query_tcx(veth, dir)?;
                for p in progs {
                    println!(
                        "{} {} {}",
                        p.name_as_str().unwrap_or("?"),
                        p.run_count(),
                        p.run_time().as_nanos()
                    );
                }
            }
        }
        _ => bail!("usage: see the header of ebpf/examples/isolationctl.rs"),
    }
    Ok(())
}
