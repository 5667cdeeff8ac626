//! The restart policy as a pure decision: given how a process ended and what the container
//! should be doing, restart it (after how long) or leave it down.

use std::time::Duration;

use crate::spec::{RestartMode, RestartSpec};

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: u32,
    pub oom_killed: bool,
}

/// What to do about an exited process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    /// Start it again after this backoff.
    Restart { after: Duration },
    /// It was stopped on purpose: leave it stopped.
    StayStopped,
    /// It exited cleanly and the policy restarts only failures.
    Completed,
    /// The policy forbids restarting, or the restart budget is spent.
    GiveUp { reason: &'static str },
}

/// First backoff; doubles per consecutive restart up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Backoff before restart number `restarts + 1`.
pub fn backoff(restarts: u32) -> Duration {
    let factor = 1u32.checked_shl(restarts.min(16)).unwrap_or(u32::MAX);
    BASE_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// The decision. `restarts` counts restarts in a row (reset when a run stayed healthy).
pub fn after_exit(
    policy: RestartSpec,
    exit: Exit,
    wanted_running: bool,
    restarts: u32,
) -> AfterExit {
    if !wanted_running {
        return AfterExit::StayStopped;
    }
    let failed = exit.code != 0 || exit.oom_killed;
    match policy.mode {
        RestartMode::Never => {
            if failed {
                AfterExit::GiveUp {
                    reason: "restart policy is never",
                }
            } else {
                AfterExit::Completed
            }
        }
        RestartMode::OnFailure if !failed => AfterExit::Completed,
        RestartMode::OnFailure | RestartMode::Always => {
            if policy.max_restarts != 0 && restarts >= policy.max_restarts {
                AfterExit::GiveUp {
                    reason: "restart limit reached",
                }
            } else {
                AfterExit::Restart {
                    after: backoff(restarts),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL: Exit = Exit {
        code: 137,
        oom_killed: false,
    };
    const OK: Exit = Exit {
        code: 0,
        oom_killed: false,
    };

    fn policy(mode: RestartMode, max: u32) -> RestartSpec {
        RestartSpec {
            mode,
            max_restarts: max,
        }
    }

    #[test]
    fn on_failure_restarts_failures_with_growing_backoff() {
        let p = policy(RestartMode::OnFailure, 0);
        assert_eq!(
            after_exit(p, FAIL, true, 0),
            AfterExit::Restart {
                after: BASE_BACKOFF
            }
        );
        assert_eq!(
            after_exit(p, FAIL, true, 3),
            AfterExit::Restart {
                after: BASE_BACKOFF * 8
            }
        );
        assert_eq!(
            after_exit(p, FAIL, true, 40),
            AfterExit::Restart { after: MAX_BACKOFF }
        );
        assert_eq!(after_exit(p, OK, true, 0), AfterExit::Completed);
        let oom = Exit {
            code: 0,
            oom_killed: true,
        };
        assert!(matches!(
            after_exit(p, oom, true, 0),
            AfterExit::Restart { .. }
        ));
    }

    #[test]
    fn stopped_never_and_limits_do_not_restart() {
        let p = policy(RestartMode::Always, 2);
        assert_eq!(after_exit(p, FAIL, false, 0), AfterExit::StayStopped);
        assert!(matches!(
            after_exit(p, OK, true, 1),
            AfterExit::Restart { .. }
        ));
        assert!(matches!(
            after_exit(p, OK, true, 2),
            AfterExit::GiveUp { .. }
        ));
        let never = policy(RestartMode::Never, 0);
        assert!(matches!(
            after_exit(never, FAIL, true, 0),
            AfterExit::GiveUp { .. }
        ));
    }
}
