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
    store: CertStore,
    issuer: Option<Arc<Issuer>>,
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
        issuer: &Issuer,
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
