//! The custom domain API and CLI against a real control plane (real PostgreSQL, resolving
//! through pebble-challtestsrv's DNS) with recording fakes of the daemons: names are validated
//! and owned by one service; a verified domain joins the service's route and certificate hosts
//! (also on the next deploy) and leaves both when removed.

mod common;

use std::time::Duration;

use clap::Parser;
use common::fakes::{Call, Fakes};
use common::{Harness, TestDb, fake_clients};
use control::cli::{Cli, run};
use serde_json::{Value, json};
use stackpad_tests::acme::{ChallTestSrv, CnameGuard};
use stackpad_tests::unique_name;

async fn start(fakes: &Fakes) -> anyhow::Result<Harness> {
    let db = TestDb::create().await?;
    let mut config = common::config(&db);
    config.apps_domain = format!("{}.stackpad.test", unique_name("apps"));
    config.dns_resolver = ChallTestSrv::default().dns;
    Harness::start_with(db, &config, fake_clients(fakes)).await
}

fn refused(status: u16, v: &Value, code: u16, field: &str, text: &str) {
    assert_eq!(status, code, "{v}");
    if code == 422 {
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(text),
        "{message:?} should contain {text:?}"
    );
}

#[tokio::test]
async fn domains_are_validated_owned_by_one_service_and_listed() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = start(&fakes).await?;
    let (_, a) = h.org("org-a").await;
    let (_, b) = h.org("org-b").await;
    let (_, web) = h.service(&a, json!({ "name": "web", "image": "i" })).await;
    let (_, api) = h.service(&a, json!({ "name": "api", "image": "i" })).await;
    let (_, worker) = h
        .service(
            &a,
            json!({ "name": "jobs", "kind": "worker", "image": "i" }),
        )
        .await;
    let (_, other) = h.service(&b, json!({ "name": "web", "image": "i" })).await;
    let add = |service: &str| format!("/services/{service}/domains");
    let (_, s) = h.call("GET", &format!("/services/{web}"), &a, None).await;
    let platform_host = s["hosts"][0].as_str().unwrap().to_owned();
    let apps = platform_host.split_once('.').unwrap().1.to_owned();

    for (domain, text) in [
        ("*.example.com", "wildcards cannot be custom domains"),
        ("Bad Domain", "not a lower-case domain name"),
        ("localhost", "not a lower-case domain name"),
        (platform_host.as_str(), "under the platform domain"),
        (apps.as_str(), "under the platform domain"),
    ] {
        let (status, v) = h
            .call("POST", &add(&web), &a, Some(json!({ "domain": domain })))
            .await;
        refused(status, &v, 422, "domain", text);
    }
    let (status, v) = h
        .call(
            "POST",
            &add(&worker),
            &a,
            Some(json!({ "domain": "x.example.com" })),
        )
        .await;
    refused(
        status,
        &v,
        422,
        "domain",
        "only web services take custom domains",
    );
    let (status, v) = h.call("POST", &add(&web), &a, Some(json!({}))).await;
    refused(status, &v, 422, "domain", "missing field");

    let domain = format!("{}.example.com", unique_name("shop"));
    let (status, d) = h
        .call(
            "POST",
            &add(&web),
            &a,
            Some(json!({ "domain": domain.to_uppercase() + "." })),
        )
        .await;
    assert_eq!(status, 201, "{d}");
    assert_eq!(d["domain"], domain.as_str(), "stored normalized: {d}");
    assert_eq!(d["status"], "pending");
    assert_eq!(
        d["records"],
        json!([{ "type": "CNAME", "name": domain, "value": platform_host }])
    );

    let (status, v) = h
        .call("POST", &add(&web), &a, Some(json!({ "domain": domain })))
        .await;
    refused(status, &v, 409, "", "already added to this service");
    let (status, v) = h
        .call("POST", &add(&api), &a, Some(json!({ "domain": domain })))
        .await;
    refused(
        status,
        &v,
        409,
        "",
        &format!("already added to service {web}"),
    );
    let (status, v) = h
        .call("POST", &add(&other), &b, Some(json!({ "domain": domain })))
        .await;
    refused(status, &v, 409, "", "claimed by another organization");
    assert!(!v.to_string().contains(&web), "leaks the owner: {v}");
    let (status, _) = h.call("GET", &add(&web), &b, None).await;
    assert_eq!(status, 404, "another organization's service");
    let (status, _) = h
        .call("POST", &format!("{}/{domain}/verify", add(&web)), &b, None)
        .await;
    assert_eq!(status, 404);

    let (_, list) = h.call("GET", &add(&web), &a, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (status, _) = h
        .call("DELETE", &format!("{}/{domain}", add(&web)), &a, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = h
        .call("DELETE", &format!("{}/{domain}", add(&web)), &a, None)
        .await;
    assert_eq!(status, 404);
    let (_, list) = h.call("GET", &add(&web), &a, None).await;
    assert_eq!(list["items"], json!([]));
    // Free again: another organization may now claim it.
    let (status, v) = h
        .call("POST", &add(&other), &b, Some(json!({ "domain": domain })))
        .await;
    assert_eq!(status, 201, "{v}");
    h.stop().await;
    Ok(())
}

fn routes(fakes: &Fakes) -> Vec<(Vec<String>, Vec<String>)> {
    fakes
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Route {
                hosts,
                certificate_hosts,
            } => Some((hosts, certificate_hosts)),
            _ => None,
        })
        .collect()
}

