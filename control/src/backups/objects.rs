//! Where backup objects go: `backups.store` in control's config, through the `object_store`
//! crate. A local directory on the control node is the default (`file:///var/lib/...` or a
//! plain absolute path); `s3://<bucket>` with `s3_endpoint`, `s3_region` and the keys is the
//! production setting (any S3-compatible server).

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

/// `[backups]` of control's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSettings {
    /// `file:///path`, `/path` or `s3://bucket[/prefix]`.
    pub store: String,
    /// S3: the server's URL (e.g. `http://127.0.0.1:9000`); empty = AWS.
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    /// How often the scheduler looks for due backups and stale ones. 0 = no scheduler.
    pub interval_ms: u64,
    /// A running backup whose heartbeat is older than this is failed.
    pub stale_after_ms: u64,
    /// A failed scheduled backup is tried again after this.
    pub retry_after_ms: u64,
    /// Each request to the object store gives up after this (then the backup fails).
    pub store_timeout_ms: u64,
    /// Restore each backup into a throwaway container and check it.
    pub verify: bool,
    /// The objects of a deleted service's backups and WAL are kept this long after the delete
    /// (a mistaken delete can still be undone from them by an operator), then removed.
    pub deleted_keep_ms: u64,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            store: "/var/lib/stackpad/backups".into(),
            s3_endpoint: String::new(),
            s3_region: "us-east-1".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            interval_ms: 30_000,
            stale_after_ms: 120_000,
            retry_after_ms: 300_000,
            store_timeout_ms: 30_000,
            verify: true,
            deleted_keep_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreConfigError {
    #[error("backups.store {0:?}: use file:///path, an absolute path or s3://bucket")]
    Scheme(String),
    #[error("backups.store {store}: {reason}")]
    Open { store: String, reason: String },
}

/// The object store of `settings`, and a prefix inside it.
pub fn open(settings: &BackupSettings) -> Result<(Arc<dyn ObjectStore>, String), StoreConfigError> {
    let store = settings.store.trim();
    let open_err = |reason: String| StoreConfigError::Open {
        store: store.to_owned(),
        reason,
    };
    if let Some(rest) = store.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreConfigError::Scheme(store.to_owned()));
        }
        let timeout = Duration::from_millis(settings.store_timeout_ms.max(1));
        let retry = object_store::RetryConfig {
            max_retries: 2,
            retry_timeout: timeout,
            ..Default::default()
        };
        let options = object_store::ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5).min(timeout))
            .with_timeout(timeout)
            .with_allow_http(settings.s3_endpoint.starts_with("http://"));
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&settings.s3_region)
            .with_access_key_id(&settings.s3_access_key_id)
            .with_secret_access_key(&settings.s3_secret_access_key)
            .with_retry(retry)
            .with_client_options(options);
        if !settings.s3_endpoint.is_empty() {
            b = b
                .with_endpoint(&settings.s3_endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let s3 = b.build().map_err(|e| open_err(e.to_string()))?;
        return Ok((Arc::new(s3), prefix.trim_matches('/').to_owned()));
    }
    let path = store.strip_prefix("file://").unwrap_or(store);
    if !path.starts_with('/') {
        return Err(StoreConfigError::Scheme(store.to_owned()));
    }
    std::fs::create_dir_all(path).map_err(|e| open_err(e.to_string()))?;
    let local = object_store::local::LocalFileSystem::new_with_prefix(path)
        .map_err(|e| open_err(e.to_string()))?
        .with_automatic_cleanup(true);
    Ok((Arc::new(local), String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_are_checked() {
        let mut s = BackupSettings {
            store: "ftp://x".into(),
            ..Default::default()
        };
        assert!(matches!(open(&s), Err(StoreConfigError::Scheme(_))));
        s.store = "relative/dir".into();
        assert!(matches!(open(&s), Err(StoreConfigError::Scheme(_))));
        s.store = "s3://".into();
        assert!(matches!(open(&s), Err(StoreConfigError::Scheme(_))));
        s.store = "s3://bucket/some/prefix".into();
        s.s3_endpoint = "http://127.0.0.1:1".into();
        let (_, prefix) = open(&s).unwrap();
        assert_eq!(prefix, "some/prefix");
        let dir = tempfile::tempdir().unwrap();
        s.store = format!("file://{}/b", dir.path().display());
        open(&s).unwrap();
        assert!(dir.path().join("b").is_dir());
    }
}
