//! The deploy pipeline as a pure state machine: `decide(phase, event)` returns the next phase
//! and the actions to take. No I/O here; [`super::driver`] performs the actions.
//!
//! ```text
//! queued ─► building ─► starting ─► switching ─► stopping_old ─► ready
//!   │          │           │            │
//!   │          ▼           ▼            ▼
//!   │        failed   cleanup_then_failed ─► failed   (the old version keeps serving)
//!   ├─► superseded (a newer deployment of the service was queued)
//!   └─► cancelled (also from building; from starting via cleanup_then_cancelled)
//! ```

/// Where a deployment is (one definition, in the `api` crate: API JSON and database text share
/// its spellings) and the state users see for it.
pub use ::api::{DeploymentState, Phase};

/// What happened to a deployment. Produced by the driver (from a step's outcome) or by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker took the queued deployment.
    Claimed {
        needs_build: bool,
    },
    BuildSucceeded,
    BuildFailed {
        reason: String,
    },
    /// The new container passed its health check. `routed` is false for services the proxy does
    /// not serve (workers, databases, caches): there is nothing to switch.
    ContainerHealthy {
        routed: bool,
    },
    /// Health check failed or timed out; `reason` carries its last response.
    ContainerFailed {
        reason: String,
    },
    Switched,
    SwitchFailed {
        reason: String,
    },
    OldStopped,
    /// Stopping the old container failed; the new one serves anyway.
    StopOldFailed {
        reason: String,
    },
    NewRemoved,
    CancelRequested,
    /// A newer deployment of the same service was queued.
    NewerQueued {
        by: uuid::Uuid,
    },
}

/// An effect the driver performs. Every one is idempotent (keyed by the deployment id), so a
/// resumed deployment simply performs the action of its phase again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start the build (or find the one already started) and wait for its end.
    Build,
    CancelBuild,
    /// Start the container beside the old one and wait for its health.
    StartContainer,
    /// Move the service's traffic to the new container; returns after the old set drained.
    SwitchProxy,
    /// Stop and remove the previous deployment's container.
    StopOld,
    /// Remove the new container (failure or cancel before the switch).
    RemoveNew,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub to: Phase,
    pub actions: Vec<Action>,
    /// From this transition on, this deployment is the one serving the service (record it and
    /// mark the previous one superseded).
    pub now_serving: bool,
    /// Recorded as the failure reason / timeline detail.
    pub reason: Option<String>,
}

impl Transition {
    fn to(to: Phase, actions: &[Action]) -> Self {
        Self {
            to,
            actions: actions.to_vec(),
            now_serving: false,
            reason: None,
        }
    }

    fn because(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }
}

/// An event that does not apply to the phase the deployment is in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event} does not apply to a deployment in phase {phase}")]
pub struct InvalidTransition {
    pub phase: &'static str,
    pub event: String,
}

/// The pipeline's transition function.
pub fn decide(phase: Phase, event: &Event) -> Result<Transition, InvalidTransition> {
    use Action as A;
    use Event as E;
    use Phase as P;
    let t = match (phase, event) {
        (P::Queued, E::Claimed { needs_build: true }) => Transition::to(P::Building, &[A::Build]),
        (P::Queued, E::Claimed { needs_build: false }) => {
            Transition::to(P::Starting, &[A::StartContainer])
        }
        (P::Queued, E::NewerQueued { by }) => {
            Transition::to(P::Superseded, &[]).because(&format!("superseded by deployment {by}"))
        }
        (P::Queued, E::CancelRequested) => Transition::to(P::Cancelled, &[]),

        (P::Building, E::BuildSucceeded) => Transition::to(P::Starting, &[A::StartContainer]),
        (P::Building, E::BuildFailed { reason }) => Transition::to(P::Failed, &[]).because(reason),
        (P::Building, E::CancelRequested) => Transition::to(P::Cancelled, &[A::CancelBuild]),

        (P::Starting, E::ContainerHealthy { routed: true }) => {
            Transition::to(P::Switching, &[A::SwitchProxy])
        }
        (P::Starting, E::ContainerHealthy { routed: false }) => Transition {
            now_serving: true,
            ..Transition::to(P::StoppingOld, &[A::StopOld])
        },
        (P::Starting, E::ContainerFailed { reason }) => {
            Transition::to(P::CleanupThenFailed, &[A::RemoveNew]).because(reason)
        }
        (P::Starting, E::CancelRequested) => {
            Transition::to(P::CleanupThenCancelled, &[A::RemoveNew])
        }

        (P::Switching, E::Switched) => Transition {
            now_serving: true,
            ..Transition::to(P::StoppingOld, &[A::StopOld])
        },
        // The proxy refuses a switch without touching routing: the old set keeps serving.
        (P::Switching, E::SwitchFailed { reason }) => {
            Transition::to(P::CleanupThenFailed, &[A::RemoveNew]).because(reason)
        }

        (P::StoppingOld, E::OldStopped) => Transition::to(P::Ready, &[]),
        (P::StoppingOld, E::StopOldFailed { reason }) => {
            Transition::to(P::Ready, &[]).because(reason)
        }

        (P::CleanupThenFailed, E::NewRemoved) => Transition::to(P::Failed, &[]),
        (P::CleanupThenCancelled, E::NewRemoved) => Transition::to(P::Cancelled, &[]),

        (phase, event) => {
            return Err(InvalidTransition {
                phase: phase.as_str(),
                event: format!("{event:?}"),
            });
        }
    };
    Ok(t)
}

/// How a new version of a service replaces the running one (#14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Start the new container beside the old, switch traffic, then stop the old: no gap.
    StartBesideThenSwitch,
    /// Stop the old container (SIGTERM, its grace, SIGKILL), then start the new one on the same
    /// node: two processes never write one volume. A gap of the old's stop plus the new's start.
    StopOldThenStart,
}

/// The strategy of a service: stop-old-then-start-new when it has volumes.
pub fn strategy(has_volumes: bool) -> Strategy {
    if has_volumes {
        Strategy::StopOldThenStart
    } else {
        Strategy::StartBesideThenSwitch
    }
}

/// What a cancel request does to a deployment in `phase`; `claimed`: a worker holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// Nobody drives it yet: it ends now with this transition.
    Now(Transition),
    /// Its worker cancels it at the next step boundary (the deployment is flagged).
    AtNextStep,
    /// Too late (after the switch) or already ended.
    Refused,
}

/// The pipeline's answer to a cancel request.
pub fn cancel(phase: Phase, claimed: bool) -> Cancel {
    match phase {
        Phase::Queued if !claimed => match decide(phase, &Event::CancelRequested) {
            Ok(t) => Cancel::Now(t),
            Err(_) => Cancel::Refused,
        },
        Phase::Queued | Phase::Building | Phase::Starting => Cancel::AtNextStep,
        _ => Cancel::Refused,
    }
}

/// The actions to perform again when a worker takes over a deployment left in `phase` (after a
/// crash of the worker that drove it). Empty for `queued` (which needs [`Event::Claimed`]) and
/// terminal phases.
pub fn resume(phase: Phase) -> Vec<Action> {
    match phase {
        Phase::Building => vec![Action::Build],
        Phase::Starting => vec![Action::StartContainer],
        Phase::Switching => vec![Action::SwitchProxy],
        Phase::StoppingOld => vec![Action::StopOld],
        Phase::CleanupThenFailed | Phase::CleanupThenCancelled => vec![Action::RemoveNew],
        Phase::Queued | Phase::Ready | Phase::Failed | Phase::Superseded | Phase::Cancelled => {
            vec![]
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
