//! A [`DnsProvider`] for any standard authoritative DNS server: RFC 2136 dynamic updates signed
//! with a TSIG key (RFC 8945), sent over TCP to the zone's primary (BIND, Knot, PowerDNS...).
//!
//! `set_txt` adds the challenge value to the TXT RRset and `clear_txt` deletes that one value, so
//! two orders publishing at the same name (`*.example.com` and `example.com`) never remove each
//! other's record. The zone is configured, or found by asking the server for the name's SOA.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, update_message};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, Record, RecordSet, RecordType};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::issuer::DnsProvider;

/// How far the server's clock may be from ours (TSIG fudge), as BIND's nsupdate uses.
const FUDGE_SECS: u16 = 300;

/// The HMAC a TSIG key uses (the ones hickory can compute; MD5 and SHA-1 are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum KeyAlgorithm {
    #[default]
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
}

impl KeyAlgorithm {
    fn tsig(self) -> TsigAlgorithm {
        match self {
            Self::HmacSha256 => TsigAlgorithm::HmacSha256,
            Self::HmacSha384 => TsigAlgorithm::HmacSha384,
            Self::HmacSha512 => TsigAlgorithm::HmacSha512,
        }
    }
}

/// The `acme.rfc2136` section: where to send updates and the key to sign them with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rfc2136Settings {
    /// The zone's primary server, `host:port` (an IP address).
    pub server: String,
    /// The zone to update, e.g. `example.com`; empty = the zone of each record's SOA, asked of
    /// `server`.
    pub zone: String,
    /// The TSIG key's name, as the server knows it.
    pub key_name: String,
    pub key_algorithm: KeyAlgorithm,
    /// File holding the key's secret in base64 (as `tsig-keygen`/`keymgr` print it)...
    pub key_secret_file: Option<PathBuf>,
    /// ...or the secret itself (the file wins).
    pub key_secret: String,
    /// TTL of the challenge records, in seconds.
    pub ttl_secs: u32,
    /// Seconds one exchange with the server may take.
    pub timeout_secs: u64,
}

impl Default for Rfc2136Settings {
    fn default() -> Self {
        Self {
            server: String::new(),
            zone: String::new(),
            key_name: String::new(),
            key_algorithm: KeyAlgorithm::default(),
            key_secret_file: None,
            key_secret: String::new(),
            ttl_secs: 60,
            timeout_secs: 10,
        }
    }
}

/// What is wrong with an `acme.rfc2136` section, or with one exchange with the server.
#[derive(Debug, thiserror::Error)]
pub enum Rfc2136Error {
    #[error("acme.rfc2136.{key}: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("DNS server {server}: {detail}")]
    Exchange { server: String, detail: String },
    #[error("DNS server {server} refused the update of {name}: {code}{hint}")]
    Refused {
        server: String,
        name: String,
        code: ResponseCode,
        hint: &'static str,
    },
    #[error("DNS server {server} names no zone (SOA) holding {name}")]
    NoZone { server: String, name: String },
    #[error("{name} is not inside the zone {zone}")]
    OutsideZone { name: String, zone: String },
    #[error("{name:?} is not a DNS name: {detail}")]
    BadName { name: String, detail: String },
}

fn config(key: &'static str, reason: impl Into<String>) -> Rfc2136Error {
    Rfc2136Error::Config {
        key,
        reason: reason.into(),
    }
}

/// Publishes dns-01 records by dynamic update.
#[derive(Clone)]
pub struct Rfc2136 {
    server: std::net::SocketAddr,
    zone: Option<Name>,
    signer: TSigner,
    ttl: u32,
    timeout: Duration,
}

impl std::fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key_name", &self.signer.signer_name())
            .finish_non_exhaustive()
    }
}

