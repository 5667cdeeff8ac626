//! A recording [`Inserter`] for the shipper's unit tests: it notes every attempt (when, which
//! lines) and answers from a script.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use logstore::container_logs::LogRow;
use tokio::time::Instant;

use super::inserter::{InsertError, Inserter};

/// How the fake answers one insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Ok,
    Fail,
    /// Never answers: the sender's `insert_timeout` cuts it.
    Hang,
}

/// One insert the sender tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Attempt {
    pub at: Instant,
    /// The rows' text, in order.
    pub lines: Vec<String>,
    pub answer: Answer,
}

#[derive(Debug, Default)]
struct State {
    script: VecDeque<Answer>,
    attempts: Vec<Attempt>,
}

/// Answers from its script, then `Ok` once the script is used up. Clones share the record.
#[derive(Debug, Clone, Default)]
pub(super) struct FakeInserter {
    state: Arc<Mutex<State>>,
}

impl FakeInserter {
    pub fn scripted(answers: &[Answer]) -> Self {
        let this = Self::default();
        this.lock().script.extend(answers);
        this
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.lock().attempts.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inserter for FakeInserter {
    async fn insert(&self, rows: &[LogRow]) -> Result<(), InsertError> {
        let answer = {
            let mut state = self.lock();
            let answer = state.script.pop_front().unwrap_or(Answer::Ok);
            state.attempts.push(Attempt {
                at: Instant::now(),
                lines: rows
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.line).into_owned())
                    .collect(),
                answer,
            });
            answer
        };
        match answer {
            Answer::Ok => Ok(()),
            Answer::Fail => Err(InsertError::Insert {
                database: "fake".into(),
                source: clickhouse::error::Error::BadResponse("scripted failure".into()),
            }),
            Answer::Hang => std::future::pending().await,
        }
    }
}
