//! Orders one certificate from an ACME CA with instant-acme: http-01 for plain names (answered
//! by the proxy on :80 from the shared store), dns-01 through a [`DnsProvider`] for wildcards.
//!
//! The account is created once per directory URL and kept in the shared store, so every proxy
//! instance orders under the same account.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};

use super::store::{CertStore, StoreError, StoredCertificate};
use super::validity::{ValidityError, chain_validity};

/// Where and as whom to order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// e.g. `https://acme-v02.api.letsencrypt.org/directory`, or Pebble's in tests.
    pub directory_url: String,
    /// Contact for the account (`mailto:` is added).
    pub contact_email: Option<String>,
    /// PEM file of extra roots trusted for the CA's own HTTPS (Pebble's listener CA).
    pub ca_roots: Option<PathBuf>,
}

/// Publishes and removes the TXT records of dns-01 challenges: RFC 2136 dynamic updates to any
/// standard DNS server ([`super::rfc2136`]), a DNS hosting provider's API, or
/// pebble-challtestsrv in tests.
#[async_trait::async_trait]
pub trait DnsProvider: Send + Sync + std::fmt::Debug {
    /// Publishes a TXT record at `fqdn` (with trailing dot) holding `value`.
    async fn set_txt(&self, fqdn: &str, value: &str) -> Result<(), String>;
    /// Removes the TXT record at `fqdn` that `set_txt` published with `value` (a provider that
    /// can hold one value per name only may remove whatever is there).
    async fn clear_txt(&self, fqdn: &str, value: &str) -> Result<(), String>;
}

/// Why an order did not produce a certificate.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME CA at {directory}: {source}")]
    Ca {
        directory: String,
        #[source]
        source: instant_acme::Error,
    },
    #[error("ACME order for {domain}: {source}")]
    Order {
        domain: String,
        #[source]
        source: instant_acme::Error,
    },
    #[error("ACME order for {domain} failed validation: {detail}")]
    Validation { domain: String, detail: String },
    #[error("{domain} is a wildcard: it needs dns-01 and no DNS provider is configured")]
    NoDnsProvider { domain: String },
    #[error("the CA offered no {challenge} challenge for {domain}")]
    NoChallenge {
        domain: String,
        challenge: &'static str,
    },
    #[error("DNS provider, setting the dns-01 record of {domain}: {detail}")]
    Dns { domain: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("certificate issued for {domain} is not usable: {source}")]
    Certificate {
        domain: String,
        #[source]
        source: ValidityError,
    },
}

/// How long an http-01 answer stays in the store.
const CHALLENGE_TTL: Duration = Duration::from_secs(600);
/// Attempts of a whole order when the CA answers with a transient problem (badNonce beyond
/// instant-acme's own retries, rate-limited by the CA's front, 5xx).
const ORDER_ATTEMPTS: u32 = 4;

/// Orders certificates under one account.
pub struct Issuer {
    account: Account,
    directory_url: String,
    store: CertStore,
    dns: Option<Arc<dyn DnsProvider>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("directory_url", &self.directory_url)
            .field("account", &self.account.id())
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Loads the account for `config.directory_url` from the store, or creates it at the CA and
    /// stores it (if two instances race, both end up using the one stored first).
    pub async fn connect(
        config: &AcmeConfig,
        store: CertStore,
        dns: Option<Arc<dyn DnsProvider>>,
    ) -> Result<Self, AcmeError> {
        let directory = config.directory_url.clone();
        let ca = |source| AcmeError::Ca {
            directory: directory.clone(),
            source,
        };
        let builder = || match &config.ca_roots {
            Some(path) => Account::builder_with_root(path),
            None => Account::builder(),
        };
        let account = match store.account(&directory).await? {
            Some(json) => {
                let credentials =
                    serde_json::from_slice(&json).map_err(|e| ca(instant_acme::Error::Json(e)))?;
                builder()
                    .map_err(ca)?
                    .from_credentials(credentials)
                    .await
                    .map_err(ca)?
            }
            None => {
                let contact = config.contact_email.as_ref().map(|e| format!("mailto:{e}"));
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (_, credentials) = retry_transient(|| async {
                    builder()?.create(&new, directory.clone(), None).await
                })
                .await
                .map_err(ca)?;
                let json = serde_json::to_vec(&credentials)
                    .map_err(|e| ca(instant_acme::Error::Json(e)))?;
                let stored = store.put_account_if_absent(&directory, &json).await?;
                let credentials = serde_json::from_slice(&stored)
                    .map_err(|e| ca(instant_acme::Error::Json(e)))?;
                builder()
                    .map_err(ca)?
                    .from_credentials(credentials)
                    .await
                    .map_err(ca)?
            }
        };
        Ok(Self {
            account,
            directory_url: directory,
            store,
            dns,
        })
    }

    /// The directory this issuer orders from.
    pub fn directory_url(&self) -> &str {
        &self.directory_url
    }

