//! Wire types to domain types and back.

use std::time::Duration;

use proto::build::v1 as pb;

use crate::build::{BuildRequest, BuildState, LogStream};
use crate::manager::{BuildEvent, BuildStatus};
use crate::source::GitSource;

/// Why a StartBuild request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("build_id {0:?} is invalid: use 1-128 characters of a-z, A-Z, 0-9, '.', '_', '-'")]
    BuildId(String),
    #[error("build {0}: source.url is required")]
    NoSource(String),
    #[error("build {0}: image {1:?} is invalid: expected registry/repository without a tag")]
    Image(String, String),
    #[error(
        "build {0}: memory_limit_bytes {1} is too small: use 0 (the node's default) or at least {MIN_MEMORY_BYTES}"
    )]
    Memory(String, u64),
    #[error(
        "build {0}: secret id {1:?} is invalid: use 1-128 characters of a-z, A-Z, 0-9, '.', '_', '-'"
    )]
    SecretId(String, String),
}

/// The smallest memory limit a Node build can work in.
pub const MIN_MEMORY_BYTES: u64 = 256 << 20;

fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A secret's id names a file under /run/secrets: no `/`, no `..`.
fn valid_secret_id(id: &str) -> bool {
    valid_id(id) && id != "." && id != ".."
}

fn valid_image(image: &str) -> bool {
    let repo_part = image.rsplit('/').next().unwrap_or_default();
    image.contains('/')
        && !repo_part.contains(':')
        && !repo_part.contains('@')
        && !image.chars().any(char::is_whitespace)
        && image.is_ascii()
        && repo_part == repo_part.to_ascii_lowercase()
}

/// Parses a StartBuild request, refusing bad input with a message naming the field.
pub fn parse_start(r: pb::StartBuildRequest) -> Result<BuildRequest, RequestError> {
    if !valid_id(&r.build_id) {
        return Err(RequestError::BuildId(r.build_id));
    }
    let source = r.source.unwrap_or_default();
    if source.url.trim().is_empty() {
        return Err(RequestError::NoSource(r.build_id));
    }
    if !valid_image(&r.image) {
        return Err(RequestError::Image(r.build_id, r.image));
    }
    if r.memory_limit_bytes != 0 && r.memory_limit_bytes < MIN_MEMORY_BYTES {
        return Err(RequestError::Memory(r.build_id, r.memory_limit_bytes));
    }
    let mut build_args: Vec<(String, String)> = r.build_args.into_iter().collect();
    build_args.sort();
    let mut secrets: Vec<(String, String)> = r.secrets.into_iter().collect();
    secrets.sort();
    if let Some((name, _)) = secrets.iter().find(|(name, _)| !valid_secret_id(name)) {
        return Err(RequestError::SecretId(r.build_id, name.clone()));
    }
    Ok(BuildRequest {
        id: r.build_id,
        source: GitSource {
            url: source.url,
            reference: source.r#ref,
            commit: source.commit,
            subdirectory: source.subdirectory,
            username: source.username,
            password: source.password,
            submodules: source.submodules,
            ssh_private_key: source.ssh_private_key,
            ssh_known_hosts: source.ssh_known_hosts,
        },
        image: r.image,
        build_args,
        secrets,
        cache_ref: r.cache_ref,
        timeout: Duration::from_secs(u64::from(r.timeout_seconds)),
        memory_limit_bytes: r.memory_limit_bytes,
    })
}

fn state(s: BuildState) -> pb::BuildState {
    match s {
        BuildState::Queued => pb::BuildState::Queued,
        BuildState::Cloning => pb::BuildState::Cloning,
        BuildState::Building => pb::BuildState::Building,
        BuildState::Pushing => pb::BuildState::Pushing,
        BuildState::Succeeded => pb::BuildState::Succeeded,
        BuildState::Failed => pb::BuildState::Failed,
        BuildState::Cancelled => pb::BuildState::Cancelled,
    }
}

pub(super) fn status(s: &BuildStatus) -> pb::BuildStatus {
    pb::BuildStatus {
        build_id: s.id.clone(),
        state: state(s.state) as i32,
        queue_position: s.queue_position,
        commit: s.commit.clone(),
        framework: s.framework.clone(),
        container_port: u32::from(s.port),
        image: s.image.clone(),
        image_digest: s.digest.clone(),
        failure_reason: s.failure_reason.clone(),
        queued_at_unix_ms: s.queued_at_ms,
        started_at_unix_ms: s.started_at_ms,
        finished_at_unix_ms: s.finished_at_ms,
        cached_steps: s.cached_steps,
        total_steps: s.total_steps,
    }
}

pub(super) fn event(e: &BuildEvent) -> pb::BuildEvent {
    use pb::build_event::Event;
    let event = match e {
        BuildEvent::Status(s) => Event::Status(status(s)),
        BuildEvent::Log(l) => Event::Log(pb::LogLine {
            timestamp_unix_nanos: l.timestamp_nanos,
            step: l.step.clone(),
            line: l.line.clone(),
            stream: match l.stream {
                LogStream::Stdout => pb::LogStream::Stdout,
                LogStream::Stderr => pb::LogStream::Stderr,
            } as i32,
        }),
        BuildEvent::Step(s) => Event::Step(pb::StepProgress {
            step_id: s.id.clone(),
            name: s.name.clone(),
            cached: s.cached,
            started_at_unix_ms: s.started_ms.unwrap_or_default(),
            completed_at_unix_ms: s.completed_ms.unwrap_or_default(),
            error: s.error.clone().unwrap_or_default(),
        }),
    };
    pb::BuildEvent { event: Some(event) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> pb::StartBuildRequest {
        pb::StartBuildRequest {
            build_id: "dep-1".into(),
            source: Some(pb::GitSource {
                url: "/srv/repo".into(),
                ..Default::default()
            }),
            image: "127.0.0.1:5000/acme/web".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_good_request_parses() {
        let r = parse_start(req()).unwrap();
        assert_eq!(
            (r.id.as_str(), r.source.url.as_str()),
            ("dep-1", "/srv/repo")
        );
        assert_eq!(
            r.timeout,
            Duration::ZERO,
            "0 = the node's default, filled in by the queue"
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let mut r = req();
        r.build_id = "a b".into();
        assert!(
            parse_start(r)
                .unwrap_err()
                .to_string()
                .starts_with("build_id \"a b\" is invalid")
        );
        let mut r = req();
        r.source = None;
        assert_eq!(
            parse_start(r).unwrap_err().to_string(),
            "build dep-1: source.url is required"
        );
        for image in [
            "web",
            "127.0.0.1:5000/acme/web:v1",
            "127.0.0.1:5000/Acme/Web",
            "",
        ] {
            let mut r = req();
            r.image = image.into();
            assert!(
                matches!(parse_start(r), Err(RequestError::Image(..))),
                "{image}"
            );
        }
        let mut r = req();
        r.secrets.insert("../x".into(), "v".into());
        assert_eq!(
            parse_start(r).unwrap_err().to_string(),
            "build dep-1: secret id \"../x\" is invalid: use 1-128 characters of a-z, A-Z, 0-9, '.', '_', '-'"
        );
        let mut r = req();
        r.memory_limit_bytes = 1 << 20;
        let err = parse_start(r).unwrap_err().to_string();
        assert!(
            err.contains("memory_limit_bytes 1048576 is too small"),
            "{err}"
        );
    }
}
