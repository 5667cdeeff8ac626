//! In-process gRPC servers speaking the three daemons' `proto` APIs, recording every request.
//! They let tests exercise the real tonic clients and the real `stackpad-control` binary over
//! loopback while the real daemons are built elsewhere.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::build::v1 as b;
use proto::node::v1 as n;
use proto::proxy::v1 as p;
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub builds: Vec<b::StartBuildRequest>,
    pub deploys: Vec<n::DeployRequest>,
    pub stops: Vec<String>,
    pub removes: Vec<String>,
    /// RemoveVolume calls: (service id, name; empty = all).
    pub volume_removals: Vec<(String, String)>,
    pub routes: Vec<p::Route>,
    /// Domains the control plane allowed the proxy to order certificates for.
    pub allowed_domains: Vec<String>,
    pub switches: Vec<p::SwitchRequest>,
    pub bad_auth: u32,
    /// EngineLoad calls that reached their end: (container id, bytes loaded).
    pub engine_loads: Vec<(String, usize)>,
}

#[derive(Clone, Default)]
pub struct Daemons {
    pub rec: Arc<Mutex<Recorded>>,
    /// How long the first Deploy call takes (later ones answer at once).
    pub first_deploy_delay: Arc<Mutex<Duration>>,
    /// A stand-in for the engines' data by container id (#14 backups): EngineDump streams it
    /// (CHECK answers `bytes N`), EngineLoad replaces it. A container missing here fails the
    /// dump like a stopped one.
    pub engine_data: Arc<Mutex<std::collections::HashMap<String, Vec<u8>>>>,
    /// The volumes ListVolumes reports (filtered by the request's service).
    pub volumes: Arc<Mutex<Vec<n::VolumeStatus>>>,
    /// While set, ListVolumes does not answer (a node that hangs).
    pub volumes_hang: Arc<std::sync::atomic::AtomicBool>,
}

impl Daemons {
    pub fn recorded(&self) -> Recorded {
        self.rec.lock().unwrap().clone()
    }

    /// Serves all three APIs on one loopback port; returns `http://127.0.0.1:<port>`.
    pub async fn serve(&self, proxy_token: &str) -> anyhow::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        self.serve_on(listener, proxy_token, None);
        Ok(address)
    }

    /// Serves all three APIs on `listener`, over mTLS with `tls` if given (the daemons'
    /// `pki::incoming`).
    pub fn serve_on(
        &self,
        listener: TcpListener,
        proxy_token: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) {
        let token = format!("Bearer {proxy_token}");
        let proxy = ProxyFake {
            d: self.clone(),
            token,
        };
        let router = tonic::transport::Server::builder()
            .add_service(n::node_agent_server::NodeAgentServer::new(self.clone()))
            .add_service(b::builder_server::BuilderServer::new(self.clone()))
            .add_service(p::proxy_admin_server::ProxyAdminServer::new(proxy));
        tokio::spawn(router.serve_with_incoming(pki::incoming(listener, tls)));
    }
}

