//! The REST client the CLI uses.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::CliError;

#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| CliError::Http(format!("{}: {e}", self.base)))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| CliError::Http(e.to_string()))?;
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            Ok(body)
        } else {
            let message = body["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| body.to_string());
            Err(CliError::Api {
                status: status.as_u16(),
                message,
            })
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let v = self
            .send(self.http.get(format!("{}{path}", self.base)))
            .await?;
        serde_json::from_value(v)
            .map_err(|e| CliError::Http(format!("unexpected answer to GET {path}: {e}")))
    }

    pub async fn post(&self, path: &str, body: &impl Serialize) -> Result<Value, CliError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn patch(&self, path: &str, body: &impl Serialize) -> Result<Value, CliError> {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }
}