async fn stackpad(config: &std::path::Path, args: &[&str]) -> (i32, String) {
    let mut argv = vec!["stackpad", "--config", config.to_str().unwrap()];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("arguments parse");
    let mut out = Vec::new();
    let code = match run(cli, &mut out).await {
        Ok(code) => code,
        Err(e) => {
            out.extend_from_slice(format!("error: {e}").as_bytes());
            2
        }
    };
    (code, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn a_verified_domain_joins_the_route_and_leaves_it_when_removed_through_the_cli()
-> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = start(&fakes).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, token) = h.org("org-routes").await;
    let (_, service) = h
        .service(&token, json!({ "name": "web", "image": "i:1" }))
        .await;
    let d = h.deploy(&token, &service, json!({})).await;
    let done = h.wait_terminal(&token, &d, Duration::from_secs(20)).await;
    assert_eq!(done["state"], "ready", "{done}");
    let (_, s) = h
        .call("GET", &format!("/services/{service}"), &token, None)
        .await;
    let platform_host = s["hosts"][0].as_str().unwrap().to_owned();
    assert_eq!(
        routes(&fakes).last().unwrap(),
        &(vec![platform_host.clone()], vec![platform_host.clone()])
    );

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cli.json");
    let (code, out) = stackpad(&config, &["login", "--url", &h.url, "--token", &token]).await;
    assert_eq!(code, 0, "{out}");
    let domain = format!("{}.example.org", unique_name("www"));
    let _cleanup = CnameGuard {
        host: domain.clone(),
    };
    let (code, out) = stackpad(&config, &["domains", "add", "--service", &service, &domain]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{domain}  CNAME  {platform_host}")),
        "{out}"
    );
    let (code, out) = stackpad(
        &config,
        &["domains", "verify", "--service", &service, &domain],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("not verified")
            && out.contains(&format!("expected `{domain} CNAME {platform_host}`")),
        "{out}"
    );
    let before = routes(&fakes).len();

    ChallTestSrv::default()
        .set_cname(&domain, &platform_host)
        .await?;
    let (code, out) = stackpad(
        &config,
        &["domains", "verify", "--service", &service, &domain],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified"), "{out}");
    let both = vec![platform_host.clone(), domain.clone()];
    let after = routes(&fakes);
    assert_eq!(after.len(), before + 1, "one route push on verification");
    assert_eq!(after.last().unwrap(), &(both.clone(), both.clone()));
    let (_, out) = stackpad(&config, &["domains", "list", "--service", &service]).await;
    assert!(out.contains(&domain) && out.contains("verified"), "{out}");

    // The next deployment's switch keeps it.
    let d = h.deploy(&token, &service, json!({})).await;
    let done = h.wait_terminal(&token, &d, Duration::from_secs(20)).await;
    assert_eq!(done["state"], "ready", "{done}");
    assert_eq!(routes(&fakes).last().unwrap(), &(both.clone(), both));

    let (code, out) = stackpad(
        &config,
        &["domains", "remove", "--service", &service, &domain],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        routes(&fakes).last().unwrap(),
        &(vec![platform_host.clone()], vec![platform_host.clone()])
    );
    assert_eq!(
        fakes.calls().last().unwrap(),
        &Call::Disallow {
            domain: domain.clone()
        }
    );
    h.stop().await;
    Ok(())
}
