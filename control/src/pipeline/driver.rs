//! Performs the pipeline's actions: asks buildd, the node agent and the proxy through the client
//! seams, turns their answers into [`Event`]s, asks [`machine::decide`] (once per event) what
//! follows, and records every transition in the [`DeploymentQueue`] under the worker's lease.
//! A deployment taken over after a crash resumes with [`machine::resume`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ::api::ServiceKind;
use tenant::source::SourceUrl;
use uuid::Uuid;

use super::machine::{self, Action, Event, InvalidTransition, Phase, Strategy, Transition};
use super::queue::{self, DeploymentQueue};
use crate::api::sources::SourcePolicy;
use crate::buildlogs::{BuildLabels, BuildLogStore, FLUSH_EVERY, Recorder, Redactor};
use crate::clients::{
    BuildOutcome, BuildRequest, BuilderClient, ClientError, ContainerOutcome, ContainerSpec,
    HealthProbe, NodeClient, ProxyClient, SwitchOutcome, SwitchSpec, Workload,
};
use crate::store::{Deployment, Instance, Service, StepData, Store, StoreError};

/// The three daemons the pipeline drives.
#[derive(Clone)]
pub struct Clients {
    pub builder: Arc<dyn BuilderClient>,
    pub node: Arc<dyn NodeClient>,
    /// `None`: no proxy configured; web services are started but not routed.
    pub proxy: Option<Arc<dyn ProxyClient>>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("proxy", &self.proxy.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub registry: String,
    pub apps_domain: String,
    pub lease: Duration,
    pub health_deadline_ms: u32,
    pub drain_deadline_ms: u32,
    /// Grace period of the old container after the drain (0 = its own, 10 s by default).
    pub stop_grace_ms: u32,
    pub build_timeout_s: u32,
    /// Attempts of a call whose daemon could not be reached, before the step fails.
    pub call_attempts: u32,
    /// First wait between attempts (doubles each time).
    pub retry_backoff: Duration,
    /// How often a step checks whether its deployment was cancelled, and how often a build
    /// waiting for a free slot looks again.
    pub poll: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            registry: "127.0.0.1:5000".into(),
            apps_domain: "stackpad.localhost".into(),
            lease: Duration::from_secs(10),
            health_deadline_ms: 60_000,
            drain_deadline_ms: 30_000,
            stop_grace_ms: 0,
            build_timeout_s: 900,
            call_attempts: 5,
            retry_backoff: Duration::from_millis(200),
            poll: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("deployment {deployment}: {source}")]
    Transition {
        deployment: Uuid,
        source: InvalidTransition,
    },
}

/// Drives deployments for one worker (one lease owner), on `Q` (PostgreSQL's [`Store`] in the
/// daemon).
#[derive(Debug, Clone)]
pub struct Driver<Q = Store> {
    pub queue: Q,
    pub clients: Clients,
    pub config: DriverConfig,
    pub owner: Uuid,
    /// What a stored git source may still point at when it is built (the API's rules).
    pub sources: SourcePolicy,
    /// Where build log lines are stored; `None`: not stored (a failure still shows its tail).
    pub build_logs: Option<BuildLogStore>,
}

type Step = Option<(Event, StepData)>;

impl<Q: DeploymentQueue> Driver<Q> {
    pub fn new(queue: Q, clients: Clients, config: DriverConfig) -> Self {
        Self {
            queue,
            clients,
            config,
            owner: Uuid::new_v4(),
            sources: SourcePolicy::default(),
            build_logs: None,
        }
    }

    /// Stores every build's log lines in `store`.
    pub fn with_build_logs(mut self, store: BuildLogStore) -> Self {
        self.build_logs = Some(store);
        self
    }

    /// Checks stored git sources with `sources` (the operator's settings) before each build.
    pub fn with_sources(mut self, sources: SourcePolicy) -> Self {
        self.sources = sources;
        self
    }

