//! The platform certificate authority: created once (control keeps it), it signs node
//! certificates from their CSRs and control's own client certificate. Keys are ECDSA P-256.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::{PeerIdentity, PkiError};

/// How long the CA itself is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates are valid from a little before they are issued (clocks of nodes differ).
const BACKDATE: Duration = Duration::from_secs(300);

/// The platform CA: its certificate and key (PEM) and the issuer built from them.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A certificate with the key it certifies (PEM), for a holder that does not send a CSR.
#[derive(Clone)]
pub struct IssuedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Stackpad");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Parameters of an end-entity certificate naming `identity`, valid for `validity`.
fn leaf_params(identity: &PeerIdentity, validity: Duration) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&identity.uri());
    let uri = identity
        .uri()
        .try_into()
        .map_err(|e| PkiError::invalid("identity uri", e))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match identity {
        PeerIdentity::Control => vec![ExtendedKeyUsagePurpose::ClientAuth],
        // A node serves its daemon and may call other daemons.
        PeerIdentity::Node { .. } => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

impl CertificateAuthority {
    /// A new CA (new key), named `common_name`.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA as stored (certificate and key PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::invalid("ca key", e))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| PkiError::invalid("ca certificate", e))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The key, PEM: seal it before storing it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Signs a node's CSR. Only the CSR's key is used: the names, usages and validity are the
    /// CA's choice (`identity`, `validity`), whatever the CSR asks for.
    pub fn sign_csr(
        &self,
        csr: &Csr,
        identity: &PeerIdentity,
        validity: Duration,
    ) -> Result<String, PkiError> {
        self.sign(&csr.0.public_key, identity, validity)
    }

    /// A new key and its certificate (control's own, or a test's).
    pub fn issue(
        &self,
        identity: &PeerIdentity,
        validity: Duration,
    ) -> Result<IssuedKey, PkiError> {
        let key = KeyPair::generate()?;
        let cert_pem = self.sign(&key, identity, validity)?;
        Ok(IssuedKey {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    fn sign(
        &self,
        public_key: &impl PublicKeyData,
        identity: &PeerIdentity,
        validity: Duration,
    ) -> Result<String, PkiError> {
        Ok(leaf_params(identity, validity)?
            .signed_by(public_key, &self.issuer)?
            .pem())
    }
}

/// A certificate signing request whose signature was checked (the sender holds the key).
pub struct Csr(CertificateSigningRequestParams);

impl std::fmt::Debug for Csr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Csr(..)")
    }
}

impl Csr {
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        CertificateSigningRequestParams::from_pem(pem)
            .map(Self)
            .map_err(|e| PkiError::invalid("csr", e))
    }
}

/// A new node key and a CSR for it (PEM both). The CSR carries no name that matters: the CA
/// writes the identity.
pub fn new_key_and_csr() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("stackpad node");
    let csr = params.serialize_request(&key)?;
    let csr_pem = csr.pem()?;
    Ok((key.serialize_pem(), csr_pem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::api::NodeRole;

    #[test]
    fn a_signed_csr_names_the_identity_the_ca_chose() {
        let ca = CertificateAuthority::generate("test ca").unwrap();
        let ca = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let (_key, csr) = new_key_and_csr().unwrap();
        let csr = Csr::from_pem(&csr).unwrap();
        let identity = PeerIdentity::Node {
            id: uuid::Uuid::new_v4(),
            role: NodeRole::Compute,
        };
        let cert = ca
            .sign_csr(&csr, &identity, Duration::from_secs(3600))
            .unwrap();
        let der = pem_der(&cert);
        assert_eq!(PeerIdentity::from_cert_der(&der).unwrap(), identity);
        let control = ca
            .issue(&PeerIdentity::Control, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            PeerIdentity::from_cert_der(&pem_der(&control.cert_pem)).unwrap(),
            PeerIdentity::Control
        );
        assert!(Csr::from_pem("not a csr").is_err());
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }
}
