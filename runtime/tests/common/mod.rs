//! Test helpers: a containerd namespace of the test's own, emptied and deleted on drop.
#![allow(dead_code, reason = "each test file uses a subset")]

use runtime::containerd::Containerd;
use stackpad_tests::{Services, service_down, unique_name};

pub struct Namespace {
    pub name: String,
    pub services: Services,
    pub containerd: Containerd,
}

impl Namespace {
    pub async fn new(prefix: &str) -> anyhow::Result<Self> {
        let services = Services::from_env();
        let name = unique_name(&format!("t-{prefix}"));
        let containerd = Containerd::connect(services.containerd_socket.as_ref(), &name)
            .await
            .map_err(|e| service_down("containerd", &services.containerd_socket, e))?;
        containerd
            .server_version()
            .await
            .map_err(|e| service_down("containerd", &services.containerd_socket, e))?;
        Ok(Self {
            name,
            services,
            containerd,
        })
    }
}

/// Kills and deletes every task, container and image of the namespace, then the namespace.
pub async fn purge(c: &Containerd) {
    c.purge_namespace().await;
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let c = self.containerd.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async move {
                // A fresh channel: the test's runtime (and its connections) may be gone.
                if let Ok(fresh) = Containerd::connect(
                    std::path::Path::new(&Services::from_env().containerd_socket),
                    c.namespace(),
                )
                .await
                {
                    purge(&fresh).await;
                }
            });
        })
        .join();
    }
}

use std::collections::BTreeMap;
use std::sync::Arc;

use runtime::NodeConfig;
use runtime::agent::Agent;
use runtime::isolation::{IsolationDisabled, IsolationHook};
use runtime::logs::{LogSink, NoShipping};
use runtime::spec::deploy::{PortSpec, Protocol, Resources};
use runtime::spec::{DeploySpec, HealthSpec, Probe, RestartMode, RestartSpec, Workload};

/// An agent of the test's own: own containerd namespace, own state and run directories (the
/// machine-wide address table is shared, as in production). Drop removes every container,
/// endpoint, bridge and address the test made, even when the test failed.
pub struct TestNode {
    pub agent: Arc<Agent>,
    pub isolation: Arc<dyn IsolationHook>,
    pub config: NodeConfig,
    pub ns: Namespace,
    pub dirs: tempfile::TempDir,
    sink: Arc<dyn LogSink>,
}

impl TestNode {
    pub async fn start(prefix: &str) -> anyhow::Result<Self> {
        Self::start_with(prefix, Arc::new(IsolationDisabled)).await
    }

    /// An agent whose containers are attached to `isolation`.
    pub async fn start_with(
        prefix: &str,
        isolation: Arc<dyn IsolationHook>,
    ) -> anyhow::Result<Self> {
        Self::start_with_sink(prefix, isolation, Arc::new(NoShipping)).await
    }

    /// An agent that hands container log lines to `sink`.
    pub async fn start_with_sink(
        prefix: &str,
        isolation: Arc<dyn IsolationHook>,
        sink: Arc<dyn LogSink>,
    ) -> anyhow::Result<Self> {
        let ns = Namespace::new(prefix).await?;
        let dirs = tempfile::tempdir()?;
        let config = NodeConfig {
            namespace: ns.name.clone(),
            containerd_socket: ns.services.containerd_socket.clone().into(),
            state_dir: dirs.path().join("state"),
            run_dir: dirs.path().join("run"),
            listen: "127.0.0.1:0".parse()?,
            metrics_listen: "127.0.0.1:0".parse()?,
            ..NodeConfig::default()
        };
        let agent = Agent::new(config.clone(), isolation.clone(), sink.clone()).await?;
        agent.reconcile().await?;
        Ok(Self {
            agent,
            isolation,
            config,
            ns,
            dirs,
            sink,
        })
    }

    /// A second agent on the same namespace and directories, as after a restart.
    pub async fn restart_agent(
        &mut self,
    ) -> anyhow::Result<Vec<runtime::agent::reconcile::Action>> {
        self.agent.detach_all();
        self.agent = Agent::new(
            self.config.clone(),
            self.isolation.clone(),
            self.sink.clone(),
        )
        .await?;
        Ok(self.agent.reconcile().await?)
    }

    pub fn image(&self, name: &str) -> String {
        format!("{}/stackpad/{name}", self.ns.services.registry)
    }

