//! The proxy route of a web service, the same whoever pushes it (the deploy pipeline at a
//! switch, the domain verifier when a custom domain is verified or revoked, a teardown): the
//! platform hosts and the custom domains that passed verification, which are also the names
//! certificates are allowed for. Nothing else is routed: an unverified name could take traffic
//! meant for a domain verified on another service.
//!
//! A platform host is `<label>.<apps_domain>`. The label names the service, its environment
//! (left out for production; a preview `pr-<n>` comes first), its project and its organization,
//! so a staging copy or another organization's project of the same names never shares a host:
//! `web-shop-acme` (production), `web-staging-shop-acme`, `pr-12-web-shop-acme`. Labels are
//! stored (`platform_hosts`, one service per label across every organization) when a service is
//! first routed or shown, so they never change across deploys. A label longer than 63 bytes is
//! cut and ends with a hash of the whole; names joined with `-` can coincide
//! (`web-staging` + `shop` and `web` + `staging` + `shop`), and the later service then gets its
//! readable prefix and a hash of its id. A service that answered at `<service>-<project>`
//! before this scheme keeps that label as an alias.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use ::api::ServiceKind;

use crate::clients::RouteSpec;
use crate::store::{Result, Service, Store, StoreError};

/// The longest DNS label (RFC 1035).
pub const MAX_LABEL: usize = 63;
/// Hex digits of the hash a shortened or disambiguated label ends with.
const HASH_HEX: usize = 8;
/// The environment whose hosts carry no environment part.
pub const PRODUCTION: &str = "production";

/// The names a platform host is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostNames<'a> {
    pub organization: &'a str,
    pub project: &'a str,
    pub environment: &'a str,
    pub service: &'a str,
}

