//! Keeps every allowed domain's certificate present and fresh: the executor of
//! [`policy::decide`](super::policy::decide).
//!
//! Each pass reads the allowed domains, stored certificates and ACME history from the shared
//! store, decides per domain, and for the domains that need one takes the domain's order lease
//! (so exactly one instance orders a domain at a time; a crashed holder's lease expires and
//! another instance takes over), orders, stores and installs. Certificates another instance
//! stored are installed on the next pass. Serving never waits for the CA: [`CertificateManager::load_stored`]
//! installs what the store holds before any order is placed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;

use super::issuer::{AcmeError, Issuer};
use super::metrics::AcmeMetrics;
use super::policy::{AcmeEvent, Decision, IssuancePolicy, OrderReason};
use super::store::{CertStore, StoreError, StoredCertificate};

/// The part of the shared TLS store the manager uses. [`CertStore`] (PostgreSQL) is the real
/// one; unit tests use an in-memory recording fake.
#[async_trait::async_trait]
pub trait CertRepository: Send + Sync {
    /// Every stored certificate (expired ones included).
    async fn certificates(&self) -> Result<Vec<StoredCertificate>, StoreError>;
    /// The stored certificate of `domain`, if any.
    async fn certificate(&self, domain: &str) -> Result<Option<StoredCertificate>, StoreError>;
    /// Stores `certificate`, replacing its domain's previous one.
    async fn put_certificate(&self, certificate: &StoredCertificate) -> Result<(), StoreError>;
    /// The domains allowed for issuance, with their service ids.
    async fn allowed_domains(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Takes (or extends) the order lease on `domain`; false when another holder has it.
    async fn try_lease(
        &self,
        domain: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Gives up `holder`'s lease on `domain`.
    async fn release_lease(&self, domain: &str, holder: &str) -> Result<(), StoreError>;
    /// Appends `event` to the shared ACME history.
    async fn record(&self, event: &AcmeEvent, detail: &str) -> Result<(), StoreError>;
    /// The ACME history since `since`, oldest first.
    async fn events_since(&self, since: SystemTime) -> Result<Vec<AcmeEvent>, StoreError>;
}

#[async_trait::async_trait]
impl CertRepository for CertStore {
    async fn certificates(&self) -> Result<Vec<StoredCertificate>, StoreError> {
        CertStore::certificates(self).await
    }
    async fn certificate(&self, domain: &str) -> Result<Option<StoredCertificate>, StoreError> {
        CertStore::certificate(self, domain).await
    }
    async fn put_certificate(&self, certificate: &StoredCertificate) -> Result<(), StoreError> {
        CertStore::put_certificate(self, certificate).await
    }
    async fn allowed_domains(&self) -> Result<Vec<(String, String)>, StoreError> {
        CertStore::allowed_domains(self).await
    }
    async fn try_lease(
        &self,
        domain: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        CertStore::try_lease(self, domain, holder, ttl).await
    }
    async fn release_lease(&self, domain: &str, holder: &str) -> Result<(), StoreError> {
        CertStore::release_lease(self, domain, holder).await
    }
    async fn record(&self, event: &AcmeEvent, detail: &str) -> Result<(), StoreError> {
        CertStore::record(self, event, detail).await
    }
    async fn events_since(&self, since: SystemTime) -> Result<Vec<AcmeEvent>, StoreError> {
        CertStore::events_since(self, since).await
    }
}

/// A certificate authority: orders a certificate for one domain. [`Issuer`] (instant-acme) is
/// the real one; unit tests use a scripted fake.
#[async_trait::async_trait]
pub trait Ca: Send + Sync {
    /// Orders a certificate for `domain` and returns it with its key.
    async fn issue(&self, domain: &str) -> Result<StoredCertificate, AcmeError>;
}

#[async_trait::async_trait]
impl Ca for Issuer {
    async fn issue(&self, domain: &str) -> Result<StoredCertificate, AcmeError> {
        Issuer::issue(self, domain).await
    }
}

/// Where issued certificates go to be served (the proxy's per-SNI table).
pub trait CertificateSink: Send + Sync {
    /// Serves `certificate` for its domain from now on; an error names what is wrong with it.
    fn install(&self, certificate: &StoredCertificate) -> Result<(), String>;
}

/// What one pass did for one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do (certificate fresh, backing off, rate limited: the decision says which).
    Decided(Decision),
    /// Another instance holds the order lease.
    LeasedElsewhere,
    /// A certificate was ordered and installed.
    Issued(OrderReason),
    /// The order failed; the reason is recorded in the history.
    Failed(String),
}

/// Settings of the manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub policy: IssuancePolicy,
    /// This instance's name in order leases.
    pub holder: String,
    /// How long an order lease lasts without renewal; renewed every third of it while ordering.
    pub lease_ttl: Duration,
    /// Orders running at once.
    pub parallel_orders: usize,
    /// Time between passes.
    pub interval: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            policy: IssuancePolicy::default(),
            // Unique across hosts sharing the store: two instances with one holder name would
            // both believe they hold the lease.
            holder: format!(
                "{}-{}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "proxy".into()),
                std::process::id()
            ),
            lease_ttl: Duration::from_secs(30),
            parallel_orders: 4,
            interval: Duration::from_secs(10),
        }
    }
}

