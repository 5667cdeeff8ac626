//! Proto <-> domain types, at the edge of the admin API.

use std::time::Duration;

use proto::proxy::v1 as pb;

use crate::health::HealthCheckSpec;
use crate::routes::RouteSpec;
use crate::switch::SwitchCommand;
use crate::upstream::{LoadBalancing, UpstreamSet, UpstreamSpec};

pub fn route_from_pb(r: pb::Route) -> RouteSpec {
    RouteSpec {
        route_id: r.route_id,
        hosts: r.hosts,
        path_prefix: r.path_prefix,
        service_id: r.service_id,
        max_body_bytes: r.max_body_bytes,
        allow_plain_http: r.allow_plain_http,
        organization_id: r.organization_id,
        project_id: r.project_id,
        environment_id: r.environment_id,
        generation: r.generation,
    }
}

pub fn route_to_pb(r: &RouteSpec) -> pb::Route {
    pb::Route {
        route_id: r.route_id.clone(),
        hosts: r.hosts.clone(),
        path_prefix: r.path_prefix.clone(),
        service_id: r.service_id.clone(),
        max_body_bytes: r.max_body_bytes,
        allow_plain_http: r.allow_plain_http,
        organization_id: r.organization_id.clone(),
        project_id: r.project_id.clone(),
        environment_id: r.environment_id.clone(),
        generation: r.generation,
    }
}

pub fn upstream_from_pb(u: pb::Upstream) -> UpstreamSpec {
    UpstreamSpec {
        address: u.address,
        deployment_id: u.deployment_id,
        weight: u.weight,
    }
}

pub fn upstream_to_pb(u: &UpstreamSpec) -> pb::Upstream {
    pb::Upstream {
        address: u.address.clone(),
        deployment_id: u.deployment_id.clone(),
        weight: u.weight,
    }
}

pub fn health_from_pb(h: pb::HealthCheck) -> HealthCheckSpec {
    HealthCheckSpec {
        path: h.path,
        interval_ms: h.interval_ms,
        timeout_ms: h.timeout_ms,
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
    }
}

pub fn health_to_pb(h: &HealthCheckSpec) -> pb::HealthCheck {
    pb::HealthCheck {
        path: h.path.clone(),
        interval_ms: h.interval_ms,
        timeout_ms: h.timeout_ms,
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
    }
}

pub fn lb_to_pb(lb: LoadBalancing) -> pb::LoadBalancing {
    match lb {
        LoadBalancing::RoundRobin => pb::LoadBalancing::RoundRobin,
        LoadBalancing::LeastConnections => pb::LoadBalancing::LeastConnections,
    }
}

pub fn switch_from_pb(r: pb::SwitchRequest) -> SwitchCommand {
    let ms = |v: u32| (v > 0).then(|| Duration::from_millis(u64::from(v)));
    let load_balancing = match r.load_balancing() {
        pb::LoadBalancing::Unspecified => None,
        pb::LoadBalancing::RoundRobin => Some(LoadBalancing::RoundRobin),
        pb::LoadBalancing::LeastConnections => Some(LoadBalancing::LeastConnections),
    };
    SwitchCommand {
        service_id: r.service_id,
        upstreams: r.upstreams.into_iter().map(upstream_from_pb).collect(),
        drain_deadline: ms(r.drain_deadline_ms),
        skip_health_wait: r.skip_health_wait,
        health_timeout: ms(r.health_timeout_ms),
        health_check: r.health_check.map(health_from_pb),
        load_balancing,
        route_generation: r.route_generation,
    }
}

pub fn service_to_pb(
    active: &UpstreamSet,
    draining: &[std::sync::Arc<UpstreamSet>],
    route_generation: u64,
) -> pb::ServiceUpstreams {
    pb::ServiceUpstreams {
        service_id: active.service_id.clone(),
        active: active.specs().iter().map(upstream_to_pb).collect(),
        draining: draining
            .iter()
            .filter(|d| d.service_id == active.service_id)
            .flat_map(|d| d.specs())
            .map(|u| upstream_to_pb(&u))
            .collect(),
        health_check: Some(health_to_pb(&active.health_check)),
        load_balancing: lb_to_pb(active.load_balancing) as i32,
        generation: active.generation,
        route_generation,
    }
}
