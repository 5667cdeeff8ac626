//! Dashboard sessions (#18): a browser's session cookie stands for the API token (or the
//! operator token) it was exchanged for. Only the SHA-256 of the cookie's value is stored; a
//! session lives at most [`SESSION_LIFETIME_HOURS`] and never past its token's expiry, and a
//! revoked token ends it at once (the lookup joins the token's row).

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::orgs::TOKEN_COLUMNS;
use super::{ApiToken, Result, Store};
use crate::crypto;

/// How long a session lasts at most.
pub const SESSION_LIFETIME_HOURS: i64 = 12;

/// Whose session it is.
#[derive(Debug, Clone)]
pub enum SessionOwner {
    /// Opened with an organization's API token; acts as that token.
    Token(ApiToken),
    /// Opened with the operator token whose SHA-256 this is.
    Operator { admin_token_sha256: Vec<u8> },
}

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    pub owner: SessionOwner,
    /// Sent back by the page in `X-CSRF-Token` on every state-changing call.
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// A new session: the cookie's value (shown once, to the browser) and the session.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub cookie: String,
    pub session: Session,
}

#[derive(sqlx::FromRow)]
struct Row {
    csrf_token: String,
    expires_at: DateTime<Utc>,
    admin_token_sha256: Option<Vec<u8>>,
    token_id: Option<Uuid>,
}

impl Store {
    /// Opens a session for `owner`; it ends after [`SESSION_LIFETIME_HOURS`] or at the token's
    /// expiry, whichever is first.
    pub async fn create_session(&self, owner: SessionOwner) -> Result<NewSession> {
        let cookie = crypto::generate_token();
        let csrf_token = crypto::generate_webhook_secret();
        let mut expires_at = Utc::now() + Duration::hours(SESSION_LIFETIME_HOURS);
        let (token_id, admin) = match &owner {
            SessionOwner::Token(t) => {
                if let Some(t_exp) = t.expires_at {
                    expires_at = expires_at.min(t_exp);
                }
                (Some(t.id), None)
            }
            SessionOwner::Operator { admin_token_sha256 } => (None, Some(admin_token_sha256)),
        };
        sqlx::query(
            "INSERT INTO dashboard_sessions (id_sha256, token_id, admin_token_sha256, csrf_token, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(crypto::hash_token(&cookie))
        .bind(token_id)
        .bind(admin)
        .bind(&csrf_token)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        // Expired sessions go as new ones come: the table holds live sessions only.
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= now()")
            .execute(&self.pool)
            .await?;
        Ok(NewSession {
            cookie,
            session: Session {
                owner,
                csrf_token,
                expires_at,
            },
        })
    }

    /// The live session whose cookie is `cookie`: `None` when unknown, expired, or its token
    /// was revoked or has expired.
    pub async fn session(&self, cookie: &str) -> Result<Option<Session>> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT csrf_token, expires_at, admin_token_sha256, token_id FROM dashboard_sessions \
             WHERE id_sha256 = $1 AND expires_at > now()",
        )
        .bind(crypto::hash_token(cookie))
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let owner = match (r.admin_token_sha256, r.token_id) {
            (Some(admin_token_sha256), _) => SessionOwner::Operator { admin_token_sha256 },
            (None, Some(id)) => {
                let sql = format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1 AND revoked_at IS NULL \
                     AND (expires_at IS NULL OR expires_at > now())"
                );
                let token: Option<ApiToken> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                match token {
                    Some(t) => SessionOwner::Token(t),
                    None => return Ok(None),
                }
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(Session {
            owner,
            csrf_token: r.csrf_token,
            expires_at: r.expires_at,
        }))
    }

    /// Ends the session whose cookie is `cookie` (nothing when there is none).
    pub async fn delete_session(&self, cookie: &str) -> Result<()> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE id_sha256 = $1")
            .bind(crypto::hash_token(cookie))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
