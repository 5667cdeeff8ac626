//! The shared TLS store in PostgreSQL: certificates (keys sealed), ACME accounts, domains
//! allowed for issuance, order leases, http-01 answers and the ACME history the rate limiter
//! reads. Every proxy instance pointed at the same database shares all of it.
//!
//! The tables live in the `stackpad_proxy` schema with their own migrations, so the proxy can
//! share a database with the control plane without either touching the other's tables.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use super::policy::{AcmeEvent, CertificateValidity};
use super::seal::{SealError, Sealer};

/// The schema the proxy's tables live in.
pub const SCHEMA: &str = "stackpad_proxy";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A certificate with its key, as stored and as served.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCertificate {
    pub domain: String,
    pub chain_pem: String,
    pub key_pem: String,
    pub validity: CertificateValidity,
}

impl std::fmt::Debug for StoredCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCertificate")
            .field("domain", &self.domain)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

/// A TLS session ticket key as stored (see [`crate::tickets`]).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredTicketKey {
    pub id: [u8; 16],
    pub key: [u8; 32],
    /// How long ago it was created.
    pub age: Duration,
}

impl std::fmt::Debug for StoredTicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTicketKey")
            .field("id", &hex::encode(self.id))
            .field("age", &self.age)
            .finish_non_exhaustive()
    }
}

/// Errors of the shared store. Database errors are retryable; a seal error means the store key
/// does not match what sealed the data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("certificate store database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("certificate store migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot open the sealed {what} of {name}: {source}")]
    Seal {
        what: &'static str,
        name: String,
        #[source]
        source: SealError,
    },
    #[error("the stored {what} of {name} is not valid: {detail}")]
    Corrupt {
        what: &'static str,
        name: String,
        detail: String,
    },
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Database(_))
    }
}

/// The shared store.
#[derive(Debug, Clone)]
pub struct CertStore {
    pool: PgPool,
    sealer: Sealer,
}

