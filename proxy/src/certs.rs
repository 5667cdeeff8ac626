//! TLS certificates by SNI. Today the table holds the certificate from the config files as the
//! default; issue #4 adds per-domain certificates (ACME, `PutCertificate`) by swapping in a new
//! table. Lookups during handshakes take no lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate file {path}: {message}")]
    Chain { path: PathBuf, message: String },
    #[error("private key file {path}: {message}")]
    Key { path: PathBuf, message: String },
}

/// Certificates by SNI name (exact, or "*.suffix"), plus a default for clients without a
/// matching name.
#[derive(Debug, Default, Clone)]
pub struct Certificates {
    pub by_name: HashMap<String, Arc<CertifiedKey>>,
    pub default: Option<Arc<CertifiedKey>>,
}

impl Certificates {
    fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni.map(str::to_ascii_lowercase) {
            if let Some(c) = self.by_name.get(&name) {
                return Some(Arc::clone(c));
            }
            if let Some((_, suffix)) = name.split_once('.')
                && let Some(c) = self.by_name.get(&format!("*.{suffix}"))
            {
                return Some(Arc::clone(c));
            }
        }
        self.default.clone()
    }
}

/// The live table, swapped whole; it is the TLS listener's certificate resolver.
#[derive(Debug, Default)]
pub struct CertificateTable {
    current: ArcSwap<Certificates>,
    /// Serializes writers (read-copy-update); handshakes never take it.
    writer: std::sync::Mutex<()>,
}

impl CertificateTable {
    pub fn new(certs: Certificates) -> Self {
        Self {
            current: ArcSwap::from_pointee(certs),
            writer: std::sync::Mutex::new(()),
        }
    }

    /// Serves `key` to clients whose name has no certificate of its own.
    pub fn set_default(&self, key: Arc<CertifiedKey>) {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Certificates::clone(&self.current.load());
        next.default = Some(key);
        self.current.store(Arc::new(next));
    }

    /// Serves `key` for `domain` (exact or `*.suffix`) from now on.
    pub fn insert(&self, domain: &str, key: Arc<CertifiedKey>) {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Certificates::clone(&self.current.load());
        next.by_name.insert(domain.to_ascii_lowercase(), key);
        self.current.store(Arc::new(next));
    }

    /// Stops serving `domain`'s own certificate; true when there was one.
    pub fn remove(&self, domain: &str) -> bool {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Certificates::clone(&self.current.load());
        let removed = next.by_name.remove(&domain.to_ascii_lowercase()).is_some();
        self.current.store(Arc::new(next));
        removed
    }

    pub fn swap(&self, certs: Certificates) {
        self.current.store(Arc::new(certs));
    }

    pub fn current(&self) -> Arc<Certificates> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertificateTable {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().lookup(hello.server_name())
    }
}

/// Builds a certified key from a PEM chain (leaf first) and a PEM private key in memory.
pub fn certified_key_from_pem(chain: &str, key: &str) -> Result<CertifiedKey, CertError> {
    let source = PathBuf::from("<pem>");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Chain {
            path: source.clone(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::Chain {
            path: source,
            message: "no certificate in it".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| CertError::Key {
        path: source.clone(),
        message: e.to_string(),
    })?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| CertError::Key {
            path: source,
            message: e.to_string(),
        })?;
    Ok(CertifiedKey::new(certs, signing))
}

/// Loads a PEM chain (leaf first) and its private key.
pub fn load_pem_files(chain: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| CertError::Chain {
            path: chain.into(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::Chain {
            path: chain.into(),
            message: "no certificate in it".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| CertError::Key {
        path: key.into(),
        message: e.to_string(),
    })?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| CertError::Key {
            path: key.into(),
            message: e.to_string(),
        })?;
    Ok(CertifiedKey::new(certs, signing))
}