fn status_for(build_id: &str, commit: &str, image: &str) -> b::BuildStatus {
    b::BuildStatus {
        build_id: build_id.into(),
        state: b::BuildState::Succeeded as i32,
        commit: commit.into(),
        framework: "dockerfile".into(),
        container_port: 8080,
        image: format!("{image}:{commit}"),
        image_digest: "sha256:0123".into(),
        ..Default::default()
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl b::builder_server::Builder for Daemons {
    async fn start_build(
        &self,
        r: Request<b::StartBuildRequest>,
    ) -> Result<Response<b::BuildStatus>, Status> {
        let r = r.into_inner();
        self.rec.lock().unwrap().builds.push(r.clone());
        Ok(Response::new(b::BuildStatus {
            build_id: r.build_id,
            state: b::BuildState::Queued as i32,
            ..Default::default()
        }))
    }
    type WatchBuildStream = BoxStream<b::BuildEvent>;
    async fn watch_build(
        &self,
        r: Request<b::WatchBuildRequest>,
    ) -> Result<Response<Self::WatchBuildStream>, Status> {
        let id = r.into_inner().build_id;
        let req = self
            .rec
            .lock()
            .unwrap()
            .builds
            .iter()
            .find(|x| x.build_id == id)
            .cloned();
        let req = req.ok_or_else(|| Status::not_found(format!("build {id}")))?;
        let commit = req.source.map(|s| s.commit).unwrap_or_default();
        let events = vec![
            Ok(b::BuildEvent {
                event: Some(b::build_event::Event::Log(b::LogLine {
                    step: "clone".into(),
                    line: "cloned".into(),
                    ..Default::default()
                })),
            }),
            Ok(b::BuildEvent {
                event: Some(b::build_event::Event::Status(status_for(
                    &id, &commit, &req.image,
                ))),
            }),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(events))))
    }
    async fn cancel_build(
        &self,
        _: Request<b::CancelBuildRequest>,
    ) -> Result<Response<b::BuildStatus>, Status> {
        Err(Status::unimplemented("cancel"))
    }
    async fn get_build(
        &self,
        r: Request<b::GetBuildRequest>,
    ) -> Result<Response<b::BuildStatus>, Status> {
        Err(Status::not_found(r.into_inner().build_id))
    }
}

