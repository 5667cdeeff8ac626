//! The edge between the wire (`stackpad.node.v1`) and the agent's own types: requests become
//! a [`DeploySpec`] with the API's defaults applied; statuses and errors go back out.

use std::collections::BTreeMap;

use proto::node::v1 as pb;

use crate::agent::{State, Status};
use crate::error::RuntimeError;
use crate::spec::deploy::{PortSpec, Protocol, Resources};
use crate::spec::{DeploySpec, HealthSpec, Probe, RestartMode, RestartSpec, VolumeSpec, Workload};

fn or(v: u32, default: u32) -> u32 {
    if v == 0 { default } else { v }
}

/// A deploy request as the agent's type. Only structural problems fail here; the values are
/// checked by [`DeploySpec::validate`].
pub fn deploy_spec(req: pb::DeployRequest) -> Result<DeploySpec, RuntimeError> {
    let w = req
        .workload
        .ok_or_else(|| RuntimeError::invalid("workload", "is required"))?;
    let health = match req.health_check {
        None => None,
        Some(h) => {
            let probe = match h.probe {
                Some(pb::health_check::Probe::Http(p)) => Probe::Http {
                    path: if p.path.is_empty() {
                        "/".into()
                    } else {
                        p.path
                    },
                    port: p.port,
                },
                Some(pb::health_check::Probe::Tcp(p)) => Probe::Tcp { port: p.port },
                Some(pb::health_check::Probe::Exec(p)) => Probe::Exec { command: p.command },
                None => {
                    return Err(RuntimeError::invalid(
                        "health_check",
                        "needs an http, tcp or exec probe",
                    ));
                }
            };
            Some(HealthSpec {
                probe,
                interval_ms: or(h.interval_ms, 100),
                timeout_ms: or(h.timeout_ms, 1000),
                healthy_threshold: or(h.healthy_threshold, 1),
                unhealthy_threshold: or(h.unhealthy_threshold, 3),
                deadline_ms: or(h.deadline_ms, 60_000),
            })
        }
    };
    let restart = req.restart_policy.unwrap_or_default();
    let mode = match pb::restart_policy::Mode::try_from(restart.mode) {
        Ok(pb::restart_policy::Mode::Never) => RestartMode::Never,
        Ok(pb::restart_policy::Mode::Always) => RestartMode::Always,
        Ok(_) => RestartMode::OnFailure,
        Err(_) => {
            return Err(RuntimeError::invalid(
                "restart_policy.mode",
                format!("unknown mode {}", restart.mode),
            ));
        }
    };
    let resources = req.resources.unwrap_or_default();
    let ports = req
        .ports
        .into_iter()
        .map(|p| PortSpec {
            container_port: p.container_port,
            protocol: if p.protocol == pb::Protocol::Udp as i32 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            name: p.name,
        })
        .collect();
    Ok(DeploySpec {
        workload: Workload {
            organization_id: w.organization_id,
            project_id: w.project_id,
            environment_id: w.environment_id,
            service_id: w.service_id,
            service_name: w.service_name,
            deployment_id: w.deployment_id,
            service_type: w.service_type,
            environment_name: w.environment_name,
            replica: w.replica,
        },
        image: req.image,
        command: req.command,
        args: req.args,
        env: req.env.into_iter().collect::<BTreeMap<_, _>>(),
        working_dir: req.working_dir,
        ports,
        resources: Resources {
            cpu_millis: resources.cpu_millis,
            memory_bytes: resources.memory_bytes,
            pids_limit: resources.pids_limit,
        },
        health,
        restart: RestartSpec {
            mode,
            max_restarts: restart.max_restarts,
        },
        read_only_rootfs: req.read_only_rootfs,
        stop_grace_ms: or(req.stop_grace_period_ms, 10_000),
        volumes: req
            .volumes
            .into_iter()
            .map(|v| VolumeSpec {
                name: v.name,
                mount_path: v.mount_path,
                size_bytes: v.size_bytes,
            })
            .collect(),
    })
}

