//! `stackpad.proxy.v1.ProxyAdmin` over the live state, and the listener that serves it.

use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use proto::proxy::v1 as pb;
use proto::proxy::v1::proxy_admin_server::{ProxyAdmin, ProxyAdminServer};
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

use super::convert;
use crate::acme::{CertStore, StoreError, StoredCertificate, TlsState};
use crate::state::{ProxyState, RouteUpdate, StateError};
use crate::switch::{SwitchCommand, SwitchError};
use crate::wake::WakeRequest;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct AdminService {
    state: Arc<ProxyState>,
    tls: Arc<TlsState>,
}

impl AdminService {
    pub fn new(state: Arc<ProxyState>, tls: Arc<TlsState>) -> Self {
        Self { state, tls }
    }

    /// The shared store (waiting a little while it connects after start), or why there is none.
    async fn store(&self) -> Result<&CertStore, Status> {
        self.tls.wait_store(STORE_WAIT).await.ok_or_else(|| {
            Status::failed_precondition(
                "no certificate store: the proxy has no `acme` section, or its database is not reachable",
            )
        })
    }
}

/// How long a certificate call waits for the store to connect after the proxy started.
const STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn store_status(e: StoreError) -> Status {
    if e.is_retryable() {
        Status::unavailable(e.to_string())
    } else {
        Status::internal(e.to_string())
    }
}

/// A domain as the allowed list and the certificate table hold it: lower case, no trailing dot.
fn domain_name(raw: &str) -> Result<String, Status> {
    let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let base = name.strip_prefix("*.").unwrap_or(&name);
    let valid = !base.is_empty()
        && base.len() <= 253
        && base.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(name)
    } else {
        Err(Status::invalid_argument(format!(
            "domain {raw:?} is not a DNS name"
        )))
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
        SwitchError::Unhealthy { .. } | SwitchError::Superseded { .. } => {
            Status::failed_precondition(e.to_string())
        }
        SwitchError::Concurrent { .. } => Status::aborted(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

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
        let route_id = route.route_id.clone();
        let response = match self
            .state
            .upsert_route(convert::route_from_pb(route))
            .await
            .map_err(state_status)?
        {
            RouteUpdate::Applied(stored) => pb::UpsertRouteResponse {
                route: Some(convert::route_to_pb(&stored)),
            },
            RouteUpdate::Superseded { held } => {
                tracing::info!(route_id, held, "route update superseded by a newer one");
                let snap = self.state.snapshot();
                let current = snap.routes.routes().iter().find(|r| r.route_id == route_id);
                pb::UpsertRouteResponse {
                    route: current.map(|r| convert::route_to_pb(r)),
                }
            }
        };
        Ok(Response::new(response))
    }

    async fn remove_route(
        &self,
        request: Request<pb::RemoveRouteRequest>,
    ) -> Result<Response<pb::RemoveRouteResponse>, Status> {
        let request = request.into_inner();
        let removed = match self
            .state
            .remove_route(&request.route_id, request.generation)
            .await
            .map_err(state_status)?
        {
            RouteUpdate::Applied(removed) => removed,
            RouteUpdate::Superseded { .. } => false,
        };
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
            .map(|s| {
                convert::service_to_pb(s, &draining, self.state.switch_generation(&s.service_id))
            })
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
        request: Request<pb::PutCertificateRequest>,
    ) -> Result<Response<pb::PutCertificateResponse>, Status> {
        let request = request.into_inner();
        let domain = domain_name(&request.domain)?;
        let validity = crate::acme::validity::chain_validity(&request.certificate_chain_pem)
            .map_err(|e| Status::invalid_argument(format!("certificate of {domain}: {e}")))?;
        let key = crate::certs::certified_key_from_pem(
            &request.certificate_chain_pem,
            &request.private_key_pem,
        )
        .map_err(|e| Status::invalid_argument(format!("certificate of {domain}: {e}")))?;
        if let Some(store) = self.tls.wait_store(STORE_WAIT).await {
            let stored = StoredCertificate {
                domain: domain.clone(),
                chain_pem: request.certificate_chain_pem,
                key_pem: request.private_key_pem,
                validity,
            };
            store.put_certificate(&stored).await.map_err(store_status)?;
        }
        self.tls.table().insert(&domain, Arc::new(key));
        self.tls.metrics().served(&domain, validity);
        let not_after = validity
            .not_after
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        Ok(Response::new(pb::PutCertificateResponse {
            not_after_unix_ms: not_after,
        }))
    }

    async fn remove_certificate(
        &self,
        request: Request<pb::RemoveCertificateRequest>,
    ) -> Result<Response<pb::RemoveCertificateResponse>, Status> {
        let domain = domain_name(&request.into_inner().domain)?;
        let mut removed = false;
        if let Some(store) = self.tls.wait_store(STORE_WAIT).await {
            removed |= store
                .remove_certificate(&domain)
                .await
                .map_err(store_status)?;
        }
        removed |= self.tls.table().remove(&domain);
        self.tls.metrics().removed(&domain);
        Ok(Response::new(pb::RemoveCertificateResponse { removed }))
    }

    async fn put_allowed_domain(
        &self,
        request: Request<pb::PutAllowedDomainRequest>,
    ) -> Result<Response<pb::PutAllowedDomainResponse>, Status> {
        let allowed = request
            .into_inner()
            .domain
            .ok_or_else(|| Status::invalid_argument("domain is missing"))?;
        let domain = domain_name(&allowed.domain)?;
        self.store()
            .await?
            .put_allowed_domain(&domain, &allowed.service_id)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::PutAllowedDomainResponse {}))
    }

    async fn remove_allowed_domain(
        &self,
        request: Request<pb::RemoveAllowedDomainRequest>,
    ) -> Result<Response<pb::RemoveAllowedDomainResponse>, Status> {
        let domain = domain_name(&request.into_inner().domain)?;
        let removed = self
            .store()
            .await?
            .remove_allowed_domain(&domain)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::RemoveAllowedDomainResponse { removed }))
    }

    async fn list_allowed_domains(
        &self,
        _request: Request<pb::ListAllowedDomainsRequest>,
    ) -> Result<Response<pb::ListAllowedDomainsResponse>, Status> {
        let domains = self
            .store()
            .await?
            .allowed_domains()
            .await
            .map_err(store_status)?
            .into_iter()
            .map(|(domain, service_id)| pb::AllowedDomain { domain, service_id })
            .collect();
        Ok(Response::new(pb::ListAllowedDomainsResponse { domains }))
    }

    async fn sleep(
        &self,
        request: Request<pb::SleepRequest>,
    ) -> Result<Response<pb::SleepResponse>, Status> {
        let service_id = request.into_inner().service_id.trim().to_owned();
        // Out of rotation first (an idle service has nothing in flight to drain), then marked:
        // a request in between finds no upstream and is answered 503 as before.
        self.state
            .switch(SwitchCommand {
                service_id: service_id.clone(),
                upstreams: Vec::new(),
                drain_deadline: Some(SLEEP_DRAIN),
                skip_health_wait: true,
                health_timeout: None,
                health_check: None,
                load_balancing: None,
                route_generation: 0,
            })
            .await
            .map_err(switch_status)?;
        self.state.wakes.sleep(&service_id);
        tracing::info!(service_id, "service sleeping");
        Ok(Response::new(pb::SleepResponse {}))
    }

    type WatchWakesStream =
        Pin<Box<dyn futures::Stream<Item = Result<pb::WakeRequest, Status>> + Send>>;

    async fn watch_wakes(
        &self,
        _request: Request<pb::WatchWakesRequest>,
    ) -> Result<Response<Self::WatchWakesStream>, Status> {
        let (pending, rx) = self.state.wakes.watch();
        let to_pb = |w: WakeRequest| pb::WakeRequest {
            service_id: w.service_id,
            host: w.host,
        };
        let pending = futures::stream::iter(pending.into_iter().map(move |w| Ok(to_pb(w))));
        let next = futures::stream::unfold(rx, move |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(w) => return Some((Ok(to_pb(w)), rx)),
                    // Held requests ask again after REASK_AFTER.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(pending.chain(next))))
    }
}

