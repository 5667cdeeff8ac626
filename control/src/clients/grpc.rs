//! The real clients: tonic over `proto`, one lazily connected channel per daemon address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ::api::{NodeRole, ServiceKind};
use async_trait::async_trait;
use proto::build::v1 as b;
use proto::node::v1 as n;
use proto::proxy::v1 as p;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::tls::PlatformTls;
use super::*;

/// Channels by address, created on first use and reused. An `https://` address is reached over
/// mTLS with control's platform certificate, expecting the node registered there
/// ([`super::tls::PlatformTls`]); `http://` is plain text (loopback daemons).
#[derive(Debug, Default)]
pub struct Channels {
    by_address: Mutex<HashMap<String, Channel>>,
    tls: Option<Arc<PlatformTls>>,
}

impl Channels {
    pub fn with_tls(tls: Option<Arc<PlatformTls>>) -> Self {
        Self {
            by_address: Mutex::default(),
            tls,
        }
    }

    fn get(&self, daemon: &'static str, address: &str) -> Result<Channel, ClientError> {
        let mut map = self.by_address.lock().expect("channel map lock poisoned");
        if let Some(c) = map.get(address) {
            return Ok(c.clone());
        }
        let role = match daemon {
            BUILDD => NodeRole::Build,
            PROXY => NodeRole::Proxy,
            _ => NodeRole::Compute,
        };
        let tls = self.tls.as_ref().map(|t| t.for_address(address, role));
        let channel =
            pki::channel(address, tls, std::time::Duration::from_secs(3)).map_err(|e| {
                ClientError {
                    daemon,
                    address: address.to_owned(),
                    message: e.to_string(),
                    retryable: false,
                }
            })?;
        map.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}

fn status_error(daemon: &'static str, address: &str, status: Status) -> ClientError {
    let retryable = matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::ResourceExhausted | Code::Aborted
    );
    ClientError {
        daemon,
        address: address.to_owned(),
        message: format!("{:?}: {}", status.code(), status.message()),
        retryable,
    }
}

/// buildd over gRPC.
#[derive(Debug, Default)]
pub struct GrpcBuilder {
    channels: Channels,
}

impl GrpcBuilder {
    pub fn with_tls(tls: Option<Arc<PlatformTls>>) -> Self {
        Self {
            channels: Channels::with_tls(tls),
        }
    }
}

const BUILDD: &str = "buildd";

fn build_outcome(status: &b::BuildStatus) -> Option<BuildOutcome> {
    match b::BuildState::try_from(status.state).ok()? {
        b::BuildState::Succeeded => Some(BuildOutcome::Succeeded {
            image: status.image.clone(),
            image_digest: status.image_digest.clone(),
            commit: status.commit.clone(),
            container_port: status.container_port,
        }),
        b::BuildState::Failed => Some(BuildOutcome::Failed {
            reason: status.failure_reason.clone(),
        }),
        b::BuildState::Cancelled => Some(BuildOutcome::Cancelled),
        _ => None,
    }
}