fn state(s: State) -> pb::ContainerState {
    match s {
        State::Pulling => pb::ContainerState::Pulling,
        State::Created => pb::ContainerState::Created,
        State::Starting => pb::ContainerState::Starting,
        State::Healthy => pb::ContainerState::Healthy,
        State::Unhealthy => pb::ContainerState::Unhealthy,
        State::Restarting => pb::ContainerState::Restarting,
        State::Stopped => pb::ContainerState::Stopped,
        State::Failed => pb::ContainerState::Failed,
    }
}

pub fn status(s: Status) -> pb::ContainerStatus {
    let w = s.spec.workload;
    pb::ContainerStatus {
        container_id: s.container_id,
        workload: Some(pb::Workload {
            organization_id: w.organization_id,
            project_id: w.project_id,
            environment_id: w.environment_id,
            service_id: w.service_id,
            service_name: w.service_name,
            deployment_id: w.deployment_id,
            service_type: w.service_type,
            environment_name: w.environment_name,
            replica: w.replica,
        }),
        image: s.spec.image,
        image_digest: s.image_digest,
        state: state(s.state) as i32,
        ip_address: s.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        ports: s
            .spec
            .ports
            .into_iter()
            .map(|p| pb::Port {
                container_port: p.container_port,
                protocol: match p.protocol {
                    Protocol::Tcp => pb::Protocol::Tcp as i32,
                    Protocol::Udp => pb::Protocol::Udp as i32,
                },
                name: p.name,
            })
            .collect(),
        exit_code: s.exit_code,
        oom_killed: s.oom_killed,
        restart_count: s.restart_count,
        message: s.message,
        created_at_unix_ms: s.created_ms,
        started_at_unix_ms: s.started_ms,
    }
}

/// The gRPC status of an agent error: bad input is INVALID_ARGUMENT, engine trouble UNAVAILABLE.
pub fn error(e: RuntimeError) -> tonic::Status {
    let msg = e.to_string();
    match &e {
        RuntimeError::InvalidInput { .. } | RuntimeError::WrongPlatform { .. } => {
            tonic::Status::invalid_argument(msg)
        }
        RuntimeError::Image { .. } if msg.contains("not found") => tonic::Status::not_found(msg),
        RuntimeError::Image { .. } => tonic::Status::invalid_argument(msg),
        RuntimeError::NotFound { .. } => tonic::Status::not_found(msg),
        RuntimeError::Running { .. }
        | RuntimeError::Unhealthy { .. }
        | RuntimeError::VolumeBusy { .. } => tonic::Status::failed_precondition(msg),
        RuntimeError::Capacity { .. } | RuntimeError::PoolExhausted { .. } => {
            tonic::Status::resource_exhausted(msg)
        }
        _ if e.is_retryable() => tonic::Status::unavailable(msg),
        _ => tonic::Status::internal(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_applied_and_workload_required() {
        let req = pb::DeployRequest {
            workload: Some(pb::Workload {
                project_id: "p".into(),
                deployment_id: "d".into(),
                ..Default::default()
            }),
            health_check: Some(pb::HealthCheck {
                probe: Some(pb::health_check::Probe::Tcp(pb::TcpProbe { port: 80 })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = deploy_spec(req).unwrap();
        let h = spec.health.unwrap();
        assert_eq!(
            (
                h.interval_ms,
                h.timeout_ms,
                h.healthy_threshold,
                h.unhealthy_threshold,
                h.deadline_ms
            ),
            (100, 1000, 1, 3, 60_000)
        );
        assert_eq!(spec.restart.mode, RestartMode::OnFailure);
        assert_eq!(spec.stop_grace_ms, 10_000);
        let err = deploy_spec(pb::DeployRequest::default()).unwrap_err();
        assert!(err.to_string().contains("workload"));
        assert_eq!(error(err).code(), tonic::Code::InvalidArgument);
    }
}
