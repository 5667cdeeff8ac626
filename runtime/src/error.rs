//! The agent's error type: every variant names the container, image or key it is about.

use thiserror::Error;

/// Everything the agent can fail with. `is_retryable` says whether the same call may succeed later.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// A deploy request (or config value) that can never succeed as given.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: String, reason: String },
    #[error("image {reference}: {reason}")]
    Image { reference: String, reason: String },
    #[error("image {reference} has no linux/amd64 variant (found: {found})")]
    WrongPlatform { reference: String, found: String },
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    #[error("containerd {op} ({subject}): {status}")]
    Containerd {
        op: &'static str,
        subject: String,
        status: Box<tonic::Status>,
    },
    #[error("cannot connect to containerd at {socket}: {reason}")]
    Connect { socket: String, reason: String },
    #[error("network {subject}: {reason}")]
    Network { subject: String, reason: String },
    #[error("address pool {pool} is exhausted for {subject}")]
    PoolExhausted { pool: String, subject: String },
    #[error("container {container_id} not found")]
    NotFound { container_id: String },
    #[error("container {container_id} is running: stop it first or remove with force")]
    Running { container_id: String },
    #[error("container {container_id} did not become healthy: {reason}")]
    Unhealthy {
        container_id: String,
        reason: String,
    },
    #[error(
        "volume {volume} is held by running container {container_id}: stop it before another container mounts it"
    )]
    VolumeBusy {
        volume: String,
        container_id: String,
    },
    #[error("volume {volume}: {reason}")]
    Volume { volume: String, reason: String },
    #[error("node is full: {reason}")]
    Capacity { reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn containerd(op: &'static str, subject: impl Into<String>, status: tonic::Status) -> Self {
        Self::Containerd {
            op,
            subject: subject.into(),
            status: Box::new(status),
        }
    }

    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    pub fn network(subject: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Network {
            subject: subject.into(),
            reason: reason.into(),
        }
    }

    /// Whether retrying the same call later may succeed (engine or registry trouble), as
    /// opposed to bad input that will fail the same way every time.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Containerd { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Aborted
            ),
            Self::Connect { .. } | Self::Registry { .. } | Self::Io { .. } => true,
            Self::Network { .. } | Self::Capacity { .. } | Self::Unhealthy { .. } => true,
            _ => false,
        }
    }

    /// Whether a containerd error says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Containerd { status, .. } if status.code() == tonic::Code::NotFound)
            || matches!(self, Self::NotFound { .. })
    }
}

/// Result with [`RuntimeError`].
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
