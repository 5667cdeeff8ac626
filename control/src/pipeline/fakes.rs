//! Recording fakes for the driver's unit tests: a [`DeploymentQueue`] in memory that fences
//! every write by the lease as PostgreSQL does and records each write in order, and scripted
//! clients of buildd, the node agent and the proxy that record their calls. (The real queue is
//! `store::Store`, tested against PostgreSQL in `control/tests/pipeline.rs`.)

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::api::{NodeRole, NodeStatus, Phase, ServiceKind};
use async_trait::async_trait;
use chrono::Utc;
use tokio::time::Instant;
use uuid::Uuid;

use super::machine::Transition;
use super::queue::DeploymentQueue;
use crate::clients::*;
use crate::schedule::{BuildNodeView, ComputeNodeView};
use crate::store::{
    BuildSettings, Deployment, Instance, Node, Resources, Result, Service, StepData, StoreError,
    Volume,
};

/// A write the driver made through the queue, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Transition {
        from: Phase,
        to: Phase,
        reason: Option<String>,
    },
    RecordNode(Uuid),
    /// An instance's placement (no container yet) or its container (healthy).
    RecordInstance {
        replica: i32,
        node: Uuid,
        healthy: bool,
    },
    TakeBuildSlot(Uuid),
    ReleaseBuildSlot {
        warm: bool,
    },
    RenewLease,
}

#[derive(Default)]
struct QueueState {
    deployments: HashMap<Uuid, Deployment>,
    lease_owner: HashMap<Uuid, Uuid>,
    services: HashMap<Uuid, (Uuid, Service)>,
    nodes: Vec<Node>,
    build_slots: HashMap<Uuid, Uuid>,
    instances: BTreeMap<(Uuid, i32), Instance>,
    writes: Vec<Write>,
}

#[derive(Clone, Default)]
pub struct FakeQueue {
    state: Arc<Mutex<QueueState>>,
}

pub const ORG: Uuid = Uuid::from_u128(0x0a);
/// The fake's one compute node.
pub const COMPUTE_NODE: Uuid = Uuid::from_u128(0xc1);

impl FakeQueue {
    /// A queue with one build node, one compute node and a web service of organization
    /// [`ORG`] (named "acme") built from a local repository; returns it and the service id.
    pub fn new() -> (Self, Uuid) {
        let q = Self::default();
        let service = Uuid::from_u128(0x5e);
        {
            let mut s = q.state.lock().unwrap();
            for (n, role) in [(0xb1, NodeRole::Build), (0xc1, NodeRole::Compute)] {
                s.nodes.push(Node {
                    id: Uuid::from_u128(n),
                    name: format!("{role}-1"),
                    role,
                    address: format!("http://127.0.0.1:{n}"),
                    cpu_millis: 4000,
                    memory_bytes: 8 << 30,
                    build_slots: 4,
                    status: NodeStatus::Up,
                    last_heartbeat_at: None,
                    created_at: Utc::now(),
                    drained_at: None,
                });
            }
            s.services.insert(service, (ORG, web_service(service)));
        }
        (q, service)
    }

    /// Queues a deployment of `service` (`image` none: it is built first).
    pub fn queue(&self, service: Uuid, image: Option<&str>) -> Uuid {
        let id = Uuid::new_v4();
        let now = Utc::now();
        let d = Deployment {
            id,
            organization_id: ORG,
            service_id: service,
            state: Phase::Queued.state(),
            phase: Phase::Queued,
            git_ref: image.is_none().then(|| "refs/heads/main".into()),
            git_commit: image.is_none().then(|| "c0ffee".repeat(7)[..40].to_owned()),
            image: image.map(str::to_owned),
            image_digest: None,
            rollback_of: None,
            previous_deployment_id: None,
            build_node_id: None,
            node_id: None,
            container_id: None,
            upstream_address: None,
            container_port: None,
            failure_reason: None,
            cancel_requested: false,
            attempts: 0,
            created_at: now,
            updated_at: now,
            finished_at: None,
            ready_at: None,
        };
        self.state.lock().unwrap().deployments.insert(id, d);
        id
    }

    /// Another compute node (up, 4 cores, 8 GiB) with id `n`; returns its id.
    pub fn add_compute_node(&self, n: u128) -> Uuid {
        let id = Uuid::from_u128(n);
        self.state.lock().unwrap().nodes.push(Node {
            id,
            name: format!("compute-{n:x}"),
            role: NodeRole::Compute,
            address: format!("http://127.0.0.1:{n}"),
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            build_slots: 4,
            status: NodeStatus::Up,
            last_heartbeat_at: None,
            created_at: Utc::now(),
            drained_at: None,
        });
        id
    }

