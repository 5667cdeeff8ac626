//! The route table: host (exact or `*.suffix`) + optional path prefix -> service.
//!
//! A [`RouteTable`] is immutable: it is built from [`RouteSpec`]s, validated as a whole, and
//! swapped in with one atomic store (see [`crate::state`]). Lookups take no lock.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Largest request body a route accepts unless it says otherwise (100 MB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 100 * 1024 * 1024;

/// One route as the admin API and the state file describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub route_id: String,
    pub hosts: Vec<String>,
    #[serde(default)]
    pub path_prefix: String,
    pub service_id: String,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Owner of the service, stored on the route's access log rows (scoping of queries).
    #[serde(default)]
    pub organization_id: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub environment_id: String,
    /// Orders the updates of this route id (proto `Route.generation`); 0 = none held.
    #[serde(default)]
    pub generation: u64,
}

fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

/// Why a route or a route table was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("route id is empty")]
    EmptyId,
    #[error("route {route_id}: no hosts")]
    NoHosts { route_id: String },
    #[error("route {route_id}: invalid host {host:?}: {reason}")]
    InvalidHost {
        route_id: String,
        host: String,
        reason: &'static str,
    },
    #[error("route {route_id}: path prefix {prefix:?} must start with '/'")]
    InvalidPrefix { route_id: String, prefix: String },
    #[error("route {route_id}: service id is empty")]
    EmptyService { route_id: String },
    #[error("route {route_id} and route {other}: both claim host {host:?} with prefix {prefix:?}")]
    Conflict {
        route_id: String,
        other: String,
        host: String,
        prefix: String,
    },
    #[error("route id {route_id} appears twice")]
    DuplicateId { route_id: String },
}

impl RouteSpec {
    /// Normalises (0 = default body limit, "/" prefix = everything) and checks one route.
    pub fn validate(mut self) -> Result<Self, RouteError> {
        if self.route_id.trim().is_empty() {
            return Err(RouteError::EmptyId);
        }
        if self.hosts.is_empty() {
            return Err(RouteError::NoHosts {
                route_id: self.route_id,
            });
        }
        for host in &self.hosts {
            if let Err(reason) = check_host(host) {
                return Err(RouteError::InvalidHost {
                    route_id: self.route_id.clone(),
                    host: host.clone(),
                    reason,
                });
            }
        }
        if !self.path_prefix.is_empty() && !self.path_prefix.starts_with('/') {
            return Err(RouteError::InvalidPrefix {
                route_id: self.route_id,
                prefix: self.path_prefix,
            });
        }
        if self.path_prefix == "/" {
            self.path_prefix.clear();
        }
        if self.service_id.trim().is_empty() {
            return Err(RouteError::EmptyService {
                route_id: self.route_id,
            });
        }
        if self.max_body_bytes == 0 {
            self.max_body_bytes = DEFAULT_MAX_BODY_BYTES;
        }
        Ok(self)
    }
}

fn check_host(host: &str) -> Result<(), &'static str> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() {
        return Err("empty name");
    }
    if host != host.to_ascii_lowercase() {
        return Err("must be lower case");
    }
    if name.contains('*') {
        return Err("a wildcard is only allowed as the whole first label (\"*.example.com\")");
    }
    if name.contains(':') {
        return Err("must not carry a port");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("labels must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-' and '_' are allowed");
        }
    }
    Ok(())
}

/// The immutable lookup structure built from validated routes.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    routes: Vec<Arc<RouteSpec>>,
    /// Exact host -> indexes into `routes`, longest prefix first.
    exact: HashMap<String, Vec<usize>>,
    /// Wildcard suffix (without "*.") -> indexes, longest prefix first.
    wildcard: HashMap<String, Vec<usize>>,
}

impl RouteTable {
    /// Validates every route and the set as a whole (unique ids, no two routes claiming the same
    /// host and prefix).
    pub fn build(routes: Vec<RouteSpec>) -> Result<Self, RouteError> {
        let mut table = RouteTable::default();
        let mut claimed: HashMap<(String, String), String> = HashMap::new();
        for route in routes {
            let route = route.validate()?;
            if table.routes.iter().any(|r| r.route_id == route.route_id) {
                return Err(RouteError::DuplicateId {
                    route_id: route.route_id,
                });
            }
            let index = table.routes.len();
            for host in &route.hosts {
                let key = (host.clone(), route.path_prefix.clone());
                if let Some(other) = claimed.insert(key, route.route_id.clone()) {
                    return Err(RouteError::Conflict {
                        route_id: route.route_id.clone(),
                        other,
                        host: host.clone(),
                        prefix: route.path_prefix.clone(),
                    });
                }
                let bucket = match host.strip_prefix("*.") {
                    Some(suffix) => table.wildcard.entry(suffix.to_owned()).or_default(),
                    None => table.exact.entry(host.clone()).or_default(),
                };
                bucket.push(index);
            }
            table.routes.push(Arc::new(route));
        }
        let routes = &table.routes;
        for bucket in table.exact.values_mut().chain(table.wildcard.values_mut()) {
            bucket.sort_by_key(|&i| std::cmp::Reverse(routes[i].path_prefix.len()));
        }
        Ok(table)
    }

    /// All routes, in the order they were given.
    pub fn routes(&self) -> &[Arc<RouteSpec>] {
        &self.routes
    }

    /// The route serving `host` (any case, port allowed) and `path`: an exact host beats a
    /// wildcard, a longer wildcard suffix beats a shorter one, and within a host the longest
    /// matching path prefix wins.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<RouteSpec>> {
        let host = normalize_host(host);
        if let Some(route) = self
            .exact
            .get(host.as_ref())
            .and_then(|b| self.best(b, path))
        {
            return Some(route);
        }
        let mut rest = host.as_ref();
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(route) = self.wildcard.get(suffix).and_then(|b| self.best(b, path)) {
                return Some(route);
            }
            rest = suffix;
        }
        None
    }

    fn best(&self, bucket: &[usize], path: &str) -> Option<&Arc<RouteSpec>> {
        bucket
            .iter()
            .map(|&i| &self.routes[i])
            .find(|r| prefix_matches(&r.path_prefix, path))
    }
}

/// "/api" matches "/api", "/api/x" and "/api?q", not "/apix".
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?']),
        None => false,
    }
}

fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests;