#[async_trait]
impl BuilderClient for GrpcBuilder {
    async fn build(
        &self,
        node: &str,
        r: &BuildRequest,
        log: &BuildLogSender,
    ) -> Result<BuildOutcome, ClientError> {
        let err = |s| status_error(BUILDD, node, s);
        let mut client = b::builder_client::BuilderClient::new(self.channels.get(BUILDD, node)?);
        let started = client
            .start_build(b::StartBuildRequest {
                build_id: r.build_id.clone(),
                source: Some(b::GitSource {
                    url: r.git_url.clone(),
                    r#ref: r.git_ref.clone(),
                    commit: r.git_commit.clone(),
                    subdirectory: r.subdirectory.clone(),
                    username: r
                        .git_credentials
                        .as_ref()
                        .map(|c| c.username.clone())
                        .unwrap_or_default(),
                    password: r
                        .git_credentials
                        .as_ref()
                        .map(|c| c.token.clone())
                        .unwrap_or_default(),
                    ssh_private_key: r
                        .deploy_key
                        .as_ref()
                        .map(|k| k.private_key.clone())
                        .unwrap_or_default(),
                    ssh_known_hosts: r
                        .deploy_key
                        .as_ref()
                        .map(|k| k.known_hosts.clone())
                        .unwrap_or_default(),
                    ..Default::default()
                }),
                image: r.image_repository.clone(),
                timeout_seconds: r.timeout_seconds,
                build_args: r.build_args.clone().into_iter().collect(),
                secrets: r.secrets.clone().into_iter().collect(),
                ..Default::default()
            })
            .await
            .map_err(err)?
            .into_inner();
        if let Some(done) = build_outcome(&started) {
            return Ok(done);
        }
        let mut stream = client
            .watch_build(b::WatchBuildRequest {
                build_id: r.build_id.clone(),
            })
            .await
            .map_err(err)?
            .into_inner();
        let mut number = 0;
        while let Some(event) = stream.message().await.map_err(err)? {
            match event.event {
                Some(b::build_event::Event::Status(status)) => {
                    if let Some(done) = build_outcome(&status) {
                        return Ok(done);
                    }
                }
                Some(b::build_event::Event::Log(line)) => {
                    number += 1;
                    // The receiver gone (the pipeline stopped waiting) only loses the lines.
                    let _ = log.send(BuildLogLine {
                        number,
                        timestamp_ns: line.timestamp_unix_nanos,
                        stream: match line.stream() {
                            b::LogStream::Stderr => logstore::build_logs::STREAM_STDERR,
                            b::LogStream::Stdout => logstore::build_logs::STREAM_STDOUT,
                            // A buildd from before the field: how the build ended (step
                            // `result`) is the only line known to be an error.
                            b::LogStream::Unspecified if line.step == "result" => {
                                logstore::build_logs::STREAM_STDERR
                            }
                            b::LogStream::Unspecified => logstore::build_logs::STREAM_STDOUT,
                        },
                        step: line.step,
                        line: line.line,
                    });
                }
                _ => {}
            }
        }
        // The stream ended without a final status: ask once more.
        let status = client
            .get_build(b::GetBuildRequest {
                build_id: r.build_id.clone(),
            })
            .await
            .map_err(err)?
            .into_inner();
        build_outcome(&status).ok_or_else(|| ClientError {
            daemon: BUILDD,
            address: node.to_owned(),
            message: format!(
                "build {} watch ended while it was still running",
                r.build_id
            ),
            retryable: true,
        })
    }

    async fn cancel(&self, node: &str, build_id: &str) -> Result<(), ClientError> {
        let mut client = b::builder_client::BuilderClient::new(self.channels.get(BUILDD, node)?);
        client
            .cancel_build(b::CancelBuildRequest {
                build_id: build_id.to_owned(),
            })
            .await
            .map_err(|s| status_error(BUILDD, node, s))?;
        Ok(())
    }

