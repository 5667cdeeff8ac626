//! `stackpad.proxy.v1.ProxyAdmin` over the live state, and the listener that serves it.

use std::sync::Arc;

use proto::proxy::v1 as pb;
use proto::proxy::v1::proxy_admin_server::{ProxyAdmin, ProxyAdminServer};
use tonic::{Request, Response, Status};

use super::convert;
use crate::state::{ProxyState, StateError};
use crate::switch::SwitchError;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct AdminService {
    state: Arc<ProxyState>,
}

impl AdminService {
    pub fn new(state: Arc<ProxyState>) -> Self {
        Self { state }
    }
}

fn state_status(e: StateError) -> Status {
    match e {
        StateError::Route(e) => Status::invalid_argument(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn switch_status(e: SwitchError) -> Status {
    match e {
        SwitchError::Unhealthy { .. } => Status::failed_precondition(e.to_string()),
        SwitchError::Concurrent { .. } => Status::aborted(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

const CERTS_LATER: &str = "certificates and ACME domains arrive with issue #4";

#[tonic::async_trait]
impl ProxyAdmin for AdminService {
    async fn upsert_route(
        &self,
        request: Request<pb::UpsertRouteRequest>,
    ) -> Result<Response<pb::UpsertRouteResponse>, Status> {
        let route = request
            .into_inner()
            .route
            .ok_or_else(|| Status::invalid_argument("route is missing"))?;
        let stored = self
            .state
            .upsert_route(convert::route_from_pb(route))
            .await
            .map_err(state_status)?;
        Ok(Response::new(pb::UpsertRouteResponse {
            route: Some(convert::route_to_pb(&stored)),
        }))
    }

    async fn remove_route(
        &self,
        request: Request<pb::RemoveRouteRequest>,
    ) -> Result<Response<pb::RemoveRouteResponse>, Status> {
        let removed = self
            .state
            .remove_route(&request.into_inner().route_id)
            .await
            .map_err(state_status)?;
        Ok(Response::new(pb::RemoveRouteResponse { removed }))
    }

    async fn list_routes(
        &self,
        _request: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        let snap = self.state.snapshot();
        let draining = self.state.draining();
        let routes = snap
            .routes
            .routes()
            .iter()
            .map(|r| convert::route_to_pb(r))
            .collect();
        let mut services: Vec<pb::ServiceUpstreams> = snap
            .services
            .values()
            .map(|s| convert::service_to_pb(s, &draining))
            .collect();
        services.sort_by(|a, b| a.service_id.cmp(&b.service_id));
        Ok(Response::new(pb::ListRoutesResponse { routes, services }))
    }

    async fn switch(
        &self,
        request: Request<pb::SwitchRequest>,
    ) -> Result<Response<pb::SwitchResponse>, Status> {
        let cmd = convert::switch_from_pb(request.into_inner());
        let out = self.state.switch(cmd).await.map_err(switch_status)?;
        Ok(Response::new(pb::SwitchResponse {
            generation: out.generation,
            previous: out.previous.iter().map(convert::upstream_to_pb).collect(),
            swap_after_us: out.swap_after.as_micros() as u64,
            drained_after_us: out.drained_after.as_micros() as u64,
            connections_closed_at_deadline: out.closed_at_deadline as u32,
        }))
    }

    async fn put_certificate(
        &self,
        _request: Request<pb::PutCertificateRequest>,
    ) -> Result<Response<pb::PutCertificateResponse>, Status> {
        Err(Status::unimplemented(CERTS_LATER))
    }

    async fn remove_certificate(
        &self,
        _request: Request<pb::RemoveCertificateRequest>,
    ) -> Result<Response<pb::RemoveCertificateResponse>, Status> {
        Err(Status::unimplemented(CERTS_LATER))
    }

    async fn put_allowed_domain(
        &self,
        _request: Request<pb::PutAllowedDomainRequest>,
    ) -> Result<Response<pb::PutAllowedDomainResponse>, Status> {
        Err(Status::unimplemented(CERTS_LATER))
    }

    async fn remove_allowed_domain(
        &self,
        _request: Request<pb::RemoveAllowedDomainRequest>,
    ) -> Result<Response<pb::RemoveAllowedDomainResponse>, Status> {
        Err(Status::unimplemented(CERTS_LATER))
    }

    async fn list_allowed_domains(
        &self,
        _request: Request<pb::ListAllowedDomainsRequest>,
    ) -> Result<Response<pb::ListAllowedDomainsResponse>, Status> {
        Err(Status::unimplemented(CERTS_LATER))
    }
}

/// Compares the bearer token in constant time.
fn authorized(
    header: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    token: &str,
) -> bool {
    let Some(given) = header
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves `ProxyAdmin` (token required) and `GET /metrics` on `listener` until the future is
/// dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ProxyState>,
    token: String,
) -> std::io::Result<()> {
    let grpc = ProxyAdminServer::with_interceptor(
        AdminService::new(Arc::clone(&state)),
        move |req: Request<()>| {
            if authorized(req.metadata().get("authorization"), &token) {
                Ok(req)
            } else {
                Err(Status::unauthenticated("missing or wrong bearer token"))
            }
        },
    );
    let metrics_state = Arc::clone(&state);
    let router = tonic::service::Routes::new(grpc).into_axum_router().route(
        "/metrics",
        axum::routing::get(move || {
            let state = Arc::clone(&metrics_state);
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    state.metrics.render(&state.health()),
                )
            }
        }),
    );
    axum::serve(listener, router).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_must_match_exactly() {
        let v = |s: &str| tonic::metadata::MetadataValue::try_from(s).unwrap();
        assert!(authorized(Some(&v("Bearer secret-token")), "secret-token"));
        assert!(!authorized(Some(&v("Bearer secret-tokeN")), "secret-token"));
        assert!(!authorized(Some(&v("secret-token")), "secret-token"));
        assert!(!authorized(None, "secret-token"));
    }
}
