use super::*;

/// Applies events in order; returns the phases visited, every action and whether the deployment
/// became the serving one.
fn run(events: &[Event]) -> (Vec<Phase>, Vec<Action>, bool) {
    let mut phase = Phase::Queued;
    let mut phases = vec![phase];
    let mut actions = vec![];
    let mut serving = false;
    for event in events {
        let t = decide(phase, event).unwrap_or_else(|e| panic!("{e}"));
        phase = t.to;
        phases.push(phase);
        actions.extend(t.actions);
        serving |= t.now_serving;
    }
    (phases, actions, serving)
}

fn reason(s: &str) -> String {
    s.to_owned()
}

#[test]
fn git_deploy_goes_through_every_step_to_ready() {
    let (phases, actions, serving) = run(&[
        Event::Claimed { needs_build: true },
        Event::BuildSucceeded,
        Event::ContainerHealthy { routed: true },
        Event::Switched,
        Event::OldStopped,
    ]);
    assert_eq!(
        phases,
        [
            Phase::Queued,
            Phase::Building,
            Phase::Starting,
            Phase::Switching,
            Phase::StoppingOld,
            Phase::Ready
        ]
    );
    assert_eq!(
        actions,
        [
            Action::Build,
            Action::StartContainer,
            Action::SwitchProxy,
            Action::StopOld
        ]
    );
    assert!(serving);
    let states: Vec<_> = phases.iter().map(|p| p.state().as_str()).collect();
    assert_eq!(
        states,
        [
            "queued",
            "building",
            "deploying",
            "deploying",
            "deploying",
            "ready"
        ]
    );
}

#[test]
fn image_deploy_skips_the_build() {
    let (phases, actions, _) = run(&[Event::Claimed { needs_build: false }]);
    assert_eq!(phases, [Phase::Queued, Phase::Starting]);
    assert_eq!(actions, [Action::StartContainer]);
}

#[test]
fn unrouted_service_does_not_switch_the_proxy() {
    let (phases, actions, serving) = run(&[
        Event::Claimed { needs_build: false },
        Event::ContainerHealthy { routed: false },
        Event::OldStopped,
    ]);
    assert_eq!(phases.last(), Some(&Phase::Ready));
    assert!(!actions.contains(&Action::SwitchProxy));
    assert!(serving);
}

#[test]
fn health_failure_removes_the_new_container_and_never_serves() {
    let (phases, actions, serving) = run(&[
        Event::Claimed { needs_build: false },
        Event::ContainerFailed {
            reason: reason("health check GET /healthz: 500"),
        },
        Event::NewRemoved,
    ]);
    assert_eq!(phases.last(), Some(&Phase::Failed));
    assert_eq!(actions, [Action::StartContainer, Action::RemoveNew]);
    assert!(
        !serving,
        "a failed deployment must never become the serving one"
    );
    assert!(
        !actions.contains(&Action::StopOld),
        "the old version keeps serving"
    );
    let t = decide(
        Phase::Starting,
        &Event::ContainerFailed {
            reason: reason("health check GET /healthz: 500"),
        },
    )
    .unwrap();
    assert_eq!(t.reason.as_deref(), Some("health check GET /healthz: 500"));
    assert_eq!(
        t.to.state(),
        DeploymentState::Deploying,
        "failed only after the cleanup"
    );
}

#[test]
fn build_failure_fails_without_touching_anything() {
    let (phases, actions, serving) = run(&[
        Event::Claimed { needs_build: true },
        Event::BuildFailed {
            reason: reason("build: npm ci exited 1"),
        },
    ]);
    assert_eq!(phases.last(), Some(&Phase::Failed));
    assert_eq!(actions, [Action::Build]);
    assert!(!serving);
}

#[test]
fn refused_switch_leaves_old_serving() {
    let (phases, actions, serving) = run(&[
        Event::Claimed { needs_build: false },
        Event::ContainerHealthy { routed: true },
        Event::SwitchFailed {
            reason: reason("new set never became healthy"),
        },
        Event::NewRemoved,
    ]);
    assert_eq!(phases.last(), Some(&Phase::Failed));
    assert!(!serving);
    assert!(!actions.contains(&Action::StopOld));
}

#[test]
fn failing_to_stop_old_still_ends_ready() {
    let t = decide(
        Phase::StoppingOld,
        &Event::StopOldFailed {
            reason: reason("node down"),
        },
    )
    .unwrap();
    assert_eq!(t.to, Phase::Ready);
    assert_eq!(t.reason.as_deref(), Some("node down"));
}