    /// Sets the service's replica count.
    pub fn set_replicas(&self, service: Uuid, replicas: i32) {
        let mut s = self.state.lock().unwrap();
        s.services.get_mut(&service).unwrap().1.replicas = replicas;
    }

    /// The deployment's instances as recorded, by replica.
    pub fn instances_now(&self, id: Uuid) -> Vec<Instance> {
        let s = self.state.lock().unwrap();
        s.instances
            .values()
            .filter(|i| i.deployment_id == id)
            .cloned()
            .collect()
    }

    /// Gives the service a volume (#14).
    pub fn add_volume(&self, service: Uuid) {
        let mut s = self.state.lock().unwrap();
        s.services
            .get_mut(&service)
            .unwrap()
            .1
            .volumes
            .push(Volume {
                name: "data".into(),
                mount_path: "/data".into(),
                size_bytes: 1 << 30,
            });
    }

    /// A ready deployment of the service on the compute node, serving it; its id.
    pub fn serving(&self, service: Uuid) -> Uuid {
        let id = self.queue(service, Some("127.0.0.1:5000/acme/web:1"));
        let mut s = self.state.lock().unwrap();
        let d = s.deployments.get_mut(&id).unwrap();
        d.phase = Phase::Ready;
        d.state = Phase::Ready.state();
        d.node_id = Some(COMPUTE_NODE);
        s.instances.insert(
            (id, 0),
            Instance {
                deployment_id: id,
                replica: 0,
                node_id: COMPUTE_NODE,
                container_id: Some("ctr-old".into()),
                upstream_address: Some("10.0.0.1:8080".into()),
            },
        );
        s.services
            .get_mut(&service)
            .unwrap()
            .1
            .current_deployment_id = Some(id);
        id
    }

    pub fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap().writes.clone()
    }

    /// The transitions recorded, as (from, to).
    pub fn transitions(&self) -> Vec<(Phase, Phase)> {
        self.writes()
            .into_iter()
            .filter_map(|w| match w {
                Write::Transition { from, to, .. } => Some((from, to)),
                _ => None,
            })
            .collect()
    }

    pub fn deployment_now(&self, id: Uuid) -> Deployment {
        self.state.lock().unwrap().deployments[&id].clone()
    }

    /// Another worker takes the deployment over (its lease expired).
    pub fn steal_lease(&self, id: Uuid) {
        self.steal_lease_for(id, Uuid::new_v4());
    }

    /// The worker `owner` takes the deployment over.
    pub fn steal_lease_for(&self, id: Uuid, owner: Uuid) {
        let mut s = self.state.lock().unwrap();
        s.lease_owner.insert(id, owner);
    }

    pub fn request_cancel(&self, id: Uuid) {
        let mut s = self.state.lock().unwrap();
        s.deployments.get_mut(&id).unwrap().cancel_requested = true;
    }

    fn fenced(s: &QueueState, id: Uuid, owner: Uuid) -> Result<()> {
        match s.lease_owner.get(&id) {
            Some(o) if *o == owner => Ok(()),
            _ => Err(StoreError::LeaseLost { deployment: id }),
        }
    }

    fn node_of(s: &QueueState, id: Uuid) -> Result<Node> {
        s.nodes
            .iter()
            .find(|n| n.id == id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("node", id))
    }
}

fn web_service(id: Uuid) -> Service {
    Service {
        id,
        project_id: Uuid::from_u128(0x9a),
        environment_id: Uuid::from_u128(0xe0),
        name: "web".into(),
        kind: ServiceKind::Web,
        image: None,
        git_url: Some("file:///srv/app.git".into()),
        git_subdirectory: String::new(),
        build: BuildSettings::default(),
        resources: Resources::default(),
        health_check: None,
        port: 8080,
        port_explicit: false,
        replicas: 1,
        domains: vec![],
        command: vec![],
        args: vec![],
        env: BTreeMap::new(),
        volumes: vec![],
        has_webhook_secret: false,
        current_deployment_id: None,
        created_at: Utc::now(),
    }
}

#[async_trait]
impl DeploymentQueue for FakeQueue {
    async fn claim(&self, owner: Uuid, _lease: Duration) -> Result<Option<Deployment>> {
        let mut s = self.state.lock().unwrap();
        let Some(id) = s
            .deployments
            .values()
            .filter(|d| !d.phase.is_terminal())
            .min_by_key(|d| d.created_at)
            .map(|d| d.id)
            .filter(|id| !s.lease_owner.contains_key(id))
        else {
            return Ok(None);
        };
        s.lease_owner.insert(id, owner);
        let d = s.deployments.get_mut(&id).unwrap();
        d.attempts += 1;
        Ok(Some(d.clone()))
    }

