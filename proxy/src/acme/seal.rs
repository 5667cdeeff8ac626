//! Encryption at rest for private keys and ACME account credentials in the shared store.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};

/// Length of the random nonce stored in front of every sealed value.
const NONCE_LEN: usize = 12;

/// Seals and opens secrets with ChaCha20-Poly1305 under a 256-bit key from configuration.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// Why a key or a sealed value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the store key must be 64 hex digits (32 bytes), got {0} characters")]
    KeyLength(usize),
    #[error("the store key is not hex")]
    KeyNotHex,
    #[error("a sealed value is shorter than its nonce")]
    Truncated,
    #[error("a sealed value does not open with this key (wrong key or tampered data)")]
    Open,
}

impl Sealer {
    /// Builds a sealer from a 64-hex-digit key.
    pub fn from_hex(key: &str) -> Result<Self, SealError> {
        let key = key.trim();
        if key.len() != 64 {
            return Err(SealError::KeyLength(key.len()));
        }
        let bytes = hex::decode(key).map_err(|_| SealError::KeyNotHex)?;
        let cipher = ChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| SealError::KeyLength(key.len()))?;
        Ok(Self { cipher })
    }

    /// Encrypts `plain`; the output carries its random nonce.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        // Encryption with a fresh nonce and an in-memory buffer cannot fail.
        out.extend(self.cipher.encrypt(&nonce, plain).unwrap_or_default());
        out
    }

    /// Decrypts what [`Sealer::seal`] produced.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Truncated);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Truncated)?;
        self.cipher
            .decrypt(&Nonce::from(nonce), body)
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn round_trips_and_detects_tampering() {
        let sealer = Sealer::from_hex(KEY).unwrap();
        let sealed = sealer.seal(b"-----BEGIN PRIVATE KEY-----");
        assert_ne!(&sealed[NONCE_LEN..], b"-----BEGIN PRIVATE KEY-----");
        assert_eq!(
            sealer.open(&sealed).unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(sealer.open(&tampered), Err(SealError::Open));
        let other = Sealer::from_hex(&KEY.replace('0', "f")).unwrap();
        assert_eq!(other.open(&sealed), Err(SealError::Open));
        assert_eq!(sealer.open(&sealed[..5]), Err(SealError::Truncated));
    }

    #[test]
    fn bad_keys_are_named() {
        assert_eq!(
            Sealer::from_hex("abcd").unwrap_err(),
            SealError::KeyLength(4)
        );
        assert_eq!(
            Sealer::from_hex(&"zz".repeat(32)).unwrap_err(),
            SealError::KeyNotHex
        );
    }
}