    async fn ping(&self, node: &str) -> Result<(), ClientError> {
        let mut client = b::builder_client::BuilderClient::new(self.channels.get(BUILDD, node)?);
        match client
            .get_build(b::GetBuildRequest {
                build_id: "stackpad-control-ping".into(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(status_error(BUILDD, node, s)),
        }
    }
}

/// The node agent over gRPC.
#[derive(Debug, Default)]
pub struct GrpcNode {
    channels: Channels,
}

impl GrpcNode {
    pub fn with_tls(tls: Option<Arc<PlatformTls>>) -> Self {
        Self {
            channels: Channels::with_tls(tls),
        }
    }
}

const NODE: &str = "node agent";

fn service_type(kind: ServiceKind) -> i32 {
    (match kind {
        ServiceKind::Web => n::ServiceType::Web,
        ServiceKind::Database => n::ServiceType::Database,
        ServiceKind::Cache => n::ServiceType::Cache,
        ServiceKind::Worker => n::ServiceType::Worker,
    }) as i32
}

fn deploy_request(s: &ContainerSpec) -> n::DeployRequest {
    let w = &s.workload;
    n::DeployRequest {
        volumes: s
            .volumes
            .iter()
            .map(|v| n::Volume {
                name: v.name.clone(),
                mount_path: v.mount_path.clone(),
                size_bytes: v.size_bytes,
            })
            .collect(),
        workload: Some(n::Workload {
            organization_id: w.organization_id.clone(),
            project_id: w.project_id.clone(),
            environment_id: w.environment_id.clone(),
            service_id: w.service_id.clone(),
            service_name: w.service_name.clone(),
            deployment_id: w.deployment_id.clone(),
            service_type: service_type(w.service_kind),
            environment_name: w.environment_name.clone(),
            replica: w.replica,
        }),
        image: s.image.clone(),
        command: s.command.clone(),
        args: s.args.clone(),
        env: s.env.clone().into_iter().collect(),
        ports: vec![n::Port {
            container_port: s.port,
            protocol: n::Protocol::Tcp as i32,
            name: "http".into(),
        }],
        resources: Some(n::Resources {
            cpu_millis: s.cpu_millis,
            memory_bytes: s.memory_bytes,
            pids_limit: 0,
        }),
        health_check: s.health.as_ref().map(|h| n::HealthCheck {
            probe: Some(match &h.http_path {
                _ if !h.exec.is_empty() => n::health_check::Probe::Exec(n::ExecProbe {
                    command: h.exec.clone(),
                }),
                Some(path) => n::health_check::Probe::Http(n::HttpProbe {
                    path: path.clone(),
                    port: h.port,
                }),
                None => n::health_check::Probe::Tcp(n::TcpProbe { port: h.port }),
            }),
            interval_ms: h.interval_ms,
            deadline_ms: h.deadline_ms,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[async_trait]
impl NodeClient for GrpcNode {
    async fn deploy(
        &self,
        node: &str,
        spec: &ContainerSpec,
    ) -> Result<ContainerOutcome, ClientError> {
        let mut client = n::node_agent_client::NodeAgentClient::new(self.channels.get(NODE, node)?);
        match client.deploy(deploy_request(spec)).await {
            Ok(resp) => {
                let c = resp.into_inner().container.unwrap_or_default();
                if c.state == n::ContainerState::Healthy as i32 {
                    Ok(ContainerOutcome::Healthy {
                        address: format!("{}:{}", c.ip_address, spec.port),
                        container_id: c.container_id,
                    })
                } else {
                    let state = n::ContainerState::try_from(c.state)
                        .map(|s| s.as_str_name())
                        .unwrap_or("unknown");
                    Ok(ContainerOutcome::Unhealthy {
                        reason: format!("container {} is {state}: {}", c.container_id, c.message),
                    })
                }
            }
            Err(s) => {
                let e = status_error(NODE, node, s);
                if e.retryable {
                    Err(e)
                } else {
                    // The agent answered: the container could not be made healthy.
                    Ok(ContainerOutcome::Unhealthy {
                        reason: e.to_string(),
                    })
                }
            }
        }
    }

    async fn remove_deployment(
        &self,
        node: &str,
        deployment_id: &str,
        grace_ms: u32,
    ) -> Result<(), ClientError> {
        let err = |s| status_error(NODE, node, s);
        let mut client = n::node_agent_client::NodeAgentClient::new(self.channels.get(NODE, node)?);
        let list = client
            .list(n::ListRequest {
                deployment_id: deployment_id.to_owned(),
                ..Default::default()
            })
            .await
            .map_err(err)?
            .into_inner();
        // Every container of the deployment (its replicas on this node) stops at once: each
        // may wait its whole grace period, and one after another that adds up.
        let stopped = list.containers.into_iter().map(|c| {
            let mut client = client.clone();
            async move {
                match client
                    .stop(n::StopRequest {
                        container_id: c.container_id.clone(),
                        grace_period_ms: grace_ms,
                    })
                    .await
                {
                    Ok(_) => {}
                    Err(s) if s.code() == Code::NotFound => {}
                    Err(s) => return Err(err(s)),
                }
                client
                    .remove(n::RemoveRequest {
                        container_id: c.container_id,
                        force: true,
                    })
                    .await
                    .map_err(err)?;
                Ok(())
            }
        });
        futures::future::try_join_all(stopped).await?;
        Ok(())
    }

    async fn remove_volumes(
        &self,
        node: &str,
        service_id: &str,
        name: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut client = n::node_agent_client::NodeAgentClient::new(self.channels.get(NODE, node)?);
        client
            .remove_volume(n::RemoveVolumeRequest {
                service_id: service_id.to_owned(),
                name: name.unwrap_or_default().to_owned(),
            })
            .await
            .map_err(|s| status_error(NODE, node, s))?;
        Ok(())
    }

    async fn list_volumes(
        &self,
        node: &str,
        service_id: &str,
    ) -> Result<Vec<super::VolumeUsage>, ClientError> {
        let mut client = n::node_agent_client::NodeAgentClient::new(self.channels.get(NODE, node)?);
        let list = client
            .list_volumes(n::ListVolumesRequest {
                service_id: service_id.to_owned(),
            })
            .await
            .map_err(|s| status_error(NODE, node, s))?
            .into_inner();
        Ok(list
            .volumes
            .into_iter()
            .map(|v| super::VolumeUsage {
                name: v.name,
                size_bytes: v.size_bytes,
                used_bytes: v.used_bytes,
                held_by: v.held_by,
            })
            .collect())
    }

    async fn info(&self, node: &str) -> Result<NodeCapacity, ClientError> {
        let mut client = n::node_agent_client::NodeAgentClient::new(self.channels.get(NODE, node)?);
        let info = client
            .node_info(n::NodeInfoRequest {})
            .await
            .map_err(|s| status_error(NODE, node, s))?
            .into_inner();
        Ok(NodeCapacity {
            cpu_millis_total: info.cpu_millis_total.into(),
            memory_bytes_total: info.memory_bytes_total,
        })
    }

    async fn set_cluster_endpoints(
        &self,
        node: &str,
        set: &crate::endpoints::EndpointSet,
    ) -> Result<(), ClientError> {
        let mut client = n::node_agent_client::NodeAgentClient::new(self.channels.get(NODE, node)?);
        let endpoints = set
            .endpoints
            .iter()
            .map(|e| {
                let w = &e.workload;
                n::ClusterEndpoint {
                    ip: e.ip.to_string(),
                    workload: Some(n::Workload {
                        organization_id: w.organization_id.clone(),
                        project_id: w.project_id.clone(),
                        environment_id: w.environment_id.clone(),
                        service_id: w.service_id.clone(),
                        service_name: w.service_name.clone(),
                        deployment_id: w.deployment_id.clone(),
                        service_type: service_type(w.service_kind),
                        environment_name: w.environment_name.clone(),
                        replica: w.replica,
                    }),
                    service_port: e.port.into(),
                    node_id: e.node_id.to_string(),
                }
            })
            .collect();
        client
            .set_cluster_endpoints(n::SetClusterEndpointsRequest {
                digest: set.digest.clone(),
                endpoints,
            })
            .await
            .map_err(|s| status_error(NODE, node, s))?;
        Ok(())
    }

    async fn cluster_endpoints_digest(&self, node: &str) -> Result<String, ClientError> {
        let mut client = n::node_agent_client::NodeAgentClient::new(self.channels.get(NODE, node)?);
        Ok(client
            .node_info(n::NodeInfoRequest {})
            .await
            .map_err(|s| status_error(NODE, node, s))?
            .into_inner()
            .cluster_endpoints_digest)
    }
}

/// The proxy's admin API over gRPC, with its bearer token.
#[derive(Debug)]
pub struct GrpcProxy {
    address: String,
    token: String,
    channels: Channels,
}

const PROXY: &str = "proxy";

impl GrpcProxy {
    pub fn new(address: &str, token: &str) -> Self {
        Self {
            address: address.to_owned(),
            token: token.to_owned(),
            channels: Channels::default(),
        }
    }

    /// Reaches an `https://` proxy address over mTLS.
    pub fn with_tls(mut self, tls: Option<Arc<PlatformTls>>) -> Self {
        self.channels = Channels::with_tls(tls);
        self
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, ClientError> {
        let mut req = tonic::Request::new(message);
        if !self.token.is_empty() {
            let value = format!("Bearer {}", self.token)
                .parse()
                .map_err(|_| ClientError {
                    daemon: PROXY,
                    address: self.address.clone(),
                    message: "proxy_token is not a valid header value".into(),
                    retryable: false,
                })?;
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }

    fn client(&self) -> Result<p::proxy_admin_client::ProxyAdminClient<Channel>, ClientError> {
        Ok(p::proxy_admin_client::ProxyAdminClient::new(
            self.channels.get(PROXY, &self.address)?,
        ))
    }
}

#[async_trait]
impl ProxyClient for GrpcProxy {
    async fn upsert_route(&self, route: &RouteSpec) -> Result<(), ClientError> {
        let req = self.request(p::UpsertRouteRequest {
            route: Some(p::Route {
                route_id: route.route_id.clone(),
                hosts: route.hosts.clone(),
                service_id: route.service_id.clone(),
                organization_id: route.organization_id.clone(),
                project_id: route.project_id.clone(),
                environment_id: route.environment_id.clone(),
                generation: route.generation,
                ..Default::default()
            }),
        })?;
        let held = self
            .client()?
            .upsert_route(req)
            .await
            .map_err(|s| status_error(PROXY, &self.address, s))?
            .into_inner()
            .route;
        let held = held.map_or(0, |r| r.generation);
        if route.generation != 0 && held != route.generation {
            // A newer push got there first and put its own hosts: allowing this older read's
            // would bring back a domain revoked since.
            tracing::debug!(
                route = route.route_id,
                sent = route.generation,
                held,
                "route push superseded at the proxy"
            );
            return Ok(());
        }
        for host in &route.certificate_hosts {
            let req = self.request(p::PutAllowedDomainRequest {
                domain: Some(p::AllowedDomain {
                    domain: host.clone(),
                    service_id: route.service_id.clone(),
                }),
            })?;
            match self.client()?.put_allowed_domain(req).await {
                Ok(_) => {}
                // A proxy without a certificate store serves plain HTTP and its files' certificate.
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    tracing::debug!(
                        host,
                        "proxy has no certificate store: no ACME for this host"
                    );
                }
                Err(s) => return Err(status_error(PROXY, &self.address, s)),
            }
        }
        Ok(())
    }

    async fn remove_allowed_domain(&self, domain: &str) -> Result<(), ClientError> {
        let req = self.request(p::RemoveAllowedDomainRequest {
            domain: domain.to_owned(),
        })?;
        match self.client()?.remove_allowed_domain(req).await {
            Ok(_) => Ok(()),
            // No certificate store: nothing was ever allowed.
            Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(()),
            Err(s) => Err(status_error(PROXY, &self.address, s)),
        }
    }

    async fn sleep(&self, service_id: &str) -> Result<(), ClientError> {
        let req = self.request(p::SleepRequest {
            service_id: service_id.to_owned(),
        })?;
        self.client()?
            .sleep(req)
            .await
            .map_err(|s| status_error(PROXY, &self.address, s))?;
        Ok(())
    }

    async fn wakes(&self) -> Result<WakeStream, ClientError> {
        use futures::StreamExt;
        let req = self.request(p::WatchWakesRequest {})?;
        let stream = self
            .client()?
            .watch_wakes(req)
            .await
            .map_err(|s| status_error(PROXY, &self.address, s))?
            .into_inner();
        let address = self.address.clone();
        Ok(Box::pin(stream.map(move |w| {
            w.map(|w| w.service_id)
                .map_err(|s| status_error(PROXY, &address, s))
        })))
    }

    async fn remove_route(&self, route_id: &str, generation: u64) -> Result<(), ClientError> {
        let req = self.request(p::RemoveRouteRequest {
            route_id: route_id.to_owned(),
            generation,
        })?;
        self.client()?
            .remove_route(req)
            .await
            .map_err(|s| status_error(PROXY, &self.address, s))?;
        Ok(())
    }

    async fn switch(&self, spec: &SwitchSpec) -> Result<SwitchOutcome, ClientError> {
        let req = self.request(p::SwitchRequest {
            service_id: spec.service_id.clone(),
            // Every replica of the deployment, weighted equally.
            upstreams: spec
                .addresses
                .iter()
                .map(|address| p::Upstream {
                    address: address.clone(),
                    deployment_id: spec.deployment_id.clone(),
                    weight: 1,
                })
                .collect(),
            drain_deadline_ms: spec.drain_deadline_ms,
            health_timeout_ms: spec.health_timeout_ms,
            route_generation: spec.route_generation,
            health_check: Some(p::HealthCheck {
                path: spec.health_path.clone().unwrap_or_default(),
                interval_ms: spec.health_interval_ms,
                // The node agent already saw the container healthy: one pass from the proxy's
                // side proves the path from the proxy works too.
                healthy_threshold: 1,
                ..Default::default()
            }),
            ..Default::default()
        })?;
        match self.client()?.switch(req).await {
            Ok(_) => Ok(SwitchOutcome::Switched),
            Err(s) => {
                let e = status_error(PROXY, &self.address, s);
                if e.retryable {
                    Err(e)
                } else {
                    Ok(SwitchOutcome::Refused {
                        reason: e.to_string(),
                    })
                }
            }
        }
    }
}
