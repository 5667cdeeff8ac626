//! The `acme` section of the proxy's configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::issuer::AcmeConfig;
use super::rfc2136::{Rfc2136, Rfc2136Settings};
use super::seal::Sealer;

/// Where certificates are stored and ordered. Without this section the proxy serves only the
/// certificates given through its config files and `PutCertificate`, and orders nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcmeSettings {
    /// PostgreSQL shared by every proxy instance (certificates, accounts, leases, challenges).
    pub database_url: String,
    /// File holding the 64-hex-digit key that seals private keys at rest...
    pub store_key_file: Option<PathBuf>,
    /// ...or the key itself (the file wins).
    pub store_key: String,
    /// The CA's directory; empty = store only (serve stored certificates, order nothing).
    pub directory_url: String,
    /// PEM roots trusted for the CA's own HTTPS (Pebble's listener CA in tests).
    pub ca_roots_file: Option<PathBuf>,
    pub contact_email: Option<String>,
    /// pebble-challtestsrv's management URL for dns-01 (wildcards) in tests; empty = none.
    pub dns_provider_url: String,
    /// dns-01 (wildcards) by RFC 2136 dynamic update with TSIG to the zone's primary server.
    pub rfc2136: Option<Rfc2136Settings>,
    /// Seconds between certificate passes.
    pub interval_secs: u64,
    /// This instance's name in order leases; empty = host name and pid.
    pub instance: String,
    /// Seconds an order lease lasts unless renewed (renewed every third of it while ordering):
    /// how long a crashed holder keeps other instances from taking its domains over.
    pub lease_ttl_secs: u64,
    /// A new TLS session ticket key in the store every this many seconds (shared by every
    /// instance on the store, see `crate::tickets`).
    pub tls_ticket_rotate_secs: u64,
    /// How long a session ticket resumes, in seconds.
    pub tls_ticket_lifetime_secs: u64,
}

impl Default for AcmeSettings {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            store_key_file: None,
            store_key: String::new(),
            directory_url: String::new(),
            ca_roots_file: None,
            contact_email: None,
            dns_provider_url: String::new(),
            rfc2136: None,
            interval_secs: 10,
            instance: String::new(),
            lease_ttl_secs: 30,
            tls_ticket_rotate_secs: 3600,
            tls_ticket_lifetime_secs: 7200,
        }
    }
}

impl AcmeSettings {
    /// Checks the section, returning the offending key (under `acme.`) and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.database_url.is_empty() {
            return Err((
                "acme.database_url",
                "is required for the shared certificate store".into(),
            ));
        }
        self.sealer()?;
        if self.interval_secs == 0 {
            return Err(("acme.interval_secs", "must be at least 1".into()));
        }
        if self.lease_ttl_secs < 3 {
            return Err((
                "acme.lease_ttl_secs",
                format!(
                    "{} is too short: at least 3 (renewed every third)",
                    self.lease_ttl_secs
                ),
            ));
        }
        if self.tls_ticket_rotate_secs == 0 {
            return Err(("acme.tls_ticket_rotate_secs", "must be at least 1".into()));
        }
        if self.tls_ticket_lifetime_secs == 0 || self.tls_ticket_lifetime_secs > 7 * 86_400 {
            return Err((
                "acme.tls_ticket_lifetime_secs",
                format!(
                    "{} is out of range: 1 to 604800 (7 days, RFC 8446)",
                    self.tls_ticket_lifetime_secs
                ),
            ));
        }
        if !self.directory_url.is_empty() && !self.directory_url.starts_with("https://") {
            return Err((
                "acme.directory_url",
                format!("{:?} is not an https URL", self.directory_url),
            ));
        }
        if let Some(rfc2136) = &self.rfc2136 {
            if !self.dns_provider_url.is_empty() {
                return Err((
                    "acme.rfc2136",
                    "and acme.dns_provider_url both set: choose one dns-01 provider".into(),
                ));
            }
            Rfc2136::new(rfc2136).map_err(|e| ("acme.rfc2136", e.to_string()))?;
        }
        if let Some(path) = &self.ca_roots_file
            && !path.exists()
        {
            return Err((
                "acme.ca_roots_file",
                format!("{} does not exist", path.display()),
            ));
        }
        Ok(())
    }

    /// The sealer from the key file or the inline key.
    pub fn sealer(&self) -> Result<Sealer, (&'static str, String)> {
        let (key, name) = match &self.store_key_file {
            Some(path) => (
                std::fs::read_to_string(path)
                    .map_err(|e| ("acme.store_key_file", format!("{}: {e}", path.display())))?,
                "acme.store_key_file",
            ),
            None => (self.store_key.clone(), "acme.store_key"),
        };
        Sealer::from_hex(&key).map_err(|e| (name, e.to_string()))
    }

    pub fn acme_config(&self) -> Option<AcmeConfig> {
        (!self.directory_url.is_empty()).then(|| AcmeConfig {
            directory_url: self.directory_url.clone(),
            contact_email: self.contact_email.clone(),
            ca_roots: self.ca_roots_file.clone(),
        })
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }

    pub fn tickets(&self) -> crate::tickets::TicketSettings {
        crate::tickets::TicketSettings {
            rotate: Duration::from_secs(self.tls_ticket_rotate_secs),
            lifetime: Duration::from_secs(self.tls_ticket_lifetime_secs),
        }
    }
}
