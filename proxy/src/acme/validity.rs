//! Reads the validity window of a PEM certificate chain's leaf.

use std::time::{Duration, SystemTime};

use super::policy::CertificateValidity;

/// Why a chain was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidityError {
    #[error("the PEM holds no certificate")]
    NoCertificate,
    #[error("the PEM is not readable: {0}")]
    Pem(String),
    #[error("the leaf certificate does not parse: {0}")]
    Parse(String),
}

/// The leaf's `notBefore`/`notAfter`.
pub fn chain_validity(chain_pem: &str) -> Result<CertificateValidity, ValidityError> {
    let leaf = rustls_pemfile::certs(&mut chain_pem.as_bytes())
        .next()
        .ok_or(ValidityError::NoCertificate)?
        .map_err(|e| ValidityError::Pem(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| ValidityError::Parse(e.to_string()))?;
    let validity = cert.validity();
    Ok(CertificateValidity {
        not_before: at(validity.not_before.timestamp()),
        not_after: at(validity.not_after.timestamp()),
    })
}

fn at(unix_seconds: i64) -> SystemTime {
    if unix_seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix_seconds.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(unix_seconds.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_leaf_window_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2030, 1, 2);
        params.not_after = rcgen::date_time_ymd(2030, 4, 2);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let validity = chain_validity(&pem).unwrap();
        let day = Duration::from_secs(86400);
        assert_eq!(
            validity
                .not_after
                .duration_since(validity.not_before)
                .unwrap(),
            90 * day
        );
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        assert_eq!(chain_validity("hello"), Err(ValidityError::NoCertificate));
    }
}
