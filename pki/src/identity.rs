//! Who a certificate names: the control plane, or a node with its id and role. Written as one
//! SPIFFE-style URI subject alternative name:
//! `spiffe://stackpad/control` or `spiffe://stackpad/node/<uuid>/role/<build|compute|proxy>`.

use ::api::NodeRole;
use uuid::Uuid;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The trust domain in every identity URI.
pub const TRUST_DOMAIN: &str = "stackpad";

/// The identity a platform certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    /// `stackpad-control` (client of every daemon).
    Control,
    /// A node's daemon: the node agent (`compute`), buildd (`build`) or the proxy (`proxy`).
    Node { id: Uuid, role: NodeRole },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("certificate cannot be parsed: {0}")]
    Parse(String),
    #[error("certificate names no stackpad identity (spiffe://{TRUST_DOMAIN}/... URI)")]
    Missing,
    #[error("certificate names more than one stackpad identity")]
    Several,
    #[error("{0:?} is not a stackpad identity URI")]
    BadUri(String),
}

impl PeerIdentity {
    /// The URI written in the certificate.
    pub fn uri(&self) -> String {
        match self {
            Self::Control => format!("spiffe://{TRUST_DOMAIN}/control"),
            Self::Node { id, role } => {
                format!("spiffe://{TRUST_DOMAIN}/node/{id}/role/{}", role.as_str())
            }
        }
    }

    /// `control`, `build`, `compute` or `proxy`.
    pub fn role_name(&self) -> &'static str {
        match self {
            Self::Control => "control",
            Self::Node { role, .. } => role.as_str(),
        }
    }

    pub fn parse_uri(uri: &str) -> Result<Self, IdentityError> {
        let bad = || IdentityError::BadUri(uri.to_owned());
        let path = uri
            .strip_prefix("spiffe://")
            .and_then(|r| r.strip_prefix(TRUST_DOMAIN))
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(bad)?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["control"] => Ok(Self::Control),
            ["node", id, "role", role] => Ok(Self::Node {
                id: id.parse().map_err(|_| bad())?,
                role: role.parse().map_err(|_| bad())?,
            }),
            _ => Err(bad()),
        }
    }

    /// The one identity URI among the certificate's subject alternative names.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| IdentityError::Parse(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Parse(e.to_string()))?;
        let prefix = format!("spiffe://{TRUST_DOMAIN}/");
        let mut found = None;
        for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
            if let GeneralName::URI(uri) = name
                && uri.starts_with(&prefix)
            {
                if found.is_some() {
                    return Err(IdentityError::Several);
                }
                found = Some(Self::parse_uri(uri)?);
            }
        }
        found.ok_or(IdentityError::Missing)
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_strangers_are_refused() {
        let id = Uuid::new_v4();
        for identity in [
            PeerIdentity::Control,
            PeerIdentity::Node {
                id,
                role: NodeRole::Compute,
            },
            PeerIdentity::Node {
                id,
                role: NodeRole::Build,
            },
        ] {
            assert_eq!(PeerIdentity::parse_uri(&identity.uri()).unwrap(), identity);
        }
        assert_eq!(
            PeerIdentity::Node {
                id,
                role: NodeRole::Proxy
            }
            .uri(),
            format!("spiffe://stackpad/node/{id}/role/proxy")
        );
        for bad in [
            "spiffe://other/control",
            "spiffe://stackpad/node/x/role/compute",
            "spiffe://stackpad/node/00000000-0000-0000-0000-000000000000/role/gpu",
            "spiffe://stackpad/admin",
            "https://stackpad/control",
        ] {
            assert!(PeerIdentity::parse_uri(bad).is_err(), "{bad}");
        }
    }
}
