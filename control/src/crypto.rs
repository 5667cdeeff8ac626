//! Secrets at rest and on the wire: API tokens (stored as SHA-256), env vars and secrets
//! (ChaCha20-Poly1305 with the key from the config), GitHub webhook signatures (HMAC-SHA256).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of every API token, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "sp_";

/// A new random API token (shown once; only its hash is stored).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// A new random webhook signing secret: 32 bytes from the OS, hex (shown once).
pub fn generate_webhook_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What is stored for a token.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("encryption key must be 64 hex digits (32 bytes), got {0} characters")]
    BadKey(usize),
    #[error("stored secret {name} cannot be decrypted (wrong key or corrupted data)")]
    Decrypt { name: String },
}

/// Encrypts env vars and secrets at rest. The associated data binds a value to its owner and
/// name, so a ciphertext copied to another row does not decrypt.
#[derive(Clone)]
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
    key: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    pub fn from_hex(key_hex: &str) -> Result<Self, CryptoError> {
        let key = hex::decode(key_hex.trim()).map_err(|_| CryptoError::BadKey(key_hex.len()))?;
        if key.len() != 32 {
            return Err(CryptoError::BadKey(key_hex.len()));
        }
        Ok(Self::from_key(
            <[u8; 32]>::try_from(key.as_slice()).expect("length checked"),
        ))
    }

    fn from_key(key: [u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(&Key::from(key)),
            key,
        }
    }

    /// A key of its own for `purpose` (e.g. one organization's backups), derived from this one
    /// with HKDF-SHA256: what it seals does not open with this box or another purpose's.
    pub fn derive(&self, purpose: &str) -> SecretBox {
        let mut key = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(Some(b"stackpad secretbox derive v1"), &self.key)
            .expand(purpose.as_bytes(), &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self::from_key(key)
    }

    /// `nonce (12 bytes) || ciphertext+tag`.
    pub fn seal(&self, aad: &str, plaintext: &str) -> Vec<u8> {
        self.seal_bytes(aad, plaintext.as_bytes())
    }

    /// [`SecretBox::seal`] of bytes.
    pub fn seal_bytes(&self, aad: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .expect("chacha20poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        out
    }

    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<String, CryptoError> {
        let plain = self.open_bytes(aad, sealed)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Decrypt {
            name: aad.to_owned(),
        })
    }

    /// [`SecretBox::open`] of bytes.
    pub fn open_bytes(&self, aad: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let err = || CryptoError::Decrypt {
            name: aad.to_owned(),
        };
        if sealed.len() < 12 {
            return Err(err());
        }
        let (nonce, body) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| err())?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: body,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| err())
    }
}

/// Checks GitHub's `X-Hub-Signature-256` header (`sha256=<hex>`) over the raw body, in constant
/// time.
pub fn verify_github_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The header value GitHub would send (for tests and the CLI's webhook helper).
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("hmac accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_published_test_vector() {
        // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(github_signature(secret, body), expected);
        assert!(verify_github_signature(secret, body, expected));
        assert!(!verify_github_signature(secret, b"Hello, World?", expected));
        assert!(!verify_github_signature(b"other", body, expected));
        assert!(!verify_github_signature(secret, body, &expected[7..]));
        assert!(!verify_github_signature(secret, body, "sha256=zz"));
        assert!(!verify_github_signature(secret, body, ""));
    }

    #[test]
    fn derived_keys_are_separate_per_purpose() {
        let sb = SecretBox::from_hex(&"11".repeat(32)).unwrap();
        let a = sb.derive("backups organization a");
        let sealed = a.seal_bytes("b1", &[0, 1, 2, 255]);
        assert_eq!(a.open_bytes("b1", &sealed).unwrap(), vec![0, 1, 2, 255]);
        // Deterministic: the same purpose gives the same key (a restart opens old backups).
        let again = sb.derive("backups organization a");
        assert!(again.open_bytes("b1", &sealed).is_ok());
        assert!(
            sb.derive("backups organization b")
                .open_bytes("b1", &sealed)
                .is_err()
        );
        assert!(sb.open_bytes("b1", &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(a.open_bytes("b1", &flipped).is_err());
    }

    #[test]
    fn secrets_round_trip_and_are_bound_to_their_name() {
        let sb = SecretBox::from_hex(&"11".repeat(32)).unwrap();
        let sealed = sb.seal("svc/DATABASE_URL", "postgres://x");
        assert!(!sealed.windows(12).any(|w| w == b"postgres://x"));
        assert_eq!(
            sb.open("svc/DATABASE_URL", &sealed).unwrap(),
            "postgres://x"
        );
        assert!(sb.open("svc/OTHER", &sealed).is_err());
        let other = SecretBox::from_hex(&"22".repeat(32)).unwrap();
        assert!(other.open("svc/DATABASE_URL", &sealed).is_err());
        assert!(SecretBox::from_hex("abcd").is_err());
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(hash_token(&a).len(), 32);
        assert!(constant_time_eq(&hash_token(&a), &hash_token(&a)));
        assert!(!constant_time_eq(&hash_token(&a), &hash_token(&b)));
        let w = generate_webhook_secret();
        assert_eq!(w.len(), 64);
        assert_ne!(w, generate_webhook_secret());
    }
}
