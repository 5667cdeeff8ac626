//! The rustls configs of daemon links. A server (node agent, buildd, proxy admin) accepts a
//! client only with a certificate of the platform CA whose identity it allows ([`Accept`]); a
//! client (control) accepts a server only with a certificate of the platform CA whose identity
//! its [`ServerCheck`] approves (the node it meant to reach). Host names play no part: the
//! identity in the certificate is what is checked. TLS 1.3 only, ALPN h2.

use std::sync::Arc;

use ::api::NodeRole;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, ServerConfig,
    SignatureScheme,
};

use crate::{Material, PeerIdentity, provider};

/// The client identities a daemon's server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    pub control: bool,
    pub roles: Vec<NodeRole>,
}

impl Accept {
    /// Only `stackpad-control` (what every daemon's API serves today).
    pub fn control() -> Self {
        Self {
            control: true,
            roles: vec![],
        }
    }

    pub fn allows(&self, identity: &PeerIdentity) -> bool {
        match identity {
            PeerIdentity::Control => self.control,
            PeerIdentity::Node { role, .. } => self.roles.contains(role),
        }
    }
}

/// Whether a server's identity is the one the client meant to reach; the error says why not.
pub type ServerCheck = Arc<dyn Fn(&PeerIdentity) -> Result<(), String> + Send + Sync>;

fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

fn refused(side: &str, reason: String) -> Error {
    tracing::warn!(peer = side, %reason, "tls peer refused");
    Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

#[derive(Debug)]
struct ClientVerifier {
    material: Arc<Material>,
    accept: Accept,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let loaded = self.material.current();
        loaded
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        let identity = PeerIdentity::from_cert_der(end_entity)
            .map_err(|e| refused("client", e.to_string()))?;
        if !self.accept.allows(&identity) {
            return Err(refused(
                "client",
                format!(
                    "{identity} has role {}, not one this daemon accepts",
                    identity.role_name()
                ),
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

struct ServerVerifier {
    material: Arc<Material>,
    check: ServerCheck,
    algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for ServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerVerifier")
            .field("material", &self.material)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let loaded = self.material.current();
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &loaded.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let identity = PeerIdentity::from_cert_der(end_entity)
            .map_err(|e| refused("server", e.to_string()))?;
        (self.check)(&identity).map_err(|reason| refused("server", reason))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Hands out the current certificate on each handshake (rotation without restart).
#[derive(Debug)]
struct CurrentCert(Arc<Material>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The server side of a daemon link: client certificates of the platform CA, identities `accept`
/// allows.
pub fn server_config(material: Arc<Material>, accept: Accept) -> Arc<ServerConfig> {
    let verifier = ClientVerifier {
        material: material.clone(),
        accept,
        algorithms: algorithms(),
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(CurrentCert(material)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No resumption: every connection shows its certificate to the verifier of the moment (a
    // resumed session would skip it, and outlive a rotated CA).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// The client side of a daemon link: presents `material`'s certificate, accepts a server of the
/// platform CA that `check` approves.
pub fn client_config(material: Arc<Material>, check: ServerCheck) -> Arc<ClientConfig> {
    let verifier = ServerVerifier {
        material: material.clone(),
        check,
        algorithms: algorithms(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(CurrentCert(material)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}