#[test]
fn newer_deployment_supersedes_only_a_queued_one() {
    assert_eq!(
        decide(
            Phase::Queued,
            &Event::NewerQueued {
                by: uuid::Uuid::nil()
            }
        )
        .unwrap()
        .to,
        Phase::Superseded
    );
    for phase in Phase::ALL.iter().copied().filter(|p| *p != Phase::Queued) {
        assert!(
            decide(
                phase,
                &Event::NewerQueued {
                    by: uuid::Uuid::nil()
                }
            )
            .is_err(),
            "{phase:?} must not be superseded by a newer queued deployment"
        );
    }
}

#[test]
fn cancel_before_switch_cleans_up_and_after_switch_is_refused() {
    assert_eq!(
        decide(Phase::Queued, &Event::CancelRequested).unwrap(),
        Transition::to(Phase::Cancelled, &[])
    );
    assert_eq!(
        decide(Phase::Building, &Event::CancelRequested).unwrap(),
        Transition::to(Phase::Cancelled, &[Action::CancelBuild])
    );
    let (phases, _, serving) = run(&[
        Event::Claimed { needs_build: false },
        Event::CancelRequested,
        Event::NewRemoved,
    ]);
    assert_eq!(phases.last(), Some(&Phase::Cancelled));
    assert!(!serving);
    for phase in [Phase::Switching, Phase::StoppingOld] {
        assert!(decide(phase, &Event::CancelRequested).is_err());
    }
}

#[test]
fn terminal_phases_accept_no_event() {
    let events = [
        Event::Claimed { needs_build: true },
        Event::BuildSucceeded,
        Event::BuildFailed {
            reason: reason("x"),
        },
        Event::ContainerHealthy { routed: true },
        Event::ContainerFailed {
            reason: reason("x"),
        },
        Event::Switched,
        Event::SwitchFailed {
            reason: reason("x"),
        },
        Event::OldStopped,
        Event::StopOldFailed {
            reason: reason("x"),
        },
        Event::NewRemoved,
        Event::CancelRequested,
        Event::NewerQueued {
            by: uuid::Uuid::nil(),
        },
    ];
    for phase in Phase::ALL.iter().copied().filter(|p| p.is_terminal()) {
        assert!(resume(phase).is_empty());
        for event in &events {
            assert!(
                decide(phase, event).is_err(),
                "{phase:?} accepted {event:?}"
            );
        }
    }
}

#[test]
fn every_phase_that_is_not_queued_or_terminal_resumes_with_its_entry_action() {
    // A crash right after a transition was persisted: the new worker redoes the action the
    // transition asked for. Check that resume() agrees with decide() for every transition.
    let transitions = [
        (Phase::Queued, Event::Claimed { needs_build: true }),
        (Phase::Queued, Event::Claimed { needs_build: false }),
        (Phase::Building, Event::BuildSucceeded),
        (Phase::Starting, Event::ContainerHealthy { routed: true }),
        (Phase::Starting, Event::ContainerHealthy { routed: false }),
        (
            Phase::Starting,
            Event::ContainerFailed {
                reason: reason("x"),
            },
        ),
        (Phase::Starting, Event::CancelRequested),
        (Phase::Switching, Event::Switched),
        (
            Phase::Switching,
            Event::SwitchFailed {
                reason: reason("x"),
            },
        ),
    ];
    for (phase, event) in transitions {
        let t = decide(phase, &event).unwrap();
        assert_eq!(resume(t.to), t.actions, "{phase:?} + {event:?}");
    }
    assert!(resume(Phase::Queued).is_empty());
}

#[test]
fn phase_names_round_trip() {
    for &phase in Phase::ALL {
        assert_eq!(Phase::parse(phase.as_str()), Some(phase));
    }
    assert_eq!(Phase::parse("nope"), None);
}

#[test]
fn a_cancel_ends_an_unclaimed_queued_deployment_now_flags_a_running_one_and_is_refused_after_the_switch()
 {
    let Cancel::Now(t) = cancel(Phase::Queued, false) else {
        panic!("an unclaimed queued deployment is cancelled at once");
    };
    assert_eq!((t.to, t.actions), (Phase::Cancelled, vec![]));
    for phase in [Phase::Queued, Phase::Building, Phase::Starting] {
        assert_eq!(cancel(phase, true), Cancel::AtNextStep, "{phase:?}");
    }
    for &phase in Phase::ALL {
        if !matches!(phase, Phase::Queued | Phase::Building | Phase::Starting) {
            assert_eq!(cancel(phase, true), Cancel::Refused, "{phase:?}");
            assert_eq!(cancel(phase, false), Cancel::Refused, "{phase:?}");
        }
    }
}

#[test]
fn a_superseded_deployment_names_the_newer_one() {
    let by = uuid::Uuid::from_u128(7);
    let t = decide(Phase::Queued, &Event::NewerQueued { by }).unwrap();
    assert_eq!(
        t.reason.as_deref(),
        Some(&*format!("superseded by deployment {by}"))
    );
}
