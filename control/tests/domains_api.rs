//! The custom domain API against a real control plane (real PostgreSQL, resolving through
//! pebble-challtestsrv's DNS) with recording fakes of the daemons: names are validated and
//! owned by one service; DNS without an answer changes no status, and a route change the proxy
//! did not take is applied at the next check. (A verified domain joining the route and leaving
//! it, driven through the CLI, is in cli/tests/cli.rs.)

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fakes::{Call, Fakes};
use common::{Harness, fake_clients};
use control::domains::Answer;
use control::domains::resolver::{DnsLookup, LookupError};
use control::domains::verifier::{DomainSettings, Verifier};
use serde_json::{Value, json};
use stackpad_tests::unique_name;

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
    let h = Harness::start_for_domains(fake_clients(&fakes)).await?;
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

/// DNS answers scripted by the test.
#[derive(Debug, Default)]
struct ScriptedDns {
    next: std::sync::Mutex<Option<Result<Answer, LookupError>>>,
}

#[async_trait::async_trait]
impl DnsLookup for ScriptedDns {
    async fn lookup(&self, _: &str) -> Result<Answer, LookupError> {
        self.next
            .lock()
            .unwrap()
            .clone()
            .expect("an answer scripted")
    }
}

#[tokio::test]
async fn dns_without_an_answer_keeps_the_status_and_a_proxy_failure_is_retried_next_check()
-> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start_for_domains(fake_clients(&fakes)).await?;
    h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let (_, token) = h.org("org-verifier").await;
    let (_, service) = h
        .service(&token, json!({ "name": "web", "image": "i:1" }))
        .await;
    let d = h.deploy(&token, &service, json!({})).await;
    let done = h.wait_terminal(&token, &d, Duration::from_secs(20)).await;
    assert_eq!(done["state"], "ready", "{done}");
    let domain = format!("{}.example.net", unique_name("api"));
    let (status, added) = h
        .call(
            "POST",
            &format!("/services/{service}/domains"),
            &token,
            Some(json!({ "domain": domain })),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    let target = added["target"].as_str().unwrap().to_owned();

    let dns = Arc::new(ScriptedDns::default());
    let log = common::fakes::Log::default();
    let proxy = common::fakes::FlakyProxy {
        inner: common::fakes::FakeProxy { log: log.clone() },
        ..Default::default()
    };
    let verifier = Verifier::new(
        h.store(),
        dns.clone(),
        Some(Arc::new(proxy.clone())),
        DomainSettings {
            apps_domain: target.split_once('.').unwrap().1.into(),
            ingress_ips: vec![],
        },
    );
    let row = || async {
        h.store()
            .all_domains()
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.domain == domain)
            .unwrap()
    };
    let answer = |a: Result<Answer, LookupError>| *dns.next.lock().unwrap() = Some(a);

    answer(Ok(Answer::Cname(vec![format!("{target}.")])));
    let checked = verifier.check(&row().await).await?;
    assert_eq!(checked.domain.status.as_str(), "verified");
    assert!(checked.mismatch.is_none());

    // DNS gives no answer: still verified, the error recorded, routing untouched.
    let routes_before = log.lock().unwrap().len();
    answer(Err(LookupError {
        domain: domain.clone(),
        message: "A query: request timed out".into(),
    }));
    assert!(verifier.check(&row().await).await.is_err());
    let d = row().await;
    assert_eq!(d.status.as_str(), "verified");
    assert!(
        d.last_error
            .as_deref()
            .unwrap()
            .contains("request timed out"),
        "{d:?}"
    );
    assert_eq!(log.lock().unwrap().len(), routes_before);

    // The record moves while the proxy is down: the revoke cannot be applied, so the domain
    // stays verified (with the reason) and the next check revokes it.
    answer(Ok(Answer::Cname(vec!["elsewhere.example.com.".into()])));
    proxy.down.store(true, Ordering::SeqCst);
    assert!(verifier.check(&row().await).await.is_err());
    let d = row().await;
    assert_eq!(d.status.as_str(), "verified", "{d:?}");
    assert!(
        d.last_error
            .as_deref()
            .unwrap()
            .contains("failed was not applied"),
        "{d:?}"
    );
    proxy.down.store(false, Ordering::SeqCst);
    let checked = verifier.check(&row().await).await?;
    assert_eq!(checked.domain.status.as_str(), "failed");
    let mismatch = checked.mismatch.unwrap();
    assert!(
        mismatch.contains(&format!("found `{domain} CNAME elsewhere.example.com`"))
            && mismatch.contains(&format!("expected `{domain} CNAME {target}`")),
        "{mismatch}"
    );
    let calls = log.lock().unwrap().clone();
    assert_eq!(
        calls[calls.len() - 1],
        Call::Disallow {
            domain: domain.clone()
        }
    );
    assert!(
        matches!(&calls[calls.len() - 2], Call::Route { hosts, certificate_hosts }
            if !hosts.contains(&domain) && !certificate_hosts.contains(&domain)),
        "{calls:?}"
    );
    h.stop().await;
    Ok(())
}