    async fn renew_lease(&self, id: Uuid, owner: Uuid, _lease: Duration) -> Result<bool> {
        let mut s = self.state.lock().unwrap();
        let held = Self::fenced(&s, id, owner).is_ok();
        if held {
            s.writes.push(Write::RenewLease);
        }
        Ok(held)
    }

    async fn release(&self, id: Uuid, owner: Uuid) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        if Self::fenced(&s, id, owner).is_ok() {
            s.lease_owner.remove(&id);
        }
        Ok(())
    }

    async fn transition(
        &self,
        id: Uuid,
        owner: Uuid,
        from: Phase,
        t: &Transition,
        data: &StepData,
    ) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        Self::fenced(&s, id, owner)?;
        let d = s.deployments.get_mut(&id).unwrap();
        if d.phase != from {
            return Err(StoreError::LeaseLost { deployment: id });
        }
        let service = d.service_id;
        let serving = s
            .services
            .get(&service)
            .and_then(|(_, v)| v.current_deployment_id);
        let d = s.deployments.get_mut(&id).unwrap();
        if from == Phase::Queued {
            // As the store: the deployment replaces the one serving when it leaves the queue.
            d.previous_deployment_id = serving;
        }
        let keep = |new: &Option<String>, old: &mut Option<String>| {
            if new.is_some() {
                old.clone_from(new);
            }
        };
        keep(&data.git_commit, &mut d.git_commit);
        keep(&data.image, &mut d.image);
        keep(&data.image_digest, &mut d.image_digest);
        keep(&data.container_id, &mut d.container_id);
        keep(&data.upstream_address, &mut d.upstream_address);
        d.build_node_id = data.build_node_id.or(d.build_node_id);
        d.node_id = data.node_id.or(d.node_id);
        d.container_port = data.container_port.or(d.container_port);
        d.phase = t.to;
        d.state = t.to.state();
        if t.to != Phase::Ready && t.reason.is_some() {
            d.failure_reason.clone_from(&t.reason);
        }
        if t.to.is_terminal() {
            s.lease_owner.remove(&id);
        }
        s.writes.push(Write::Transition {
            from,
            to: t.to,
            reason: t.reason.clone(),
        });
        Ok(())
    }

    async fn record_node(&self, id: Uuid, owner: Uuid, node: Uuid) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        Self::fenced(&s, id, owner)?;
        s.deployments.get_mut(&id).unwrap().node_id = Some(node);
        s.writes.push(Write::RecordNode(node));
        Ok(())
    }

    async fn deployment(&self, id: Uuid) -> Result<Deployment> {
        let s = self.state.lock().unwrap();
        s.deployments
            .get(&id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("deployment", id))
    }

    async fn instances(&self, deployment: Uuid) -> Result<Vec<Instance>> {
        Ok(self.instances_now(deployment))
    }

    async fn record_instance(&self, owner: Uuid, i: &Instance) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        Self::fenced(&s, i.deployment_id, owner)?;
        let stored = s
            .instances
            .entry((i.deployment_id, i.replica))
            .or_insert_with(|| i.clone());
        stored.node_id = i.node_id;
        if i.container_id.is_some() {
            stored.container_id.clone_from(&i.container_id);
            stored.upstream_address.clone_from(&i.upstream_address);
        }
        s.writes.push(Write::RecordInstance {
            replica: i.replica,
            node: i.node_id,
            healthy: i.container_id.is_some(),
        });
        Ok(())
    }

    async fn service(&self, id: Uuid) -> Result<(Uuid, Service)> {
        let s = self.state.lock().unwrap();
        s.services
            .get(&id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("service", id))
    }

    async fn organization_name(&self, _id: Uuid) -> Result<String> {
        Ok("acme".into())
    }

    async fn service_env(&self, _service: Uuid) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::from([("GREETING".into(), "hi".into())]))
    }

    async fn service_route(
        &self,
        organization: Uuid,
        service: &Service,
        apps_domain: &str,
    ) -> Result<RouteSpec> {
        use crate::domains::route::{HostNames, host, primary_label, route_spec};
        let names = HostNames {
            organization: "acme",
            project: "shop",
            environment: "production",
            service: &service.name,
        };
        let host = host(&primary_label(&names), apps_domain);
        Ok(route_spec(organization, service, &[host], &[]))
    }

    async fn node(&self, id: Uuid) -> Result<Node> {
        Self::node_of(&self.state.lock().unwrap(), id)
    }

    async fn held_build_slot(&self, deployment: Uuid) -> Result<Option<Node>> {
        let s = self.state.lock().unwrap();
        match s.build_slots.get(&deployment) {
            Some(node) => Self::node_of(&s, *node).map(Some),
            None => Ok(None),
        }
    }

    async fn build_nodes(&self, _repository: &str) -> Result<Vec<BuildNodeView>> {
        let s = self.state.lock().unwrap();
        Ok(s.nodes
            .iter()
            .filter(|n| n.role == NodeRole::Build)
            .map(|n| BuildNodeView {
                id: n.id,
                up: n.status == NodeStatus::Up,
                slots: n.build_slots as u32,
                builds_running: s.build_slots.values().filter(|b| **b == n.id).count() as u32,
                repo_builds: 0,
                repo_last_built: None,
            })
            .collect())
    }

    async fn reserve_build_slot(
        &self,
        deployment: Uuid,
        node: Uuid,
        seen_running: u32,
    ) -> Result<bool> {
        let mut s = self.state.lock().unwrap();
        let running = s.build_slots.values().filter(|b| **b == node).count() as u32;
        if running != seen_running {
            return Ok(false);
        }
        s.build_slots.insert(deployment, node);
        s.writes.push(Write::TakeBuildSlot(node));
        Ok(true)
    }

    async fn release_build_slot(&self, deployment: Uuid, warm: Option<&str>) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        s.build_slots.remove(&deployment);
        s.writes.push(Write::ReleaseBuildSlot {
            warm: warm.is_some(),
        });
        Ok(())
    }

    async fn compute_nodes(&self, _service: Uuid) -> Result<Vec<ComputeNodeView>> {
        let s = self.state.lock().unwrap();
        Ok(s.nodes
            .iter()
            .filter(|n| n.role == NodeRole::Compute)
            .map(|n| ComputeNodeView {
                id: n.id,
                up: n.status == NodeStatus::Up,
                cpu_millis_total: n.cpu_millis as u64,
                cpu_millis_allocated: 0,
                memory_bytes_total: n.memory_bytes as u64,
                memory_bytes_allocated: 0,
                replicas_of_service: 0,
                outgoing_cpu_millis: 0,
                outgoing_memory_bytes: 0,
            })
            .collect())
    }
}

