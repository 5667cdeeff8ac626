//! A [`DnsProvider`] backed by pebble-challtestsrv's management API: the DNS server Pebble
//! resolves through in tests. Production uses a DNS hosting provider's API behind the same trait.

use super::issuer::DnsProvider;

/// pebble-challtestsrv's management API, e.g. `http://127.0.0.1:8055`.
#[derive(Debug, Clone)]
pub struct ChallTestSrv {
    management_url: String,
    http: reqwest::Client,
}

impl ChallTestSrv {
    pub fn new(management_url: impl Into<String>) -> Self {
        Self {
            management_url: management_url.into(),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<(), String> {
        let url = format!("{}{path}", self.management_url.trim_end_matches('/'));
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("{url} answered {}", response.status()))
        }
    }

    /// Points `host` at `addresses` (A records), for tests of custom domains.
    pub async fn set_a(&self, host: &str, addresses: &[&str]) -> Result<(), String> {
        self.post(
            "/add-a",
            serde_json::json!({ "host": host, "addresses": addresses }),
        )
        .await
    }

    /// Removes `host`'s A records.
    pub async fn clear_a(&self, host: &str) -> Result<(), String> {
        self.post("/clear-a", serde_json::json!({ "host": host }))
            .await
    }
}

#[async_trait::async_trait]
impl DnsProvider for ChallTestSrv {
    async fn set_txt(&self, fqdn: &str, value: &str) -> Result<(), String> {
        self.post(
            "/set-txt",
            serde_json::json!({ "host": fqdn, "value": value }),
        )
        .await
    }

    /// challtestsrv holds one value per name: the record goes whatever its value.
    async fn clear_txt(&self, fqdn: &str, _value: &str) -> Result<(), String> {
        self.post("/clear-txt", serde_json::json!({ "host": fqdn }))
            .await
    }
}
