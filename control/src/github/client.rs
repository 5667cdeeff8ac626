//! The two calls of GitHub's REST API that deployment statuses need, and nothing else
//! (`https://docs.github.com/en/rest/deployments`): create a deployment of a commit for an
//! environment, then create a status of it. Headers as GitHub documents them: a fine-grained
//! token or a GitHub App installation token as `Authorization: Bearer`, `Accept:
//! application/vnd.github+json`, `X-GitHub-Api-Version: 2022-11-28` and a `User-Agent` (GitHub
//! refuses requests without one). The recorded contract lives in
//! `control/tests/fixtures/github/` and is checked by `control/tests/github_statuses.rs`.

use std::time::Duration;

use ::api::GitHubDeploymentState;
use serde::Serialize;
use serde_json::Value;

/// The REST API version the bodies below follow.
pub const API_VERSION: &str = "2022-11-28";
pub const ACCEPT: &str = "application/vnd.github+json";
pub const USER_AGENT: &str = "stackpad-control";

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("github api {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// GitHub answered with an error status; its `message` when it gave one.
    #[error("github answered {status} to {method} {path}: {message}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
    },
    #[error("github's answer to {path} has no deployment id: {body}")]
    NoId { path: String, body: String },
    #[error("repository {0:?} is not owner/name")]
    Repository(String),
}

/// A small client of GitHub's deployments API at `base` (`https://api.github.com`, or an
/// Enterprise Server's `/api/v3`).
#[derive(Debug, Clone)]
pub struct GitHubClient {
    http: reqwest::Client,
    base: String,
}

/// `POST /repos/{owner}/{repo}/deployments`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewDeployment<'a> {
    /// The commit deployed (the pull request's head).
    #[serde(rename = "ref")]
    pub git_ref: &'a str,
    pub environment: &'a str,
    pub description: &'a str,
    /// No merge of the default branch into the ref first.
    pub auto_merge: bool,
    /// Deploy whatever the commit's checks say.
    pub required_contexts: [&'a str; 0],
    /// A preview goes when its pull request closes.
    pub transient_environment: bool,
    pub production_environment: bool,
}

/// `POST /repos/{owner}/{repo}/deployments/{id}/statuses`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewStatus<'a> {
    pub state: GitHubDeploymentState,
    pub environment: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment_url: Option<&'a str>,
    pub description: &'a str,
    /// A success marks the environment's earlier deployments inactive.
    pub auto_inactive: bool,
}

impl GitHubClient {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(USER_AGENT)
            .build()
            .expect("a reqwest client with a timeout and a user agent builds");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// Creates a deployment in `repository` (`owner/name`); its id.
    pub async fn create_deployment(
        &self,
        token: &str,
        repository: &str,
        deployment: &NewDeployment<'_>,
    ) -> Result<i64, GitHubError> {
        let path = format!("/repos/{}/deployments", repo_path(repository)?);
        let body = self.post(token, &path, deployment).await?;
        body["id"].as_i64().ok_or_else(|| GitHubError::NoId {
            path,
            body: body.to_string(),
        })
    }

    /// Adds a status to deployment `id` of `repository`.
    pub async fn create_status(
        &self,
        token: &str,
        repository: &str,
        id: i64,
        status: &NewStatus<'_>,
    ) -> Result<(), GitHubError> {
        let path = format!(
            "/repos/{}/deployments/{id}/statuses",
            repo_path(repository)?
        );
        self.post(token, &path, status).await.map(|_| ())
    }

    async fn post(
        &self,
        token: &str,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Value, GitHubError> {
        let url = format!("{}{path}", self.base);
        let http = |source| GitHubError::Http {
            url: url.clone(),
            source,
        };
        let response = self
            .http
            .post(&url)
            .bearer_auth(token)
            .header("accept", ACCEPT)
            .header("x-github-api-version", API_VERSION)
            .json(body)
            .send()
            .await
            .map_err(http)?;
        let status = response.status();
        let text = response.text().await.map_err(http)?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| text.chars().take(200).collect());
            return Err(GitHubError::Status {
                method: "POST",
                path: path.to_owned(),
                status: status.as_u16(),
                message,
            });
        }
        Ok(body)
    }
}

/// `owner/name` as two path segments, each checked against GitHub's name grammar (letters,
/// digits, `-`, `_`, `.`), so nothing else reaches the URL.
fn repo_path(repository: &str) -> Result<String, GitHubError> {
    let bad = || GitHubError::Repository(repository.to_owned());
    let (owner, name) = repository.split_once('/').ok_or_else(bad)?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if !ok(owner) || !ok(name) {
        return Err(bad());
    }
    Ok(format!("{owner}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_owner_slash_name_reaches_the_path() {
        assert_eq!(repo_path("acme/shop.web").unwrap(), "acme/shop.web");
        for bad in [
            "acme", "acme/", "/shop", "a/b/c", "a/..", "a/b?x", "a/b c", "a/%2e",
        ] {
            assert!(repo_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies_are_what_github_documents() {
        let d = NewDeployment {
            git_ref: "abc",
            environment: "pr-7",
            description: "d",
            auto_merge: false,
            required_contexts: [],
            transient_environment: true,
            production_environment: false,
        };
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({
                "ref": "abc", "environment": "pr-7", "description": "d", "auto_merge": false,
                "required_contexts": [], "transient_environment": true,
                "production_environment": false,
            })
        );
        let s = NewStatus {
            state: GitHubDeploymentState::InProgress,
            environment: "pr-7",
            environment_url: None,
            description: "d",
            auto_inactive: true,
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({
                "state": "in_progress", "environment": "pr-7", "description": "d",
                "auto_inactive": true,
            })
        );
    }
}