impl CertStore {
    /// Connects, creates the schema if needed and applies the migrations.
    pub async fn connect(database_url: &str, sealer: Sealer) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(database_url)?;
        let setup = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {SCHEMA}"
        )))
        .execute(&setup)
        .await?;
        setup.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options.options([("search_path", SCHEMA)]))
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, sealer })
    }

    // ---------------------------------------------------------------- TLS ticket keys

    /// Adds a ticket key unless one younger than `every` exists, and deletes those older than
    /// `keep`; one instance at a time (advisory lock), so instances racing add one key.
    pub async fn rotate_ticket_keys(
        &self,
        every: Duration,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('stackpad_proxy.tls_ticket_keys'))")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM tls_ticket_keys WHERE created_at < now() - make_interval(secs => $1)",
        )
        .bind(keep.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        let fresh: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tls_ticket_keys \
             WHERE created_at > now() - make_interval(secs => $1))",
        )
        .bind(every.as_secs_f64())
        .fetch_one(&mut *tx)
        .await?;
        if !fresh {
            let id: [u8; 16] = rand::random();
            let key: [u8; 32] = rand::random();
            sqlx::query("INSERT INTO tls_ticket_keys (id, key_sealed) VALUES ($1, $2)")
                .bind(&id[..])
                .bind(self.sealer.seal(&key))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(!fresh)
    }

    /// The ticket keys younger than `keep`, newest first: (id, key, age by the database's clock).
    pub async fn ticket_keys(&self, keep: Duration) -> Result<Vec<StoredTicketKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, key_sealed, extract(epoch FROM now() - created_at)::float8 AS age \
             FROM tls_ticket_keys WHERE created_at >= now() - make_interval(secs => $1) \
             ORDER BY created_at DESC, id",
        )
        .bind(keep.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let id: Vec<u8> = row.get("id");
                let name = hex::encode(&id);
                let key =
                    self.sealer
                        .open(row.get("key_sealed"))
                        .map_err(|source| StoreError::Seal {
                            what: "TLS ticket key",
                            name: name.clone(),
                            source,
                        })?;
                let corrupt = |detail: &str| StoreError::Corrupt {
                    what: "TLS ticket key",
                    name: name.clone(),
                    detail: detail.to_owned(),
                };
                Ok(StoredTicketKey {
                    id: id.try_into().map_err(|_| corrupt("id is not 16 bytes"))?,
                    key: key.try_into().map_err(|_| corrupt("key is not 32 bytes"))?,
                    age: Duration::from_secs_f64(row.get::<f64, _>("age").max(0.0)),
                })
            })
            .collect()
    }

    // ---------------------------------------------------------------- accounts

    /// The stored credentials JSON of the account at `directory_url`.
    pub async fn account(&self, directory_url: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row =
            sqlx::query("SELECT credentials_sealed FROM acme_accounts WHERE directory_url = $1")
                .bind(directory_url)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| {
            self.sealer
                .open(row.get("credentials_sealed"))
                .map_err(|source| StoreError::Seal {
                    what: "ACME account",
                    name: directory_url.to_owned(),
                    source,
                })
        })
        .transpose()
    }

    /// Stores `credentials` unless another instance stored an account first; returns the
    /// credentials that are stored now (ours or the winner's).
    pub async fn put_account_if_absent(
        &self,
        directory_url: &str,
        credentials: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        sqlx::query(
            "INSERT INTO acme_accounts (directory_url, credentials_sealed) VALUES ($1, $2) \
             ON CONFLICT (directory_url) DO NOTHING",
        )
        .bind(directory_url)
        .bind(self.sealer.seal(credentials))
        .execute(&self.pool)
        .await?;
        self.account(directory_url)
            .await?
            .ok_or_else(|| StoreError::Corrupt {
                what: "ACME account",
                name: directory_url.to_owned(),
                detail: "vanished right after it was stored".into(),
            })
    }

    // ---------------------------------------------------------------- allowed domains

    pub async fn put_allowed_domain(
        &self,
        domain: &str,
        service_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO allowed_domains (domain, service_id) VALUES ($1, $2) \
             ON CONFLICT (domain) DO UPDATE SET service_id = excluded.service_id",
        )
        .bind(domain)
        .bind(service_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn remove_allowed_domain(&self, domain: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM allowed_domains WHERE domain = $1")
            .bind(domain)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// `(domain, service_id)` of every allowed domain, sorted.
    pub async fn allowed_domains(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT domain, service_id FROM allowed_domains ORDER BY domain")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get("domain"), r.get("service_id")))
            .collect())
    }

    pub async fn is_allowed(&self, domain: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 AS one FROM allowed_domains WHERE domain = $1")
            .bind(domain)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    // ---------------------------------------------------------------- certificates

    pub async fn put_certificate(&self, cert: &StoredCertificate) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO certificates (domain, chain_pem, key_sealed, not_before, not_after) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (domain) DO UPDATE SET \
             chain_pem = excluded.chain_pem, key_sealed = excluded.key_sealed, \
             not_before = excluded.not_before, not_after = excluded.not_after, updated_at = now()",
        )
        .bind(&cert.domain)
        .bind(&cert.chain_pem)
        .bind(self.sealer.seal(cert.key_pem.as_bytes()))
        .bind(DateTime::<Utc>::from(cert.validity.not_before))
        .bind(DateTime::<Utc>::from(cert.validity.not_after))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn remove_certificate(&self, domain: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM certificates WHERE domain = $1")
            .bind(domain)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn certificate(&self, domain: &str) -> Result<Option<StoredCertificate>, StoreError> {
        let row = sqlx::query(
            "SELECT domain, chain_pem, key_sealed, not_before, not_after FROM certificates \
             WHERE domain = $1",
        )
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| self.certificate_from_row(&row)).transpose()
    }

    /// Every stored certificate, for loading the serving table at start.
    pub async fn certificates(&self) -> Result<Vec<StoredCertificate>, StoreError> {
        let rows = sqlx::query(
            "SELECT domain, chain_pem, key_sealed, not_before, not_after FROM certificates \
             ORDER BY domain",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| self.certificate_from_row(row))
            .collect()
    }

    fn certificate_from_row(
        &self,
        row: &sqlx::postgres::PgRow,
    ) -> Result<StoredCertificate, StoreError> {
        let domain: String = row.get("domain");
        let key = self
            .sealer
            .open(row.get("key_sealed"))
            .map_err(|source| StoreError::Seal {
                what: "private key",
                name: domain.clone(),
                source,
            })?;
        let key_pem = String::from_utf8(key).map_err(|_| StoreError::Corrupt {
            what: "private key",
            name: domain.clone(),
            detail: "not UTF-8 PEM".into(),
        })?;
        Ok(StoredCertificate {
            chain_pem: row.get("chain_pem"),
            key_pem,
            validity: CertificateValidity {
                not_before: row.get::<DateTime<Utc>, _>("not_before").into(),
                not_after: row.get::<DateTime<Utc>, _>("not_after").into(),
            },
            domain,
        })
    }

    // ---------------------------------------------------------------- order leases

    /// Takes (or extends) the lease on ordering `domain` for `ttl`. False when another holder's
    /// lease has not expired.
    pub async fn try_lease(
        &self,
        domain: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "INSERT INTO order_leases (domain, holder, expires_at) \
             VALUES ($1, $2, now() + make_interval(secs => $3)) \
             ON CONFLICT (domain) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE order_leases.expires_at < now() OR order_leases.holder = excluded.holder \
             RETURNING holder",
        )
        .bind(domain)
        .bind(holder)
        .bind(ttl.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    pub async fn release_lease(&self, domain: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM order_leases WHERE domain = $1 AND holder = $2")
            .bind(domain)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---------------------------------------------------------------- http-01 answers

    pub async fn put_challenge(
        &self,
        token: &str,
        key_authorization: &str,
        domain: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO http01_challenges (token, key_authorization, domain, expires_at) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4)) ON CONFLICT (token) DO UPDATE \
             SET key_authorization = excluded.key_authorization, expires_at = excluded.expires_at",
        )
        .bind(token)
        .bind(key_authorization)
        .bind(domain)
        .bind(ttl.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn challenge(&self, token: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT key_authorization FROM http01_challenges WHERE token = $1 AND expires_at > now()",
        )
        .bind(token)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get("key_authorization")))
    }

    pub async fn remove_challenge(&self, token: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM http01_challenges WHERE token = $1 OR expires_at < now()")
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---------------------------------------------------------------- history

    pub async fn record(&self, event: &AcmeEvent, detail: &str) -> Result<(), StoreError> {
        let (kind, domain, at) = match event {
            AcmeEvent::Ordered { domain, at } => ("ordered", domain, at),
            AcmeEvent::Issued { domain, at } => ("issued", domain, at),
            AcmeEvent::Failed { domain, at } => ("failed", domain, at),
        };
        sqlx::query("INSERT INTO acme_events (kind, domain, detail, at) VALUES ($1, $2, $3, $4)")
            .bind(kind)
            .bind(domain)
            .bind(detail)
            .bind(DateTime::<Utc>::from(*at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Events since `since` (the longest rate-limit window back from now is enough).
    pub async fn events_since(&self, since: SystemTime) -> Result<Vec<AcmeEvent>, StoreError> {
        let rows =
            sqlx::query("SELECT kind, domain, at FROM acme_events WHERE at > $1 ORDER BY at")
                .bind(DateTime::<Utc>::from(since))
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|row| {
                let domain: String = row.get("domain");
                let at: SystemTime = row.get::<DateTime<Utc>, _>("at").into();
                match row.get::<String, _>("kind").as_str() {
                    "ordered" => Ok(AcmeEvent::Ordered { domain, at }),
                    "issued" => Ok(AcmeEvent::Issued { domain, at }),
                    "failed" => Ok(AcmeEvent::Failed { domain, at }),
                    other => Err(StoreError::Corrupt {
                        what: "ACME event",
                        name: domain,
                        detail: format!("unknown kind {other:?}"),
                    }),
                }
            })
            .collect()
    }

    /// Failure detail of the latest failed order of `domain`, for operators.
    pub async fn last_failure(&self, domain: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT detail FROM acme_events WHERE domain = $1 AND kind = 'failed' \
             ORDER BY at DESC LIMIT 1",
        )
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get("detail")))
    }
}
