//! Certificates for every app: ACME orders (http-01, dns-01 for wildcards), the issuance policy
//! and rate limits, and the certificate store shared by all proxy instances in PostgreSQL.
//!
//! Only domains the control plane allowed (`ProxyAdmin.PutAllowedDomain`) are ever ordered: a
//! TLS handshake for an unknown name never causes an order.

pub mod challtestsrv;
pub mod http01;
pub mod issuer;
pub mod manager;
pub mod metrics;
pub mod policy;
pub mod rfc2136;
pub mod seal;
pub mod service;
pub mod settings;
pub mod store;
pub mod validity;

pub use issuer::{AcmeConfig, AcmeError, DnsProvider, Issuer};
pub use manager::{
    Ca, CertRepository, CertificateManager, CertificateSink, ManagerConfig, Outcome,
};
pub use metrics::AcmeMetrics;
pub use service::TlsState;
pub use settings::AcmeSettings;
pub use store::{CertStore, StoreError, StoredCertificate};
