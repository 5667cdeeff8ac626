//! The switch of a service's upstream set, as pure decisions: what the new set is, whether it
//! must pass its health checks first, and what a drain does next. [`crate::state::ProxyState`]
//! performs them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::health::{HealthCheckError, HealthCheckSpec};
use crate::upstream::{
    LoadBalancing, UpstreamError, UpstreamSet, UpstreamSpec, validate_upstreams,
};

/// Default time the old set may keep serving after a switch.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Default time the new set has to become healthy.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

/// A switch as asked for (proto `SwitchRequest`, zeros replaced by `None`).
#[derive(Debug, Clone)]
pub struct SwitchCommand {
    pub service_id: String,
    pub upstreams: Vec<UpstreamSpec>,
    pub drain_deadline: Option<Duration>,
    pub skip_health_wait: bool,
    pub health_timeout: Option<Duration>,
    pub health_check: Option<HealthCheckSpec>,
    pub load_balancing: Option<LoadBalancing>,
    /// The control plane's generation of this change (proto `SwitchRequest.route_generation`);
    /// 0 = unordered.
    pub route_generation: u64,
}

/// What the executor does.
#[derive(Debug, Clone)]
pub struct SwitchPlan {
    pub service_id: String,
    pub upstreams: Vec<(UpstreamSpec, SocketAddr)>,
    pub generation: u64,
    pub health_check: HealthCheckSpec,
    pub load_balancing: LoadBalancing,
    /// The new set starts unhealthy and must pass `healthy_threshold` checks before the swap.
    pub wait_for_health: bool,
    pub health_timeout: Duration,
    pub drain_deadline: Duration,
}

/// Why a switch was refused or failed. Routing is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("switch of service {service_id}: service id is empty")]
    EmptyService { service_id: String },
    #[error("switch of service {service_id}: {source}")]
    Upstream {
        service_id: String,
        source: UpstreamError,
    },
    #[error("switch of service {service_id}: {source}")]
    HealthCheck {
        service_id: String,
        source: HealthCheckError,
    },
    #[error(
        "switch of service {service_id}: new upstreams {unhealthy:?} did not become healthy \
         within {timeout_ms} ms; routing unchanged"
    )]
    Unhealthy {
        service_id: String,
        unhealthy: Vec<String>,
        timeout_ms: u128,
    },
    #[error(
        "switch of service {service_id}: superseded: generation {generation} is older than \
         {held}, which the proxy already applied; routing unchanged"
    )]
    Superseded {
        service_id: String,
        generation: u64,
        held: u64,
    },
    #[error(
        "switch of service {service_id}: another switch changed the service meanwhile \
         (generation {expected} -> {found}); retry"
    )]
    Concurrent {
        service_id: String,
        expected: u64,
        found: u64,
    },
}

/// Decides the new set from the current one (if any) and the command.
pub fn plan(current: Option<&UpstreamSet>, cmd: SwitchCommand) -> Result<SwitchPlan, SwitchError> {
    let service_id = cmd.service_id.trim().to_owned();
    if service_id.is_empty() {
        return Err(SwitchError::EmptyService { service_id });
    }
    let upstreams = validate_upstreams(cmd.upstreams).map_err(|source| SwitchError::Upstream {
        service_id: service_id.clone(),
        source,
    })?;
    let health_check = match cmd.health_check {
        Some(spec) => spec.validate().map_err(|source| SwitchError::HealthCheck {
            service_id: service_id.clone(),
            source,
        })?,
        None => current.map(|c| c.health_check.clone()).unwrap_or_default(),
    };
    let load_balancing = cmd
        .load_balancing
        .or(current.map(|c| c.load_balancing))
        .unwrap_or_default();
    Ok(SwitchPlan {
        generation: current.map_or(0, |c| c.generation) + 1,
        wait_for_health: !cmd.skip_health_wait && !upstreams.is_empty(),
        health_timeout: cmd.health_timeout.unwrap_or(DEFAULT_HEALTH_TIMEOUT),
        drain_deadline: cmd.drain_deadline.unwrap_or(DEFAULT_DRAIN_DEADLINE),
        service_id,
        upstreams,
        health_check,
        load_balancing,
    })
}

/// The next step of a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStep {
    /// Nothing in flight any more: the old set may be stopped.
    Done,
    /// Requests are in flight and the deadline is ahead: look again shortly.
    Wait,
    /// The deadline passed with requests or connections still open: close them.
    CloseAtDeadline,
}

pub fn drain_step(in_flight: usize, now: Instant, deadline: Instant) -> DrainStep {
    if in_flight == 0 {
        DrainStep::Done
    } else if now >= deadline {
        DrainStep::CloseAtDeadline
    } else {
        DrainStep::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(ups: &[&str]) -> SwitchCommand {
        SwitchCommand {
            service_id: "web".into(),
            upstreams: ups
                .iter()
                .map(|a| UpstreamSpec {
                    address: a.to_string(),
                    deployment_id: String::new(),
                    weight: 1,
                })
                .collect(),
            drain_deadline: None,
            skip_health_wait: false,
            health_timeout: None,
            health_check: None,
            load_balancing: None,
            route_generation: 0,
        }
    }

    #[test]
    fn first_switch_uses_defaults_and_waits_for_health() {
        let p = plan(None, cmd(&["127.0.0.1:1"])).unwrap();
        assert_eq!(p.generation, 1);
        assert!(p.wait_for_health);
        assert_eq!(p.drain_deadline, DEFAULT_DRAIN_DEADLINE);
        assert_eq!(p.health_check, HealthCheckSpec::default());
        assert_eq!(p.load_balancing, LoadBalancing::RoundRobin);
    }

    #[test]
    fn later_switches_keep_the_current_settings_and_bump_the_generation() {
        let hc = HealthCheckSpec {
            path: "/up".into(),
            ..Default::default()
        };
        let current = UpstreamSet::new(
            "web".into(),
            7,
            vec![],
            LoadBalancing::LeastConnections,
            hc.clone(),
            true,
            Default::default(),
        );
        let mut c = cmd(&[]);
        c.skip_health_wait = false;
        let p = plan(Some(&current), c).unwrap();
        assert_eq!(p.generation, 8);
        assert_eq!(p.health_check, hc);
        assert_eq!(p.load_balancing, LoadBalancing::LeastConnections);
        assert!(!p.wait_for_health, "an empty set has nothing to wait for");
    }

    #[test]
    fn bad_input_is_refused_naming_the_service() {
        let err = plan(None, cmd(&["nope"])).unwrap_err().to_string();
        assert!(err.contains("web") && err.contains("nope"), "{err}");
        let mut c = cmd(&[]);
        c.service_id = " ".into();
        assert!(matches!(
            plan(None, c),
            Err(SwitchError::EmptyService { .. })
        ));
    }

    #[test]
    fn drain_steps() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert_eq!(drain_step(0, now, later), DrainStep::Done);
        assert_eq!(drain_step(0, later, now), DrainStep::Done);
        assert_eq!(drain_step(2, now, later), DrainStep::Wait);
        assert_eq!(drain_step(2, later, now), DrainStep::CloseAtDeadline);
    }
}