/// The certificate manager of one proxy instance.
pub struct CertificateManager {
    store: Arc<dyn CertRepository>,
    issuer: Option<Arc<dyn Ca>>,
    sink: Arc<dyn CertificateSink>,
    config: ManagerConfig,
    metrics: Arc<AcmeMetrics>,
    /// `not_after` of what this instance installed, per domain, to notice newer stored ones.
    installed: Mutex<HashMap<String, SystemTime>>,
}

impl std::fmt::Debug for CertificateManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateManager")
            .field("holder", &self.config.holder)
            .field("ordering", &self.issuer.is_some())
            .finish_non_exhaustive()
    }
}

impl CertificateManager {
    /// A manager that orders through `issuer`; `None` serves stored certificates only (no CA
    /// configured, or the CA not reachable yet).
    pub fn new(
        store: CertStore,
        issuer: Option<Arc<Issuer>>,
        sink: Arc<dyn CertificateSink>,
        config: ManagerConfig,
    ) -> Self {
        Self::with_parts(
            Arc::new(store),
            issuer.map(|issuer| issuer as Arc<dyn Ca>),
            sink,
            config,
        )
    }

    /// A manager over any store and CA (the real ones through [`CertificateManager::new`]).
    pub fn with_parts(
        store: Arc<dyn CertRepository>,
        issuer: Option<Arc<dyn Ca>>,
        sink: Arc<dyn CertificateSink>,
        config: ManagerConfig,
    ) -> Self {
        Self {
            store,
            issuer,
            sink,
            config,
            metrics: Arc::default(),
            installed: Mutex::new(HashMap::new()),
        }
    }

    /// Counts orders, rate-limit refusals and installed certificates into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<AcmeMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Installs every stored certificate that is not expired. Needs only the database.
    pub async fn load_stored(&self) -> Result<usize, StoreError> {
        let now = SystemTime::now();
        let mut count = 0;
        for certificate in self.store.certificates().await? {
            if certificate.validity.not_after > now && self.install(&certificate) {
                count += 1;
            }
        }
        Ok(count)
    }

    /// One pass over the allowed domains.
    pub async fn run_once(&self) -> Result<Vec<(String, Outcome)>, StoreError> {
        let now = SystemTime::now();
        let limits = &self.config.policy.limits;
        let longest = limits
            .orders_window
            .max(limits.certificates_window)
            .max(limits.failures_window);
        let history = Arc::new(self.store.events_since(now - longest).await?);
        let domains = self.store.allowed_domains().await?;
        let outcomes = futures::stream::iter(domains)
            .map(|(domain, _service)| {
                let history = history.clone();
                async move {
                    let outcome = self.handle(&domain, &history, now).await;
                    (domain, outcome)
                }
            })
            .buffer_unordered(self.config.parallel_orders.max(1))
            .collect::<Vec<_>>()
            .await;
        outcomes
            .into_iter()
            .map(|(domain, outcome)| outcome.map(|o| (domain, o)))
            .collect()
    }

