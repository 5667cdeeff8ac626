//! A client of control's REST API for tests: one call, its status and its body as JSON (a body
//! that is not JSON comes back as a JSON string, an empty one as `null`), so a test asserts on
//! both and a failure message can show what the API said.

use anyhow::{Context, ensure};
use serde_json::Value;

/// The API at `base` (`http://host:port`).
#[derive(Debug, Clone)]
pub struct Rest {
    base: String,
    http: reqwest::Client,
}

impl Rest {
    pub fn new(base: &str) -> Self {
        Self::with_client(base, reqwest::Client::new())
    }

    /// With a client of the test's own (timeouts, roots).
    pub fn with_client(base: &str, http: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `method path` with `token` as bearer and `body` as JSON.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let request = self.request(method, path, token)?;
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        Self::answer(method, path, request).await
    }

    /// `method path` with `body` sent as it is (labelled JSON): for bodies that are not JSON.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Value)> {
        let request = self
            .request(method, path, token)?
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        Self::answer(method, path, request).await
    }

    /// A call that must answer `expected`; its body.
    pub async fn expect(
        &self,
        expected: u16,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.call(method, path, token, body).await?;
        ensure!(
            status == expected,
            "{method} {path}: expected {expected}, got {status}: {value}"
        );
        Ok(value)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        token: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .with_context(|| format!("{method:?} is not an HTTP method"))?;
        Ok(self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token))
    }

    async fn answer(
        method: &str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(u16, Value)> {
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .with_context(|| format!("{method} {path}: reading the body"))?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }
}
