//! Answers to the CA's http-01 requests, read from the shared store so that whichever proxy
//! instance the CA reaches on :80 can answer for an order another instance placed.

use super::store::{CertStore, StoreError};

/// The path prefix of http-01 requests.
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// The token of an http-01 request path, if it is one. Tokens are base64url (RFC 8555 8.3).
pub fn challenge_token(path: &str) -> Option<&str> {
    let token = path.strip_prefix(CHALLENGE_PATH)?;
    let valid = !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then_some(token)
}

/// Looks up key authorizations by token.
#[derive(Debug, Clone)]
pub struct Http01Answers {
    store: CertStore,
}

impl Http01Answers {
    pub fn new(store: CertStore) -> Self {
        Self { store }
    }

    /// The body to answer `GET /.well-known/acme-challenge/<token>` with, if an order is waiting.
    pub async fn answer(&self, token: &str) -> Result<Option<String>, StoreError> {
        self.store.challenge(token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tokens_are_challenge_requests() {
        assert_eq!(
            challenge_token("/.well-known/acme-challenge/abc-DEF_123"),
            Some("abc-DEF_123")
        );
        assert_eq!(challenge_token("/.well-known/acme-challenge/"), None);
        assert_eq!(
            challenge_token("/.well-known/acme-challenge/../etc/passwd"),
            None
        );
        assert_eq!(challenge_token("/.well-known/acme-challenge/a b"), None);
        assert_eq!(challenge_token("/index.html"), None);
    }
}
