//! ACME against the real Pebble and pebble-challtestsrv from `scripts/services`: http-01 and
//! dns-01 orders, the shared store, order leases between instances, serving without the CA.
//!
//! Pebble validates http-01 on 127.0.0.1:5002 (its `httpPort`), so the tests that answer
//! http-01 take a file lock on that port and run one at a time, across test binaries too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
mod common;

use common::pebble::{self, PostgresDb, STORE_KEY, env, pebble};
use proxy::acme::challtestsrv::ChallTestSrv;
use proxy::acme::http01::{Http01Answers, challenge_token};
use proxy::acme::policy::{Decision, OrderReason};
use proxy::acme::seal::Sealer;
use proxy::acme::{
    CertStore, CertificateManager, CertificateSink, Issuer, ManagerConfig, Outcome,
    StoredCertificate,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Stands in for the proxy's serving table: records what was installed.
#[derive(Default)]
struct Installed(Mutex<Vec<StoredCertificate>>);

impl CertificateSink for Installed {
    fn install(&self, certificate: &StoredCertificate) -> Result<(), String> {
        self.0.lock().unwrap().push(certificate.clone());
        Ok(())
    }
}

impl Installed {
    fn get(&self, domain: &str) -> Option<StoredCertificate> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|c| c.domain == domain)
            .cloned()
    }
}

/// Answers Pebble's http-01 requests on 127.0.0.1:5002 from the shared store while alive.
struct Http01Server {
    task: tokio::task::JoinHandle<()>,
    _lock: std::fs::File,
}

impl Drop for Http01Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_http01(answers: Http01Answers) -> anyhow::Result<Http01Server> {
    let lock = pebble::lock_http01_port().await?;
    // The previous holder's listener closes when its test runtime shuts down, a moment after
    // its lock is released: retry briefly.
    let mut attempts = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind("127.0.0.1:5002").await {
            Ok(listener) => break listener,
            Err(error) if attempts < 50 => {
                attempts += 1;
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => {
                return Err(error).context("port 5002 (Pebble's httpPort) stays taken");
            }
        }
    };
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answers = answers.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or_default();
                let body = match challenge_token(path) {
                    Some(token) => answers.answer(token).await.ok().flatten(),
                    None => None,
                };
                let response = match body {
                    Some(body) => format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    None => {
                        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .into()
                    }
                };
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(Http01Server { task, _lock: lock })
}

async fn store(db: &PostgresDb) -> anyhow::Result<CertStore> {
    Ok(CertStore::connect(db.url(), Sealer::from_hex(STORE_KEY)?).await?)
}

fn manager(
    store: &CertStore,
    issuer: Option<Arc<Issuer>>,
    sink: Arc<Installed>,
    holder: &str,
) -> CertificateManager {
    let config = ManagerConfig {
        holder: holder.into(),
        lease_ttl: Duration::from_secs(2),
        ..Default::default()
    };
    CertificateManager::new(store.clone(), issuer, sink, config)
}

/// A TLS handshake with `certificate` served for `sni`, verified against Pebble's current root.
async fn handshake_verifies(certificate: &StoredCertificate, sni: &str) -> anyhow::Result<()> {
    pebble::handshake_verifies(pebble::pebble_roots().await?, certificate, sni).await
}