    /// Drives a claimed deployment until it reaches a terminal phase; returns that phase. The
    /// lease is renewed while this future runs; dropping it (or the process dying) stops the
    /// renewal, so another worker takes over once the lease expires.
    pub async fn drive(&self, claimed: Deployment) -> Result<Phase, DriverError> {
        let renew = renew_lease(
            self.queue.clone(),
            claimed.id,
            self.owner,
            self.config.lease,
        );
        tokio::select! {
            biased;
            result = self.run(claimed) => result,
            never = renew => match never {},
        }
    }

    async fn run(&self, claimed: Deployment) -> Result<Phase, DriverError> {
        let id = claimed.id;
        let mut phase = claimed.phase;
        let mut actions = if phase == Phase::Queued {
            let event = Event::Claimed {
                needs_build: claimed.image.is_none(),
            };
            let t = self.apply(id, phase, &event, &StepData::default()).await?;
            phase = t.to;
            t.actions
        } else {
            tracing::info!(deployment = %id, phase = phase.as_str(), "resuming deployment");
            machine::resume(phase)
        };
        while !phase.is_terminal() {
            let d = self.queue.deployment(id).await?;
            // A cancel request applies where the machine accepts one (before the switch).
            if d.cancel_requested
                && let Ok(t) = machine::decide(phase, &Event::CancelRequested)
            {
                self.record(id, phase, &t, &StepData::default()).await?;
                phase = t.to;
                actions = t.actions;
            }
            let mut step: Step = None;
            for action in &actions {
                if let Some(s) = self.perform(*action, &d).await? {
                    step = Some(s);
                }
            }
            let Some((event, data)) = step else {
                // Only side actions (cancel a build) ran: the phase was already terminal.
                break;
            };
            let t = self.apply(id, phase, &event, &data).await?;
            phase = t.to;
            actions = t.actions;
        }
        Ok(phase)
    }

    /// Decides what `event` does to a deployment in `phase` and records it; returns the
    /// transition (its actions are the next step).
    async fn apply(
        &self,
        id: Uuid,
        phase: Phase,
        event: &Event,
        data: &StepData,
    ) -> Result<Transition, DriverError> {
        let t = machine::decide(phase, event).map_err(|source| DriverError::Transition {
            deployment: id,
            source,
        })?;
        self.record(id, phase, &t, data).await?;
        Ok(t)
    }

    /// Records `t` out of `phase` (fenced by the lease).
    async fn record(
        &self,
        id: Uuid,
        phase: Phase,
        t: &Transition,
        data: &StepData,
    ) -> Result<(), DriverError> {
        self.queue
            .transition(id, self.owner, phase, t, data)
            .await?;
        tracing::info!(deployment = %id, from = phase.as_str(), to = t.to.as_str(), reason = t.reason.as_deref().unwrap_or(""), "deployment step");
        if matches!(t.to, Phase::Switching | Phase::StoppingOld) || t.to.is_terminal() {
            self.queue.containers_changed(&self.clients).await;
        }
        Ok(())
    }

    async fn perform(&self, action: Action, d: &Deployment) -> Result<Step, DriverError> {
        match action {
            Action::Build => self.build(d).await,
            Action::CancelBuild => {
                self.cancel_build(d).await?;
                Ok(None)
            }
            Action::StartContainer => self.start_container(d).await,
            Action::SwitchProxy => self.switch(d).await,
            Action::StopOld => self.stop_old(d).await,
            Action::RemoveNew => self.remove_new(d).await,
        }
    }

