//! `stackpad-proxy routes list|set|switch|remove`: a client of the admin API.

use std::path::PathBuf;

use anyhow::{Context, bail};
use proto::proxy::v1 as pb;
use proto::proxy::v1::proxy_admin_client::ProxyAdminClient;
use tonic::Request;

use crate::args::{Flags, USAGE, token};

pub fn routes(argv: &[String]) -> anyhow::Result<()> {
    let Some(command) = argv.first() else {
        bail!("routes needs a command\n{USAGE}")
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(command, &argv[1..]))
}

struct Conn {
    admin: String,
    token: String,
}

impl Conn {
    async fn client(&self) -> anyhow::Result<ProxyAdminClient<tonic::transport::Channel>> {
        let url = format!("http://{}", self.admin);
        ProxyAdminClient::connect(url.clone())
            .await
            .with_context(|| format!("connecting to the admin API at {url}"))
    }

    fn request<T>(&self, msg: T) -> anyhow::Result<Request<T>> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert("authorization", format!("Bearer {}", self.token).parse()?);
        Ok(req)
    }
}

async fn run(command: &str, argv: &[String]) -> anyhow::Result<()> {
    let mut flags = Flags::new(argv);
    let mut admin = "127.0.0.1:9180".to_owned();
    let mut token_file: Option<PathBuf> = None;
    let mut route = pb::Route::default();
    let mut switch = pb::SwitchRequest::default();
    let mut health = pb::HealthCheck::default();
    let mut health_set = false;
    while let Some(flag) = flags.next_flag()? {
        match flag {
            "--admin" => admin = flags.value(flag)?.into(),
            "--token-file" => token_file = Some(flags.value(flag)?.into()),
            "--id" => route.route_id = flags.value(flag)?.into(),
            "--host" => route.hosts.push(flags.value(flag)?.into()),
            "--prefix" => route.path_prefix = flags.value(flag)?.into(),
            "--service" => {
                let v = flags.value(flag)?;
                route.service_id = v.into();
                switch.service_id = v.into();
            }
            "--max-body" => {
                route.max_body_bytes = flags.value(flag)?.parse().context("--max-body")?
            }
            "--plain-http" => route.allow_plain_http = true,
            "--upstream" => {
                // ADDR[=DEPLOYMENT[=WEIGHT]]
                let v = flags.value(flag)?;
                let mut parts = v.splitn(3, '=');
                let address = parts.next().unwrap_or_default().into();
                let deployment_id = parts.next().unwrap_or_default().into();
                let weight = parts
                    .next()
                    .map(str::parse)
                    .transpose()
                    .context("--upstream weight")?
                    .unwrap_or(1);
                switch.upstreams.push(pb::Upstream {
                    address,
                    deployment_id,
                    weight,
                });
            }
            "--drain-ms" => {
                switch.drain_deadline_ms = flags.value(flag)?.parse().context("--drain-ms")?
            }
            "--skip-health" => switch.skip_health_wait = true,
            "--health-timeout-ms" => {
                switch.health_timeout_ms =
                    flags.value(flag)?.parse().context("--health-timeout-ms")?
            }
            "--health-path" => {
                health.path = flags.value(flag)?.into();
                health_set = true;
            }
            "--health-interval-ms" => {
                health.interval_ms = flags.value(flag)?.parse().context("--health-interval-ms")?;
                health_set = true;
            }
            "--healthy-threshold" => {
                health.healthy_threshold =
                    flags.value(flag)?.parse().context("--healthy-threshold")?;
                health_set = true;
            }
            "--unhealthy-threshold" => {
                health.unhealthy_threshold = flags
                    .value(flag)?
                    .parse()
                    .context("--unhealthy-threshold")?;
                health_set = true;
            }
            "--lb" => {
                let lb = match flags.value(flag)? {
                    "round-robin" => pb::LoadBalancing::RoundRobin,
                    "least-connections" => pb::LoadBalancing::LeastConnections,
                    other => bail!("--lb {other:?}: use round-robin or least-connections"),
                };
                switch.set_load_balancing(lb);
            }
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    if health_set {
        switch.health_check = Some(health);
    }
    let conn = Conn {
        admin,
        token: token(token_file.as_ref())?,
    };
    let mut client = conn.client().await?;
    match command {
        "list" => {
            let list = client
                .list_routes(conn.request(pb::ListRoutesRequest {})?)
                .await?
                .into_inner();
            for r in &list.routes {
                println!(
                    "route {} hosts={} prefix={:?} service={} max_body={}",
                    r.route_id,
                    r.hosts.join(","),
                    r.path_prefix,
                    r.service_id,
                    r.max_body_bytes
                );
            }
            for s in &list.services {
                let addrs = |u: &[pb::Upstream]| {
                    u.iter()
                        .map(|u| u.address.clone())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                println!(
                    "service {} generation={} active={} draining={}",
                    s.service_id,
                    s.generation,
                    addrs(&s.active),
                    addrs(&s.draining)
                );
            }
        }
        "set" => {
            let r = client
                .upsert_route(conn.request(pb::UpsertRouteRequest { route: Some(route) })?)
                .await?;
            let r = r.into_inner().route.unwrap_or_default();
            println!("route {} set", r.route_id);
        }
        "remove" => {
            let removed = client
                .remove_route(conn.request(pb::RemoveRouteRequest {
                    route_id: route.route_id.clone(),
                })?)
                .await?
                .into_inner()
                .removed;
            println!(
                "route {} {}",
                route.route_id,
                if removed { "removed" } else { "was not there" }
            );
        }
        "switch" => {
            let out = client.switch(conn.request(switch)?).await?.into_inner();
            println!(
                "switched: generation={} swap_after_us={} drained_after_us={} closed_at_deadline={}",
                out.generation,
                out.swap_after_us,
                out.drained_after_us,
                out.connections_closed_at_deadline
            );
        }
        other => bail!("unknown routes command {other:?}\n{USAGE}"),
    }
    Ok(())
}