#[tonic::async_trait]
impl n::node_agent_server::NodeAgent for Daemons {
    async fn deploy(
        &self,
        r: Request<n::DeployRequest>,
    ) -> Result<Response<n::DeployResponse>, Status> {
        let r = r.into_inner();
        let first = {
            let mut rec = self.rec.lock().unwrap();
            rec.deploys.push(r.clone());
            rec.deploys.len() == 1
        };
        if first {
            let delay = *self.first_deploy_delay.lock().unwrap();
            tokio::time::sleep(delay).await;
        }
        let w = r.workload.clone().unwrap_or_default();
        let (state, message) = if r.image.contains("unhealthy") {
            (
                n::ContainerState::Unhealthy,
                "GET /healthz answered 500".to_owned(),
            )
        } else {
            (n::ContainerState::Healthy, String::new())
        };
        Ok(Response::new(n::DeployResponse {
            container: Some(n::ContainerStatus {
                container_id: format!("sp-{}", w.deployment_id),
                workload: Some(w),
                image: r.image.clone(),
                state: state as i32,
                ip_address: "127.0.0.1".into(),
                message,
                ..Default::default()
            }),
        }))
    }
    async fn stop(&self, r: Request<n::StopRequest>) -> Result<Response<n::StopResponse>, Status> {
        self.rec
            .lock()
            .unwrap()
            .stops
            .push(r.into_inner().container_id);
        Ok(Response::new(n::StopResponse::default()))
    }
    async fn remove(
        &self,
        r: Request<n::RemoveRequest>,
    ) -> Result<Response<n::RemoveResponse>, Status> {
        self.rec
            .lock()
            .unwrap()
            .removes
            .push(r.into_inner().container_id);
        Ok(Response::new(n::RemoveResponse { removed: true }))
    }
    async fn status(
        &self,
        _: Request<n::StatusRequest>,
    ) -> Result<Response<n::ContainerStatus>, Status> {
        Err(Status::unimplemented("status"))
    }
    async fn list(&self, r: Request<n::ListRequest>) -> Result<Response<n::ListResponse>, Status> {
        let id = r.into_inner().deployment_id;
        let rec = self.rec.lock().unwrap();
        let mut containers: Vec<n::ContainerStatus> = rec
            .deploys
            .iter()
            .filter(|d| d.workload.as_ref().is_some_and(|w| w.deployment_id == id))
            .map(|_| n::ContainerStatus {
                container_id: format!("sp-{id}"),
                ..Default::default()
            })
            .collect();
        containers.dedup_by(|a, b| a.container_id == b.container_id);
        containers.retain(|c| !rec.removes.contains(&c.container_id));
        Ok(Response::new(n::ListResponse { containers }))
    }
    type LogsStream = BoxStream<n::LogEntry>;
    async fn logs(&self, _: Request<n::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        Err(Status::unimplemented("logs"))
    }
    async fn node_info(
        &self,
        _: Request<n::NodeInfoRequest>,
    ) -> Result<Response<n::NodeInfoResponse>, Status> {
        Ok(Response::new(n::NodeInfoResponse {
            node_id: "fake".into(),
            cpu_millis_total: 4000,
            memory_bytes_total: 8 << 30,
            ..Default::default()
        }))
    }
    async fn remove_volume(
        &self,
        r: Request<n::RemoveVolumeRequest>,
    ) -> Result<Response<n::RemoveVolumeResponse>, Status> {
        let r = r.into_inner();
        self.rec
            .lock()
            .unwrap()
            .volume_removals
            .push((r.service_id, r.name));
        Ok(Response::new(n::RemoveVolumeResponse::default()))
    }
    async fn list_volumes(
        &self,
        r: Request<n::ListVolumesRequest>,
    ) -> Result<Response<n::ListVolumesResponse>, Status> {
        let service = r.into_inner().service_id;
        while self.volumes_hang.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let volumes = self
            .volumes
            .lock()
            .unwrap()
            .iter()
            .filter(|v| service.is_empty() || v.service_id == service)
            .cloned()
            .collect();
        Ok(Response::new(n::ListVolumesResponse { volumes }))
    }
    async fn set_cluster_endpoints(
        &self,
        r: Request<n::SetClusterEndpointsRequest>,
    ) -> Result<Response<n::SetClusterEndpointsResponse>, Status> {
        let remote = r.into_inner().endpoints.len() as u32;
        Ok(Response::new(n::SetClusterEndpointsResponse { remote }))
    }
    type EngineDumpStream = BoxStream<n::EngineChunk>;
    async fn engine_dump(
        &self,
        r: Request<n::EngineDumpRequest>,
    ) -> Result<Response<Self::EngineDumpStream>, Status> {
        let r = r.into_inner();
        let data = self
            .engine_data
            .lock()
            .unwrap()
            .get(&r.container_id)
            .cloned()
            .ok_or_else(|| {
                Status::failed_precondition(format!("{} is not running", r.container_id))
            })?;
        let data = if r.command == n::EngineCommand::Check as i32 {
            format!("bytes {}\n", data.len()).into_bytes()
        } else {
            data
        };
        // As the agent: compressed when asked, and every chunk says how.
        let raw_bytes = data.len() as u64;
        let data = if r.compression == n::Compression::Zstd as i32 {
            zstd::encode_all(&data[..], 3).map_err(|e| Status::internal(e.to_string()))?
        } else {
            data
        };
        let mut chunks: Vec<Result<n::EngineChunk, Status>> = data
            .chunks(64 * 1024)
            .map(|c| {
                Ok(n::EngineChunk {
                    data: c.to_vec(),
                    compression: r.compression,
                    ..Default::default()
                })
            })
            .collect();
        chunks.push(Ok(n::EngineChunk {
            end: true,
            compression: r.compression,
            raw_bytes,
            ..Default::default()
        }));
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
    async fn engine_load(
        &self,
        r: Request<tonic::Streaming<n::EngineLoadRequest>>,
    ) -> Result<Response<n::EngineLoadResponse>, Status> {
        use tokio_stream::StreamExt;
        let mut s = r.into_inner();
        let Some(Ok(n::EngineLoadRequest {
            part: Some(n::engine_load_request::Part::Header(h)),
        })) = s.next().await
        else {
            return Err(Status::invalid_argument("no header"));
        };
        let mut data = Vec::new();
        let mut ended = false;
        while let Some(m) = s.next().await {
            if let Some(n::engine_load_request::Part::Chunk(c)) = m?.part {
                data.extend(c.data);
                ended = c.end;
            }
        }
        if !ended {
            return Err(Status::aborted("the upload ended without its end"));
        }
        let data = if h.compression == n::Compression::Zstd as i32 {
            zstd::decode_all(&data[..])
                .map_err(|e| Status::invalid_argument(format!("does not decompress: {e}")))?
        } else {
            data
        };
        let bytes = data.len();
        self.engine_data
            .lock()
            .unwrap()
            .insert(h.container_id.clone(), data);
        self.rec
            .lock()
            .unwrap()
            .engine_loads
            .push((h.container_id, bytes));
        Ok(Response::new(n::EngineLoadResponse {
            bytes: bytes as u64,
            detail: String::new(),
            compression: h.compression,
            ..Default::default()
        }))
    }
}

#[derive(Clone)]
pub struct ProxyFake {
    d: Daemons,
    token: String,
}

impl ProxyFake {
    fn check<T>(&self, r: &Request<T>) -> Result<(), Status> {
        let ok = r
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(self.token.as_str());
        if !ok {
            self.d.rec.lock().unwrap().bad_auth += 1;
            return Err(Status::unauthenticated("bad token"));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl p::proxy_admin_server::ProxyAdmin for ProxyFake {
    async fn upsert_route(
        &self,
        r: Request<p::UpsertRouteRequest>,
    ) -> Result<Response<p::UpsertRouteResponse>, Status> {
        self.check(&r)?;
        let route = r.into_inner().route.unwrap_or_default();
        self.d.rec.lock().unwrap().routes.push(route.clone());
        Ok(Response::new(p::UpsertRouteResponse { route: Some(route) }))
    }
    async fn remove_route(
        &self,
        _: Request<p::RemoveRouteRequest>,
    ) -> Result<Response<p::RemoveRouteResponse>, Status> {
        Err(Status::unimplemented("remove_route"))
    }
    async fn list_routes(
        &self,
        _: Request<p::ListRoutesRequest>,
    ) -> Result<Response<p::ListRoutesResponse>, Status> {
        Err(Status::unimplemented("list_routes"))
    }
    async fn switch(
        &self,
        r: Request<p::SwitchRequest>,
    ) -> Result<Response<p::SwitchResponse>, Status> {
        self.check(&r)?;
        let r = r.into_inner();
        let n = {
            let mut rec = self.d.rec.lock().unwrap();
            rec.switches.push(r.clone());
            rec.switches.len()
        };
        Ok(Response::new(p::SwitchResponse {
            generation: n as u64,
            ..Default::default()
        }))
    }
    async fn put_certificate(
        &self,
        _: Request<p::PutCertificateRequest>,
    ) -> Result<Response<p::PutCertificateResponse>, Status> {
        Err(Status::unimplemented("put_certificate"))
    }
    async fn remove_certificate(
        &self,
        _: Request<p::RemoveCertificateRequest>,
    ) -> Result<Response<p::RemoveCertificateResponse>, Status> {
        Err(Status::unimplemented("remove_certificate"))
    }
    async fn put_allowed_domain(
        &self,
        r: Request<p::PutAllowedDomainRequest>,
    ) -> Result<Response<p::PutAllowedDomainResponse>, Status> {
        self.check(&r)?;
        let domain = r.into_inner().domain.unwrap_or_default().domain;
        self.d.rec.lock().unwrap().allowed_domains.push(domain);
        Ok(Response::new(p::PutAllowedDomainResponse {}))
    }
    async fn remove_allowed_domain(
        &self,
        _: Request<p::RemoveAllowedDomainRequest>,
    ) -> Result<Response<p::RemoveAllowedDomainResponse>, Status> {
        Err(Status::unimplemented("remove_allowed_domain"))
    }
    async fn list_allowed_domains(
        &self,
        _: Request<p::ListAllowedDomainsRequest>,
    ) -> Result<Response<p::ListAllowedDomainsResponse>, Status> {
        Err(Status::unimplemented("list_allowed_domains"))
    }
    async fn sleep(
        &self,
        _: Request<p::SleepRequest>,
    ) -> Result<Response<p::SleepResponse>, Status> {
        Err(Status::unimplemented("sleep"))
    }
    type WatchWakesStream = BoxStream<p::WakeRequest>;
    async fn watch_wakes(
        &self,
        _: Request<p::WatchWakesRequest>,
    ) -> Result<Response<Self::WatchWakesStream>, Status> {
        Err(Status::unimplemented("watch_wakes"))
    }
}