/// A call one of the fake daemons received, with the (paused) time it came at.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Build {
        build_id: String,
    },
    CancelBuild,
    /// `node`: the node's address.
    Deploy {
        image: String,
        node: String,
        replica: u32,
    },
    Remove {
        deployment: String,
        node: String,
    },
    RemoveVolumes {
        service: String,
    },
    UpsertRoute {
        hosts: Vec<String>,
    },
    Switch {
        addresses: Vec<String>,
    },
}

pub type CallLog = Arc<Mutex<Vec<(Instant, Call)>>>;

/// What a fake daemon does when called: scripted answers in order, then `otherwise`; each
/// call first sleeps `delay` (paused time) and runs `on_call`.
pub struct Script<T> {
    pub answers: Mutex<VecDeque<Result<T, ClientError>>>,
    pub otherwise: Result<T, ClientError>,
    pub delay: Duration,
    pub on_call: Box<dyn Fn() + Send + Sync>,
}

impl<T: Clone> Script<T> {
    pub fn always(answer: T) -> Self {
        Self {
            answers: Mutex::new(VecDeque::new()),
            otherwise: Ok(answer),
            delay: Duration::ZERO,
            on_call: Box::new(|| {}),
        }
    }

    async fn answer(&self) -> Result<T, ClientError> {
        (self.on_call)();
        tokio::time::sleep(self.delay).await;
        let next = self.answers.lock().unwrap().pop_front();
        next.unwrap_or_else(|| self.otherwise.clone())
    }
}

pub fn unreachable(daemon: &'static str) -> ClientError {
    ClientError {
        daemon,
        address: "http://127.0.0.1:9".into(),
        message: "connection refused".into(),
        retryable: true,
    }
}

pub struct FakeBuilder {
    pub log: CallLog,
    pub build: Script<BuildOutcome>,
}

pub struct FakeNode {
    pub log: CallLog,
    pub deploy: Script<ContainerOutcome>,
    /// This replica (of every deployment) does not become healthy.
    pub failing_replica: Option<u32>,
}

pub struct FakeProxy {
    pub log: CallLog,
    pub switch: Script<SwitchOutcome>,
}

fn record(log: &CallLog, call: Call) {
    log.lock().unwrap().push((Instant::now(), call));
}

