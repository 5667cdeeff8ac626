//! Performs domain checks: resolves the domain, judges the answer ([`super::check`]), records
//! the result, and applies the route change ([`super::next`]) to the proxy. The API calls it
//! for "verify now" and removals; the daemon runs [`Verifier::run`] to re-check every domain
//! each interval.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ::api::ServiceKind;
use tokio::sync::watch;

use super::resolver::{DnsLookup, LookupError};
use super::route::route_push;
use super::{DomainStatus, Expectation, RouteChange, Verdict, check, next};
use crate::clients::{ClientError, ProxyClient};
use crate::store::{CustomDomain, DomainCheck, Store, StoreError};

/// What the verifier needs to know of the platform.
#[derive(Debug, Clone, Default)]
pub struct DomainSettings {
    /// Platform hosts are `<label>.<apps_domain>` (see `route`); custom domains CNAME to them.
    pub apps_domain: String,
    /// The proxy's public addresses, accepted as A/AAAA records; empty = CNAME only.
    pub ingress_ips: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// DNS gave no answer; the domain's status is unchanged. Retryable.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The proxy could not be told; the domain keeps its previous status so the next check
    /// tries again.
    #[error("{domain}: updating the proxy: {source}")]
    Proxy { domain: String, source: ClientError },
}

/// A finished check: the domain as recorded, and the mismatch when it did not match.
#[derive(Debug, Clone)]
pub struct Checked {
    pub domain: CustomDomain,
    pub mismatch: Option<String>,
}

pub struct Verifier {
    store: Store,
    dns: Arc<dyn DnsLookup>,
    proxy: Option<Arc<dyn ProxyClient>>,
    settings: DomainSettings,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("dns", &self.dns)
            .field("proxy", &self.proxy.is_some())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(
        store: Store,
        dns: Arc<dyn DnsLookup>,
        proxy: Option<Arc<dyn ProxyClient>>,
        settings: DomainSettings,
    ) -> Self {
        Self {
            store,
            dns,
            proxy,
            settings,
        }
    }

    pub fn settings(&self) -> &DomainSettings {
        &self.settings
    }

    pub fn expectation(&self, domain: &str, target: &str) -> Expectation {
        Expectation {
            domain: domain.to_owned(),
            cname_target: target.to_owned(),
            ingress_ips: self.settings.ingress_ips.clone(),
        }
    }

    /// Checks one domain now and applies the result.
    pub async fn check(&self, d: &CustomDomain) -> Result<Checked, VerifyError> {
        let status = d.status;
        let answer = match self.dns.lookup(&d.domain).await {
            Ok(answer) => answer,
            Err(e) => {
                let error = format!("{e} (status kept; checked again later)");
                self.record(d, status, None, Some(&error)).await?;
                return Err(e.into());
            }
        };
        let seen = answer.describe(&d.domain);
        let verdict = check(&self.expectation(&d.domain, &d.target), &answer);
        let (to, change) = next(status, &verdict);
        let mismatch = match &verdict {
            Verdict::Matches => None,
            Verdict::Mismatch { message } => Some(message.clone()),
        };
        let recorded = self.record(d, to, Some(&seen), mismatch.as_deref()).await?;
        if let Err(e) = self.apply(d, change).await {
            // Back to the previous status: the next check applies the change again.
            let error = format!("{} was not applied: {e}", to.as_str());
            self.record(d, status, Some(&seen), Some(&error)).await?;
            return Err(e);
        }
        if change != RouteChange::Keep {
            tracing::info!(domain = %d.domain, service = %d.service_id, from = status.as_str(), to = to.as_str(), seen, "custom domain status changed");
        }
        Ok(Checked {
            domain: recorded,
            mismatch,
        })
    }

    async fn record(
        &self,
        d: &CustomDomain,
        status: DomainStatus,
        seen: Option<&str>,
        error: Option<&str>,
    ) -> Result<CustomDomain, StoreError> {
        let check = DomainCheck {
            status,
            last_seen: seen,
            last_error: error,
        };
        self.store.record_domain_check(&d.domain, &check).await
    }

    /// Re-pushes the service's route as the store now describes it; on a revoke also takes the
    /// domain off the proxy's allowed list.
    async fn apply(&self, d: &CustomDomain, change: RouteChange) -> Result<(), VerifyError> {
        if change == RouteChange::Keep {
            return Ok(());
        }
        let Some(proxy) = &self.proxy else {
            return Ok(());
        };
        let proxy_error = |source| VerifyError::Proxy {
            domain: d.domain.clone(),
            source,
        };
        let service = self.store.service(d.organization_id, d.service_id).await;
        match service {
            // Not deployed yet: its first switch pushes the route with every verified domain.
            Ok(s) if s.kind != ServiceKind::Web || s.current_deployment_id.is_none() => {}
            Ok(s) => {
                let route = route_push(
                    &self.store,
                    d.organization_id,
                    &s,
                    &self.settings.apps_domain,
                )
                .await?;
                proxy.upsert_route(&route).await.map_err(proxy_error)?;
            }
            // Deleted with its service: nothing routes to it any more.
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if change == RouteChange::Revoke {
            proxy
                .remove_allowed_domain(&d.domain)
                .await
                .map_err(proxy_error)?;
        }
        Ok(())
    }

    /// After `d` was deleted: a verified domain leaves the route and the allowed list.
    pub async fn removed(&self, d: &CustomDomain) -> Result<(), VerifyError> {
        let change = if d.status == DomainStatus::Verified {
            RouteChange::Revoke
        } else {
            RouteChange::Keep
        };
        self.apply(d, change).await
    }

    /// Checks every domain once; failures are logged and recorded on the domain.
    pub async fn check_all(&self) {
        let domains = match self.store.all_domains().await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "listing custom domains failed");
                return;
            }
        };
        for d in domains {
            match self.check(&d).await {
                Ok(Checked {
                    mismatch: Some(m), ..
                }) => {
                    tracing::debug!(domain = %d.domain, mismatch = m, "custom domain does not match")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(domain = %d.domain, error = %e, "custom domain check failed")
                }
            }
        }
    }

    /// Re-checks every domain each `interval` until shutdown.
    pub async fn run(self: Arc<Self>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.check_all().await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}
