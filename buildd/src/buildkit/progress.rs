//! Turns BuildKit's `StatusResponse` stream into build steps and log lines (pure).

use std::collections::HashMap;

use super::control::StatusResponse;

/// How BuildKit names the vertex of a cache import.
const CACHE_IMPORT_PREFIX: &str = "importing cache manifest";

/// One step (BuildKit vertex) as the build reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    /// The vertex digest, stable across builds of the same step.
    pub id: String,
    /// E.g. `[deps 3/4] RUN npm ci`.
    pub name: String,
    pub cached: bool,
    pub started_ms: Option<i64>,
    pub completed_ms: Option<i64>,
    pub error: Option<String>,
}

/// Something to tell the watcher of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A step appeared or changed (started, cached, completed, failed).
    Step(Step),
    /// A line a step printed.
    Log {
        timestamp_nanos: i64,
        step: String,
        line: String,
        /// Printed on the step's standard error (BuildKit's stream 2).
        stderr: bool,
    },
}

/// Accumulates vertices across status messages; emits only changes.
#[derive(Debug, Default)]
pub struct ProgressTracker {
    steps: HashMap<String, Step>,
    order: Vec<String>,
    /// The unfinished last line of each (vertex, stream).
    partial: HashMap<(String, i64), String>,
}

/// Whether a step's error says only that BuildKit cancelled it.
fn is_cancellation(error: &str) -> bool {
    error.contains("context canceled") || error.trim() == "canceled"
}

/// BuildKit's stream number of a process's standard error.
const STDERR: i64 = 2;

fn millis(ts: &Option<prost_types::Timestamp>) -> Option<i64> {
    ts.as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

fn nanos(ts: &Option<prost_types::Timestamp>) -> i64 {
    ts.as_ref()
        .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
        .unwrap_or_default()
}

impl ProgressTracker {
    /// Applies one status message; returns the events it causes, in order.
    pub fn apply(&mut self, status: &StatusResponse) -> Vec<ProgressEvent> {
        let mut events = Vec::new();
        for v in &status.vertexes {
            let step = Step {
                id: v.digest.clone(),
                name: v.name.clone(),
                cached: v.cached,
                started_ms: millis(&v.started),
                completed_ms: millis(&v.completed),
                error: (!v.error.is_empty()).then(|| v.error.clone()),
            };
            match self.steps.get(&v.digest) {
                Some(old) if *old == step => {}
                known => {
                    if known.is_none() {
                        self.order.push(v.digest.clone());
                    }
                    self.steps.insert(v.digest.clone(), step.clone());
                    events.push(ProgressEvent::Step(step));
                }
            }
        }
        for log in &status.logs {
            let step = self
                .steps
                .get(&log.vertex)
                .map(|s| s.name.clone())
                .unwrap_or_else(|| log.vertex.clone());
            let buffer = self
                .partial
                .entry((log.vertex.clone(), log.stream))
                .or_default();
            buffer.push_str(&String::from_utf8_lossy(&log.msg));
            while let Some(end) = buffer.find('\n') {
                let line: String = buffer.drain(..=end).collect();
                let line = line.trim_end_matches(['\n', '\r']).to_owned();
                events.push(ProgressEvent::Log {
                    timestamp_nanos: nanos(&log.timestamp),
                    step: step.clone(),
                    line,
                    stderr: log.stream == STDERR,
                });
            }
        }
        events
    }

    /// Steps in the order they first appeared.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.order.iter().filter_map(|id| self.steps.get(id))
    }

    /// (steps served from cache, completed steps).
    pub fn cache_counts(&self) -> (u32, u32) {
        let done: Vec<&Step> = self.steps().filter(|s| s.completed_ms.is_some()).collect();
        let cached = done.iter().filter(|s| s.cached).count();
        (cached as u32, done.len() as u32)
    }

    /// The step that failed the build, if any, and its error: the first to end in an error of
    /// its own. A failed cache import is not a failure: BuildKit goes on without that cache
    /// (e.g. the first build of an app has none). When a step fails, BuildKit cancels the
    /// steps running beside it (another stage's), which then end in "context canceled" too,
    /// and may have appeared first: they are the failure only when nothing else failed.
    pub fn failed_step(&self) -> Option<&Step> {
        let failed = || {
            self.steps()
                .filter(|s| s.error.is_some() && !s.name.starts_with(CACHE_IMPORT_PREFIX))
        };
        failed()
            .filter(|s| !s.error.as_deref().is_some_and(is_cancellation))
            .min_by_key(|s| s.completed_ms.unwrap_or(i64::MAX))
            .or_else(|| failed().next())
    }
}

#[cfg(test)]
mod tests {
    use super::super::control::{Vertex, VertexLog};
    use super::*;

