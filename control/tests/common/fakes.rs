//! Recording fakes of buildd, the node agent and the proxy, for tests of the pipeline's logic.
//! (The real clients are the tonic ones; these stand in for the daemons' behaviour.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use control::clients::*;

#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Build {
        node: String,
        build_id: String,
        repo: String,
    },
    CancelBuild {
        build_id: String,
    },
    Deploy {
        node: String,
        deployment: String,
        image: String,
        env: Vec<(String, String)>,
    },
    Remove {
        node: String,
        deployment: String,
    },
    RemoveVolumes {
        node: String,
        service: String,
    },
    Route {
        hosts: Vec<String>,
        certificate_hosts: Vec<String>,
    },
    Switch {
        service: String,
        deployment: String,
        /// The new set's addresses, joined by commas.
        address: String,
    },
    Disallow {
        domain: String,
    },
    Unroute {
        route_id: String,
    },
}

pub type Log = Arc<Mutex<Vec<Call>>>;

#[derive(Clone, Default)]
pub struct Fakes {
    pub log: Log,
    pub builder: FakeBuilder,
    pub node: FakeNode,
    pub proxy: FakeProxy,
}

impl Fakes {
    pub fn new() -> Self {
        let log = Log::default();
        Self {
            builder: FakeBuilder {
                log: log.clone(),
                ..Default::default()
            },
            node: FakeNode {
                log: log.clone(),
                ..Default::default()
            },
            proxy: FakeProxy { log: log.clone() },
            log,
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.log.lock().unwrap().clone()
    }
}

#[derive(Clone, Default)]
pub struct FakeBuilder {
    pub log: Log,
    /// Builds take this long.
    pub delay: Arc<Mutex<Duration>>,
    /// The port builds report they detected (0: none detected).
    pub container_port: Arc<Mutex<u32>>,
}

#[async_trait]
impl BuilderClient for FakeBuilder {
    async fn build(
        &self,
        node: &str,
        r: &BuildRequest,
        _log: &BuildLogSender,
    ) -> Result<BuildOutcome, ClientError> {
        self.log.lock().unwrap().push(Call::Build {
            node: node.into(),
            build_id: r.build_id.clone(),
            repo: r.git_url.clone(),
        });
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        if r.git_url.contains("broken") {
            return Ok(BuildOutcome::Failed {
                reason: "RUN npm ci exited 1".into(),
            });
        }
        Ok(BuildOutcome::Succeeded {
            image: format!("{}:{}", r.image_repository, r.git_commit),
            image_digest: "sha256:feed".into(),
            commit: r.git_commit.clone(),
            container_port: *self.container_port.lock().unwrap(),
        })
    }
    async fn cancel(&self, _: &str, build_id: &str) -> Result<(), ClientError> {
        self.log.lock().unwrap().push(Call::CancelBuild {
            build_id: build_id.into(),
        });
        Ok(())
    }
    async fn ping(&self, _: &str) -> Result<(), ClientError> {
        Ok(())
    }
}

#[derive(Clone, Default)]
pub struct FakeNode {
    pub log: Log,
    /// Deploys never answer while set (a daemon hanging mid-step).
    pub hang: Arc<Mutex<bool>>,
    /// Nodes (addresses) that answer nothing at all (a lost node).
    pub silent: Arc<Mutex<Vec<String>>>,
    /// Nodes (addresses) whose info calls never return (no answer, not even an error).
    pub hung: Arc<Mutex<Vec<String>>>,
}

impl FakeNode {
    /// A call to a silent node times out.
    fn answers(&self, node: &str) -> Result<(), ClientError> {
        if self.silent.lock().unwrap().iter().any(|n| n == node) {
            return Err(ClientError {
                daemon: "node agent",
                address: node.into(),
                message: "connection timed out".into(),
                retryable: true,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl NodeClient for FakeNode {
    async fn deploy(&self, node: &str, s: &ContainerSpec) -> Result<ContainerOutcome, ClientError> {
        self.log.lock().unwrap().push(Call::Deploy {
            node: node.into(),
            deployment: s.workload.deployment_id.clone(),
            image: s.image.clone(),
            env: s.env.clone().into_iter().collect(),
        });
        if *self.hang.lock().unwrap() {
            std::future::pending::<()>().await;
        }
        if s.image.contains("unhealthy") {
            return Ok(ContainerOutcome::Unhealthy {
                reason: "health check GET /healthz answered 500: boom".into(),
            });
        }
        if s.image.contains("unreachable") {
            return Err(ClientError {
                daemon: "node agent",
                address: node.into(),
                message: "connection refused".into(),
                retryable: true,
            });
        }
        // Replica r of a deployment: its own container and address (10.0.r.1).
        let replica = s.workload.replica;
        Ok(ContainerOutcome::Healthy {
            container_id: match replica {
                0 => format!("c-{}", s.workload.deployment_id),
                r => format!("c-{}-{r}", s.workload.deployment_id),
            },
            address: format!("10.0.{replica}.1:{}", s.port),
        })
    }
    async fn remove_deployment(
        &self,
        node: &str,
        deployment_id: &str,
        _grace_ms: u32,
    ) -> Result<(), ClientError> {
        self.answers(node)?;
        self.log.lock().unwrap().push(Call::Remove {
            node: node.into(),
            deployment: deployment_id.into(),
        });
        Ok(())
    }
    async fn remove_volumes(
        &self,
        node: &str,
        service_id: &str,
        _name: Option<&str>,
    ) -> Result<(), ClientError> {
        self.log.lock().unwrap().push(Call::RemoveVolumes {
            node: node.into(),
            service: service_id.into(),
        });
        Ok(())
    }
    async fn info(&self, node: &str) -> Result<NodeCapacity, ClientError> {
        if self.hung.lock().unwrap().iter().any(|n| n == node) {
            std::future::pending::<()>().await;
        }
        self.answers(node)?;
        Ok(NodeCapacity {
            cpu_millis_total: 4000,
            memory_bytes_total: 8 << 30,
        })
    }
}

#[derive(Clone, Default)]
pub struct FakeProxy {
    pub log: Log,
}

#[async_trait]
impl ProxyClient for FakeProxy {
    async fn upsert_route(&self, r: &RouteSpec) -> Result<(), ClientError> {
        self.log.lock().unwrap().push(Call::Route {
            hosts: r.hosts.clone(),
            certificate_hosts: r.certificate_hosts.clone(),
        });
        Ok(())
    }
    async fn switch(&self, s: &SwitchSpec) -> Result<SwitchOutcome, ClientError> {
        self.log.lock().unwrap().push(Call::Switch {
            service: s.service_id.clone(),
            deployment: s.deployment_id.clone(),
            address: s.addresses.join(","),
        });
        Ok(SwitchOutcome::Switched)
    }
    async fn remove_allowed_domain(&self, domain: &str) -> Result<(), ClientError> {
        self.log.lock().unwrap().push(Call::Disallow {
            domain: domain.into(),
        });
        Ok(())
    }
    async fn remove_route(&self, route_id: &str, _generation: u64) -> Result<(), ClientError> {
        self.log.lock().unwrap().push(Call::Unroute {
            route_id: route_id.into(),
        });
        Ok(())
    }
}

/// A proxy that fails every call while `down` is set.
#[derive(Clone, Default)]
pub struct FlakyProxy {
    pub inner: FakeProxy,
    pub down: Arc<std::sync::atomic::AtomicBool>,
}

impl FlakyProxy {
    fn check(&self) -> Result<(), ClientError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ClientError {
                daemon: "proxy",
                address: "test".into(),
                message: "connection refused".into(),
                retryable: true,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ProxyClient for FlakyProxy {
    async fn upsert_route(&self, r: &RouteSpec) -> Result<(), ClientError> {
        self.check()?;
        self.inner.upsert_route(r).await
    }
    async fn switch(&self, s: &SwitchSpec) -> Result<SwitchOutcome, ClientError> {
        self.check()?;
        self.inner.switch(s).await
    }
    async fn remove_allowed_domain(&self, d: &str) -> Result<(), ClientError> {
        self.check()?;
        self.inner.remove_allowed_domain(d).await
    }
    async fn remove_route(&self, r: &str, generation: u64) -> Result<(), ClientError> {
        self.check()?;
        self.inner.remove_route(r, generation).await
    }
}
