//! One solve through the dockerfile frontend, with its progress stream.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::control::control_client::ControlClient;
use super::control::{
    CacheOptions, CacheOptionsEntry, SolveRequest, StatusRequest, StatusResponse,
};

/// What to solve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SolveSpec {
    /// BuildKit's job reference; unique per solve.
    pub reference: String,
    /// URL of the context tarball; empty = the `context` and `dockerfile` local sources of
    /// `session`.
    pub context_url: String,
    /// The session BuildKit pulls local sources from; empty = none.
    pub session: String,
    /// Path of the Dockerfile inside the context.
    pub dockerfile: String,
    pub build_args: Vec<(String, String)>,
    /// Names the exporter gives the image (`registry/repo:tag`).
    pub image_names: Vec<String>,
    /// Registry references to import cache from.
    pub cache_imports: Vec<String>,
    /// Embed cache metadata in the image (inline cache) so other nodes can import it.
    pub inline_cache: bool,
    /// Run `RUN` steps without a network (`none`); empty = BuildKit's default.
    pub network_mode: String,
    /// The exporter: `moby` (dockerd's image store) or `image` (buildkitd).
    pub exporter: String,
    /// Ask the exporter to push (`image` exporter only; dockerd's `moby` exporter cannot).
    pub push: bool,
}

/// Why a solve failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    #[error("BuildKit solve {reference} failed: {message}")]
    Failed { reference: String, message: String },
}

/// Runs the solve; forwards every status message to `progress` while it runs. Dropping the
/// returned future cancels the solve (the gRPC stream is reset and BuildKit cancels the job).
pub async fn solve(
    client: &ControlClient<Channel>,
    spec: &SolveSpec,
    progress: mpsc::Sender<StatusResponse>,
) -> Result<HashMap<String, String>, SolveError> {
    let mut frontend_attrs = HashMap::from([("filename".to_owned(), spec.dockerfile.clone())]);
    if !spec.context_url.is_empty() {
        frontend_attrs.insert("context".into(), spec.context_url.clone());
    }
    for (k, v) in &spec.build_args {
        frontend_attrs.insert(format!("build-arg:{k}"), v.clone());
    }
    if !spec.network_mode.is_empty() {
        frontend_attrs.insert("force-network-mode".into(), spec.network_mode.clone());
    }
    let imports: Vec<CacheOptionsEntry> = spec
        .cache_imports
        .iter()
        .map(|r| CacheOptionsEntry {
            r#type: "registry".into(),
            attrs: HashMap::from([("ref".to_owned(), r.clone())]),
        })
        .collect();
    if !imports.is_empty() {
        let json: Vec<serde_json::Value> = spec
            .cache_imports
            .iter()
            .map(|r| serde_json::json!({"Type": "registry", "Attrs": {"ref": r}}))
            .collect();
        frontend_attrs.insert(
            "cache-imports".into(),
            serde_json::Value::from(json).to_string(),
        );
    }
    let exports = if spec.inline_cache {
        vec![CacheOptionsEntry {
            r#type: "inline".into(),
            attrs: HashMap::new(),
        }]
    } else {
        Vec::new()
    };
    let request = SolveRequest {
        r#ref: spec.reference.clone(),
        exporter: spec.exporter.clone(),
        exporter_attrs: {
            let mut attrs = HashMap::from([("name".to_owned(), spec.image_names.join(","))]);
            if spec.push {
                attrs.insert("push".into(), "true".into());
            }
            attrs
        },
        session: spec.session.clone(),
        frontend: "dockerfile.v0".into(),
        frontend_attrs,
        cache: Some(CacheOptions { exports, imports }),
        entitlements: Vec::new(),
    };
    let mut status_client = client.clone();
    let status_ref = spec.reference.clone();
    let status = tokio::spawn(async move {
        let Ok(response) = status_client
            .status(StatusRequest { r#ref: status_ref })
            .await
        else {
            return;
        };
        let mut stream = response.into_inner();
        while let Ok(Some(msg)) = stream.message().await {
            if progress.send(msg).await.is_err() {
                return;
            }
        }
    });
    // Abort the status task if this future is dropped (cancel).
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut status = AbortOnDrop(status);
    let result = client.clone().solve(request).await;
    // Let the status stream deliver its last messages (it ends when the job ends).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut status.0).await;
    match result {
        Ok(response) => Ok(response.into_inner().exporter_response),
        Err(status) => Err(SolveError::Failed {
            reference: spec.reference.clone(),
            message: status.message().to_owned(),
        }),
    }
}