/// Whether `environment` names a pull-request preview (`pr-<n>`).
pub fn is_preview(environment: &str) -> bool {
    environment
        .strip_prefix("pr-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Pure: the label as read, before any length limit.
pub fn readable_label(n: &HostNames<'_>) -> String {
    let parts: Vec<&str> = if n.environment == PRODUCTION {
        vec![n.service, n.project, n.organization]
    } else if is_preview(n.environment) {
        vec![n.environment, n.service, n.project, n.organization]
    } else {
        vec![n.service, n.environment, n.project, n.organization]
    };
    parts.join("-").to_ascii_lowercase()
}

/// `readable` cut to fit a label with `-<hash>` after it.
fn with_hash(readable: &str, hashed: &[u8]) -> String {
    let digest = hex::encode(Sha256::digest(hashed));
    let keep = MAX_LABEL - 1 - HASH_HEX;
    let prefix: String = readable.chars().take(keep).collect();
    format!("{}-{}", prefix.trim_end_matches('-'), &digest[..HASH_HEX])
}

/// Pure: the label a service asks for first: the readable one, or when longer than
/// [`MAX_LABEL`] its first bytes and a hash of the whole (the same every time).
pub fn primary_label(n: &HostNames<'_>) -> String {
    let readable = readable_label(n);
    if readable.len() <= MAX_LABEL {
        readable
    } else {
        with_hash(&readable, readable.as_bytes())
    }
}

/// Pure: the label a service gets when its primary label is another service's: the readable
/// prefix and a hash of the service's id (ids never repeat).
pub fn fallback_label(n: &HostNames<'_>, service: Uuid) -> String {
    with_hash(&readable_label(n), service.as_bytes())
}

/// Pure: a label's host under `apps_domain`.
pub fn host(label: &str, apps_domain: &str) -> String {
    format!("{label}.{apps_domain}").to_ascii_lowercase()
}

/// Pure: the host names of a web service, the one list the API shows and the proxy routes:
/// the platform hosts first (the primary one, then a legacy alias), then each verified custom
/// domain once.
pub fn service_hosts(platform_hosts: &[String], verified: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = vec![];
    for host in platform_hosts.iter().chain(verified) {
        if !hosts.contains(host) {
            hosts.push(host.clone());
        }
    }
    hosts
}

/// Pure: the labels to route, primary first. A legacy label longer than a DNS label never
/// worked (the proxy refuses such a host, and would refuse the whole route with it).
pub fn routable(labels: Vec<(String, bool)>) -> Vec<String> {
    labels
        .into_iter()
        .filter(|(label, legacy)| !legacy || label.len() <= MAX_LABEL)
        .map(|(label, _)| label)
        .collect()
}

/// The platform host labels of `service` (of organization `org`), primary first; assigns the
/// primary one on first use. Services other than web services have none.
pub async fn platform_labels(store: &Store, org: Uuid, service: &Service) -> Result<Vec<String>> {
    if service.kind != ServiceKind::Web {
        return Ok(vec![]);
    }
    let mut labels = store.host_labels(service.id).await?;
    if labels.first().is_some_and(|(_, legacy)| !legacy) {
        return Ok(routable(labels));
    }
    let names = store.host_names(org, service.id).await?;
    let n = HostNames {
        organization: &names.organization,
        project: &names.project,
        environment: &names.environment,
        service: &service.name,
    };
    for candidate in [primary_label(&n), fallback_label(&n, service.id)] {
        store.claim_host_label(org, service.id, &candidate).await?;
        // Ours now, whether this call or a concurrent one claimed it.
        labels = store.host_labels(service.id).await?;
        if labels.first().is_some_and(|(_, legacy)| !legacy) {
            return Ok(routable(labels));
        }
    }
    Err(StoreError::Conflict(format!(
        "service {}: no free platform host (both {:?} and its hashed variant are taken)",
        service.id,
        primary_label(&n)
    )))
}

/// The platform hosts of `service`, primary first (see [`platform_labels`]).
pub async fn platform_hosts(
    store: &Store,
    org: Uuid,
    service: &Service,
    apps_domain: &str,
) -> Result<Vec<String>> {
    Ok(platform_labels(store, org, service)
        .await?
        .iter()
        .map(|label| host(label, apps_domain))
        .collect())
}

/// The next route generation (`route_generations`, #16): taken before a route is read from
/// the store, so that of two pushes of one route the later-read one carries the larger number
/// and the proxy refuses the other if it arrives last.
pub async fn next_route_generation(store: &Store) -> Result<u64> {
    let generation: i64 = sqlx::query_scalar("SELECT nextval('route_generations')")
        .fetch_one(&store.pool)
        .await?;
    Ok(u64::try_from(generation).unwrap_or_default())
}

/// The route of `service` to push to the proxy: a fresh generation (see
/// [`next_route_generation`]) taken first, then the route read as [`service_route`]. Every push
/// (a deploy's switch, the domain verifier, a teardown) goes through here, so the proxy orders
/// them all by the one sequence.
pub async fn route_push(
    store: &Store,
    org: Uuid,
    service: &Service,
    apps_domain: &str,
) -> Result<RouteSpec> {
    let generation = next_route_generation(store).await?;
    Ok(RouteSpec {
        generation,
        ..service_route(store, org, service, apps_domain).await?
    })
}

/// Builds the route of `service` (of organization `org`) from the store (unordered: generation
/// 0; [`route_push`] for one to send).
pub async fn service_route(
    store: &Store,
    org: Uuid,
    service: &Service,
    apps_domain: &str,
) -> Result<RouteSpec> {
    let platform = platform_hosts(store, org, service, apps_domain).await?;
    let verified = store.verified_domains(service.id).await?;
    Ok(route_spec(org, service, &platform, &verified))
}

/// Pure: the route from its parts.
pub fn route_spec(
    org: Uuid,
    service: &Service,
    platform_hosts: &[String],
    verified: &[String],
) -> RouteSpec {
    let hosts = service_hosts(platform_hosts, verified);
    RouteSpec {
        certificate_hosts: hosts.clone(),
        route_id: format!("{}/default", service.id),
        hosts,
        service_id: service.id.to_string(),
        organization_id: org.to_string(),
        project_id: service.project_id.to_string(),
        environment_id: service.environment_id.to_string(),
        generation: 0,
    }
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