    fn ts(s: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        })
    }

    fn vertex(id: &str, name: &str, cached: bool, done: bool) -> Vertex {
        Vertex {
            digest: id.into(),
            name: name.into(),
            cached,
            started: ts(1),
            completed: if done { ts(2) } else { None },
            ..Vertex::default()
        }
    }

    #[test]
    fn emits_step_changes_once_and_counts_cached_steps() {
        let mut t = ProgressTracker::default();
        let a = vertex("sha256:a", "[deps 3/3] RUN npm ci", false, false);
        let ev = t.apply(&StatusResponse {
            vertexes: vec![a.clone()],
            ..Default::default()
        });
        assert_eq!(ev.len(), 1);
        // The same vertex again: nothing new.
        assert!(
            t.apply(&StatusResponse {
                vertexes: vec![a],
                ..Default::default()
            })
            .is_empty()
        );
        let done = vertex("sha256:a", "[deps 3/3] RUN npm ci", true, true);
        let b = vertex("sha256:b", "[stage-1 2/2] COPY . .", false, true);
        let ev = t.apply(&StatusResponse {
            vertexes: vec![done, b],
            ..Default::default()
        });
        assert_eq!(ev.len(), 2);
        assert_eq!(t.cache_counts(), (1, 2));
        assert!(
            matches!(&ev[0], ProgressEvent::Step(s) if s.cached && s.completed_ms == Some(2000))
        );
    }

    #[test]
    fn logs_are_split_into_lines_named_by_their_step_and_partial_lines_wait() {
        let mut t = ProgressTracker::default();
        t.apply(&StatusResponse {
            vertexes: vec![vertex("v", "[build 4/4] RUN make", false, false)],
            ..Default::default()
        });
        let log = |msg: &str| VertexLog {
            vertex: "v".into(),
            timestamp: ts(5),
            stream: 1,
            msg: msg.as_bytes().to_vec(),
        };
        let ev = t.apply(&StatusResponse {
            logs: vec![log("one\ntw")],
            ..Default::default()
        });
        assert_eq!(
            ev,
            [ProgressEvent::Log {
                timestamp_nanos: 5_000_000_000,
                step: "[build 4/4] RUN make".into(),
                line: "one".into(),
                stderr: false,
            }]
        );
        // A line on the other stream meanwhile is its own line.
        let ev = t.apply(&StatusResponse {
            logs: vec![VertexLog {
                stream: 2,
                ..log("warning: slow\n")
            }],
            ..Default::default()
        });
        assert!(
            matches!(&ev[0], ProgressEvent::Log { line, stderr: true, .. } if line == "warning: slow")
        );
        let ev = t.apply(&StatusResponse {
            logs: vec![log("o\n")],
            ..Default::default()
        });
        assert!(matches!(&ev[0], ProgressEvent::Log { line, stderr: false, .. } if line == "two"));
    }

    #[test]
    fn failed_step_is_found() {
        let mut t = ProgressTracker::default();
        let mut import = vertex(
            "i",
            "importing cache manifest from r/x:buildcache",
            false,
            true,
        );
        import.error = "r/x:buildcache: not found".into();
        t.apply(&StatusResponse {
            vertexes: vec![import],
            ..Default::default()
        });
        assert!(
            t.failed_step().is_none(),
            "a missing cache is not a failure"
        );
        let mut v = vertex("x", "[2/2] RUN false", false, true);
        v.error = "exit code: 1".into();
        t.apply(&StatusResponse {
            vertexes: vec![v],
            ..Default::default()
        });
        let failed = t.failed_step().unwrap();
        assert_eq!(failed.name, "[2/2] RUN false");
        assert_eq!(failed.error.as_deref(), Some("exit code: 1"));
    }

    /// A step of another stage, cancelled because the build step failed, may have appeared
    /// first: the failure is the step that failed of its own, the earliest of those.
    #[test]
    fn a_step_cancelled_beside_the_failure_is_not_it() {
        let mut t = ProgressTracker::default();
        let mut prune = vertex("p", "[prod-deps 2/2] RUN npm prune --omit=dev", false, true);
        prune.error = "context canceled".into();
        let mut later = vertex("l", "[build 6/6] RUN false", false, false);
        later.completed = ts(5);
        later.error = "exit code: 2".into();
        let mut build = vertex("b", "[build 5/6] RUN npm run build", false, true);
        build.completed = ts(3);
        build.error =
            "process \"/bin/sh -c npm run build\" did not complete successfully: exit code: 3"
                .into();
        t.apply(&StatusResponse {
            vertexes: vec![prune.clone(), later, build],
            ..Default::default()
        });
        assert_eq!(
            t.failed_step().unwrap().name,
            "[build 5/6] RUN npm run build"
        );
        // Only cancelled steps: the first of them is what there is to show.
        let mut only = ProgressTracker::default();
        only.apply(&StatusResponse {
            vertexes: vec![prune],
            ..Default::default()
        });
        assert_eq!(
            only.failed_step().unwrap().name,
            "[prod-deps 2/2] RUN npm prune --omit=dev"
        );
    }
}