impl Rfc2136 {
    /// Checks the settings and reads the key.
    pub fn new(settings: &Rfc2136Settings) -> Result<Self, Rfc2136Error> {
        let server = settings.server.parse().map_err(|_| {
            config(
                "server",
                format!("{:?} is not an ip:port address", settings.server),
            )
        })?;
        let zone = if settings.zone.is_empty() {
            None
        } else {
            Some(fqdn(&settings.zone).map_err(|e| config("zone", e.to_string()))?)
        };
        if settings.key_name.is_empty() {
            return Err(config("key_name", "is required"));
        }
        let key_name = fqdn(&settings.key_name).map_err(|e| config("key_name", e.to_string()))?;
        let (secret, key) = match &settings.key_secret_file {
            Some(path) => (
                std::fs::read_to_string(path)
                    .map_err(|e| config("key_secret_file", format!("{}: {e}", path.display())))?,
                "key_secret_file",
            ),
            None => (settings.key_secret.clone(), "key_secret"),
        };
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(|e| config(key, format!("not base64: {e}")))?;
        if secret.is_empty() {
            return Err(config(key, "is empty"));
        }
        let signer = TSigner::new(secret, settings.key_algorithm.tsig(), key_name, FUDGE_SECS)
            .map_err(|e| config("key_algorithm", e.to_string()))?;
        if settings.ttl_secs == 0 {
            return Err(config("ttl_secs", "must be at least 1"));
        }
        if settings.timeout_secs == 0 {
            return Err(config("timeout_secs", "must be at least 1"));
        }
        Ok(Self {
            server,
            zone,
            signer,
            ttl: settings.ttl_secs,
            timeout: Duration::from_secs(settings.timeout_secs),
        })
    }

    /// Adds `value` to the TXT records at `fqdn`.
    pub async fn add_txt(&self, fqdn_str: &str, value: &str) -> Result<(), Rfc2136Error> {
        let (name, zone) = self.name_and_zone(fqdn_str).await?;
        let message = update_message::append(self.txt(&name, value), zone, false, false);
        self.update(message, fqdn_str).await
    }

    /// Deletes the TXT record at `fqdn` holding `value` (others at that name stay).
    pub async fn delete_txt(&self, fqdn_str: &str, value: &str) -> Result<(), Rfc2136Error> {
        let (name, zone) = self.name_and_zone(fqdn_str).await?;
        let message = update_message::delete_by_rdata(self.txt(&name, value), zone, false);
        self.update(message, fqdn_str).await
    }

    fn txt(&self, name: &Name, value: &str) -> RecordSet {
        let record = Record::from_rdata(
            name.clone(),
            self.ttl,
            RData::TXT(TXT::new(vec![value.to_owned()])),
        );
        let mut set = RecordSet::new(name.clone(), RecordType::TXT, 0);
        set.insert(record, 0);
        set
    }

    async fn name_and_zone(&self, fqdn_str: &str) -> Result<(Name, Name), Rfc2136Error> {
        let name = fqdn(fqdn_str)?;
        let zone = match &self.zone {
            Some(zone) => zone.clone(),
            None => self.find_zone(&name).await?,
        };
        if !zone.zone_of(&name) {
            return Err(Rfc2136Error::OutsideZone {
                name: name.to_string(),
                zone: zone.to_string(),
            });
        }
        Ok((name, zone))
    }

    /// The owner of the SOA the server gives for `name` (in the answer for the apex, in the
    /// authority section below it).
    async fn find_zone(&self, name: &Name) -> Result<Name, Rfc2136Error> {
        let mut query = Message::new();
        query
            .set_id(rand::random())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(false)
            .add_query(Query::query(name.clone(), RecordType::SOA));
        let bytes = query.to_vec().map_err(|e| self.exchange(e))?;
        let answer = self.exchange_bytes(&bytes).await?;
        let answer = Message::from_vec(&answer).map_err(|e| self.exchange(e))?;
        answer
            .answers()
            .iter()
            .chain(answer.name_servers())
            .find(|r| r.record_type() == RecordType::SOA && r.name().zone_of(name))
            .map(|r| r.name().clone())
            .ok_or_else(|| Rfc2136Error::NoZone {
                server: self.server.to_string(),
                name: name.to_string(),
            })
    }