/// How long a service put to sleep may finish what it serves.
const SLEEP_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

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

/// The admin listener's connections: plain, or those that passed the platform mTLS handshake
/// (`pki::incoming`).
struct AdminListener {
    connections: tokio::sync::mpsc::Receiver<std::io::Result<pki::Conn>>,
    local: std::net::SocketAddr,
}

impl axum::serve::Listener for AdminListener {
    type Io = pki::Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (pki::Conn, std::net::SocketAddr) {
        loop {
            match self.connections.recv().await {
                Some(Ok(conn)) => match conn.peer_addr() {
                    Ok(peer) => return (conn, peer),
                    Err(_) => continue,
                },
                Some(Err(e)) => tracing::warn!(error = %e, "admin accept failed"),
                // The accept loop ends only with the listener: nothing more will come.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        Ok(self.local)
    }
}

/// The admin listener's mTLS: control's certificate of the platform CA only.
pub fn admin_tls(
    files: Option<&pki::TlsFiles>,
) -> Result<Option<Arc<rustls::ServerConfig>>, pki::PkiError> {
    files
        .map(|f| {
            pki::Material::from_files(f).map(|m| pki::server_config(m, pki::Accept::control()))
        })
        .transpose()
}

/// Serves `ProxyAdmin` (token required) and `GET /metrics` on `listener` until the future is
/// dropped; over mTLS when `admin_tls` is given ([`admin_tls`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ProxyState>,
    tls: Arc<TlsState>,
    token: String,
    admin_tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let listener = AdminListener {
        connections: pki::incoming(listener, admin_tls).into_inner(),
        local,
    };
    let grpc = ProxyAdminServer::with_interceptor(
        AdminService::new(Arc::clone(&state), Arc::clone(&tls)),
        move |req: Request<()>| {
            if authorized(req.metadata().get("authorization"), &token) {
                Ok(req)
            } else {
                Err(Status::unauthenticated("missing or wrong bearer token"))
            }
        },
    );
    let metrics_state = Arc::clone(&state);
    let metrics_tls = Arc::clone(&tls);
    let router = tonic::service::Routes::new(grpc).into_axum_router().route(
        "/metrics",
        axum::routing::get(move || {
            let state = Arc::clone(&metrics_state);
            let tls = Arc::clone(&metrics_tls);
            async move {
                let mut text = state.metrics.render(&state.health());
                text.push_str(&tls.render_metrics());
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    text,
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