#[async_trait]
impl BuilderClient for FakeBuilder {
    async fn build(
        &self,
        _node: &str,
        r: &BuildRequest,
        _log: &BuildLogSender,
    ) -> Result<BuildOutcome, ClientError> {
        record(
            &self.log,
            Call::Build {
                build_id: r.build_id.clone(),
            },
        );
        self.build.answer().await
    }
    async fn cancel(&self, _node: &str, _build_id: &str) -> Result<(), ClientError> {
        record(&self.log, Call::CancelBuild);
        Ok(())
    }
    async fn ping(&self, _node: &str) -> Result<(), ClientError> {
        Ok(())
    }
}

#[async_trait]
impl NodeClient for FakeNode {
    async fn deploy(&self, node: &str, s: &ContainerSpec) -> Result<ContainerOutcome, ClientError> {
        let replica = s.workload.replica;
        record(
            &self.log,
            Call::Deploy {
                image: s.image.clone(),
                node: node.into(),
                replica,
            },
        );
        if self.failing_replica == Some(replica) {
            (self.deploy.on_call)();
            return Ok(ContainerOutcome::Unhealthy {
                reason: "health check: connection refused".into(),
            });
        }
        // Replica r answers as the scripted container, r addresses further.
        Ok(match self.deploy.answer().await? {
            ContainerOutcome::Healthy {
                container_id,
                address,
            } if replica > 0 => ContainerOutcome::Healthy {
                container_id: format!("{container_id}-{replica}"),
                address: shifted(&address, replica),
            },
            other => other,
        })
    }
    async fn remove_deployment(
        &self,
        node: &str,
        deployment_id: &str,
        _grace_ms: u32,
    ) -> Result<(), ClientError> {
        record(
            &self.log,
            Call::Remove {
                deployment: deployment_id.into(),
                node: node.into(),
            },
        );
        Ok(())
    }
    async fn remove_volumes(
        &self,
        _node: &str,
        service_id: &str,
        _name: Option<&str>,
    ) -> Result<(), ClientError> {
        record(
            &self.log,
            Call::RemoveVolumes {
                service: service_id.into(),
            },
        );
        Ok(())
    }
    async fn info(&self, _node: &str) -> Result<NodeCapacity, ClientError> {
        Ok(NodeCapacity {
            cpu_millis_total: 4000,
            memory_bytes_total: 8 << 30,
        })
    }
}

#[async_trait]
impl ProxyClient for FakeProxy {
    async fn upsert_route(&self, route: &RouteSpec) -> Result<(), ClientError> {
        record(
            &self.log,
            Call::UpsertRoute {
                hosts: route.hosts.clone(),
            },
        );
        Ok(())
    }
    async fn switch(&self, spec: &SwitchSpec) -> Result<SwitchOutcome, ClientError> {
        record(
            &self.log,
            Call::Switch {
                addresses: spec.addresses.clone(),
            },
        );
        self.switch.answer().await
    }
    async fn remove_allowed_domain(&self, _domain: &str) -> Result<(), ClientError> {
        Ok(())
    }
    async fn remove_route(&self, _route_id: &str, _generation: u64) -> Result<(), ClientError> {
        Ok(())
    }
}

/// Daemons that all succeed: the build pushes `repo:commit@sha256:feed`, the container is
/// healthy at 10.0.0.2:8080, the switch goes through.
pub fn healthy_daemons(log: &CallLog) -> (FakeBuilder, FakeNode, FakeProxy) {
    (
        FakeBuilder {
            log: log.clone(),
            build: Script::always(BuildOutcome::Succeeded {
                image: "127.0.0.1:5000/acme/web:c0ffee".into(),
                image_digest: "sha256:feed".into(),
                commit: String::new(),
                container_port: 8080,
            }),
        },
        FakeNode {
            log: log.clone(),
            deploy: Script::always(ContainerOutcome::Healthy {
                container_id: "ctr-1".into(),
                address: "10.0.0.2:8080".into(),
            }),
            failing_replica: None,
        },
        FakeProxy {
            log: log.clone(),
            switch: Script::always(SwitchOutcome::Switched),
        },
    )
}

/// `ip:port` with `by` added to the address's last octet ("10.0.0.2:8080", 2 -> "10.0.0.4:8080").
fn shifted(address: &str, by: u32) -> String {
    let (ip, port) = address.rsplit_once(':').unwrap_or((address, "8080"));
    let (net, last) = ip.rsplit_once('.').unwrap_or(("10.0.0", "2"));
    let last: u32 = last.parse().unwrap_or(2);
    format!("{net}.{}:{port}", last + by)
}
