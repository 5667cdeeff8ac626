//! The `stackpad.node.v1.NodeAgent` gRPC service over the [`Agent`].

pub mod backup;
pub mod convert;
pub mod endpoints;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use proto::node::v1 as pb;
use proto::node::v1::node_agent_server::NodeAgent;
use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::logs::{LogLine, Stream as LogStream};
use crate::network::cluster::ClusterView;

/// The gRPC face of the agent.
#[derive(Debug, Clone)]
pub struct NodeAgentService {
    agent: Arc<Agent>,
    cluster: Arc<ClusterView>,
}

impl NodeAgentService {
    /// The service keeping control's pushed endpoint set in the agent's own view (its DNS
    /// responders read it).
    pub fn new(agent: Arc<Agent>) -> Self {
        let view = agent.networks.cluster_view();
        Self::with_cluster_view(agent, view)
    }

    /// The service keeping control's pushed endpoint set in `cluster` (shared with its readers).
    pub fn with_cluster_view(agent: Arc<Agent>, cluster: Arc<ClusterView>) -> Self {
        Self { agent, cluster }
    }

    pub fn server(self) -> pb::node_agent_server::NodeAgentServer<Self> {
        pb::node_agent_server::NodeAgentServer::new(self)
    }
}

fn entry(l: LogLine) -> pb::LogEntry {
    pb::LogEntry {
        timestamp_unix_nanos: l.timestamp_nanos,
        stream: match l.stream {
            LogStream::Stdout => pb::LogStream::Stdout as i32,
            LogStream::Stderr => pb::LogStream::Stderr as i32,
        },
        line: l.line,
        truncated: l.truncated,
    }
}

fn container_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(
            "invalid container_id: must not be empty",
        ));
    }
    Ok(id)
}

type LogEntries = Pin<Box<dyn Stream<Item = Result<pb::LogEntry, Status>> + Send>>;

#[tonic::async_trait]
impl NodeAgent for NodeAgentService {
    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        let spec = convert::deploy_spec(request.into_inner()).map_err(convert::error)?;
        let status = self.agent.deploy(spec).await.map_err(convert::error)?;
        Ok(Response::new(pb::DeployResponse {
            container: Some(convert::status(status)),
        }))
    }

    async fn stop(
        &self,
        request: Request<pb::StopRequest>,
    ) -> Result<Response<pb::StopResponse>, Status> {
        let req = request.into_inner();
        let grace = (req.grace_period_ms > 0)
            .then(|| Duration::from_millis(u64::from(req.grace_period_ms)));
        let status = self
            .agent
            .stop(container_id(&req.container_id)?, grace)
            .await
            .map_err(convert::error)?;
        Ok(Response::new(pb::StopResponse {
            container: Some(convert::status(status)),
        }))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let req = request.into_inner();
        let removed = self
            .agent
            .remove(container_id(&req.container_id)?, req.force)
            .await
            .map_err(convert::error)?;
        Ok(Response::new(pb::RemoveResponse { removed }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::ContainerStatus>, Status> {
        let req = request.into_inner();
        let status = self
            .agent
            .status(container_id(&req.container_id)?)
            .map_err(convert::error)?;
        Ok(Response::new(convert::status(status)))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let req = request.into_inner();
        let project = (!req.project_id.is_empty()).then_some(req.project_id.as_str());
        let deployment = (!req.deployment_id.is_empty()).then_some(req.deployment_id.as_str());
        let containers = self
            .agent
            .list(project, deployment)
            .into_iter()
            .map(convert::status)
            .collect();
        Ok(Response::new(pb::ListResponse { containers }))
    }

    type LogsStream = LogEntries;

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = request.into_inner();
        let (tail, live) = self
            .agent
            .logs(
                container_id(&req.container_id)?,
                req.tail_lines as usize,
                req.follow,
            )
            .map_err(convert::error)?;
        let first = futures::stream::iter(tail.into_iter().map(|l| Ok(entry(l))));
        let Some(live) = live else {
            return Ok(Response::new(Box::pin(first)));
        };
        let follow = futures::stream::unfold(live, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(l) => return Some((Ok(entry(l)), rx)),
                    // A slow reader skips what it missed rather than ending the stream.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(futures::StreamExt::chain(
            first, follow,
        ))))
    }

    async fn node_info(
        &self,
        _request: Request<pb::NodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfoResponse>, Status> {
        let cap = self.agent.capacity();
        let containerd_version = self
            .agent
            .containerd()
            .server_version()
            .await
            .unwrap_or_default();
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        Ok(Response::new(pb::NodeInfoResponse {
            node_id: self.agent.config().node_id.clone(),
            hostname: read("/proc/sys/kernel/hostname"),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            containerd_version,
            kernel_version: read("/proc/sys/kernel/osrelease"),
            cpu_millis_total: cap.cpu_millis_total,
            cpu_millis_allocated: cap.cpu_millis_allocated,
            memory_bytes_total: cap.memory_bytes_total,
            memory_bytes_allocated: cap.memory_bytes_allocated,
            containers_running: cap.containers_running,
            containers_max: cap.containers_max,
            cluster_endpoints_digest: self.cluster.digest(),
        }))
    }

    async fn remove_volume(
        &self,
        request: Request<pb::RemoveVolumeRequest>,
    ) -> Result<Response<pb::RemoveVolumeResponse>, Status> {
        let req = request.into_inner();
        let name = (!req.name.is_empty()).then_some(req.name.as_str());
        let removed = self
            .agent
            .remove_volumes(&req.service_id, name)
            .await
            .map_err(convert::error)?;
        Ok(Response::new(pb::RemoveVolumeResponse { removed }))
    }

    async fn list_volumes(
        &self,
        request: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let req = request.into_inner();
        let service = (!req.service_id.is_empty()).then_some(req.service_id.as_str());
        let volumes = self
            .agent
            .volumes(service)
            .map_err(convert::error)?
            .into_iter()
            .map(|v| pb::VolumeStatus {
                service_id: v.info.service_id,
                name: v.info.name,
                size_bytes: v.info.size_bytes,
                used_bytes: v.info.used_bytes,
                held_by: v.held_by.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListVolumesResponse { volumes }))
    }

    async fn set_cluster_endpoints(
        &self,
        request: Request<pb::SetClusterEndpointsRequest>,
    ) -> Result<Response<pb::SetClusterEndpointsResponse>, Status> {
        let remote = endpoints::apply(
            self.agent.isolation.as_ref(),
            &self.cluster,
            request.into_inner(),
        )?;
        Ok(Response::new(pb::SetClusterEndpointsResponse { remote }))
    }

    type EngineDumpStream = backup::Chunks;

    async fn engine_dump(
        &self,
        request: Request<pb::EngineDumpRequest>,
    ) -> Result<Response<Self::EngineDumpStream>, Status> {
        backup::engine_dump(&self.agent, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn engine_load(
        &self,
        request: Request<tonic::Streaming<pb::EngineLoadRequest>>,
    ) -> Result<Response<pb::EngineLoadResponse>, Status> {
        backup::engine_load(&self.agent, request.into_inner())
            .await
            .map(Response::new)
    }
}
