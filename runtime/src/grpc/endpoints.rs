//! `SetClusterEndpoints`: the cluster's container addresses from control, checked at the edge,
//! handed to the isolation policy (the other nodes' containers) and kept in the
//! [`ClusterView`].

use std::net::Ipv4Addr;

use proto::node::v1 as pb;
use tonic::Status;

use crate::isolation::{IsolationHook, RemoteEndpoint};
use crate::network::cluster::{ClusterEndpoint, ClusterView};

/// One pushed endpoint, checked: `endpoints[i].field` names what is wrong.
pub fn endpoint(i: usize, e: pb::ClusterEndpoint) -> Result<ClusterEndpoint, Status> {
    let bad = |field: &str, why: &str| {
        Status::invalid_argument(format!("invalid endpoints[{i}].{field}: {why}"))
    };
    let ip: Ipv4Addr =
        e.ip.parse()
            .map_err(|_| bad("ip", &format!("{:?} is not an IPv4 address", e.ip)))?;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_broadcast() {
        return Err(bad("ip", &format!("{ip} is not a container address")));
    }
    let w = e.workload.ok_or_else(|| bad("workload", "missing"))?;
    if w.project_id.is_empty() {
        return Err(bad("workload.project_id", "must not be empty"));
    }
    let service_port = match e.service_port {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| bad("service_port", "above 65535"))?),
    };
    Ok(ClusterEndpoint {
        ip,
        organization_id: w.organization_id,
        project_id: w.project_id,
        environment_id: w.environment_id,
        service_id: w.service_id,
        service_name: w.service_name,
        environment_name: w.environment_name,
        service_type: w.service_type,
        service_port,
        node_id: e.node_id,
    })
}

/// Checks the whole set, registers it with the isolation policy, then keeps it; returns how
/// many containers of other nodes the policy holds. Nothing changes when the set is invalid.
pub fn apply(
    isolation: &dyn IsolationHook,
    view: &ClusterView,
    request: pb::SetClusterEndpointsRequest,
) -> Result<u32, Status> {
    if request.digest.is_empty() {
        return Err(Status::invalid_argument(
            "invalid digest: must not be empty",
        ));
    }
    let endpoints = request
        .endpoints
        .into_iter()
        .enumerate()
        .map(|(i, e)| endpoint(i, e))
        .collect::<Result<Vec<_>, _>>()?;
    let remote: Vec<RemoteEndpoint> = endpoints
        .iter()
        .map(|e| RemoteEndpoint {
            ip: e.ip,
            project_id: e.project_id.clone(),
            environment_id: e.environment_id.clone(),
            service_type: e.service_type,
            service_port: e.service_port,
        })
        .collect();
    let registered = isolation
        .set_remote_endpoints(&remote)
        .map_err(|e| Status::internal(e.to_string()))?;
    tracing::info!(
        digest = %request.digest,
        endpoints = endpoints.len(),
        remote = registered,
        "cluster endpoints applied"
    );
    view.replace(request.digest, endpoints);
    Ok(u32::try_from(registered).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(ip: &str, project: &str) -> pb::ClusterEndpoint {
        pb::ClusterEndpoint {
            ip: ip.into(),
            workload: Some(pb::Workload {
                project_id: project.into(),
                environment_id: "env".into(),
                service_name: "api".into(),
                environment_name: "production".into(),
                service_type: pb::ServiceType::Web as i32,
                ..Default::default()
            }),
            service_port: 8080,
            node_id: "n2".into(),
        }
    }

    #[test]
    fn a_pushed_endpoint_is_checked_field_by_field() {
        let ok = endpoint(0, pushed("10.97.32.5", "p")).unwrap();
        assert_eq!(ok.ip, Ipv4Addr::new(10, 97, 32, 5));
        assert_eq!(ok.service_port, Some(8080));
        assert_eq!(ok.service_name, "api");
        let e = endpoint(3, pushed("nope", "p")).unwrap_err();
        assert!(e.message().contains("endpoints[3].ip"), "{}", e.message());
        let e = endpoint(0, pushed("127.0.0.1", "p")).unwrap_err();
        assert!(e.message().contains("not a container address"));
        let e = endpoint(1, pushed("10.0.0.1", "")).unwrap_err();
        assert!(e.message().contains("endpoints[1].workload.project_id"));
        let mut big = pushed("10.0.0.1", "p");
        big.service_port = 70_000;
        assert!(
            endpoint(0, big)
                .unwrap_err()
                .message()
                .contains("service_port")
        );
        let mut none = pushed("10.0.0.1", "p");
        none.workload = None;
        assert!(
            endpoint(0, none)
                .unwrap_err()
                .message()
                .contains("workload")
        );
    }

    #[test]
    fn a_set_is_kept_whole_or_not_at_all() {
        let view = ClusterView::default();
        let iso = crate::isolation::IsolationDisabled;
        let good = pb::SetClusterEndpointsRequest {
            digest: "d1".into(),
            endpoints: vec![pushed("10.97.32.5", "p"), pushed("10.97.16.2", "q")],
        };
        apply(&iso, &view, good).unwrap();
        assert_eq!(view.digest(), "d1");
        assert_eq!(view.endpoints().len(), 2);
        let bad = pb::SetClusterEndpointsRequest {
            digest: "d2".into(),
            endpoints: vec![pushed("10.97.32.6", "p"), pushed("x", "q")],
        };
        assert!(apply(&iso, &view, bad).is_err());
        assert_eq!(view.digest(), "d1", "an invalid set changes nothing");
        let empty_digest = pb::SetClusterEndpointsRequest::default();
        assert!(apply(&iso, &view, empty_digest).is_err());
    }
}
