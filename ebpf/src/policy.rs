//! Policy as data: identities, endpoint roles, allow rules between identities. Pure types; the
//! loader writes them into the maps.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::maps::{EndpointValue, PairKey};

/// Who an endpoint is, for policy: a project and one of its environments, hashed to 64 bits.
/// Two endpoints with the same identity may talk to each other freely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(u64);

impl Identity {
    /// The identity of `(project, environment)`; the ids are the control plane's (UUIDs or slugs).
    pub fn of(project: &str, environment: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"stackpad-identity\0");
        h.update(project.as_bytes());
        h.update([0]);
        h.update(environment.as_bytes());
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        // 0 is never an identity (an all-zero value would match a zeroed map entry).
        Identity(u64::from_le_bytes(first).max(1))
    }

    /// The raw 64-bit value stored in the maps.
    pub fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Roles an endpoint plays beyond its identity (a bit set, combined with `|`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Roles(u8);

impl Roles {
    /// No role: reachable only from its own identity and explicit rules.
    pub const NONE: Roles = Roles(0);
    /// A `web` service: the proxy may reach it on its service port (TCP).
    pub const WEB: Roles = Roles(1);
    /// The ingress proxy: may reach `web` services on their service port.
    pub const PROXY: Roles = Roles(2);
    /// The node agent (health checks): may reach any endpoint on its service port (TCP).
    pub const NODE: Roles = Roles(4);

    /// Whether every role of `other` is in `self`.
    pub fn contains(self, other: Roles) -> bool {
        self.0 & other.0 == other.0
    }

    pub(crate) fn bits(self) -> u8 {
        self.0
    }
}

impl std::ops::BitOr for Roles {
    type Output = Roles;
    fn bitor(self, rhs: Roles) -> Roles {
        Roles(self.0 | rhs.0)
    }
}

/// The policy facts about one endpoint address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointPolicy {
    pub identity: Identity,
    pub roles: Roles,
    /// The port its service listens on (what the proxy and health checks may reach).
    pub service_port: Option<u16>,
}

impl EndpointPolicy {
    /// A plain member of `identity` with no service port.
    pub fn member(identity: Identity) -> Self {
        EndpointPolicy {
            identity,
            roles: Roles::NONE,
            service_port: None,
        }
    }

    /// A `web` service of `identity` listening on `port`.
    pub fn web(identity: Identity, port: u16) -> Self {
        EndpointPolicy {
            identity,
            roles: Roles::WEB,
            service_port: Some(port),
        }
    }

    /// A non-web service (`database`, `cache`, `worker`) of `identity` on `port`.
    pub fn internal(identity: Identity, port: u16) -> Self {
        EndpointPolicy {
            identity,
            roles: Roles::NONE,
            service_port: Some(port),
        }
    }

    pub(crate) fn to_value(self) -> EndpointValue {
        EndpointValue {
            identity: self.identity.raw(),
            service_port: self.service_port.unwrap_or(0),
            roles: self.roles.bits(),
            pad: [0; 5],
        }
    }
}

/// Transport protocol of an allow rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

impl Protocol {
    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
        }
    }
}

/// An explicit allow rule from one identity to another, beyond the defaults (same identity;
/// proxy to `web`; node agent to service ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PairRule {
    pub from: Identity,
    pub to: Identity,
    /// `None`: every port and protocol. `Some((proto, port))`: only that one.
    pub port: Option<(Protocol, u16)>,
}

impl PairRule {
    pub(crate) fn key(&self) -> PairKey {
        let (proto, port) = match self.port {
            Some((proto, port)) => (proto.number(), port),
            None => (0, 0),
        };
        PairKey {
            src: self.from.raw(),
            dst: self.to.raw(),
            port,
            proto,
            pad: [0; 5],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_stable_distinct_and_never_zero() {
        let a = Identity::of("p1", "production");
        assert_eq!(a, Identity::of("p1", "production"));
        assert_ne!(a, Identity::of("p1", "staging"));
        assert_ne!(a, Identity::of("p2", "production"));
        // The separator keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(Identity::of("ab", "c"), Identity::of("a", "bc"));
        assert_ne!(a.raw(), 0);
    }

    #[test]
    fn endpoint_values_carry_roles_and_port() {
        let id = Identity::of("p", "e");
        let v = EndpointPolicy::web(id, 8080).to_value();
        assert_eq!((v.identity, v.service_port, v.roles), (id.raw(), 8080, 1));
        assert!((Roles::PROXY | Roles::NODE).contains(Roles::NODE));
        assert!(!Roles::WEB.contains(Roles::PROXY));
    }

    #[test]
    fn rules_without_port_match_any_protocol() {
        let (a, b) = (Identity::of("a", "e"), Identity::of("b", "e"));
        let any = PairRule {
            from: a,
            to: b,
            port: None,
        }
        .key();
        assert_eq!((any.port, any.proto), (0, 0));
        let one = PairRule {
            from: a,
            to: b,
            port: Some((Protocol::Udp, 53)),
        }
        .key();
        assert_eq!((one.port, one.proto), (53, 17));
    }
}
