//! Git sources at create time: an `https://` host must resolve, and every address it resolves
//! to must pass the address policy (public unicast, minus the platform's own blocks); a local
//! repository (`file://`, absolute path) is taken only from the organizations the operator named
//! in `local_sources_organizations`. buildd checks again when it fetches (the answer may change).
//! Errors say what was refused, never what was found behind the address.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::ResolverConfig;
use tenant::address::AddressPolicy;
use tenant::image::ImageRef;
use tenant::source::{Host, SourceUrl};
use uuid::Uuid;

use super::error::{ApiError, ApiResult, invalid};
use crate::config::{Config, ConfigError};
use crate::domains::resolver;

/// How long resolving a source's host may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a name gave no addresses to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No such name, or no A/AAAA records: the tenant's mistake.
    #[error("{host} has no address")]
    NoAddress { host: String },
    /// The resolver did not answer: worth retrying.
    #[error("resolving {host} failed: {message}")]
    Unavailable { host: String, message: String },
}

/// Resolves a host name to its addresses (A and AAAA, CNAMEs followed).
#[async_trait]
pub trait HostLookup: Send + Sync + std::fmt::Debug {
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupError>;
}

/// The system's resolver (`getaddrinfo` through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

#[async_trait]
impl HostLookup for SystemLookup {
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        match tokio::net::lookup_host((host, 443)).await {
            Ok(addrs) => Ok(addrs.map(|a| a.ip()).collect()),
            // getaddrinfo does not tell "no such name" from "no answer" portably.
            Err(_) => Err(LookupError::NoAddress {
                host: host.to_owned(),
            }),
        }
    }
}

/// hickory-resolver against one nameserver or the system's, without a cache.
#[derive(Debug, Clone)]
pub struct HickoryHosts {
    resolver: TokioResolver,
}

impl HickoryHosts {
    pub fn new(config: ResolverConfig) -> Self {
        Self {
            resolver: resolver::uncached(config, Duration::from_secs(2)),
        }
    }

    pub fn with_nameserver(nameserver: std::net::SocketAddr) -> Self {
        Self::new(resolver::nameserver_config(nameserver))
    }
}

#[async_trait]
impl HostLookup for HickoryHosts {
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        // Fully qualified: no search domains appended.
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match self.resolver.lookup_ip(fqdn).await {
            Ok(ips) => Ok(ips.iter().collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Err(LookupError::NoAddress {
                host: host.to_owned(),
            }),
            Err(e) => Err(LookupError::Unavailable {
                host: host.to_owned(),
                message: e.to_string(),
            }),
        }
    }
}

/// What a tenant's git source may point at.
#[derive(Debug, Clone)]
pub struct SourcePolicy {
    addresses: AddressPolicy,
    local_organizations: Arc<Vec<String>>,
    hosts: Arc<dyn HostLookup>,
    /// The platform's own registry (`host:port`), where builds are pushed as
    /// `<registry>/<organization id>/<service id>`.
    registry: Arc<str>,
}

impl Default for SourcePolicy {
    /// Public hosts only, through the system's resolver; no local sources.
    fn default() -> Self {
        Self::new(AddressPolicy::default(), vec![], Arc::new(SystemLookup))
    }
}

impl SourcePolicy {
    pub fn new(
        addresses: AddressPolicy,
        local_organizations: Vec<String>,
        hosts: Arc<dyn HostLookup>,
    ) -> Self {
        Self {
            addresses,
            local_organizations: Arc::new(local_organizations),
            hosts,
            registry: Config::default().registry.into(),
        }
    }

    /// Names the platform's registry (`config.registry`).
    pub fn with_registry(mut self, registry: &str) -> Self {
        self.registry = registry.into();
        self
    }

