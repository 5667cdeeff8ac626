//! BuildKit's gRPC control API: where it listens and how to reach it.
//!
//! Production build nodes run buildkitd, which serves the API as plain gRPC on a unix socket.
//! Where only dockerd runs (this project's machines), the same API is served by dockerd's
//! embedded BuildKit on `POST /grpc` of the docker socket, after an HTTP/1.1 upgrade to h2c:
//! that is what buildx's "docker" driver speaks. [`Endpoint::connect`] hides the difference.

mod ignore;
pub mod progress;
pub mod session;
pub mod solve;
mod upgrade;

pub use progress::{ProgressEvent, ProgressTracker, Step};
pub use solve::{SolveError, SolveSpec, solve};

use std::path::PathBuf;

use tonic::transport::Channel;

/// The generated client of `moby.buildkit.v1.Control`.
#[allow(missing_debug_implementations, clippy::all, reason = "generated code")]
pub mod control {
    tonic::include_proto!("moby.buildkit.v1");
}

/// Where BuildKit's control API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// buildkitd's own socket, e.g. `/run/buildkit/buildkitd.sock`.
    Buildkitd(PathBuf),
    /// dockerd's socket, e.g. `/run/docker.sock`; reached through `POST /grpc`.
    Dockerd(PathBuf),
}

/// Why BuildKit could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach BuildKit at {endpoint:?}: {source}")]
    Transport {
        endpoint: Endpoint,
        #[source]
        source: tonic::transport::Error,
    },
}

impl Endpoint {
    /// Opens a gRPC channel to BuildKit's control API.
    pub async fn connect(
        &self,
    ) -> Result<control::control_client::ControlClient<Channel>, ConnectError> {
        let endpoint = tonic::transport::Endpoint::from_static("http://buildkit.invalid");
        let this = self.clone();
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_uri| {
                let this = this.clone();
                async move {
                    let stream = match &this {
                        Endpoint::Buildkitd(path) => tokio::net::UnixStream::connect(path).await?,
                        Endpoint::Dockerd(path) => upgrade::dockerd_grpc_stream(path).await?,
                    };
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|source| ConnectError::Transport {
                endpoint: self.clone(),
                source,
            })?;
        Ok(control::control_client::ControlClient::new(channel))
    }
}
