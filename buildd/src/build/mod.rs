//! One build: its request, what it reports while it runs, and how it ends.
//!
//! [`BuildRunner`] is the seam between the queue (which decides when a build runs, how long it
//! may take and when it is cancelled) and the pipeline that performs it ([`Pipeline`]: clone,
//! detect, generate, solve, push). Unit tests of the queue use a fake runner.

mod pipeline;

pub use pipeline::{ContextTransport, Pipeline};

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use crate::buildkit::Step;
use crate::context::ContextError;
use crate::detect::DetectError;
use crate::engine::PushError;
use crate::source::deps::DepsError;
use crate::source::{GitSource, SourceError};

/// What to build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildRequest {
    pub id: String,
    pub source: GitSource,
    /// Repository to push to, without tag; the tag is the commit.
    pub image: String,
    pub build_args: Vec<(String, String)>,
    /// BuildKit secrets by id (`RUN --mount=type=secret,id=NAME`), served on the build's session;
    /// their values are redacted from everything the build reports.
    pub secrets: Vec<(String, String)>,
    /// Registry reference the layer cache is imported from and exported to.
    pub cache_ref: String,
    pub timeout: Duration,
    pub memory_limit_bytes: u64,
}

/// Where a build is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BuildState {
    #[default]
    Queued,
    Cloning,
    Building,
    Pushing,
    Succeeded,
    Failed,
    Cancelled,
}

impl BuildState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            BuildState::Succeeded | BuildState::Failed | BuildState::Cancelled
        )
    }
}

/// A line of a build's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp_nanos: i64,
    /// The step it belongs to: `clone`, `detect`, `dockerfile`, a BuildKit step name, `push`.
    pub step: String,
    pub line: String,
    pub stream: LogStream,
}

/// Which output a log line came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogStream {
    /// A step's standard output, and buildd's own lines.
    #[default]
    Stdout,
    /// A step's standard error, and how a failed build ended.
    Stderr,
}

/// What a running build reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    State(BuildState),
    Log(LogLine),
    Step(Step),
    /// Facts learnt on the way: the commit, the framework and port.
    Detected {
        commit: String,
        framework: String,
        port: u16,
    },
}

/// A pushed image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOutcome {
    pub commit: String,
    pub framework: String,
    pub port: u16,
    /// `registry/repo:commit`.
    pub image: String,
    /// Manifest digest in the registry.
    pub digest: String,
    pub cached_steps: u32,
    pub total_steps: u32,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("build {id}: clone failed: {source}")]
    Source {
        id: String,
        #[source]
        source: SourceError,
    },
    #[error("build {id}: {source}")]
    Detect {
        id: String,
        #[source]
        source: DetectError,
    },
    #[error("build {id}: dependencies: {source}")]
    Dependencies {
        id: String,
        #[source]
        source: DepsError,
    },
    #[error("build {id}: {source}")]
    Context {
        id: String,
        #[source]
        source: ContextError,
    },
    #[error("build {id}: cannot reach BuildKit: {detail}")]
    BuildKit { id: String, detail: String },
    #[error("build {id}: {}step {step:?} failed: {message}", cause_prefix(.cause))]
    Step {
        id: String,
        step: String,
        message: String,
        /// What the step was for, when buildd wrote it (`dockerfile::failure_cause`).
        cause: Option<String>,
    },
    #[error("build {id}: BuildKit solve failed: {message}")]
    Solve { id: String, message: String },
    #[error("build {id}: {source}")]
    Push {
        id: String,
        #[source]
        source: PushError,
    },
    #[error("build {id}: cannot prepare the work folder {path}: {source}")]
    WorkDir {
        id: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn cause_prefix(cause: &Option<String>) -> String {
    cause.as_ref().map(|c| format!("{c}: ")).unwrap_or_default()
}

/// Performs one build, reporting progress on `events`. Dropping the future cancels it (the
/// BuildKit solve and any git process stop).
pub trait BuildRunner: Send + Sync + 'static {
    fn run(
        &self,
        request: BuildRequest,
        events: UnboundedSender<Progress>,
    ) -> impl Future<Output = Result<BuildOutcome, BuildError>> + Send;
}

/// Wall-clock now in Unix nanoseconds.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}
