//! Who may call which route: the one table the auth middleware consults for every request.
//!
//! | caller | may call |
//! |---|---|
//! | anyone | `GET /openapi.json`, `POST /webhooks/github/{id}` and `POST /webhooks/github/projects/{id}` (signed instead), `POST /nodes/join` (a join token instead) |
//! | operator token | `POST /organizations`, `/nodes` (GET, POST), `DELETE /nodes/{id}`, `POST /nodes/{id}/drain`, `POST /nodes/{id}/heartbeat`, `POST /nodes/join-tokens` |
//! | `read_only` | every other `GET` of its organization, but `GET /tokens` |
//! | `deployer` | that, and deployments (create, rollback, cancel) and custom domains (add, remove, verify) |
//! | `owner` | everything of its organization: projects, environments, services, secrets, tokens (listing them too), members, webhook secrets |
//!
//! A route that is not in the table needs `owner` unless it is a `GET`.

use crate::store::Role;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No token (the route authenticates otherwise, or not at all).
    Public,
    /// The operator token.
    Operator,
    /// An organization token with at least this role.
    Role(Role),
}

const OPERATOR: &[(&str, &str)] = &[
    ("POST", "/organizations"),
    ("GET", "/nodes"),
    ("POST", "/nodes"),
    ("DELETE", "/nodes/{id}"),
    ("POST", "/nodes/{id}/drain"),
    ("POST", "/nodes/{id}/heartbeat"),
    ("POST", "/nodes/join-tokens"),
];

const DEPLOYER: &[(&str, &str)] = &[
    ("POST", "/services/{id}/deployments"),
    ("POST", "/deployments/{id}/rollback"),
    ("POST", "/deployments/{id}/cancel"),
    ("POST", "/services/{id}/domains"),
    ("DELETE", "/services/{id}/domains/{domain}"),
    ("POST", "/services/{id}/domains/{domain}/verify"),
];

/// Reads only an owner may make: the organization's tokens (names, roles, last use) tell who
/// can do what; an owner manages them.
const OWNER_READS: &[(&str, &str)] = &[("GET", "/tokens")];

/// Whether `path` is served without a token.
pub fn is_public(path: &str) -> bool {
    path == "/openapi.json"
        || path == "/session"
        || path.starts_with("/webhooks/")
        || path == "/nodes/join"
}

/// What `method` on `route` (the route's pattern, e.g. `/services/{id}`) needs. `None` for the
/// route = no route matched (the answer is 404 for any valid token).
pub fn need(method: &str, route: Option<&str>) -> Need {
    let method = method.to_ascii_uppercase();
    let Some(route) = route else {
        return Need::Role(Role::ReadOnly);
    };
    if is_public(route) {
        return Need::Public;
    }
    let is = |table: &[(&str, &str)]| table.iter().any(|(m, r)| *m == method && *r == route);
    if is(OPERATOR) {
        Need::Operator
    } else if is(OWNER_READS) {
        Need::Role(Role::Owner)
    } else if matches!(method.as_str(), "GET" | "HEAD") {
        Need::Role(Role::ReadOnly)
    } else if is(DEPLOYER) {
        Need::Role(Role::Deployer)
    } else {
        Need::Role(Role::Owner)
    }
}

/// The 403 message when `have` is below `need`.
pub fn refusal(need: Role, have: Role) -> String {
    format!("this call needs the {need} role; this token has the {have} role")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_owner_read(route: &str) -> bool {
        OWNER_READS.iter().any(|(_, r)| *r == route)
    }

    #[test]
    fn every_route_needs_something_and_mutations_need_more_than_read_only() {
        for (method, route) in super::super::ROUTES {
            let need = need(method, Some(route));
            if *method == "get" && !is_owner_read(route) {
                assert!(
                    matches!(
                        need,
                        Need::Public | Need::Operator | Need::Role(Role::ReadOnly)
                    ),
                    "{method} {route}: {need:?}"
                );
            } else {
                assert_ne!(need, Need::Role(Role::ReadOnly), "{method} {route}");
            }
        }
        for (m, r) in OPERATOR.iter().chain(DEPLOYER).chain(OWNER_READS) {
            assert!(
                super::super::ROUTES
                    .iter()
                    .any(|(rm, rr)| rm.eq_ignore_ascii_case(m) && rr == r),
                "{m} {r} is in the role table but not a route"
            );
        }
        assert_eq!(
            need("PATCH", Some("/services/{id}")),
            Need::Role(Role::Owner)
        );
        assert_eq!(need("POST", Some("/tokens")), Need::Role(Role::Owner));
        assert_eq!(need("GET", Some("/tokens")), Need::Role(Role::Owner));
        assert_eq!(need("GET", None), Need::Role(Role::ReadOnly));
        assert!(Role::Owner > Role::Deployer && Role::Deployer > Role::ReadOnly);
    }
}