    /// busybox httpd serving /www on 8080, health-checked over HTTP.
    pub fn web(&self, project: &str, service: &str) -> DeploySpec {
        DeploySpec {
            workload: Workload {
                organization_id: "org".into(),
                project_id: project.into(),
                environment_id: "production".into(),
                service_id: format!("svc-{service}"),
                service_name: service.into(),
                deployment_id: stackpad_tests::unique_name("dep"),
                service_type: 1,
                environment_name: "production".into(),
                replica: 0,
            },
            image: self.image("busybox:1"),
            command: vec![
                "httpd".into(),
                "-f".into(),
                "-p".into(),
                "8080".into(),
                "-h".into(),
                "/www".into(),
            ],
            args: vec![],
            env: BTreeMap::new(),
            working_dir: String::new(),
            ports: vec![PortSpec {
                container_port: 8080,
                protocol: Protocol::Tcp,
                name: "http".into(),
            }],
            resources: Resources {
                cpu_millis: 500,
                memory_bytes: 64 << 20,
                pids_limit: 64,
            },
            health: Some(HealthSpec {
                probe: Probe::Http {
                    path: "/".into(),
                    port: 8080,
                },
                interval_ms: 100,
                timeout_ms: 1000,
                healthy_threshold: 1,
                unhealthy_threshold: 3,
                deadline_ms: 20_000,
            }),
            restart: RestartSpec {
                mode: RestartMode::OnFailure,
                max_restarts: 0,
            },
            read_only_rootfs: false,
            stop_grace_ms: 2_000,
            volumes: vec![],
        }
    }

    /// A shell command container with no health check.
    pub fn shell(&self, project: &str, service: &str, script: &str) -> DeploySpec {
        let mut s = self.web(project, service);
        s.command = vec!["sh".into(), "-c".into(), script.into()];
        s.health = None;
        s.ports.clear();
        s
    }

    /// Leases this test's namespace still holds.
    pub fn leases(&self) -> Vec<(String, String)> {
        let ipam = runtime::network::IpamFile::new(&self.config.ipam_dir).expect("ipam dir");
        ipam.update(|s| {
            Ok(s.networks
                .iter()
                .filter(|(_, n)| n.namespace == self.config.namespace)
                .flat_map(|(b, n)| n.leases.keys().map(move |c| (b.clone(), c.clone())))
                .collect())
        })
        .expect("ipam read")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.agent.detach_all();
        let config = self.config.clone();
        // Volumes are loop mounts under the test's directory: unmounted before it goes.
        runtime::volume::Volumes::under_state_dir(&config.state_dir).unmount_all();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async move {
                let networks = runtime::network::Networks::new(
                    &config.ipam_dir,
                    &config.run_dir,
                    &config.namespace,
                    config.pool().expect("pool"),
                    config.subnet_prefix,
                )
                .expect("networks");
                if let Ok(c) =
                    Containerd::connect(&config.containerd_socket, &config.namespace).await
                {
                    purge(&c).await;
                }
                for (bridge, id) in networks.leases().unwrap_or_default() {
                    let _ = networks.detach(&id, &bridge).await;
                }
                // The machine-wide id-range table forgets this agent's projects.
                if let Ok(table) = runtime::userns::UsernsFile::new(&config.userns_dir) {
                    let _ = table.update(|s| {
                        s.release_namespace(&config.namespace);
                        Ok(())
                    });
                }
            });
        })
        .join();
    }
}

/// GET http://ip:port/path from the host; the status code and body.
pub async fn http_get(
    ip: std::net::Ipv4Addr,
    port: u16,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect((ip, port)),
    )
    .await??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// The container's output once it contains `needle` (polled for 15 s).
pub async fn log_text(node: &TestNode, id: &str, needle: &str) -> anyhow::Result<String> {
    for _ in 0..150 {
        let (lines, _) = node.agent.logs(id, 200, false)?;
        let text: String = lines
            .iter()
            .map(|l| format!("{}\n", String::from_utf8_lossy(&l.line)))
            .collect();
        if text.contains(needle) {
            return Ok(text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (lines, _) = node.agent.logs(id, 200, false)?;
    anyhow::bail!(
        "{needle:?} never appeared: {:?}",
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.line).into_owned())
            .collect::<Vec<_>>()
    )
}

/// The container's status once `ok` holds (polled every 50 ms for 10 s); `what` names it.
pub async fn wait_until(
    node: &TestNode,
    id: &str,
    what: &str,
    ok: impl Fn(&runtime::agent::Status) -> bool,
) -> anyhow::Result<runtime::agent::Status> {
    for _ in 0..200 {
        let s = node.agent.status(id)?;
        if ok(&s) {
            return Ok(s);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("{what} never happened: {:?}", node.agent.status(id))
}
