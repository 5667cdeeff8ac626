//! Route generations against the real `stackpad-proxy`: an update older than what the proxy
//! holds (a slow domain-verifier push after a newer deploy, a switch that lost the race)
//! changes nothing, across a restart too.

use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

use common::{Admin, Backend, ProxyProcess, authed, fast_health, upstream};
use proto::proxy::v1 as pb;

fn route(hosts: &[&str], generation: u64) -> pb::Route {
    pb::Route {
        route_id: "svc/default".into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        service_id: "svc".into(),
        allow_plain_http: true,
        generation,
        ..Default::default()
    }
}

/// What an upsert answered: the route the proxy holds, and whether a newer generation than the
/// one sent kept it unchanged.
struct Upserted {
    route: Option<pb::Route>,
    superseded: bool,
}

async fn upsert(admin: &mut Admin, route: pb::Route) -> anyhow::Result<Upserted> {
    let sent = route.generation;
    let held = admin
        .client
        .upsert_route(authed(pb::UpsertRouteRequest { route: Some(route) }))
        .await?
        .into_inner()
        .route;
    let superseded = sent != 0 && held.as_ref().is_none_or(|r| r.generation != sent);
    Ok(Upserted {
        route: held,
        superseded,
    })
}

fn switch(to: &Backend, route_generation: u64) -> pb::SwitchRequest {
    pb::SwitchRequest {
        service_id: "svc".into(),
        upstreams: vec![upstream(to)],
        drain_deadline_ms: 1_000,
        health_timeout_ms: 10_000,
        health_check: Some(fast_health()),
        route_generation,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_older_push_never_overwrites_a_newer_route_or_switch() -> anyhow::Result<()> {
    let old = Backend::start("old-deploy").await;
    let new = Backend::start("new-deploy").await;
    let mut proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;

    // The deploy's push (generation 10) carries a custom domain verified meanwhile; the domain
    // verifier's push built before it (generation 9) arrives late, without that domain.
    let deploy = upsert(&mut admin, route(&["app.test", "shop.example"], 10)).await?;
    assert!(!deploy.superseded);
    admin
        .client
        .switch(authed(switch(&new, 10)))
        .await
        .map_err(|s| anyhow::anyhow!("{s}"))?;
    let late = upsert(&mut admin, route(&["app.test"], 9)).await?;
    assert!(late.superseded);
    assert_eq!(late.route.unwrap().hosts, ["app.test", "shop.example"]);
    assert_eq!(
        common::get(&proxy, "shop.example", "/").await?.1,
        "new-deploy"
    );
    // The same generation again (a retry) and an unordered operator's change both apply; the
    // operator's keeps the held generation.
    assert!(
        !upsert(&mut admin, route(&["app.test", "shop.example"], 10))
            .await?
            .superseded
    );
    let operator = upsert(
        &mut admin,
        route(&["app.test", "shop.example", "x.test"], 0),
    )
    .await?;
    assert_eq!(operator.route.unwrap().generation, 10);

    // Two switches racing: the older (generation 11) waits for its set's health while the newer
    // (12) goes through; when the older's set turns healthy its swap is refused.
    old.healthy.store(false, Ordering::SeqCst);
    let mut racing = admin.client.clone();
    let older_request = switch(&old, 11);
    let older = tokio::spawn(async move { racing.switch(authed(older_request)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin
        .client
        .switch(authed(switch(&new, 12)))
        .await
        .map_err(|s| anyhow::anyhow!("{s}"))?;
    old.healthy.store(true, Ordering::SeqCst);
    let refused = older.await?.expect_err("the older switch must be refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
    assert!(refused.message().contains("superseded"), "{refused}");
    assert_eq!(common::get(&proxy, "app.test", "/").await?.1, "new-deploy");
    // And one arriving after the fact is refused before any health wait.
    let status = admin
        .client
        .switch(authed(switch(&old, 11)))
        .await
        .expect_err("stale switch");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);

    // A restart from the state file keeps what it held.
    proxy.restart().await?;
    let mut admin = proxy.admin().await?;
    let late = upsert(&mut admin, route(&["app.test"], 9)).await?;
    assert!(late.superseded);
    assert_eq!(
        common::get(&proxy, "shop.example", "/").await?.1,
        "new-deploy"
    );
    let listed = admin
        .client
        .list_routes(authed(pb::ListRoutesRequest {}))
        .await?
        .into_inner();
    assert_eq!(listed.routes[0].generation, 10);
    assert_eq!(listed.services[0].route_generation, 12);
    let status = admin
        .client
        .switch(authed(switch(&old, 11)))
        .await
        .expect_err("stale switch after restart");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    // Newer ones apply.
    assert!(
        !upsert(&mut admin, route(&["app.test"], 14))
            .await?
            .superseded
    );
    admin
        .client
        .switch(authed(switch(&old, 14)))
        .await
        .map_err(|s| anyhow::anyhow!("{s}"))?;
    assert_eq!(common::get(&proxy, "app.test", "/").await?.1, "old-deploy");

    // Removals are ordered too (a teardown's RemoveRoute carries its generation): an older one
    // changes nothing, a newer one removes the route and an older upsert cannot bring it back.
    let remove = |generation| {
        authed(pb::RemoveRouteRequest {
            route_id: "svc/default".into(),
            generation,
        })
    };
    let stale = admin.client.remove_route(remove(13)).await?.into_inner();
    assert!(!stale.removed);
    assert_eq!(common::get(&proxy, "app.test", "/").await?.1, "old-deploy");
    let removed = admin.client.remove_route(remove(15)).await?.into_inner();
    assert!(removed.removed);
    assert!(
        upsert(&mut admin, route(&["app.test"], 14))
            .await?
            .superseded
    );
    let listed = admin
        .client
        .list_routes(authed(pb::ListRoutesRequest {}))
        .await?
        .into_inner();
    assert!(listed.routes.is_empty(), "{:?}", listed.routes);
    Ok(())
}