    /// Signs `message`, sends it and checks the signed answer says NOERROR.
    async fn update(&self, mut message: Message, name: &str) -> Result<(), Rfc2136Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut verify = message
            .finalize(&self.signer, u32::try_from(now).unwrap_or(u32::MAX))
            .map_err(|e| self.exchange(format!("signing the update: {e}")))?
            .ok_or_else(|| self.exchange("the TSIG signer gave no verifier"))?;
        let bytes = message.to_vec().map_err(|e| self.exchange(e))?;
        let answer = self.exchange_bytes(&bytes).await?;
        let parsed = Message::from_vec(&answer).map_err(|e| self.exchange(e))?;
        if parsed.id() != message.id() {
            return Err(self.exchange("answer to another message id"));
        }
        let code = parsed.response_code();
        if code != ResponseCode::NoError {
            let hint = match code {
                ResponseCode::NotAuth => {
                    " (the TSIG key was not accepted: check key_name, key_algorithm and the secret)"
                }
                ResponseCode::Refused => " (the key may not update this name or record type)",
                ResponseCode::NotZone => " (the zone is not served by this server)",
                _ => "",
            };
            return Err(Rfc2136Error::Refused {
                server: self.server.to_string(),
                name: name.to_owned(),
                code,
                hint,
            });
        }
        verify(&answer)
            .map_err(|e| self.exchange(format!("the answer's TSIG does not verify: {e}")))?;
        Ok(())
    }

    /// One message over TCP (two-byte length prefix both ways), bounded by the timeout.
    async fn exchange_bytes(&self, bytes: &[u8]) -> Result<Vec<u8>, Rfc2136Error> {
        let length = u16::try_from(bytes.len()).map_err(|_| self.exchange("message too long"))?;
        let exchange = async {
            let mut socket = tokio::net::TcpStream::connect(self.server).await?;
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&length.to_be_bytes());
            framed.extend_from_slice(bytes);
            socket.write_all(&framed).await?;
            let length = socket.read_u16().await?;
            let mut answer = vec![0; usize::from(length)];
            socket.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(self.exchange(e)),
            Err(_) => Err(self.exchange(format!("no answer within {:?}", self.timeout))),
        }
    }

    fn exchange(&self, detail: impl ToString) -> Rfc2136Error {
        Rfc2136Error::Exchange {
            server: self.server.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// `name` as a fully qualified DNS name (a trailing dot is optional).
fn fqdn(name: &str) -> Result<Name, Rfc2136Error> {
    let mut parsed = Name::from_str(name).map_err(|e| Rfc2136Error::BadName {
        name: name.to_owned(),
        detail: e.to_string(),
    })?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

#[async_trait::async_trait]
impl DnsProvider for Rfc2136 {
    async fn set_txt(&self, fqdn: &str, value: &str) -> Result<(), String> {
        self.add_txt(fqdn, value).await.map_err(|e| e.to_string())
    }

    async fn clear_txt(&self, fqdn: &str, value: &str) -> Result<(), String> {
        self.delete_txt(fqdn, value)
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Rfc2136Settings {
        Rfc2136Settings {
            server: "127.0.0.1:53".into(),
            key_name: "acme".into(),
            key_secret: "c2VjcmV0LXNlY3JldC1zZWNyZXQ=".into(),
            ..Default::default()
        }
    }

    #[test]
    fn settings_errors_name_the_key() {
        let err = |s: Rfc2136Settings| Rfc2136::new(&s).unwrap_err().to_string();
        assert!(
            err(Rfc2136Settings {
                server: "ns.example.com:53".into(),
                ..settings()
            })
            .starts_with("acme.rfc2136.server:")
        );
        assert!(
            err(Rfc2136Settings {
                key_name: String::new(),
                ..settings()
            })
            .starts_with("acme.rfc2136.key_name:")
        );
        assert!(
            err(Rfc2136Settings {
                key_secret: "not base64!".into(),
                ..settings()
            })
            .starts_with("acme.rfc2136.key_secret: not base64")
        );
        assert!(
            err(Rfc2136Settings {
                key_secret_file: Some("/nonexistent/tsig".into()),
                ..settings()
            })
            .starts_with("acme.rfc2136.key_secret_file: /nonexistent/tsig")
        );
        assert!(
            err(Rfc2136Settings {
                ttl_secs: 0,
                ..settings()
            })
            .starts_with("acme.rfc2136.ttl_secs")
        );
        Rfc2136::new(&settings()).unwrap();
    }

    #[test]
    fn algorithms_read_as_bind_writes_them() {
        let s: Rfc2136Settings =
            serde_json::from_str(r#"{"server":"127.0.0.1:53","key_algorithm":"hmac-sha512"}"#)
                .unwrap();
        assert_eq!(s.key_algorithm, KeyAlgorithm::HmacSha512);
        assert!(
            serde_json::from_str::<Rfc2136Settings>(r#"{"key_algorithm":"hmac-md5"}"#).is_err()
        );
    }

    #[tokio::test]
    async fn a_name_outside_the_configured_zone_is_refused_before_sending() {
        let provider = Rfc2136::new(&Rfc2136Settings {
            zone: "example.com".into(),
            ..settings()
        })
        .unwrap();
        let err = provider
            .add_txt("_acme-challenge.example.org.", "v")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "_acme-challenge.example.org. is not inside the zone example.com."
        );
    }
}
