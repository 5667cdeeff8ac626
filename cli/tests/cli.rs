//! The `stackpad` CLI against a real control plane on 127.0.0.1:0 (pipeline behind recording
//! fakes of the daemons): deploys and rollbacks; custom domains added, verified through
//! pebble-challtestsrv's DNS and removed; access logs searched in a ClickHouse database of the
//! test's own.

#[path = "../../control/tests/common/mod.rs"]
mod common;
mod runner;

use std::time::Duration;

use cli::exit;
use common::fakes::{Call, Fakes};
use common::log_rows::{requests, write_access_logs};
use common::{Harness, fake_clients};
use runner::{json_of, json_with, stackpad};
use serde_json::json;
use stackpad_tests::acme::{ChallTestSrv, CnameGuard};
use stackpad_tests::db::ClickHouseDb;
use stackpad_tests::unique_name;

fn id_in(output: &str) -> String {
    output
        .split(['(', ')', ' ', '\n'])
        .find(|w| uuid::Uuid::parse_str(w).is_ok())
        .unwrap_or_else(|| panic!("no id in {output:?}"))
        .to_owned()
}

#[tokio::test]
async fn login_create_deploy_list_and_rollback() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, token) = h.org("cli-org").await;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cli.json");

    let (code, out) = stackpad(&config, &["projects", "list"]).await;
    assert_eq!(code, exit::USAGE);
    assert!(out.contains("not logged in"), "{out}");
    let (code, out) = stackpad(&config, &["login", "--url", &h.url, "--token", "sp_wrong"]).await;
    assert_eq!(
        code,
        exit::REFUSED,
        "a bad token is refused at login: {out}"
    );
    let (code, out) = stackpad(&config, &["login", "--url", &h.url, "--token", &token]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cli-org"), "{out}");
    let login = json_of(&config, &["login", "--url", &h.url, "--token", &token]).await;
    assert_eq!(login["url"], h.url.as_str(), "{login}");
    assert_eq!(login["organization"]["name"], "cli-org", "{login}");
    assert!(
        login.get("token").is_none(),
        "the token is not printed: {login}"
    );

    let (code, out) = stackpad(&config, &["projects", "create", "shop"]).await;
    assert_eq!(code, 0, "{out}");
    let project = id_in(&out);
    let (_, out) = stackpad(&config, &["projects", "list"]).await;
    assert!(out.contains("shop") && out.contains(&project), "{out}");

    let (code, out) = stackpad(
        &config,
        &[
            "services",
            "create",
            "--project",
            &project,
            "--name",
            "web",
            "--image",
            "shop:v1",
            "--port",
            "8080",
            "--health-path",
            "/healthz",
            "--env",
            "MODE=prod",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    // Production hosts name the service, the project and the organization (#17).
    assert!(out.contains("https://web-shop-"), "{out}");
    let service = id_in(&out);

    let (code, out) = stackpad(&config, &["deploy", "--service", &service]).await;
    assert_eq!(code, 0, "{out}");
    for step in ["queued", "starting", "switching", "stopping_old", "ready"] {
        assert!(out.contains(step), "timeline shows {step}: {out}");
    }
    let first = id_in(&out);
    let (code, out) = stackpad(
        &config,
        &["deploy", "--service", &service, "--image", "shop:unhealthy"],
    )
    .await;
    assert_eq!(
        code,
        exit::DEPLOYMENT_FAILED,
        "a failed deployment exits 5: {out}"
    );
    assert!(out.contains("failed") && out.contains("boom"), "{out}");

    let (_, out) = stackpad(&config, &["deployments", "--service", &service]).await;
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("failed") && out.contains("ready"), "{out}");

    let (code, out) = stackpad(&config, &["rollback", &first]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is ready"), "{out}");
    // With --json: only the deployment as it ended.
    let rolled = json_of(&config, &["rollback", &first]).await;
    assert_eq!(rolled["state"], "ready", "{rolled}");
    assert_eq!(rolled["service_id"], service.as_str(), "{rolled}");
    // This control plane has no ClickHouse: the CLI says so (tests/logs.rs covers search).
    let (code, out) = stackpad(&config, &["logs", "--service", &service]).await;
    assert_eq!(code, exit::OTHER, "{out}");
    assert!(out.contains("log search is not configured"), "{out}");
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

#[tokio::test]
async fn a_verified_domain_joins_the_route_and_leaves_it_when_removed_through_the_cli()
-> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start_for_domains(fake_clients(&fakes)).await?;
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
    let refused = json_with(
        &config,
        &["domains", "verify", "--service", &service, &domain],
        exit::OTHER,
    )
    .await;
    assert_eq!(refused["domain"], domain.as_str(), "{refused}");
    assert_eq!(refused["verified"], false, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("CNAME"),
        "{refused}"
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
    let listed = json_of(&config, &["domains", "list", "--service", &service]).await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["domain"] == domain.as_str()),
        "{listed}"
    );

    // The next deployment's switch keeps it.
    let d = h.deploy(&token, &service, json!({})).await;
    let done = h.wait_terminal(&token, &d, Duration::from_secs(20)).await;
    assert_eq!(done["state"], "ready", "{done}");
    assert_eq!(routes(&fakes).last().unwrap(), &(both.clone(), both));

    let (code, out) = stackpad(
        &config,
        &["domains", "remove", "--service", &service, &domain, "--yes"],
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

    // The same commands with --json print the API's objects.
    let other = format!("{}.example.org", unique_name("api"));
    let added = json_of(&config, &["domains", "add", "--service", &service, &other]).await;
    assert_eq!(added["domain"], other.as_str(), "{added}");
    assert!(
        added["records"].as_array().is_some_and(|r| !r.is_empty()),
        "the DNS record to create: {added}"
    );
    let removed = json_of(
        &config,
        &["domains", "remove", "--service", &service, &other, "--yes"],
    )
    .await;
    assert_eq!(removed["removed"], other.as_str(), "{removed}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn logs_access_filters_and_prints_one_request_per_line_oldest_first() -> anyhow::Result<()> {
    let log_db = ClickHouseDb::create("cli_access").await?;
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.clickhouse_url = log_db.url().to_owned();
    config.clickhouse_database = log_db.name().to_owned();
    config.log_retention_interval_ms = 0;
    let h = Harness::start_with(db, &config, fake_clients(&Fakes::new())).await?;
    let (org, token) = h.org("access-a").await;
    let (_, service) = h
        .service(&token, json!({ "name": "web", "image": "x:1" }))
        .await;
    write_access_logs(&log_db, &requests(&org, &service)).await?;

    // `stackpad logs --access` with filters, oldest first, one request per line.
    let dir = tempfile::tempdir()?;
    let cli_config = dir.path().join("cli.json");
    let (code, out) = stackpad(&cli_config, &["login", "--url", &h.url, "--token", &token]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = stackpad(
        &cli_config,
        &[
            "logs",
            "--access",
            "--service",
            &service,
            "--status",
            "5xx",
            "--min-duration-ms",
            "400",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].ends_with(" 500 GET web.example.test/api/items/42 420.0ms 100B"),
        "{out}"
    );
    // 42, 43, 47, 48: 5xx (i % 5 in {2, 3}) and at least 400 ms (i >= 40).
    assert!(
        lines[3].ends_with(" 503 GET web.example.test/api/items/48 480.0ms 100B"),
        "{out}"
    );
    let page = json_of(
        &cli_config,
        &[
            "logs",
            "--access",
            "--service",
            &service,
            "--status",
            "5xx",
            "--min-duration-ms",
            "400",
        ],
    )
    .await;
    assert_eq!(page["requests"].as_array().unwrap().len(), 4, "{page}");
    h.stop().await;
    Ok(())
}