    /// Runs passes until `shutdown` resolves; store errors are logged and retried next pass.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.run_once().await {
                Ok(outcomes) => {
                    for (domain, outcome) in outcomes {
                        match outcome {
                            Outcome::Issued(reason) => {
                                tracing::info!(domain, ?reason, "certificate issued")
                            }
                            Outcome::Failed(reason) => {
                                tracing::warn!(domain, reason, "certificate order failed")
                            }
                            _ => {}
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "certificate pass failed; retrying next pass"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }

    async fn handle(
        &self,
        domain: &str,
        history: &[AcmeEvent],
        now: SystemTime,
    ) -> Result<Outcome, StoreError> {
        let stored = self.store.certificate(domain).await?;
        if let Some(certificate) = &stored {
            self.install_if_newer(certificate);
        }
        let decision = super::policy::decide(
            &self.config.policy,
            domain,
            true,
            stored.as_ref().map(|c| c.validity),
            history,
            now,
        );
        if let (Decision::RateLimited { limit, .. }, Some(_)) = (&decision, &self.issuer) {
            self.metrics.rate_limited(*limit);
        }
        let (Decision::Order(reason), Some(issuer)) = (&decision, &self.issuer) else {
            return Ok(Outcome::Decided(decision));
        };
        let holder = &self.config.holder;
        if !self
            .store
            .try_lease(domain, holder, self.config.lease_ttl)
            .await?
        {
            return Ok(Outcome::LeasedElsewhere);
        }
        // Another instance may have finished this domain between our read and the lease.
        if let Some(fresh) = self.store.certificate(domain).await?
            && Some(fresh.validity) != stored.as_ref().map(|c| c.validity)
        {
            self.install_if_newer(&fresh);
            self.store.release_lease(domain, holder).await?;
            return Ok(Outcome::LeasedElsewhere);
        }
        let outcome = self.order(issuer, domain, *reason).await;
        self.store.release_lease(domain, holder).await?;
        outcome
    }

    async fn order(
        &self,
        issuer: &Arc<dyn Ca>,
        domain: &str,
        reason: OrderReason,
    ) -> Result<Outcome, StoreError> {
        self.store
            .record(
                &AcmeEvent::Ordered {
                    domain: domain.to_owned(),
                    at: SystemTime::now(),
                },
                "",
            )
            .await?;
        self.metrics.order_started();
        let renew_every = self.config.lease_ttl / 3;
        let issued = {
            let issue = issuer.issue(domain);
            tokio::pin!(issue);
            loop {
                tokio::select! {
                    result = &mut issue => break result,
                    () = tokio::time::sleep(renew_every) => {
                        // Keep the lease while the CA works; losing it only risks a duplicate order.
                        let _ = self.store.try_lease(domain, &self.config.holder, self.config.lease_ttl).await;
                    }
                }
            }
        };
        match issued {
            Ok(certificate) => {
                self.store.put_certificate(&certificate).await?;
                self.store
                    .record(
                        &AcmeEvent::Issued {
                            domain: domain.to_owned(),
                            at: SystemTime::now(),
                        },
                        "",
                    )
                    .await?;
                self.metrics.order_issued();
                self.install(&certificate);
                Ok(Outcome::Issued(reason))
            }
            Err(AcmeError::Store(error)) => Err(error),
            Err(error) => {
                self.metrics.order_failed();
                let detail = error.to_string();
                self.store
                    .record(
                        &AcmeEvent::Failed {
                            domain: domain.to_owned(),
                            at: SystemTime::now(),
                        },
                        &detail,
                    )
                    .await?;
                Ok(Outcome::Failed(detail))
            }
        }
    }

    fn install_if_newer(&self, certificate: &StoredCertificate) {
        let known = self
            .installed
            .lock()
            .ok()
            .and_then(|m| m.get(&certificate.domain).copied());
        if known != Some(certificate.validity.not_after) {
            self.install(certificate);
        }
    }

    fn install(&self, certificate: &StoredCertificate) -> bool {
        match self.sink.install(certificate) {
            Ok(()) => {
                self.metrics
                    .served(&certificate.domain, certificate.validity);
                if let Ok(mut installed) = self.installed.lock() {
                    installed.insert(certificate.domain.clone(), certificate.validity.not_after);
                }
                true
            }
            Err(error) => {
                tracing::warn!(
                    domain = certificate.domain,
                    error,
                    "stored certificate not installed"
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::acme::policy::{CertificateValidity, Limit};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// An in-memory store that records what the manager did.
    #[derive(Default)]
    struct FakeStore {
        allowed: Mutex<Vec<String>>,
        certificates: Mutex<HashMap<String, StoredCertificate>>,
        leases: Mutex<HashMap<String, String>>,
        events: Mutex<Vec<(AcmeEvent, String)>>,
        lease_calls: AtomicUsize,
        passes: AtomicUsize,
    }

    impl FakeStore {
        fn allowing(domains: &[&str]) -> Arc<Self> {
            let store = Self::default();
            *store.allowed.lock().unwrap() = domains.iter().map(|d| d.to_string()).collect();
            Arc::new(store)
        }
        fn events(&self) -> Vec<AcmeEvent> {
            self.events
                .lock()
                .unwrap()
                .iter()
                .map(|(e, _)| e.clone())
                .collect()
        }
    }

    #[async_trait::async_trait]
    impl CertRepository for FakeStore {
        async fn certificates(&self) -> Result<Vec<StoredCertificate>, StoreError> {
            Ok(self
                .certificates
                .lock()
                .unwrap()
                .values()
                .cloned()
                .collect())
        }
        async fn certificate(&self, domain: &str) -> Result<Option<StoredCertificate>, StoreError> {
            Ok(self.certificates.lock().unwrap().get(domain).cloned())
        }
        async fn put_certificate(&self, c: &StoredCertificate) -> Result<(), StoreError> {
            self.certificates
                .lock()
                .unwrap()
                .insert(c.domain.clone(), c.clone());
            Ok(())
        }
        async fn allowed_domains(&self) -> Result<Vec<(String, String)>, StoreError> {
            self.passes.fetch_add(1, Ordering::SeqCst);
            let allowed = self.allowed.lock().unwrap();
            Ok(allowed.iter().map(|d| (d.clone(), "svc".into())).collect())
        }
        async fn try_lease(
            &self,
            domain: &str,
            holder: &str,
            _: Duration,
        ) -> Result<bool, StoreError> {
            self.lease_calls.fetch_add(1, Ordering::SeqCst);
            let mut leases = self.leases.lock().unwrap();
            let current = leases.entry(domain.into()).or_insert_with(|| holder.into());
            Ok(current == holder)
        }
        async fn release_lease(&self, domain: &str, holder: &str) -> Result<(), StoreError> {
            let mut leases = self.leases.lock().unwrap();
            if leases.get(domain).is_some_and(|h| h == holder) {
                leases.remove(domain);
            }
            Ok(())
        }
        async fn record(&self, event: &AcmeEvent, detail: &str) -> Result<(), StoreError> {
            self.events
                .lock()
                .unwrap()
                .push((event.clone(), detail.into()));
            Ok(())
        }
        async fn events_since(&self, _since: SystemTime) -> Result<Vec<AcmeEvent>, StoreError> {
            Ok(self.events())
        }
    }

    /// A CA that takes `delay` per order and answers from a script (then succeeds).
    #[derive(Default)]
    struct FakeCa {
        delay: Duration,
        failures: Mutex<VecDeque<String>>,
        orders: Mutex<Vec<String>>,
    }

    impl FakeCa {
        fn orders(&self) -> Vec<String> {
            self.orders.lock().unwrap().clone()
        }
    }

    #[async_trait::async_trait]
    impl Ca for FakeCa {
        async fn issue(&self, domain: &str) -> Result<StoredCertificate, AcmeError> {
            self.orders.lock().unwrap().push(domain.into());
            tokio::time::sleep(self.delay).await;
            if let Some(detail) = self.failures.lock().unwrap().pop_front() {
                return Err(AcmeError::Validation {
                    domain: domain.into(),
                    detail,
                });
            }
            Ok(certificate(domain, 0, 90))
        }
    }

    #[derive(Default)]
    struct FakeSink(Mutex<Vec<String>>);

    impl CertificateSink for FakeSink {
        fn install(&self, c: &StoredCertificate) -> Result<(), String> {
            self.0.lock().unwrap().push(c.domain.clone());
            Ok(())
        }
    }

    fn certificate(domain: &str, age_days: u32, lifetime_days: u32) -> StoredCertificate {
        let not_before = SystemTime::now() - DAY * age_days;
        StoredCertificate {
            domain: domain.into(),
            chain_pem: "chain".into(),
            key_pem: "key".into(),
            validity: CertificateValidity {
                not_before,
                not_after: not_before + DAY * lifetime_days,
            },
        }
    }

    fn manager(
        store: &Arc<FakeStore>,
        ca: Option<&Arc<FakeCa>>,
        holder: &str,
    ) -> (CertificateManager, Arc<FakeSink>) {
        let sink = Arc::new(FakeSink::default());
        let config = ManagerConfig {
            holder: holder.into(),
            lease_ttl: Duration::from_secs(3),
            ..Default::default()
        };
        let manager = CertificateManager::with_parts(
            store.clone(),
            ca.map(|ca| ca.clone() as Arc<dyn Ca>),
            sink.clone(),
            config,
        );
        (manager, sink)
    }

    fn kinds(events: &[AcmeEvent]) -> Vec<&'static str> {
        events
            .iter()
            .map(|e| match e {
                AcmeEvent::Ordered { .. } => "ordered",
                AcmeEvent::Issued { .. } => "issued",
                AcmeEvent::Failed { .. } => "failed",
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_certificate_is_ordered_stored_installed_and_then_kept() {
        let store = FakeStore::allowing(&["a.test"]);
        let ca = Arc::new(FakeCa::default());
        let (manager, sink) = manager(&store, Some(&ca), "one");
        let outcomes = manager.run_once().await.unwrap();
        assert_eq!(
            outcomes,
            vec![("a.test".into(), Outcome::Issued(OrderReason::Missing))]
        );
        assert_eq!(ca.orders(), vec!["a.test"]);
        assert!(store.certificates.lock().unwrap().contains_key("a.test"));
        assert_eq!(*sink.0.lock().unwrap(), vec!["a.test"]);
        assert_eq!(kinds(&store.events()), vec!["ordered", "issued"]);
        assert!(store.leases.lock().unwrap().is_empty(), "lease released");

        let outcomes = manager.run_once().await.unwrap();
        assert!(
            matches!(outcomes[0].1, Outcome::Decided(Decision::Keep { .. })),
            "{outcomes:?}"
        );
        assert_eq!(
            ca.orders().len(),
            1,
            "a fresh certificate is not ordered again"
        );
        assert_eq!(sink.0.lock().unwrap().len(), 1, "nor installed again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_certificate_past_its_renewal_point_is_renewed() {
        let store = FakeStore::allowing(&["a.test"]);
        store
            .certificates
            .lock()
            .unwrap()
            .insert("a.test".into(), certificate("a.test", 80, 90));
        let ca = Arc::new(FakeCa::default());
        let (manager, sink) = manager(&store, Some(&ca), "one");
        assert_eq!(manager.load_stored().await.unwrap(), 1);
        let outcomes = manager.run_once().await.unwrap();
        assert_eq!(outcomes[0].1, Outcome::Issued(OrderReason::Renewal));
        assert_eq!(
            sink.0.lock().unwrap().len(),
            2,
            "the old one, then the renewed one"
        );
        let stored = store.certificates.lock().unwrap()["a.test"].clone();
        assert!(stored.validity.not_after > SystemTime::now() + 80 * DAY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ca_failure_is_recorded_and_backs_off() {
        let store = FakeStore::allowing(&["a.test"]);
        let ca = Arc::new(FakeCa::default());
        ca.failures.lock().unwrap().push_back("dns says no".into());
        let (manager, sink) = manager(&store, Some(&ca), "one");
        let outcomes = manager.run_once().await.unwrap();
        let Outcome::Failed(detail) = &outcomes[0].1 else {
            panic!("{outcomes:?}")
        };
        assert!(detail.contains("dns says no"), "{detail}");
        assert_eq!(kinds(&store.events()), vec!["ordered", "failed"]);
        assert!(store.events.lock().unwrap()[1].1.contains("dns says no"));

        let outcomes = manager.run_once().await.unwrap();
        assert!(
            matches!(
                outcomes[0].1,
                Outcome::Decided(Decision::BackOff { failures: 1, .. })
            ),
            "{outcomes:?}"
        );
        assert_eq!(ca.orders().len(), 1, "no order while backing off");
        assert!(sink.0.lock().unwrap().is_empty());
        assert!(
            store.leases.lock().unwrap().is_empty(),
            "lease released after a failure"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_holds_the_order_back_and_is_counted() {
        let store = FakeStore::allowing(&["a.test"]);
        let now = SystemTime::now();
        for i in 0..300 {
            store.events.lock().unwrap().push((
                AcmeEvent::Ordered {
                    domain: format!("other{i}.test"),
                    at: now - Duration::from_secs(60),
                },
                String::new(),
            ));
        }
        let ca = Arc::new(FakeCa::default());
        let (manager, _sink) = manager(&store, Some(&ca), "one");
        let metrics = Arc::new(AcmeMetrics::default());
        let manager = manager.with_metrics(metrics.clone());
        let outcomes = manager.run_once().await.unwrap();
        assert!(
            matches!(
                outcomes[0].1,
                Outcome::Decided(Decision::RateLimited {
                    limit: Limit::OrdersPerAccount,
                    ..
                })
            ),
            "{outcomes:?}"
        );
        assert!(ca.orders().is_empty());
        assert_eq!(store.lease_calls.load(Ordering::SeqCst), 0);
        let text = metrics.render(&IssuancePolicy::default(), SystemTime::now());
        assert!(
            text.contains("stackpad_proxy_acme_rate_limited_total{limit=\"orders_per_account\"} 1"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_ca_nothing_is_ordered() {
        let store = FakeStore::allowing(&["a.test"]);
        let (manager, _sink) = manager(&store, None, "one");
        let outcomes = manager.run_once().await.unwrap();
        assert_eq!(
            outcomes[0].1,
            Outcome::Decided(Decision::Order(OrderReason::Missing))
        );
        assert_eq!(store.lease_calls.load(Ordering::SeqCst), 0);
        assert!(store.events().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn two_instances_wanting_one_name_order_it_once() {
        let store = FakeStore::allowing(&["a.test"]);
        let ca = Arc::new(FakeCa {
            delay: Duration::from_secs(5),
            ..Default::default()
        });
        let (one, sink_one) = manager(&store, Some(&ca), "one");
        let (two, sink_two) = manager(&store, Some(&ca), "two");
        let (a, b) = tokio::join!(one.run_once(), two.run_once());
        let mut outcomes = vec![a.unwrap()[0].1.clone(), b.unwrap()[0].1.clone()];
        outcomes.sort_by_key(|o| format!("{o:?}"));
        assert_eq!(
            outcomes,
            vec![
                Outcome::Issued(OrderReason::Missing),
                Outcome::LeasedElsewhere
            ]
        );
        assert_eq!(ca.orders(), vec!["a.test"], "one order for both instances");
        assert_eq!(
            sink_one.0.lock().unwrap().len() + sink_two.0.lock().unwrap().len(),
            1
        );
        // The other instance installs it on its next pass.
        let (a, b) = tokio::join!(one.run_once(), two.run_once());
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(*sink_one.0.lock().unwrap(), vec!["a.test"]);
        assert_eq!(*sink_two.0.lock().unwrap(), vec!["a.test"]);
        assert_eq!(ca.orders().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_is_renewed_every_third_of_its_ttl_while_the_ca_works() {
        let store = FakeStore::allowing(&["a.test"]);
        let ca = Arc::new(FakeCa {
            delay: Duration::from_millis(5500),
            ..Default::default()
        });
        let (manager, _sink) = manager(&store, Some(&ca), "one");
        let outcomes = manager.run_once().await.unwrap();
        assert_eq!(outcomes[0].1, Outcome::Issued(OrderReason::Missing));
        // One take, then one renewal per second (ttl 3 s / 3) for 5.5 s.
        assert_eq!(store.lease_calls.load(Ordering::SeqCst), 1 + 5);
    }

    #[tokio::test(start_paused = true)]
    async fn run_passes_every_interval_until_shutdown() {
        let store = FakeStore::allowing(&[]);
        let (manager, _sink) = manager(&store, None, "one");
        let start = tokio::time::Instant::now();
        manager
            .run(tokio::time::sleep(Duration::from_secs(25)))
            .await;
        assert_eq!(start.elapsed(), Duration::from_secs(25));
        // Passes at 0, 10 and 20 s (the default interval is 10 s).
        assert_eq!(store.passes.load(Ordering::SeqCst), 3);
    }
}
