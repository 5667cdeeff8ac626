//! `stackpad-node`: parses its configuration and runs the daemon from the `runtime` library.

use std::process::ExitCode;
use std::sync::Arc;

use runtime::cli::{Command, parse, usage};
use runtime::config::Isolation;
use runtime::isolation::{IsolationDisabled, IsolationHook};
use runtime::isolation_ebpf::EbpfIsolation;
use runtime::logs::{LogSink, NoShipping};
use runtime::logship::{ClickHouseShipper, ShipperConfig};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("join") {
        return join(&args);
    }
    let config = match parse(&args, &|k| std::env::var(k).ok()) {
        Ok(Command::Run(c)) => *c,
        Ok(Command::Version) => {
            println!("stackpad-node {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Help(help)) => {
            print!("{help}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("stackpad-node: {e}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stackpad-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let isolation: Arc<dyn IsolationHook> = if config.isolation == Isolation::Ebpf {
        match EbpfIsolation::load(
            config.bpf_pin_dir.clone(),
            &config.subnet_pool,
            config.subnet_prefix,
        )
        .and_then(|ebpf| {
            let proxies = config
                .cluster
                .as_ref()
                .map(|c| c.proxy_addresses.as_slice());
            ebpf.register_proxies(proxies.unwrap_or_default())?;
            if let Some(cluster) = &config.cluster {
                let pools: Vec<String> = cluster.subnets.iter().map(|s| s.to_string()).collect();
                ebpf.deny_cluster_pools(&pools)?;
            }
            Ok(ebpf)
        }) {
            Ok(ebpf) => Arc::new(ebpf),
            Err(e) => {
                eprintln!("stackpad-node: {e} (set isolation = \"disabled\" to run without it)");
                return ExitCode::FAILURE;
            }
        }
    } else {
        Arc::new(IsolationDisabled)
    };
    let sink: Arc<dyn LogSink> = if config.clickhouse_url.is_empty() {
        Arc::new(NoShipping)
    } else {
        let shipper = ShipperConfig {
            clickhouse_url: config.clickhouse_url.clone(),
            database: config.clickhouse_database.clone(),
            node_id: config.node_id.clone(),
            spool_dir: config.state_dir.join("log-spool"),
            default_retention_days: config.log_retention_days,
            retention_days_by_organization: config
                .log_retention_days_by_organization
                .iter()
                .map(|(org, days)| (org.clone(), *days))
                .collect(),
            ..ShipperConfig::default()
        };
        if let Err(e) = shipper.validate() {
            eprintln!("stackpad-node: {e}");
            return ExitCode::FAILURE;
        }
        match runtime.block_on(async { ClickHouseShipper::start(shipper) }) {
            Ok(shipper) => Arc::new(shipper),
            Err(e) => {
                eprintln!("stackpad-node: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    match runtime.block_on(runtime::daemon::run(config, isolation, sink)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stackpad-node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `stackpad-node join ...`: joins the platform, writes the TLS files, prints the `[tls]` table.
fn join(args: &[String]) -> ExitCode {
    use clap::Parser;
    let argv = std::iter::once("stackpad-node join").chain(args[1..].iter().map(String::as_str));
    let join_args = match runtime::join::JoinArgs::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let joined = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(runtime::join::join(&join_args)),
        Err(e) => {
            eprintln!("stackpad-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match joined {
        Ok(j) => {
            println!("joined as {}", j.identity);
            println!(
                "[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}",
                j.files.cert, j.files.key, j.files.ca
            );
            let peers = runtime::join::wireguard_lines(&j.answer, "wg0");
            if !peers.is_empty() {
                println!("# WireGuard: the other nodes, as peers of this one (interface wg0)");
                for line in peers {
                    println!("{line}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stackpad-node join: {e}");
            ExitCode::FAILURE
        }
    }
}