    /// Calls `f` until it succeeds, fails for good, or `call_attempts` unreachable answers.
    async fn retry<T, F, Fut>(&self, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut wait = self.config.retry_backoff;
        let mut attempt = 1;
        loop {
            match f().await {
                Err(e) if e.retryable && attempt < self.config.call_attempts => {
                    tracing::warn!(error = %e, attempt, "call failed, retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// `Ok(Err(reason))` when the stored `git_url` may not be built for `organization_id`: not
    /// a source URL, a local repository outside `local_sources_organizations`, or an https host
    /// the address policy refuses.
    async fn source_allowed(
        &self,
        organization_id: Uuid,
        git_url: &str,
    ) -> Result<Result<(), String>, DriverError> {
        let url = match SourceUrl::parse(git_url) {
            Ok(url) => url,
            Err(e) => return Ok(Err(format!("the service's git source is refused: {e}"))),
        };
        let organization = self.queue.organization_name(organization_id).await?;
        Ok(self
            .sources
            .check("git.url", &organization, &url)
            .await
            .map_err(|e| format!("the service's git source is refused: {e}")))
    }

    async fn cancelled(&self, id: Uuid) -> Result<bool, DriverError> {
        Ok(self.queue.deployment(id).await?.cancel_requested)
    }

    async fn build(&self, d: &Deployment) -> Result<Step, DriverError> {
        let (_, service) = self.queue.service(d.service_id).await?;
        let failed =
            |reason: String| Ok(Some((Event::BuildFailed { reason }, StepData::default())));
        let Some(git_url) = service.git_url.clone() else {
            return failed(format!("service {} has no git source to build", service.id));
        };
        // A source stored before the API checked it (or under settings since changed) is held to
        // today's rules before buildd is asked to fetch it.
        if let Err(reason) = self.source_allowed(d.organization_id, &git_url).await? {
            return failed(reason);
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.config.build_timeout_s.into());
        let node = loop {
            if let Some(node) = queue::take_build_slot(&self.queue, d.id, &git_url).await? {
                break node;
            }
            if self.queue.build_nodes(&git_url).await?.is_empty() {
                return failed("no build node is registered".into());
            }
            if tokio::time::Instant::now() > deadline {
                return failed("no build node had a free slot before the build timeout".into());
            }
            if self.cancelled(d.id).await? {
                return Ok(Some((Event::CancelRequested, StepData::default())));
            }
            tokio::time::sleep(self.config.poll).await;
        };
        let env = self.queue.service_env(service.id).await?;
        // The service's secrets: values to redact from the log; the ones the build asks for
        // (`build.secrets`) reach it as BuildKit secrets.
        let secret_values: BTreeMap<&str, &str> = env
            .iter()
            .filter(|(name, _)| service.env.get(*name).is_some_and(|v| v.secret))
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let mut secrets = BTreeMap::new();
        for name in &service.build.secrets {
            let Some(value) = secret_values.get(name.as_str()) else {
                return failed(format!(
                    "build.secrets names {name}, which is not a secret of service {}",
                    service.name
                ));
            };
            secrets.insert(name.clone(), (*value).to_owned());
        }
        // An SSH source is fetched with the project's deploy key, and cannot be without one.
        let deploy_key = match SourceUrl::parse(&git_url) {
            Ok(SourceUrl::Ssh(_)) => match self.queue.deploy_key(service.project_id).await? {
                Some(key) => Some(key),
                None => return failed(crate::deploy_keys::missing(service.project_id)),
            },
            _ => None,
        };
        let request = BuildRequest {
            build_id: d.id.to_string(),
            git_url: git_url.clone(),
            git_ref: d.git_ref.clone().unwrap_or_default(),
            git_commit: d.git_commit.clone().unwrap_or_default(),
            subdirectory: service.git_subdirectory.clone(),
            image_repository: format!(
                "{}/{}/{}",
                self.config.registry, d.organization_id, service.id
            ),
            timeout_seconds: service
                .build
                .timeout_seconds
                .unwrap_or(self.config.build_timeout_s),
            build_args: service.build.build_args.clone(),
            secrets,
            git_credentials: self.queue.git_credentials(service.project_id).await?,
            deploy_key,
        };
        let mut log = Recorder::new(
            self.build_logs.clone(),
            BuildLabels {
                organization_id: d.organization_id.to_string(),
                project_id: service.project_id.to_string(),
                environment_id: service.environment_id.to_string(),
                service_id: service.id.to_string(),
                deployment_id: d.id.to_string(),
                build_id: request.build_id.clone(),
            },
            Redactor::new(
                secret_values
                    .values()
                    .copied()
                    .chain(request.git_credentials.as_ref().map(|c| c.token.as_str()))
                    // The key's base64 lines, each (a log line never holds the whole key).
                    .chain(request.deploy_key.iter().flat_map(|k| {
                        k.private_key
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.starts_with("-----"))
                    })),
            ),
        );
        let (log_tx, mut log_rx) = tokio::sync::mpsc::unbounded_channel();
        let builder = self.clients.builder.clone();
        let call = self.retry(|| builder.build(&node.address, &request, &log_tx));
        tokio::pin!(call);
        let start = tokio::time::Instant::now();
        let mut poll = tokio::time::interval_at(start + self.config.poll, self.config.poll);
        let mut flush = tokio::time::interval_at(start + FLUSH_EVERY, FLUSH_EVERY);
        let outcome = loop {
            tokio::select! {
                outcome = &mut call => break outcome,
                Some(line) = log_rx.recv() => {
                    log.push(line);
                    if log.due() {
                        log.flush().await;
                    }
                }
                _ = flush.tick() => log.flush().await,
                _ = poll.tick() => {
                    if self.cancelled(d.id).await? {
                        log.flush().await;
                        self.queue.release_build_slot(d.id, None).await?;
                        return Ok(Some((Event::CancelRequested, StepData::default())));
                    }
                }
            }
        };
        // Every line is stored before the end is recorded: a follower that sees the deployment
        // leave `building` has read them all.
        while let Ok(line) = log_rx.try_recv() {
            log.push(line);
        }
        log.flush().await;
        let data = StepData {
            build_node_id: Some(node.id),
            ..StepData::default()
        };
        let succeeded = matches!(outcome, Ok(BuildOutcome::Succeeded { .. }));
        self.queue
            .release_build_slot(d.id, succeeded.then_some(git_url.as_str()))
            .await?;
        Ok(Some(match outcome {
            Ok(BuildOutcome::Succeeded {
                image,
                image_digest,
                commit,
                container_port,
            }) => (
                Event::BuildSucceeded,
                StepData {
                    git_commit: (!commit.is_empty()).then_some(commit),
                    image: Some(image),
                    image_digest: (!image_digest.is_empty()).then_some(image_digest),
                    // 0: the build could not tell.
                    container_port: i32::try_from(container_port).ok().filter(|p| *p > 0),
                    ..data
                },
            ),
            Ok(BuildOutcome::Failed { reason }) => (
                Event::BuildFailed {
                    reason: failure_with_tail(&format!("build on {}: {reason}", node.name), &log),
                },
                data,
            ),
            Ok(BuildOutcome::Cancelled) => (Event::CancelRequested, data),
            Err(e) => (
                Event::BuildFailed {
                    reason: failure_with_tail(&e.to_string(), &log),
                },
                data,
            ),
        }))
    }

    async fn cancel_build(&self, d: &Deployment) -> Result<(), DriverError> {
        let node = match d.build_node_id {
            Some(id) => Some(self.queue.node(id).await?),
            None => None,
        };
        self.queue.release_build_slot(d.id, None).await?;
        if let Some(node) = node
            && let Err(e) = self
                .clients
                .builder
                .cancel(&node.address, &d.id.to_string())
                .await
        {
            tracing::warn!(deployment = %d.id, error = %e, "cancelling the build failed");
        }
        Ok(())
    }

    async fn start_container(&self, d: &Deployment) -> Result<Step, DriverError> {
        let (org, service) = self.queue.service(d.service_id).await?;
        let failed = |reason: String, node_id: Option<Uuid>| {
            Ok(Some((
                Event::ContainerFailed { reason },
                StepData {
                    node_id,
                    ..StepData::default()
                },
            )))
        };
        let image = match &d.image {
            Some(image) => tenant::image::pin_to_digest(image, d.image_digest.as_deref()),
            None => return failed("deployment has no image to run".into(), None),
        };
        let cpu = service.resources.cpu_millis;
        let mem = service.resources.memory_bytes;
        let mut env = self.queue.service_env(service.id).await?;
        // References to other services' variables (`${{ db.DATABASE_URL }}`) take their value
        // now: a rotated password reaches this service at this deploy (crate::managed::refs).
        let exports = self
            .queue
            .environment_exports(service.environment_id)
            .await?;
        if let Err(e) = crate::managed::refs::resolve_env(&mut env, &exports) {
            return failed(e.to_string(), None);
        }
        let strategy = machine::strategy(!service.volumes.is_empty());
        // The volumes live on the node of the deployment this one replaces.
        let volume_node = match d.previous_deployment_id {
            Some(p) if strategy == Strategy::StopOldThenStart => {
                self.queue.deployment(p).await?.node_id
            }
            _ => None,
        };
        // `replicas` containers, one per instance (#15); a service with volumes runs one (its
        // volumes live on one node).
        let count = match strategy {
            Strategy::StopOldThenStart => 1,
            Strategy::StartBesideThenSwitch => u32::try_from(service.replicas).unwrap_or(1).max(1),
        };
        // The placements an earlier attempt recorded are kept (a resumed deployment asks the
        // same nodes again).
        let placed: Vec<Uuid> = self
            .queue
            .instances(d.id)
            .await?
            .iter()
            .map(|i| i.node_id)
            .collect();
        let views = self.queue.compute_nodes(service.id).await?;
        let nodes = match volume_node {
            Some(pinned) if placed.is_empty() => {
                match crate::schedule::place_container(&views, cpu.into(), mem, Some(pinned)) {
                    Some(id) => vec![id],
                    None => {
                        return failed(
                            format!("node {pinned}, which holds the service's volumes, is not up"),
                            None,
                        );
                    }
                }
            }
            _ => match crate::schedule::place_replicas(&views, &placed, count, cpu.into(), mem) {
                Ok(nodes) => nodes,
                Err(replica) => {
                    return failed(
                        crate::schedule::no_room(cpu.into(), mem, replica, count),
                        placed.first().copied(),
                    );
                }
            },
        };
        self.queue.record_node(d.id, self.owner, nodes[0]).await?;
        for (replica, node_id) in nodes.iter().enumerate().skip(placed.len()) {
            let instance = Instance {
                deployment_id: d.id,
                replica: replica as i32,
                node_id: *node_id,
                container_id: None,
                upstream_address: None,
            };
            self.queue.record_instance(self.owner, &instance).await?;
        }
        // What every container can know about itself.
        env.insert("STACKPAD_DEPLOYMENT_ID".into(), d.id.to_string());
        env.insert("STACKPAD_SERVICE".into(), service.name.clone());
        let port = serving_port(&service, d);
        env.insert("PORT".into(), port.to_string());
        if mem > 0 {
            env.insert("STACKPAD_MEMORY_LIMIT_BYTES".into(), mem.to_string());
        }
        let spec = ContainerSpec {
            workload: Workload {
                organization_id: org.to_string(),
                project_id: service.project_id.to_string(),
                environment_id: service.environment_id.to_string(),
                service_id: service.id.to_string(),
                service_name: service.name.clone(),
                deployment_id: d.id.to_string(),
                service_kind: service.kind,
                environment_name: self.queue.environment_name(service.environment_id).await?,
                replica: 0,
            },
            image,
            volumes: service.volumes.clone(),
            command: service.command.clone(),
            args: service.args.clone(),
            env,
            port,
            cpu_millis: cpu,
            memory_bytes: mem,
            health: service.health_check.as_ref().map(|h| HealthProbe {
                http_path: h.path.clone(),
                port,
                interval_ms: h.interval_ms.unwrap_or(100),
                deadline_ms: h.deadline_ms.unwrap_or(self.config.health_deadline_ms),
                exec: h.exec.clone().unwrap_or_default(),
            }),
        };
        if strategy == Strategy::StopOldThenStart
            && let Err(reason) = self.remove_previous(d).await?
        {
            return failed(reason, Some(nodes[0]));
        }
        // Every replica starts at once, each on its node; the step waits for all of them.
        let node_client = self.clients.node.clone();
        let starts = nodes.iter().enumerate().map(|(replica, node_id)| {
            let mut spec = spec.clone();
            spec.workload.replica = replica as u32;
            spec.env
                .insert("STACKPAD_REPLICA".into(), replica.to_string());
            let node_client = node_client.clone();
            async move {
                let node = self.queue.node(*node_id).await?;
                let outcome = self
                    .retry(|| node_client.deploy(&node.address, &spec))
                    .await;
                Ok::<_, DriverError>((replica, node, outcome))
            }
        });
        let mut healthy = vec![];
        let mut failures = vec![];
        for started in futures::future::join_all(starts).await {
            let (replica, node, outcome) = started?;
            let reason = match outcome {
                Ok(ContainerOutcome::Healthy {
                    container_id,
                    address,
                }) => {
                    let instance = Instance {
                        deployment_id: d.id,
                        replica: replica as i32,
                        node_id: node.id,
                        container_id: Some(container_id),
                        upstream_address: Some(address),
                    };
                    self.queue.record_instance(self.owner, &instance).await?;
                    healthy.push(instance);
                    continue;
                }
                Ok(ContainerOutcome::Unhealthy { reason }) => reason,
                Err(e) => e.to_string(),
            };
            failures.push(if count > 1 {
                format!(
                    "replica {} of {count} on node {}: {reason}",
                    replica + 1,
                    node.name
                )
            } else {
                reason
            });
        }
        // One failed replica fails the set: the step after removes every one it started,
        // and the old set keeps serving.
        if !failures.is_empty() {
            return failed(failures.join("; "), Some(nodes[0]));
        }
        let first = healthy.swap_remove(0);
        Ok(Some((
            Event::ContainerHealthy {
                routed: service.kind == ServiceKind::Web && self.clients.proxy.is_some(),
            },
            StepData {
                node_id: Some(first.node_id),
                container_id: first.container_id,
                upstream_address: first.upstream_address,
                ..StepData::default()
            },
        )))
    }

    async fn switch(&self, d: &Deployment) -> Result<Step, DriverError> {
        let Some(proxy) = self.clients.proxy.clone() else {
            return Ok(Some((Event::Switched, StepData::default())));
        };
        let (org, service) = self.queue.service(d.service_id).await?;
        // The platform host plus the custom domains verified so far (crate::domains).
        let route = self
            .queue
            .service_route(org, &service, &self.config.apps_domain)
            .await?;
        let failed =
            |reason: String| Ok(Some((Event::SwitchFailed { reason }, StepData::default())));
        if let Err(e) = self.retry(|| proxy.upsert_route(&route)).await {
            return failed(e.to_string());
        }
        // The whole new set (every replica) in one switch.
        let mut addresses = vec![];
        for i in self.queue.instances(d.id).await? {
            match i.upstream_address {
                Some(address) => addresses.push(address),
                None => return failed(format!("replica {} has no address", i.replica + 1)),
            }
        }
        // A deployment started before instances were recorded has its one address.
        if addresses.is_empty() {
            match d.upstream_address.clone() {
                Some(address) => addresses.push(address),
                None => return failed("the new container has no address".into()),
            }
        }
        let health = service.health_check.as_ref();
        let spec = SwitchSpec {
            service_id: service.id.to_string(),
            deployment_id: d.id.to_string(),
            addresses,
            health_path: health.and_then(|h| h.path.clone()),
            health_interval_ms: health.and_then(|h| h.interval_ms).unwrap_or(250),
            drain_deadline_ms: self.config.drain_deadline_ms,
            health_timeout_ms: health
                .and_then(|h| h.deadline_ms)
                .unwrap_or(self.config.health_deadline_ms),
            route_generation: route.generation,
        };
        match self.retry(|| proxy.switch(&spec)).await {
            Ok(SwitchOutcome::Switched) => Ok(Some((Event::Switched, StepData::default()))),
            Ok(SwitchOutcome::Refused { reason }) => failed(reason),
            Err(e) => failed(e.to_string()),
        }
    }

    async fn stop_old(&self, d: &Deployment) -> Result<Step, DriverError> {
        let event = match self.remove_previous(d).await? {
            Ok(()) => Event::OldStopped,
            Err(reason) => Event::StopOldFailed { reason },
        };
        Ok(Some((event, StepData::default())))
    }

    /// Stops (SIGTERM, the grace period, SIGKILL) and removes every container of the deployment
    /// this one replaces, if there is one, on every node it ran on; idempotent. The inner error
    /// says why it was not.
    async fn remove_previous(&self, d: &Deployment) -> Result<Result<(), String>, DriverError> {
        let Some(previous) = d.previous_deployment_id.filter(|p| *p != d.id) else {
            return Ok(Ok(()));
        };
        let previous = self.queue.deployment(previous).await?;
        let id = previous.id;
        Ok(self
            .remove_everywhere(&previous, self.config.stop_grace_ms)
            .await?
            .map_err(|e| format!("old deployment {id} was not stopped: {e}")))
    }

    /// Removes the containers of `d` from every node it placed one on (all at once).
    async fn remove_everywhere(
        &self,
        d: &Deployment,
        grace_ms: u32,
    ) -> Result<Result<(), ClientError>, DriverError> {
        let mut node_ids: Vec<Uuid> = self
            .queue
            .instances(d.id)
            .await?
            .iter()
            .map(|i| i.node_id)
            .chain(d.node_id)
            .collect();
        node_ids.sort();
        node_ids.dedup();
        let mut nodes = vec![];
        for id in node_ids {
            nodes.push(self.queue.node(id).await?);
        }
        let id = d.id.to_string();
        let removals = nodes.iter().map(|node| {
            let node_client = self.clients.node.clone();
            let id = &id;
            async move {
                self.retry(|| node_client.remove_deployment(&node.address, id, grace_ms))
                    .await
            }
        });
        Ok(futures::future::join_all(removals)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, ClientError>>()
            .map(|_| ()))
    }

    async fn remove_new(&self, d: &Deployment) -> Result<Step, DriverError> {
        // It never served: no need to wait for it.
        if let Err(e) = self.remove_everywhere(d, 1).await? {
            tracing::warn!(deployment = %d.id, error = %e, "removing the new containers failed");
        }
        Ok(Some((Event::NewRemoved, StepData::default())))
    }
}

/// A failed build's reason followed by the last lines it printed (redacted), if any.
fn failure_with_tail(reason: &str, log: &Recorder) -> String {
    let tail = log.tail();
    if tail.is_empty() {
        reason.to_owned()
    } else {
        format!("{reason}\nlast lines of the build log:{tail}")
    }
}

/// Renews the lease every third of its length; once it is lost, waits forever (the transition
/// that follows fails with `LeaseLost`).
async fn renew_lease<Q: DeploymentQueue>(
    queue: Q,
    id: Uuid,
    owner: Uuid,
    lease: Duration,
) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(lease / 3).await;
        match queue.renew_lease(id, owner, lease).await {
            Ok(true) => {}
            Ok(false) => return std::future::pending().await,
            Err(e) => tracing::warn!(deployment = %id, error = %e, "renewing the lease failed"),
        }
    }
}

/// The port a deployment's container listens on, is health-checked and routed on: the
/// service's when the user gave it, else the one the build detected, else the service's default.
pub fn serving_port(service: &Service, d: &Deployment) -> u32 {
    let detected = d.container_port.filter(|_| !service.port_explicit);
    u32::try_from(detected.unwrap_or(service.port)).unwrap_or(8080)
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
