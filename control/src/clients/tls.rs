//! Control's side of the mTLS to the daemons (#15): its own client certificate, issued by the
//! platform CA (kept in PostgreSQL) and renewed in memory, and, for each new connection to a
//! daemon at an `https://` address, the identity that daemon must show: the node registered at
//! that address, with its role. A certificate of the platform CA naming another node is
//! refused, as is one of another CA.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::api::NodeRole;
use pki::{ClientConfigSource, Material, PeerIdentity};

use crate::store::Store;

/// How long control's client certificate is valid, and when it is renewed.
const CONTROL_CERT_VALIDITY: Duration = Duration::from_secs(7 * 86_400);
const CONTROL_CERT_RENEW_AFTER: Duration = Duration::from_secs(86_400);

/// Control's certificate and the nodes' expected identities, read from the store.
#[derive(Debug)]
pub struct PlatformTls {
    store: Store,
    issued: tokio::sync::Mutex<Option<(Arc<Material>, Instant)>>,
}

fn io_error(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, message)
}

impl PlatformTls {
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store,
            issued: tokio::sync::Mutex::new(None),
        })
    }

    /// Control's current certificate (issued on first use, renewed after a day).
    pub async fn material(&self) -> Result<Arc<Material>, String> {
        let mut issued = self.issued.lock().await;
        if let Some((material, at)) = issued.as_ref()
            && at.elapsed() < CONTROL_CERT_RENEW_AFTER
        {
            return Ok(material.clone());
        }
        let ca = self
            .store
            .platform_ca()
            .await
            .map_err(|e| format!("platform ca: {e}"))?;
        let cert = ca
            .issue(&PeerIdentity::Control, CONTROL_CERT_VALIDITY)
            .map_err(|e| format!("control certificate: {e}"))?;
        let material = match issued.take() {
            Some((material, _)) => {
                material
                    .replace_pem(&cert.cert_pem, &cert.key_pem, ca.cert_pem())
                    .map_err(|e| e.to_string())?;
                material
            }
            None => Material::from_pem(&cert.cert_pem, &cert.key_pem, ca.cert_pem())
                .map_err(|e| e.to_string())?,
        };
        *issued = Some((material.clone(), Instant::now()));
        Ok(material)
    }

    /// The client configs of connections to the `role` daemon at `address`.
    pub fn for_address(
        self: &Arc<Self>,
        address: &str,
        role: NodeRole,
    ) -> Arc<dyn ClientConfigSource> {
        Arc::new(AddressSource {
            tls: self.clone(),
            address: address.to_owned(),
            role,
        })
    }

    /// What the daemon at `address` must be: the node registered there (any proxy when no
    /// node row names the proxy's address: the proxy is configured, not joined, today).
    async fn expected(&self, address: &str, role: NodeRole) -> Result<Expected, String> {
        let node = self
            .store
            .node_by_address(address)
            .await
            .map_err(|e| e.to_string())?;
        match node {
            Some(n) if n.role == role => Ok(Expected {
                role,
                id: Some(n.id),
            }),
            Some(n) => Err(format!(
                "node {} at {address} is a {} node, not {role}",
                n.name, n.role
            )),
            None if role == NodeRole::Proxy => Ok(Expected { role, id: None }),
            None => Err(format!("no {role} node is registered at {address}")),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Expected {
    role: NodeRole,
    id: Option<uuid::Uuid>,
}

impl Expected {
    fn check(&self, peer: &PeerIdentity) -> Result<(), String> {
        match peer {
            PeerIdentity::Node { id, role }
                if *role == self.role && self.id.is_none_or(|want| want == *id) =>
            {
                Ok(())
            }
            other => Err(match self.id {
                Some(want) => format!("{other} is not the {} node {want}", self.role),
                None => format!("{other} is not a {} node", self.role),
            }),
        }
    }
}

struct AddressSource {
    tls: Arc<PlatformTls>,
    address: String,
    role: NodeRole,
}

impl ClientConfigSource for AddressSource {
    fn client_config(
        &self,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<rustls::ClientConfig>>> + Send + '_>> {
        Box::pin(async move {
            let material = self.tls.material().await.map_err(io_error)?;
            let expected = self
                .tls
                .expected(&self.address, self.role)
                .await
                .map_err(io_error)?;
            Ok(pki::client_config(
                material,
                Arc::new(move |peer: &PeerIdentity| expected.check(peer)),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_node_and_role_only() {
        let id = uuid::Uuid::new_v4();
        let node = Expected {
            role: NodeRole::Compute,
            id: Some(id),
        };
        assert!(
            node.check(&PeerIdentity::Node {
                id,
                role: NodeRole::Compute
            })
            .is_ok()
        );
        let other = PeerIdentity::Node {
            id: uuid::Uuid::new_v4(),
            role: NodeRole::Compute,
        };
        assert!(node.check(&other).unwrap_err().contains(&id.to_string()));
        assert!(
            node.check(&PeerIdentity::Node {
                id,
                role: NodeRole::Build
            })
            .is_err()
        );
        assert!(node.check(&PeerIdentity::Control).is_err());
        let proxy = Expected {
            role: NodeRole::Proxy,
            id: None,
        };
        assert!(
            proxy
                .check(&PeerIdentity::Node {
                    id,
                    role: NodeRole::Proxy
                })
                .is_ok()
        );
        assert!(proxy.check(&other).is_err());
    }
}
