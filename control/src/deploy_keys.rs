//! A project's SSH deploy key (#17): an ed25519 pair control generates, whose public half (in
//! OpenSSH form, its comment naming the project) the user adds to the git host as a deploy key,
//! and whose private half is sealed at rest (`projects.deploy_key_private_enc`, the
//! [`crate::crypto::SecretBox`] under the project's own associated data) and read back only by
//! the pipeline, for the build request of a service whose repository is an SSH URL. Beside it,
//! the `known_hosts` lines the project trusts for its SSH git hosts (the build node adds its
//! operator's own file; an unknown host key fails the fetch).
//!
//! Owns the key's generation and the checks of `known_hosts` text (pure), and the columns of
//! migrations 0023 and 0025. It never logs a key, and no answer of the API carries the private
//! half.

use chrono::{DateTime, Utc};
use serde::Serialize;
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};
use uuid::Uuid;

use crate::store::{Result, Store, StoreError};

/// The most `known_hosts` text a project keeps.
pub const MAX_KNOWN_HOSTS_BYTES: usize = 64 * 1024;

/// Why a key could not be made or a `known_hosts` text is refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployKeyError {
    #[error("cannot generate an ed25519 key: {0}")]
    Generate(String),
    #[error("known_hosts line {line}: {reason}")]
    KnownHosts { line: usize, reason: String },
    #[error("known_hosts is longer than {MAX_KNOWN_HOSTS_BYTES} bytes")]
    KnownHostsTooLong,
}

/// A new key pair: the public half as an OpenSSH line, the private half in OpenSSH's PEM form.
pub struct NewKey {
    pub public_key: String,
    pub private_key: String,
    pub fingerprint: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("public_key", &self.public_key)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// The comment of a project's public key: names the platform and the project, so the user
/// recognises it in the git host's deploy key list.
pub fn comment(project_name: &str, project_id: Uuid) -> String {
    let name: String = project_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(63)
        .collect();
    format!(
        "stackpad-deploy-key-{name}-{}",
        &project_id.simple().to_string()[..8]
    )
}

/// A fresh ed25519 pair from the operating system's randomness.
pub fn generate(comment: &str) -> std::result::Result<NewKey, DeployKeyError> {
    let mut key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
        .map_err(|e| DeployKeyError::Generate(e.to_string()))?;
    key.set_comment(comment);
    let private_key = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| DeployKeyError::Generate(e.to_string()))?
        .to_string();
    let public = key.public_key();
    Ok(NewKey {
        public_key: public
            .to_openssh()
            .map_err(|e| DeployKeyError::Generate(e.to_string()))?,
        fingerprint: public.fingerprint(HashAlg::Sha256).to_string(),
        private_key,
    })
}

/// `SHA256:...` of an OpenSSH public key line (empty when it does not parse).
pub fn fingerprint(public_key: &str) -> String {
    PublicKey::from_openssh(public_key)
        .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
        .unwrap_or_default()
}

/// Checks `known_hosts` text line by line (`hosts key-type base64-key [comment]`, `#` comments
/// and blank lines kept out) and returns it normalised (one line each, `\n` ends).
pub fn check_known_hosts(text: &str) -> std::result::Result<String, DeployKeyError> {
    if text.len() > MAX_KNOWN_HOSTS_BYTES {
        return Err(DeployKeyError::KnownHostsTooLong);
    }
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |reason: &str| DeployKeyError::KnownHosts {
            line: i + 1,
            reason: reason.to_owned(),
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.chars().any(|c| c.is_control() || !c.is_ascii()) {
            return Err(bad("holds a control or non-ASCII character"));
        }
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(kind), Some(key)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(bad(
                "expected `host key-type key` (e.g. `github.com ssh-ed25519 AAAA...`)",
            ));
        };
        if hosts.starts_with('@') {
            return Err(bad("markers (@cert-authority, @revoked) are not accepted"));
        }
        if PublicKey::from_openssh(&format!("{kind} {key}")).is_err() {
            return Err(bad(&format!(
                "{} is not a public key of type {}",
                tenant::echo(key),
                tenant::echo(kind)
            )));
        }
        out.push_str(&format!("{hosts} {kind} {key}\n"));
    }
    Ok(out)
}

/// Why an SSH source of `project_id` cannot be used: the project has no deploy key.
pub fn missing(project_id: Uuid) -> String {
    format!(
        "an ssh repository is fetched with the project's deploy key, and project {project_id} has \
         none: create one (POST /projects/{project_id}/deploy-key, or stackpad projects deploy-key \
         create) and add its public half to the repository as a deploy key"
    )
}

fn private_key_aad(project_id: Uuid) -> String {
    format!("project/{project_id}/deploy-key")
}

/// What the API shows of a project's deploy key (never the private half).
#[derive(Debug, Clone, Serialize)]
pub struct DeployKey {
    pub project_id: Uuid,
    /// The OpenSSH public key line to add to the git host.
    pub public_key: String,
    /// `SHA256:...`, as git hosts list deploy keys.
    pub fingerprint: String,
    pub created_at: Option<DateTime<Utc>>,
    /// The `known_hosts` lines the project trusts (empty = the build node's own file only).
    pub known_hosts: String,
}

/// A project's deploy key for a build request: sent only to buildd.
#[derive(Clone, PartialEq, Eq)]
pub struct DeployKeySecret {
    pub private_key: String,
    pub known_hosts: String,
}

impl std::fmt::Debug for DeployKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeployKeySecret")
            .field("private_key", &"<redacted>")
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