#[tokio::test]
async fn http01_certificate_for_an_allowed_domain_serves_verified_https() -> anyhow::Result<()> {
    let db = PostgresDb::create("acme_test").await?;
    let store = store(&db).await?;
    let _http01 = serve_http01(Http01Answers::new(store.clone())).await?;
    let issuer = Arc::new(Issuer::connect(&pebble(), store.clone(), None).await?);
    let installed = Arc::new(Installed::default());
    let manager = manager(&store, Some(issuer), installed.clone(), "a");

    // Several domains in one pass: Pebble rejects 5% of nonces, none may surface as a failure.
    let domains: Vec<String> = (0..4)
        .map(|i| format!("{}.apps.stackpad.test", unique(&format!("web{i}"))))
        .collect();
    for domain in &domains {
        store.put_allowed_domain(domain, "svc").await?;
    }
    let outcomes = manager.run_once().await?;
    ensure!(outcomes.len() == domains.len(), "outcomes: {outcomes:?}");
    for (domain, outcome) in &outcomes {
        ensure!(
            outcome == &Outcome::Issued(OrderReason::Missing),
            "{domain}: {outcome:?}"
        );
    }
    let certificate = installed.get(&domains[0]).context("nothing installed")?;
    handshake_verifies(&certificate, &domains[0]).await?;

    // The next pass keeps what it has.
    for (domain, outcome) in manager.run_once().await? {
        ensure!(
            matches!(outcome, Outcome::Decided(Decision::Keep { .. })),
            "{domain}: {outcome:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn wildcard_certificate_through_dns01() -> anyhow::Result<()> {
    let db = PostgresDb::create("acme_test").await?;
    let store = store(&db).await?;
    let dns = Arc::new(ChallTestSrv::new(env(
        "CHALLTESTSRV_URL",
        "http://127.0.0.1:8055",
    )));
    let issuer = Arc::new(Issuer::connect(&pebble(), store.clone(), Some(dns)).await?);
    let installed = Arc::new(Installed::default());
    let manager = manager(&store, Some(issuer), installed.clone(), "a");
    let base = format!("{}.stackpad.test", unique("wild"));
    let wildcard = format!("*.{base}");
    store.put_allowed_domain(&wildcard, "svc").await?;
    let outcomes = manager.run_once().await?;
    ensure!(
        outcomes == vec![(wildcard.clone(), Outcome::Issued(OrderReason::Missing))],
        "{outcomes:?}"
    );
    let certificate = installed.get(&wildcard).context("nothing installed")?;
    handshake_verifies(&certificate, &format!("anything.{base}")).await?;
    Ok(())
}

#[tokio::test]
async fn a_wildcard_without_a_dns_provider_fails_with_a_reason_and_backs_off() -> anyhow::Result<()>
{
    let db = PostgresDb::create("acme_test").await?;
    let store = store(&db).await?;
    let issuer = Arc::new(Issuer::connect(&pebble(), store.clone(), None).await?);
    let manager = manager(&store, Some(issuer), Arc::new(Installed::default()), "a");
    let wildcard = format!("*.{}.stackpad.test", unique("nodns"));
    store.put_allowed_domain(&wildcard, "svc").await?;
    let outcomes = manager.run_once().await?;
    let [(_, Outcome::Failed(reason))] = outcomes.as_slice() else {
        bail!("expected one failure: {outcomes:?}");
    };
    ensure!(
        reason.contains("dns-01") && reason.contains(&wildcard),
        "{reason}"
    );
    let again = manager.run_once().await?;
    ensure!(
        matches!(
            again[0].1,
            Outcome::Decided(Decision::BackOff { failures: 1, .. })
        ),
        "{again:?}"
    );
    Ok(())
}

#[tokio::test]
async fn one_order_per_domain_between_instances_and_an_expired_lease_is_taken_over()
-> anyhow::Result<()> {
    let db = PostgresDb::create("acme_test").await?;
    let store = store(&db).await?;
    let _http01 = serve_http01(Http01Answers::new(store.clone())).await?;
    let issuer = Arc::new(Issuer::connect(&pebble(), store.clone(), None).await?);
    let (sink_a, sink_b) = (
        Arc::new(Installed::default()),
        Arc::new(Installed::default()),
    );
    let a = manager(&store, Some(issuer.clone()), sink_a.clone(), "instance-a");
    let b = manager(&store, Some(issuer.clone()), sink_b.clone(), "instance-b");

    let domain = format!("{}.apps.stackpad.test", unique("shared"));
    store.put_allowed_domain(&domain, "svc").await?;
    let (from_a, from_b) = tokio::join!(a.run_once(), b.run_once());
    let outcomes: Vec<Outcome> = from_a?.into_iter().chain(from_b?).map(|(_, o)| o).collect();
    let issued = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Issued(_)))
        .count();
    ensure!(issued == 1, "expected exactly one order: {outcomes:?}");
    let since = std::time::SystemTime::now() - Duration::from_secs(3600);
    let orders = store.events_since(since).await?.into_iter()
        .filter(|e| matches!(e, proxy::acme::policy::AcmeEvent::Ordered { domain: d, .. } if *d == domain))
        .count();
    ensure!(orders == 1, "{orders} orders for {domain}");
    // The other instance picks the stored certificate up on its next pass.
    b.run_once().await?;
    a.run_once().await?;
    ensure!(sink_a.get(&domain).is_some() && sink_b.get(&domain).is_some());

    // A holder that died mid-order: its lease blocks others until it expires.
    let orphan = format!("{}.apps.stackpad.test", unique("orphan"));
    store.put_allowed_domain(&orphan, "svc").await?;
    let leased = std::time::Instant::now();
    ensure!(
        store
            .try_lease(&orphan, "crashed-instance", Duration::from_secs(2))
            .await?
    );
    // Every pass is blocked until the lease expires, then the next pass orders.
    let mut blocked_passes = 0;
    loop {
        let outcomes = a.run_once().await?;
        let orphan_outcome = outcomes.iter().find(|(d, _)| d == &orphan).map(|(_, o)| o);
        match orphan_outcome {
            Some(Outcome::LeasedElsewhere) => blocked_passes += 1,
            Some(Outcome::Issued(OrderReason::Missing)) => break,
            other => bail!("unexpected outcome for the orphaned domain: {other:?} in {outcomes:?}"),
        }
        ensure!(
            leased.elapsed() < Duration::from_secs(15),
            "the dead holder's 2 s lease still blocked the order after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(blocked_passes > 0, "the first pass ignored a live lease");
    ensure!(
        leased.elapsed() >= Duration::from_millis(1900),
        "ordered {:?} after a 2 s lease was taken",
        leased.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn stored_certificates_serve_with_no_ca_and_nothing_unallowed_is_ordered()
-> anyhow::Result<()> {
    let db = PostgresDb::create("acme_test").await?;
    let store = store(&db).await?;
    let _http01 = serve_http01(Http01Answers::new(store.clone())).await?;
    let issuer = Arc::new(Issuer::connect(&pebble(), store.clone(), None).await?);
    let domain = format!("{}.apps.stackpad.test", unique("keep"));
    store.put_allowed_domain(&domain, "svc").await?;
    manager(&store, Some(issuer), Arc::new(Installed::default()), "a")
        .run_once()
        .await?;

    // A restart with the CA unreachable: no issuer at all, the store alone serves.
    let installed = Arc::new(Installed::default());
    let restarted = manager(&store, None, installed.clone(), "a");
    ensure!(restarted.load_stored().await? == 1);
    handshake_verifies(&installed.get(&domain).context("not installed")?, &domain).await?;

    // Names nobody allowed never reach the CA, whatever asks for them.
    store.remove_allowed_domain(&domain).await?;
    ensure!(restarted.run_once().await?.is_empty());
    Ok(())
}
