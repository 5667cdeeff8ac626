//! The proxy's certificates at run time: the serving table and, when configured, the shared
//! store, the ACME manager and the http-01 answers.
//!
//! Start-up never waits for the database or the CA: the proxy serves its routes (with the
//! default certificate) at once, connects to the store in the background, installs every
//! stored certificate as soon as it is reachable, then starts ordering once the CA answers.
//! With the CA down, stored certificates keep serving.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::challtestsrv::ChallTestSrv;
use super::issuer::{DnsProvider, Issuer};
use super::manager::{CertificateManager, CertificateSink, ManagerConfig};
use super::metrics::AcmeMetrics;
use super::rfc2136::Rfc2136;
use super::settings::AcmeSettings;
use super::store::{CertStore, StoredCertificate};
use crate::certs::CertificateTable;
use crate::tickets::TicketKeys;

/// How long to wait between attempts to reach the store or the CA.
const RECONNECT: Duration = Duration::from_secs(3);

/// Certificates of one proxy instance.
#[derive(Debug)]
pub struct TlsState {
    table: Arc<CertificateTable>,
    store: OnceLock<CertStore>,
    /// An `acme` section was given: the store is coming.
    configured: std::sync::atomic::AtomicBool,
    metrics: Arc<AcmeMetrics>,
    policy: super::policy::IssuancePolicy,
    /// Session ticket keys of the public listener, refreshed from the store once connected.
    tickets: Arc<TicketKeys>,
}

impl TlsState {
    pub fn new(table: Arc<CertificateTable>) -> Arc<Self> {
        Arc::new(Self {
            table,
            store: OnceLock::new(),
            configured: Default::default(),
            metrics: Arc::default(),
            policy: Default::default(),
            tickets: Arc::default(),
        })
    }

    /// Orders, rate-limit refusals and served certificates, for `/metrics`.
    pub fn metrics(&self) -> &Arc<AcmeMetrics> {
        &self.metrics
    }

    /// The Prometheus text of [`TlsState::metrics`] now.
    pub fn render_metrics(&self) -> String {
        self.metrics
            .render(&self.policy, std::time::SystemTime::now())
    }

    /// The public listener's session ticket keys (none until the store is connected).
    pub fn ticket_keys(&self) -> &Arc<TicketKeys> {
        &self.tickets
    }

    pub fn table(&self) -> &Arc<CertificateTable> {
        &self.table
    }

    /// The shared store, once connected (never without an `acme` section).
    pub fn store(&self) -> Option<&CertStore> {
        self.store.get()
    }

    /// The store, waiting up to `within` while it is still connecting after start.
    pub async fn wait_store(&self, within: Duration) -> Option<&CertStore> {
        let deadline = tokio::time::Instant::now() + within;
        while self.store().is_none()
            && self.configured.load(std::sync::atomic::Ordering::Relaxed)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.store()
    }

    /// The answer to an http-01 request for `token`, if an order is waiting for it.
    pub async fn http01_answer(&self, token: &str) -> Option<String> {
        match self.store()?.challenge(token).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(%error, "http-01 answer lookup failed");
                None
            }
        }
    }

    /// Connects the store and runs the certificate manager on `runtime`, in the background.
    pub fn start(self: &Arc<Self>, settings: AcmeSettings, runtime: &tokio::runtime::Handle) {
        self.configured
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let this = Arc::clone(self);
        runtime.spawn(async move { this.run(settings).await });
    }

    async fn run(self: Arc<Self>, settings: AcmeSettings) {
        let sealer = match settings.sealer() {
            Ok(sealer) => sealer,
            Err((key, reason)) => {
                tracing::error!(key, reason, "certificates disabled");
                return;
            }
        };
        let store = loop {
            match CertStore::connect(&settings.database_url, sealer.clone()).await {
                Ok(store) => break store,
                Err(error) => {
                    tracing::warn!(%error, "certificate store not reachable; retrying");
                    tokio::time::sleep(RECONNECT).await;
                }
            }
        };
        let _ = self.store.set(store.clone());
        tokio::spawn(Arc::clone(&self.tickets).run(store.clone(), settings.tickets()));
        let sink: Arc<dyn CertificateSink> = self.table.clone();
        let mut config = ManagerConfig {
            interval: settings.interval(),
            lease_ttl: settings.lease_ttl(),
            policy: self.policy.clone(),
            ..Default::default()
        };
        if !settings.instance.is_empty() {
            config.holder = settings.instance.clone();
        }
        match CertificateManager::new(store.clone(), None, sink.clone(), config.clone())
            .with_metrics(Arc::clone(&self.metrics))
            .load_stored()
            .await
        {
            Ok(count) => tracing::info!(count, "stored certificates installed"),
            Err(error) => tracing::warn!(%error, "stored certificates not loaded"),
        }
        let Some(acme) = settings.acme_config() else {
            tracing::info!("no ACME directory configured: serving stored certificates only");
            return;
        };
        let dns: Option<Arc<dyn DnsProvider>> = match &settings.rfc2136 {
            // validate() checked it: an error here is a key file changed since.
            Some(rfc2136) => match Rfc2136::new(rfc2136) {
                Ok(provider) => Some(Arc::new(provider)),
                Err(error) => {
                    tracing::error!(%error, "dns-01 disabled: wildcard orders will fail");
                    None
                }
            },
            None => (!settings.dns_provider_url.is_empty())
                .then(|| Arc::new(ChallTestSrv::new(settings.dns_provider_url.clone())) as _),
        };
        let issuer = loop {
            match Issuer::connect(&acme, store.clone(), dns.clone()).await {
                Ok(issuer) => break issuer,
                Err(error) => {
                    tracing::warn!(%error, "ACME CA not reachable; serving stored certificates, retrying");
                    tokio::time::sleep(RECONNECT).await;
                }
            }
        };
        tracing::info!(
            directory = acme.directory_url,
            "ordering certificates for allowed domains"
        );
        let manager = CertificateManager::new(store, Some(Arc::new(issuer)), sink, config)
            .with_metrics(Arc::clone(&self.metrics));
        manager.run(std::future::pending()).await;
    }
}

impl CertificateSink for CertificateTable {
    fn install(&self, certificate: &StoredCertificate) -> Result<(), String> {
        let key =
            crate::certs::certified_key_from_pem(&certificate.chain_pem, &certificate.key_pem)
                .map_err(|e| e.to_string())?;
        self.insert(&certificate.domain, Arc::new(key));
        Ok(())
    }
}
