//! A daemon's TLS material: its certificate chain and key, and the platform CA it trusts.
//! Loaded from files named in the daemon's config (`[tls]` table) and reloaded when a file
//! changes, checked on each handshake, so a renewed certificate is used without a restart.
//! A new file that does not load (half written, key not matching) leaves the old material in
//! use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use crate::{PeerIdentity, PkiError, provider};

/// The `[tls]` table of a daemon's config: PEM files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// This daemon's certificate (issued by the platform CA at join), then any intermediates.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The platform CA certificate: peers must present a certificate it signed.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// Every path is set; the error names the empty one (`tls.cert`, `tls.key`, `tls.ca`).
    pub fn validate(&self) -> Result<(), String> {
        for (key, path) in [
            ("tls.cert", &self.cert),
            ("tls.key", &self.key),
            ("tls.ca", &self.ca),
        ] {
            if path.as_os_str().is_empty() {
                return Err(format!("config key {key}: must name a PEM file"));
            }
        }
        Ok(())
    }
}

/// What one load produced.
pub(crate) struct Loaded {
    pub(crate) certified: Arc<CertifiedKey>,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) client_verifier: Arc<dyn ClientCertVerifier>,
    pub(crate) identity: PeerIdentity,
}

/// Per file: modification time, length and inode (a file renamed over it is a new inode).
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

struct Watched {
    files: TlsFiles,
    stamp: Mutex<Stamp>,
}

/// The current certificate, key and CA, swapped whole on reload.
pub struct Material {
    current: ArcSwap<Loaded>,
    watched: Option<Watched>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("identity", &self.current.load().identity)
            .field("files", &self.watched.as_ref().map(|w| &w.files))
            .finish()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(|source| PkiError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn stamp(files: &TlsFiles) -> Stamp {
    [&files.cert, &files.key, &files.ca]
        .iter()
        .map(|p| {
            std::fs::metadata(p).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                (
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.len(),
                    m.ino(),
                )
            })
        })
        .collect()
}

fn certs(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::invalid(what, e))?;
    if certs.is_empty() {
        return Err(PkiError::invalid(what, "no certificate in it"));
    }
    Ok(certs)
}

fn load(cert_pem: &[u8], key_pem: &[u8], ca_pem: &[u8]) -> Result<Loaded, PkiError> {
    let chain = certs("certificate", cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| PkiError::invalid("key", e))?;
    let identity = PeerIdentity::from_cert_der(&chain[0])?;
    let certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| PkiError::invalid("certificate and key", e))?;
    let mut roots = RootCertStore::empty();
    for ca in certs("ca certificate", ca_pem)? {
        roots
            .add(ca)
            .map_err(|e| PkiError::invalid("ca certificate", e))?;
    }
    let roots = Arc::new(roots);
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| PkiError::invalid("ca certificate", e))?;
    Ok(Loaded {
        certified: Arc::new(certified),
        roots,
        client_verifier,
        identity,
    })
}

impl Material {
    /// Loads the files, and reloads them whenever one changes.
    pub fn from_files(files: &TlsFiles) -> Result<Arc<Self>, PkiError> {
        let before = stamp(files);
        let loaded = load(
            &read("certificate", &files.cert)?,
            &read("key", &files.key)?,
            &read("ca certificate", &files.ca)?,
        )?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(loaded),
            watched: Some(Watched {
                files: files.clone(),
                stamp: Mutex::new(before),
            }),
        }))
    }

    /// Material held in memory (control's own certificate); [`Self::replace_pem`] renews it.
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Arc<Self>, PkiError> {
        let loaded = load(cert_pem.as_bytes(), key_pem.as_bytes(), ca_pem.as_bytes())?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(loaded),
            watched: None,
        }))
    }

    /// Swaps in new material; the next handshake uses it.
    pub fn replace_pem(&self, cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<(), PkiError> {
        let loaded = load(cert_pem.as_bytes(), key_pem.as_bytes(), ca_pem.as_bytes())?;
        self.current.store(Arc::new(loaded));
        Ok(())
    }

    /// The identity of the current certificate.
    pub fn identity(&self) -> PeerIdentity {
        self.current().identity
    }

    /// The current material, reloaded first if a watched file changed.
    pub(crate) fn current(&self) -> Arc<Loaded> {
        if let Some(w) = &self.watched {
            let now = stamp(&w.files);
            let mut seen = w.stamp.lock().expect("tls stamp lock poisoned");
            if *seen != now {
                *seen = now;
                let reloaded = read("certificate", &w.files.cert).and_then(|c| {
                    load(
                        &c,
                        &read("key", &w.files.key)?,
                        &read("ca certificate", &w.files.ca)?,
                    )
                });
                match reloaded {
                    Ok(loaded) => {
                        tracing::info!(cert = %w.files.cert.display(), identity = %loaded.identity, "tls material reloaded");
                        self.current.store(Arc::new(loaded));
                    }
                    Err(e) => {
                        tracing::warn!(cert = %w.files.cert.display(), error = %e, "tls files changed but do not load: keeping the previous ones");
                    }
                }
            }
        }
        self.current.load_full()
    }
}
