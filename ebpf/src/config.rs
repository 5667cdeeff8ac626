//! Loader configuration.

use std::path::PathBuf;

use crate::cidr::Cidr;
use crate::error::Error;

/// Where the maps are pinned and which destinations are denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsolationConfig {
    /// Directory on bpffs holding the pinned maps (and `links/`). One per node; tests use
    /// their own so they run in parallel.
    pub pin_dir: PathBuf,
    /// Destination prefixes outside the platform that containers may not reach: cloud
    /// metadata, the host's own addresses, and the container subnet itself (so an address not
    /// yet attached is never treated as "the world").
    pub deny_cidrs: Vec<Cidr>,
    /// Holes in `deny_cidrs` (for example the host's DNS resolver address).
    pub allow_cidrs: Vec<Cidr>,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        IsolationConfig {
            pin_dir: PathBuf::from("/sys/fs/bpf/stackpad"),
            deny_cidrs: vec![Cidr::new([169, 254, 0, 0].into(), 16).expect("valid prefix")],
            allow_cidrs: Vec::new(),
        }
    }
}

impl IsolationConfig {
    pub fn validate(&self) -> Result<(), Error> {
        if !self.pin_dir.is_absolute() {
            return Err(Error::Config {
                key: "pin_dir",
                reason: format!("{} is not an absolute path", self.pin_dir.display()),
            });
        }
        if !self.pin_dir.starts_with("/sys/fs/bpf") {
            return Err(Error::Config {
                key: "pin_dir",
                reason: format!("{} is not under /sys/fs/bpf", self.pin_dir.display()),
            });
        }
        if let Some(c) = self
            .allow_cidrs
            .iter()
            .find(|c| self.deny_cidrs.contains(c))
        {
            return Err(Error::Config {
                key: "allow_cidrs",
                reason: format!("{c} is both denied and allowed"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_denies_metadata_and_validates() {
        let c = IsolationConfig::default();
        c.validate().unwrap();
        assert_eq!(c.deny_cidrs[0].to_string(), "169.254.0.0/16");
    }

    #[test]
    fn refuses_pin_dir_off_bpffs_and_contradictions() {
        let c = IsolationConfig {
            pin_dir: "/tmp/x".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("pin_dir"));
        let d = IsolationConfig::default();
        let c = IsolationConfig {
            allow_cidrs: d.deny_cidrs.clone(),
            ..d
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("both denied and allowed")
        );
    }
}