    /// Orders a certificate for `domain` ("*.example.com" for a wildcard) and returns it with
    /// its key. Retries transient CA problems; a validation failure is returned as is.
    pub async fn issue(&self, domain: &str) -> Result<StoredCertificate, AcmeError> {
        let mut attempt = 1;
        loop {
            match self.issue_once(domain).await {
                Err(AcmeError::Order { source, .. })
                    if attempt < ORDER_ATTEMPTS && is_transient(&source) =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    async fn issue_once(&self, domain: &str) -> Result<StoredCertificate, AcmeError> {
        let order_err = |source| AcmeError::Order {
            domain: domain.to_owned(),
            source,
        };
        let identifier = Identifier::Dns(domain.to_owned());
        let mut order = self
            .account
            .new_order(&NewOrder::new(std::slice::from_ref(&identifier)))
            .await
            .map_err(order_err)?;

        let mut published = Published::default();
        let outcome = async {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(order_err)?;
                if authz.status == AuthorizationStatus::Valid {
                    continue;
                }
                let wildcard = authz.wildcard;
                if wildcard {
                    let dns = self.dns.as_ref().ok_or_else(|| AcmeError::NoDnsProvider {
                        domain: domain.to_owned(),
                    })?;
                    let mut challenge = authz.challenge(ChallengeType::Dns01).ok_or_else(|| {
                        AcmeError::NoChallenge {
                            domain: domain.to_owned(),
                            challenge: "dns-01",
                        }
                    })?;
                    let base = domain.trim_start_matches("*.");
                    let fqdn = format!("_acme-challenge.{base}.");
                    let value = challenge.key_authorization().dns_value();
                    dns.set_txt(&fqdn, &value)
                        .await
                        .map_err(|detail| AcmeError::Dns {
                            domain: domain.to_owned(),
                            detail,
                        })?;
                    published.txt.push((fqdn, value));
                    challenge.set_ready().await.map_err(order_err)?;
                } else {
                    let mut challenge =
                        authz.challenge(ChallengeType::Http01).ok_or_else(|| {
                            AcmeError::NoChallenge {
                                domain: domain.to_owned(),
                                challenge: "http-01",
                            }
                        })?;
                    let key_authorization = challenge.key_authorization();
                    self.store
                        .put_challenge(
                            &challenge.token,
                            key_authorization.as_str(),
                            domain,
                            CHALLENGE_TTL,
                        )
                        .await?;
                    published.tokens.push(challenge.token.clone());
                    challenge.set_ready().await.map_err(order_err)?;
                }
            }
            let retries = RetryPolicy::new()
                .initial_delay(Duration::from_millis(100))
                .backoff(1.5)
                .timeout(Duration::from_secs(60));
            let status = order.poll_ready(&retries).await.map_err(order_err)?;
            if status != OrderStatus::Ready {
                return Err(AcmeError::Validation {
                    domain: domain.to_owned(),
                    detail: self.failure_detail(&mut order, status).await,
                });
            }
            let key_pem = order.finalize().await.map_err(order_err)?;
            let chain_pem = order.poll_certificate(&retries).await.map_err(order_err)?;
            Ok((chain_pem, key_pem))
        }
        .await;
        self.unpublish(&published).await;
        let (chain_pem, key_pem) = outcome?;
        let validity = chain_validity(&chain_pem).map_err(|source| AcmeError::Certificate {
            domain: domain.to_owned(),
            source,
        })?;
        Ok(StoredCertificate {
            domain: domain.to_owned(),
            chain_pem,
            key_pem,
            validity,
        })
    }

    /// What the CA said about an order that did not become ready, naming the failed challenge.
    async fn failure_detail(&self, order: &mut instant_acme::Order, status: OrderStatus) -> String {
        let mut details = Vec::new();
        if let Some(problem) = &order.state().error {
            details.push(problem.to_string());
        }
        let mut authorizations = order.authorizations();
        while let Some(Ok(authz)) = authorizations.next().await {
            for challenge in &authz.challenges {
                if let Some(problem) = &challenge.error {
                    details.push(format!("{:?}: {problem}", challenge.r#type));
                }
            }
        }
        if details.is_empty() {
            format!("order ended {status:?}")
        } else {
            details.join("; ")
        }
    }

    /// Removes what was published for the challenges; failures only leave garbage that expires.
    async fn unpublish(&self, published: &Published) {
        for token in &published.tokens {
            if let Err(error) = self.store.remove_challenge(token).await {
                tracing::warn!(%error, token, "could not remove an http-01 answer");
            }
        }
        if let Some(dns) = &self.dns {
            for (fqdn, value) in &published.txt {
                if let Err(error) = dns.clear_txt(fqdn, value).await {
                    tracing::warn!(%error, fqdn, "could not remove a dns-01 record");
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Published {
    tokens: Vec<String>,
    /// (name, value) of each dns-01 record.
    txt: Vec<(String, String)>,
}

/// CA answers worth another attempt: bad nonces (Pebble rejects 5% on purpose), rate limiting
/// by the CA's front end, server errors and transport failures.
fn is_transient(error: &instant_acme::Error) -> bool {
    match error {
        instant_acme::Error::Api(problem) => {
            problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce")
                || problem.status.is_some_and(|s| s >= 500)
        }
        instant_acme::Error::Hyper(_) | instant_acme::Error::Other(_) => true,
        _ => false,
    }
}

async fn retry_transient<T, F, Fut>(mut call: F) -> Result<T, instant_acme::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, instant_acme::Error>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(error) if attempt < ORDER_ATTEMPTS && is_transient(&error) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}
