//! Routing by host, wildcard and path prefix through the real binary; 404 and 503 pages;
//! forwarding headers; routes restored from the state file after a restart.

mod common;

use common::{Backend, ProxyProcess, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_wildcard_and_prefix_with_clear_404_and_503() -> anyhow::Result<()> {
    let app = Backend::start("app").await;
    let api = Backend::start("api").await;
    let wild = Backend::start("wild").await;
    let proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;
    admin
        .route("app", &["app.example.test"], "", "svc-app")
        .await?;
    admin
        .route("api", &["app.example.test"], "/api", "svc-api")
        .await?;
    admin
        .route("wild", &["*.example.test"], "", "svc-wild")
        .await?;
    admin
        .route("empty", &["empty.test"], "", "svc-empty")
        .await?;
    admin.switch("svc-app", &[&app], 0).await?;
    admin.switch("svc-api", &[&api], 0).await?;
    admin.switch("svc-wild", &[&wild], 0).await?;

    assert_eq!(
        get(&proxy, "app.example.test", "/").await?,
        (200, "app".into())
    );
    assert_eq!(
        get(&proxy, "APP.example.test:80", "/x").await?,
        (200, "app".into())
    );
    assert_eq!(
        get(&proxy, "app.example.test", "/api/users").await?,
        (200, "api".into())
    );
    assert_eq!(
        get(&proxy, "app.example.test", "/apix").await?,
        (200, "app".into())
    );
    assert_eq!(
        get(&proxy, "x.example.test", "/").await?,
        (200, "wild".into())
    );
    assert_eq!(
        get(&proxy, "a.b.example.test", "/api").await?,
        (200, "wild".into())
    );

    let (status, body) = get(&proxy, "unknown.test", "/").await?;
    assert_eq!(status, 404);
    assert!(
        body.contains("no route for host") && body.contains("unknown.test"),
        "{body}"
    );

    let req = b"GET / HTTP/1.1\r\nHost: empty.test\r\nConnection: close\r\n\r\n";
    let resp = common::raw(proxy.http, req, std::time::Duration::from_secs(5)).await?;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("retry-after: 5"),
        "{resp}"
    );
    assert!(resp.contains("no healthy upstream"), "{resp}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_set_and_spoofed_ones_replaced() -> anyhow::Result<()> {
    let app = Backend::start("app").await;
    let proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;
    admin.route("app", &["fwd.test"], "", "svc").await?;
    admin.switch("svc", &[&app], 0).await?;
    let req = b"GET / HTTP/1.1\r\nHost: fwd.test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
X-Forwarded-Host: evil.test\r\nX-Real-IP: 6.6.6.6\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
Connection: close, X-Secret\r\nX-Secret: 1\r\n\r\n";
    let resp = common::raw(proxy.http, req, std::time::Duration::from_secs(5)).await?;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let headers = app.seen.last_headers.lock().unwrap().clone();
    let get = |n: &str| {
        headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("x-forwarded-for"), ["127.0.0.1"], "{headers:?}");
    assert_eq!(get("x-forwarded-proto"), ["http"]);
    assert_eq!(get("x-forwarded-host"), ["fwd.test"]);
    assert!(get("x-real-ip").is_empty());
    assert!(
        get("keep-alive").is_empty(),
        "hop-by-hop keep-alive forwarded: {headers:?}"
    );
    assert!(get("proxy-connection").is_empty());
    assert!(
        get("x-secret").is_empty(),
        "connection-nominated header forwarded: {headers:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_routes_from_the_state_file() -> anyhow::Result<()> {
    let app = Backend::start("app").await;
    let mut proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;
    admin.route("app", &["restart.test"], "", "svc").await?;
    admin.switch("svc", &[&app], 0).await?;
    assert_eq!(get(&proxy, "restart.test", "/").await?, (200, "app".into()));
    drop(admin);

    proxy.restart().await?;
    // No admin call after the restart: the routes come from the state file alone.
    assert_eq!(get(&proxy, "restart.test", "/").await?, (200, "app".into()));
    let mut admin = proxy.admin().await?;
    let list = admin
        .client
        .list_routes(common::authed(proto::proxy::v1::ListRoutesRequest {}))
        .await?
        .into_inner();
    assert_eq!(list.routes.len(), 1);
    assert_eq!(list.services[0].active[0].address, app.addr.to_string());
    assert_eq!(list.services[0].generation, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_the_token_and_refuses_bad_routes() -> anyhow::Result<()> {
    let proxy = ProxyProcess::start().await?;
    let mut admin = proxy.admin().await?;
    let err = admin
        .client
        .list_routes(tonic::Request::new(proto::proxy::v1::ListRoutesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = admin
        .route("bad", &["Bad Host"], "", "svc")
        .await
        .unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().expect("a grpc status");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("bad") && status.message().contains("Bad Host"),
        "{status}"
    );
    Ok(())
}