    /// The platform's registry (`host:port`): where managed engines' images are pulled from.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// From `egress_deny`, `egress_allow`, `local_sources_organizations` and `dns_resolver`.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let hosts: Arc<dyn HostLookup> = match config.dns_resolver_address()? {
            Some(nameserver) => Arc::new(HickoryHosts::with_nameserver(nameserver)),
            None => match resolver::system_config() {
                Ok(resolv) => Arc::new(HickoryHosts::new(resolv)),
                Err(_) => Arc::new(SystemLookup),
            },
        };
        Ok(Self::new(
            config.address_policy()?,
            config.local_sources_organizations.clone(),
            hosts,
        )
        .with_registry(&config.registry))
    }

    /// Refuses an image `organization_id` may not run, with a 422 naming `field`: one in the
    /// platform's registry outside `<organization id>/`, or one in a registry whose host fails
    /// the address policy (the compute node would pull from it). Docker Hub names (no registry
    /// part) pass. 503 when DNS did not answer.
    pub async fn check_image(
        &self,
        field: &str,
        organization_id: Uuid,
        image: &ImageRef,
    ) -> ApiResult<()> {
        let Some(registry) = image.registry() else {
            return Ok(());
        };
        if registry.eq_ignore_ascii_case(&self.registry) {
            let own = format!("{organization_id}/");
            return if image.path().starts_with(&own) {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!(
                        "images in the platform registry {registry} must be this organization's \
                         own builds ({registry}/{organization_id}/...)"
                    ),
                ))
            };
        }
        let host = registry_host(registry);
        self.check_host(
            field,
            &host,
            "registry ",
            "only public registries may be pulled from",
        )
        .await
    }

    /// Refuses `url` for `organization` (its name) with a 422 naming `field`; 503 when DNS did
    /// not answer.
    pub async fn check(&self, field: &str, organization: &str, url: &SourceUrl) -> ApiResult<()> {
        let host = match url {
            SourceUrl::Local(_) => {
                return if self.local_organizations.iter().any(|o| o == organization) {
                    Ok(())
                } else {
                    Err(invalid(
                        field,
                        "local repositories (file:// and absolute paths) are an operator setting \
                         (local_sources_organizations) not enabled for this organization; use an \
                         https:// URL",
                    ))
                };
            }
            SourceUrl::Https(https) => https.host(),
            SourceUrl::Ssh(ssh) => ssh.host(),
        };
        self.check_host(field, host, "", "only public hosts may be fetched")
            .await
    }

    /// Resolves `host` (an IP literal is taken as is) and checks every address; `what` (empty or
    /// ending in a space) and `hint` go into the message.
    async fn check_host(&self, field: &str, host: &Host, what: &str, hint: &str) -> ApiResult<()> {
        let ips = match host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => {
                match tokio::time::timeout(LOOKUP_TIMEOUT, self.hosts.addresses(name)).await {
                    Err(_) => {
                        return Err(ApiError::Unavailable(format!(
                            "resolving {name} took longer than {LOOKUP_TIMEOUT:?}; retry later"
                        )));
                    }
                    Ok(Err(e @ LookupError::NoAddress { .. })) => {
                        return Err(invalid(field, format!("{what}{e}")));
                    }
                    Ok(Err(e)) => return Err(ApiError::Unavailable(e.to_string())),
                    Ok(Ok(ips)) if ips.is_empty() => {
                        return Err(invalid(field, format!("{what}{name} has no address")));
                    }
                    Ok(Ok(ips)) => ips,
                }
            }
        };
        self.addresses.check_all(&ips).map_err(|refused| {
            invalid(field, format!("{what}{host} resolves to {refused}; {hint}"))
        })
    }
}

/// The host of a registry's `host[:port]` (`[v6]` unbracketed).
fn registry_host(registry: &str) -> Host {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(h, _)| h),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    match host.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(host.to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Answers from a table; the real resolvers are exercised by `tests/api_edge.rs`.
    #[derive(Debug, Default)]
    struct Table(HashMap<String, Vec<IpAddr>>);

    #[async_trait]
    impl HostLookup for Table {
        async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
            self.0
                .get(host)
                .cloned()
                .ok_or_else(|| LookupError::NoAddress {
                    host: host.to_owned(),
                })
        }
    }

    fn policy(table: &[(&str, &str)], allow: &[&str]) -> SourcePolicy {
        let table = table
            .iter()
            .map(|(h, ip)| (h.to_string(), vec![ip.parse().unwrap()]))
            .collect();
        SourcePolicy::new(
            AddressPolicy {
                deny: vec![],
                allow: allow.iter().map(|c| c.parse().unwrap()).collect(),
            },
            vec!["demo".into()],
            Arc::new(Table(table)),
        )
    }

    async fn verdict(p: &SourcePolicy, org: &str, url: &str) -> Result<(), String> {
        let url = SourceUrl::parse(url).map_err(|e| e.to_string())?;
        p.check("git.url", org, &url).await.map_err(|e| {
            assert!(e.to_string().starts_with("git.url: "), "{e}");
            e.to_string()
        })
    }

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused() {
        let p = policy(
            &[
                ("loop.example.com", "127.0.0.1"),
                ("meta.example.com", "169.254.169.254"),
                ("ten.example.com", "10.1.2.3"),
                ("public.example.com", "93.184.216.34"),
            ],
            &[],
        );
        for host in ["loop", "meta", "ten"] {
            let err = verdict(&p, "acme", &format!("https://{host}.example.com/r.git"))
                .await
                .unwrap_err();
            assert!(err.contains("only public hosts"), "{err}");
        }
        verdict(&p, "acme", "https://public.example.com/r.git")
            .await
            .unwrap();
        let err = verdict(&p, "acme", "https://nowhere.example.com/r.git")
            .await
            .unwrap_err();
        assert!(err.contains("has no address"), "{err}");
    }

    #[tokio::test]
    async fn local_sources_are_for_the_operators_organizations() {
        let p = policy(&[], &[]);
        let err = verdict(&p, "acme", "file:///srv/app.git")
            .await
            .unwrap_err();
        assert!(err.contains("operator setting"), "{err}");
        let err = verdict(&p, "acme", "/srv/app.git").await.unwrap_err();
        assert!(err.contains("operator setting"), "{err}");
        verdict(&p, "demo", "file:///srv/app.git").await.unwrap();
    }

    #[tokio::test]
    async fn an_allowed_block_opens_a_private_host() {
        let p = policy(&[("git.corp.example", "10.9.0.5")], &["10.9.0.0/16"]);
        verdict(&p, "acme", "https://git.corp.example/r.git")
            .await
            .unwrap();
    }
}