/// The deploy-key columns of a project row.
#[derive(sqlx::FromRow)]
struct KeyRow {
    deploy_key_public: Option<String>,
    deploy_key_created_at: Option<DateTime<Utc>>,
    git_known_hosts: Option<String>,
}

impl Store {
    /// The project's deploy key as shown; `None` when it has none (404 when there is no such
    /// project in the organization).
    pub async fn deploy_key(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
    ) -> Result<Option<DeployKey>> {
        let row: Option<KeyRow> = sqlx::query_as(
            "SELECT deploy_key_public, deploy_key_created_at, git_known_hosts FROM projects \
             WHERE id = $1 AND organization_id = $2",
        )
        .bind(project_id)
        .bind(organization_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(KeyRow {
            deploy_key_public: public,
            deploy_key_created_at: created_at,
            git_known_hosts: known_hosts,
        }) = row
        else {
            return Err(StoreError::not_found("project", project_id));
        };
        Ok(public.map(|public_key| DeployKey {
            project_id,
            fingerprint: fingerprint(&public_key),
            public_key,
            created_at,
            known_hosts: known_hosts.unwrap_or_default(),
        }))
    }

    /// Stores a new key pair for the project (the one before stops working at once).
    pub async fn set_deploy_key(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        key: &NewKey,
    ) -> Result<()> {
        let sealed = self
            .secrets()
            .seal(&private_key_aad(project_id), &key.private_key);
        let done = sqlx::query(
            "UPDATE projects SET deploy_key_public = $3, deploy_key_private_enc = $4, \
             deploy_key_created_at = now() WHERE id = $1 AND organization_id = $2",
        )
        .bind(project_id)
        .bind(organization_id)
        .bind(&key.public_key)
        .bind(sealed)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("project", project_id));
        }
        Ok(())
    }

    /// Removes the project's deploy key; `false` when it had none.
    pub async fn delete_deploy_key(&self, organization_id: Uuid, project_id: Uuid) -> Result<bool> {
        let had: Option<bool> = sqlx::query_scalar(
            "UPDATE projects p SET deploy_key_public = NULL, deploy_key_private_enc = NULL, \
             deploy_key_created_at = NULL FROM projects old \
             WHERE p.id = $1 AND p.organization_id = $2 AND old.id = p.id \
             RETURNING old.deploy_key_public IS NOT NULL",
        )
        .bind(project_id)
        .bind(organization_id)
        .fetch_optional(&self.pool)
        .await?;
        had.ok_or_else(|| StoreError::not_found("project", project_id))
    }

    /// Replaces the project's trusted `known_hosts` lines (checked by [`check_known_hosts`]);
    /// empty = none.
    pub async fn set_git_known_hosts(
        &self,
        organization_id: Uuid,
        project_id: Uuid,
        known_hosts: &str,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE projects SET git_known_hosts = NULLIF($3, '') \
             WHERE id = $1 AND organization_id = $2",
        )
        .bind(project_id)
        .bind(organization_id)
        .bind(known_hosts)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("project", project_id));
        }
        Ok(())
    }

    /// The project's deploy key in clear, for the build request only.
    pub async fn deploy_key_secret(&self, project_id: Uuid) -> Result<Option<DeployKeySecret>> {
        let row: Option<(Option<Vec<u8>>, Option<String>)> = sqlx::query_as(
            "SELECT deploy_key_private_enc, git_known_hosts FROM projects WHERE id = $1",
        )
        .bind(project_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some((Some(enc), known_hosts)) => Ok(Some(DeployKeySecret {
                private_key: self.secrets().open(&private_key_aad(project_id), &enc)?,
                known_hosts: known_hosts.unwrap_or_default(),
            })),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_an_ed25519_pair_whose_halves_match() {
        let id = Uuid::new_v4();
        let key = generate(&comment("shop", id)).unwrap();
        assert!(
            key.public_key.starts_with("ssh-ed25519 AAAA"),
            "{}",
            key.public_key
        );
        assert!(key.public_key.ends_with(&comment("shop", id)));
        assert!(
            key.private_key
                .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
        );
        let private = PrivateKey::from_openssh(&key.private_key).unwrap();
        assert_eq!(private.public_key().to_openssh().unwrap(), key.public_key);
        assert_eq!(fingerprint(&key.public_key), key.fingerprint);
        assert!(key.fingerprint.starts_with("SHA256:"));
        assert!(!format!("{key:?}").contains("PRIVATE"));
        assert_ne!(
            generate("x").unwrap().public_key,
            generate("x").unwrap().public_key
        );
    }

    #[test]
    fn the_comment_names_the_project_in_safe_characters() {
        let id = Uuid::nil();
        assert_eq!(
            comment("shop web", id),
            "stackpad-deploy-key-shopweb-00000000"
        );
    }

    #[test]
    fn known_hosts_lines_are_checked_and_normalised() {
        let key = generate("h").unwrap().public_key;
        let (kind, body) = key.split_once(' ').unwrap();
        let body = body.split_whitespace().next().unwrap();
        let text = format!("# github\n\n[git.example.com]:2222 {kind} {body} a comment\n");
        assert_eq!(
            check_known_hosts(&text).unwrap(),
            format!("[git.example.com]:2222 {kind} {body}\n")
        );
        for (bad, why) in [
            ("github.com", "expected"),
            ("github.com ssh-ed25519 AAAA", "not a public key"),
            ("@revoked * ssh-ed25519 AAAA", "markers"),
            ("github.com ssh-ed25519 \u{7}", "control"),
        ] {
            let err = check_known_hosts(bad).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("line 1"), "{bad}: {err}");
        }
        assert!(check_known_hosts(&"#".repeat(MAX_KNOWN_HOSTS_BYTES + 1)).is_err());
    }
}
