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
        let resp = self.answer(req).await?;
        let text = resp
            .text()
            .await
            .map_err(|e| CliError::Http(e.to_string()))?;
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        })
    }

    /// The response to `req` when it succeeded, else the API's error (its message).
    async fn answer(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CliError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| CliError::Http(format!("{}: {e}", self.base)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp
            .text()
            .await
            .map_err(|e| CliError::Http(e.to_string()))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        Err(CliError::Api {
            status: status.as_u16(),
            message,
        })
    }

    /// Server-sent events from `GET path`: each event's `data` as JSON, in order, until the
    /// stream ends (the server closed it) or `each` returns false.
    pub async fn events(
        &self,
        path: &str,
        mut each: impl FnMut(Value) -> bool,
    ) -> Result<(), CliError> {
        let mut resp = self
            .answer(self.http.get(format!("{}{path}", self.base)))
            .await?;
        // Bytes until an event is whole: a character may be split across chunks.
        let mut pending: Vec<u8> = vec![];
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| CliError::Http(format!("{path}: {e}")))?
        {
            pending.extend_from_slice(&chunk);
            for data in whole_events(&mut pending) {
                let value = serde_json::from_str(&data).map_err(|e| {
                    CliError::Http(format!("{path}: an event that is not JSON: {e}"))
                })?;
                if !each(value) {
                    return Ok(());
                }
            }
        }
        Ok(())
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

    pub async fn put(&self, path: &str, body: &impl Serialize) -> Result<Value, CliError> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }
}

/// Takes the whole events off the front of `pending` and returns their `data` (lines joined);
/// comments (keep-alives) and events without data are skipped, a partial event stays.
fn whole_events(pending: &mut Vec<u8>) -> Vec<String> {
    let mut out = vec![];
    while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
        let bytes: Vec<u8> = pending.drain(..end + 2).collect();
        let event = String::from_utf8_lossy(&bytes);
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if !data.is_empty() {
            out.push(data.join("\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_whole_and_a_partial_one_waits() {
        let mut pending = b": keep-alive\n\nid: c1\ndata: {\"a\":1}\n\ndata: {\"b\":".to_vec();
        assert_eq!(whole_events(&mut pending), ["{\"a\":1}"]);
        pending.extend_from_slice("\"\u{e9}\"}\n\n".as_bytes());
        assert_eq!(whole_events(&mut pending), ["{\"b\":\"\u{e9}\"}"]);
        assert!(pending.is_empty());
        // A character split across chunks is whole once its event is.
        let mut pending = b"data: \"\xc3".to_vec();
        assert!(whole_events(&mut pending).is_empty());
        pending.extend_from_slice(b"\xa9\"\n\n");
        assert_eq!(whole_events(&mut pending), ["\"\u{e9}\""]);
    }
}
