//! The proxy route of a web service, the same whoever pushes it (the deploy pipeline at a
//! switch, the domain verifier when a custom domain is verified or revoked): the platform host
//! and the custom domains that passed verification, which are also the names certificates are
//! allowed for. Nothing else is routed: an unverified name could take traffic meant for a
//! domain verified on another service.

use uuid::Uuid;

use crate::clients::RouteSpec;
use crate::store::{Result, Service, Store};

/// The host name every web service gets: `<service>-<project>.<apps_domain>`.
pub fn default_host(service: &str, project: &str, apps_domain: &str) -> String {
    format!("{service}-{project}.{apps_domain}").to_ascii_lowercase()
}

/// Pure: the host names of a web service, the one list the API shows and the proxy routes:
/// the platform host first, then each verified custom domain once.
pub fn service_hosts(platform_host: &str, verified: &[String]) -> Vec<String> {
    let mut hosts = vec![platform_host.to_owned()];
    for host in verified {
        if !hosts.contains(host) {
            hosts.push(host.clone());
        }
    }
    hosts
}

/// Builds the route of `service` (of organization `org`) from the store.
pub async fn service_route(
    store: &Store,
    org: Uuid,
    service: &Service,
    apps_domain: &str,
) -> Result<RouteSpec> {
    let project = store.project(org, service.project_id).await?;
    let platform_host = default_host(&service.name, &project.name, apps_domain);
    let verified = store.verified_domains(service.id).await?;
    Ok(route_spec(org, service, &platform_host, &verified))
}

/// Pure: the route from its parts.
pub fn route_spec(
    org: Uuid,
    service: &Service,
    platform_host: &str,
    verified: &[String],
) -> RouteSpec {
    let hosts = service_hosts(platform_host, verified);
    RouteSpec {
        certificate_hosts: hosts.clone(),
        route_id: format!("{}/default", service.id),
        hosts,
        service_id: service.id.to_string(),
        organization_id: org.to_string(),
        project_id: service.project_id.to_string(),
        environment_id: service.environment_id.to_string(),
    }
}
