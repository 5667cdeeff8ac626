//! The DNS seam of domain verification: [`DnsLookup`] answers what a domain points at; the real
//! implementation asks a nameserver through hickory-resolver (the configured one, or the
//! system's from `/etc/resolv.conf`), without a cache so every check sees the current records.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use super::Answer;

/// A lookup that gave no answer (timeout, SERVFAIL, unreachable nameserver): not a verdict on
/// the record, so a check that hits it changes no status. Always worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("looking up {domain}: {message}")]
pub struct LookupError {
    pub domain: String,
    pub message: String,
}

/// Resolves what a domain points at.
#[async_trait]
pub trait DnsLookup: Send + Sync + std::fmt::Debug {
    /// The domain's CNAME targets when it has a CNAME, else its A and AAAA addresses, else
    /// [`Answer::Nothing`] (no such name, or no such records).
    async fn lookup(&self, domain: &str) -> Result<Answer, LookupError>;
}

/// hickory-resolver against one nameserver or the system's.
#[derive(Debug, Clone)]
pub struct HickoryLookup {
    resolver: TokioResolver,
}

impl HickoryLookup {
    /// Asks `nameserver` (UDP, falling back to TCP for truncated answers).
    pub fn with_nameserver(nameserver: SocketAddr) -> Self {
        Self::build(nameserver_config(nameserver))
    }

    /// Asks the nameservers of `/etc/resolv.conf`.
    pub fn system() -> Result<Self, String> {
        system_config().map(Self::build)
    }

    fn build(config: ResolverConfig) -> Self {
        Self {
            resolver: uncached(config, Duration::from_secs(3)),
        }
    }

    /// `Ok(None)` for "no such name / no such records".
    async fn query(
        &self,
        domain: &str,
        kind: RecordType,
    ) -> Result<Option<Vec<RData>>, LookupError> {
        // Fully qualified: no search domains appended.
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.lookup(fqdn, kind).await {
            Ok(lookup) => Ok(Some(lookup.iter().cloned().collect())),
            Err(e) if empty(&e) => Ok(None),
            Err(e) => Err(LookupError {
                domain: domain.to_owned(),
                message: format!("{kind} query: {e}"),
            }),
        }
    }
}

/// Asks `nameserver` over UDP, falling back to TCP for truncated answers.
pub(crate) fn nameserver_config(nameserver: SocketAddr) -> ResolverConfig {
    let mut config = ResolverConfig::new();
    config.add_name_server(NameServerConfig::new(nameserver, Protocol::Udp));
    config.add_name_server(NameServerConfig::new(nameserver, Protocol::Tcp));
    config
}

/// The nameservers of `/etc/resolv.conf`.
pub(crate) fn system_config() -> Result<ResolverConfig, String> {
    hickory_resolver::system_conf::read_system_conf()
        .map(|(config, _)| config)
        .map_err(|e| format!("reading the system's resolver configuration: {e}"))
}

/// A resolver without a cache (every lookup sees the current records), two attempts of
/// `timeout` each. Domain verification and the source-host check both build theirs here.
pub(crate) fn uncached(config: ResolverConfig, timeout: Duration) -> TokioResolver {
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.timeout = timeout;
    opts.attempts = 2;
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(opts)
        .build()
}

fn empty(e: &ResolveError) -> bool {
    e.is_nx_domain() || e.is_no_records_found()
}

#[async_trait]
impl DnsLookup for HickoryLookup {
    async fn lookup(&self, domain: &str) -> Result<Answer, LookupError> {
        let cnames: Vec<String> = self
            .query(domain, RecordType::CNAME)
            .await?
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| match r {
                RData::CNAME(c) => Some(c.0.to_ascii()),
                _ => None,
            })
            .collect();
        if !cnames.is_empty() {
            return Ok(Answer::Cname(cnames));
        }
        let mut ips: Vec<IpAddr> = vec![];
        for kind in [RecordType::A, RecordType::AAAA] {
            for r in self.query(domain, kind).await?.unwrap_or_default() {
                match r {
                    RData::A(a) => ips.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) => ips.push(IpAddr::V6(a.0)),
                    _ => {}
                }
            }
        }
        Ok(if ips.is_empty() {
            Answer::Nothing
        } else {
            Answer::Addresses(ips)
        })
    }
}
