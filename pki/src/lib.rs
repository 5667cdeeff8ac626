//! The platform PKI: the certificate authority `stackpad-control` creates at bootstrap, the
//! certificates it issues to nodes (each naming its node id and role) and to itself, and the
//! mTLS every daemon link runs on (rustls under tonic): servers that accept only certificates of
//! the platform CA with an allowed role, clients that check the identity of the daemon they
//! reach, and certificate files reloaded on change (rotation without restart).
//!
//! It does not store anything (control keeps the CA in PostgreSQL, sealed) and does not decide
//! who may join (control's join tokens do).

#![forbid(unsafe_code)]

mod ca;
mod identity;
mod listen;
mod material;
mod transport;
mod verify;

pub use ca::{CertificateAuthority, Csr, IssuedKey, new_key_and_csr};
pub use identity::{IdentityError, PeerIdentity, TRUST_DOMAIN};
pub use listen::{ListenError, require_tls_off_loopback};
pub use material::{Material, TlsFiles};
pub use transport::{ClientConfigSource, Conn, TlsConnector, channel, incoming};
pub use verify::{Accept, ServerCheck, client_config, server_config};

/// Everything that can go wrong with certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl PkiError {
    pub(crate) fn invalid(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Invalid {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// The crypto provider every config here uses (ring, as the rest of the workspace).
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
