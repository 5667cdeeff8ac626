//! `stackpad-proxy routes list|set|switch|remove`: a client of the admin API.

use anyhow::Context;
use proto::proxy::v1 as pb;
use proto::proxy::v1::proxy_admin_client::ProxyAdminClient;
use tonic::Request;

use crate::args::{RoutesArgs, RoutesCommand, token};

pub fn routes(args: &RoutesArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
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

async fn run(args: &RoutesArgs) -> anyhow::Result<()> {
    let (route, switch) = args.requests();
    let conn = Conn {
        admin: args.admin.clone(),
        token: token(args.token_file.as_ref())?,
    };
    let mut client = conn.client().await?;
    match args.command {
        RoutesCommand::List => {
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
        RoutesCommand::Set => {
            let r = client
                .upsert_route(conn.request(pb::UpsertRouteRequest { route: Some(route) })?)
                .await?;
            let r = r.into_inner().route.unwrap_or_default();
            println!("route {} set", r.route_id);
        }
        RoutesCommand::Remove => {
            let removed = client
                .remove_route(conn.request(pb::RemoveRouteRequest {
                    route_id: route.route_id.clone(),
                    // The operator's removal is unordered (as `routes set`).
                    generation: 0,
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
        RoutesCommand::Switch => {
            let out = client.switch(conn.request(switch)?).await?.into_inner();
            println!(
                "switched: generation={} swap_after_us={} drained_after_us={} closed_at_deadline={}",
                out.generation,
                out.swap_after_us,
                out.drained_after_us,
                out.connections_closed_at_deadline
            );
        }
    }
    Ok(())
}
