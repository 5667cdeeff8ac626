//! TLS session tickets on the public listener, with keys shared by every proxy instance on the
//! same certificate store: a client that got a ticket from one instance resumes on any other
//! (the connection lands on another instance after a restart, an upgrade or a load balancer's
//! choice).
//!
//! Keys live in the store (`tls_ticket_keys`, sealed with the store key), never only in memory.
//! Each instance asks the store every refresh period to add a key when the newest is older than
//! the rotation period and to delete keys older than rotation + ticket lifetime, then loads the
//! keys left. A ticket is sealed with the newest key every instance has had the time to load (one
//! refresh period old), and opened with any key loaded; a ticket whose key was rotated out is
//! not opened and the client gets a full handshake. Without a store the proxy uses rustls' own
//! ticketer (keys in memory, per process). 0-RTT (early data) stays off.
//!
//! The mTLS admin listener never resumes (a rotated-out CA's client could come back).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rustls::server::ProducesTickets;

use crate::acme::{CertStore, StoreError, store::StoredTicketKey};

const ID_LEN: usize = 16;
const NONCE_LEN: usize = 12;

/// How keys rotate and how long tickets last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketSettings {
    /// A new key every this long.
    pub rotate: Duration,
    /// How long a ticket may be used (told to clients; its key is kept that long after its last
    /// use for sealing).
    pub lifetime: Duration,
}

impl Default for TicketSettings {
    fn default() -> Self {
        Self {
            rotate: Duration::from_secs(3600),
            lifetime: Duration::from_secs(7200),
        }
    }
}

impl TicketSettings {
    /// How often each instance refreshes its keys from the store: a quarter of the rotation
    /// period, at most 30 s, at least 1 s.
    pub fn refresh(&self) -> Duration {
        (self.rotate / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// How long a key is kept: it seals tickets for up to `rotate` + `refresh` after its
    /// creation, and those tickets last `lifetime`.
    pub fn keep(&self) -> Duration {
        self.rotate + self.refresh() + self.lifetime
    }
}

struct TicketKey {
    id: [u8; ID_LEN],
    cipher: ChaCha20Poly1305,
    created: Instant,
}

/// The keys this instance holds, newest first; swapped whole at each refresh.
#[derive(Default)]
pub struct TicketKeys {
    keys: ArcSwap<Vec<TicketKey>>,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKeys")
            .field("keys", &self.keys.load().len())
            .finish()
    }
}

impl TicketKeys {
    /// Replaces the held keys with `stored` (newest first).
    pub fn replace(&self, stored: Vec<StoredTicketKey>) {
        let now = Instant::now();
        let keys = stored
            .into_iter()
            .map(|k| TicketKey {
                id: k.id,
                cipher: ChaCha20Poly1305::new((&k.key).into()),
                created: now.checked_sub(k.age).unwrap_or(now),
            })
            .collect();
        self.keys.store(Arc::new(keys));
    }

    pub fn len(&self) -> usize {
        self.keys.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Once: asks the store to rotate, then loads its keys.
    pub async fn refresh(
        &self,
        store: &CertStore,
        settings: &TicketSettings,
    ) -> Result<(), StoreError> {
        if store
            .rotate_ticket_keys(settings.rotate, settings.keep())
            .await?
        {
            tracing::info!("new TLS ticket key in the store");
        }
        self.replace(store.ticket_keys(settings.keep()).await?);
        Ok(())
    }

    /// Refreshes every [`TicketSettings::refresh`] until the task is dropped; a store that does
    /// not answer keeps the keys held (tickets still open until the next refresh works).
    pub async fn run(self: Arc<Self>, store: CertStore, settings: TicketSettings) {
        loop {
            if let Err(error) = self.refresh(&store, &settings).await {
                tracing::warn!(%error, "TLS ticket keys not refreshed");
            }
            tokio::time::sleep(settings.refresh()).await;
        }
    }
}

/// The ticketer of the public listener's rustls config.
#[derive(Debug)]
pub struct SharedTicketer {
    keys: Arc<TicketKeys>,
    settings: TicketSettings,
}

impl SharedTicketer {
    pub fn new(keys: Arc<TicketKeys>, settings: TicketSettings) -> Self {
        Self { keys, settings }
    }
}

impl ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        u32::try_from(self.settings.lifetime.as_secs()).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.keys.load();
        // The newest key old enough for every instance to have loaded it; at first, the oldest.
        let settled = self.settings.refresh();
        let key = keys
            .iter()
            .find(|k| k.created.elapsed() >= settled)
            .or(keys.last())?;
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = key
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &key.id,
                },
            )
            .ok()?;
        let mut ticket = Vec::with_capacity(ID_LEN + NONCE_LEN + sealed.len());
        ticket.extend_from_slice(&key.id);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < ID_LEN + NONCE_LEN {
            return None;
        }
        let (id, rest) = ticket.split_at(ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let keys = self.keys.keys.load();
        let key = keys.iter().find(|k| k.id[..] == *id)?;
        key.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: id,
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8, age_secs: u64) -> StoredTicketKey {
        StoredTicketKey {
            id: [byte; 16],
            key: [byte; 32],
            age: Duration::from_secs(age_secs),
        }
    }

    #[test]
    fn seals_with_the_settled_key_and_opens_with_any_held() {
        let keys = Arc::new(TicketKeys::default());
        let ticketer = SharedTicketer::new(Arc::clone(&keys), TicketSettings::default());
        assert_eq!(ticketer.encrypt(b"session"), None, "no keys yet");
        // Newest first: 2 was just made (others may not have it yet), 1 is settled.
        keys.replace(vec![key(2, 0), key(1, 600)]);
        let ticket = ticketer.encrypt(b"session").unwrap();
        assert_eq!(&ticket[..16], &[1; 16]);
        assert_eq!(ticketer.decrypt(&ticket).unwrap(), b"session");
        // Another instance holding the same keys opens it; once key 1 is rotated out, nobody.
        let other = SharedTicketer::new(Arc::new(TicketKeys::default()), Default::default());
        other.keys.replace(vec![key(2, 0), key(1, 600)]);
        assert_eq!(other.decrypt(&ticket).unwrap(), b"session");
        other.keys.replace(vec![key(2, 0)]);
        assert_eq!(other.decrypt(&ticket), None);
        // A tampered ticket is not opened.
        let mut bad = ticket.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(ticketer.decrypt(&bad), None);
        assert_eq!(ticketer.decrypt(&ticket[..20]), None);
    }

    #[test]
    fn refresh_and_keep_follow_the_rotation() {
        let s = TicketSettings {
            rotate: Duration::from_secs(2),
            lifetime: Duration::from_secs(1),
        };
        assert_eq!(s.refresh(), Duration::from_secs(1));
        assert_eq!(s.keep(), Duration::from_secs(4));
        assert_eq!(TicketSettings::default().refresh(), Duration::from_secs(30));
    }
}
