//! The seam between the pipeline driver and PostgreSQL: [`DeploymentQueue`] is every read and
//! write the driver makes (claim, lease fence, transitions, the views placement decides on).
//! The store carries out what [`super::machine`] and [`crate::schedule`] decided; it decides
//! nothing itself. [`Store`] is the real implementation (tested against PostgreSQL in
//! `control/tests/pipeline.rs`); the driver's unit tests use a recording fake.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::machine::{Phase, Transition};
use crate::clients::RouteSpec;
use crate::deploy_keys::DeployKeySecret;
use crate::schedule::{BuildNodeView, ComputeNodeView};
use crate::store::{Deployment, GitCredentials, Instance, Node, Result, Service, StepData, Store};

/// The durable deploy queue as the driver sees it. Every write made for a claimed deployment
/// is fenced by the worker's lease: it fails with `StoreError::LeaseLost` once another worker
/// took the deployment over.
#[async_trait]
pub trait DeploymentQueue: Clone + Send + Sync + 'static {
    /// Takes the oldest claimable deployment under a lease held by `owner`.
    async fn claim(&self, owner: Uuid, lease: Duration) -> Result<Option<Deployment>>;
    /// Extends the lease; false once `owner` no longer holds it.
    async fn renew_lease(&self, id: Uuid, owner: Uuid, lease: Duration) -> Result<bool>;
    /// Gives the lease back (graceful shutdown): another worker resumes at once.
    async fn release(&self, id: Uuid, owner: Uuid) -> Result<()>;
    /// Records the machine's transition out of `from` with what the step learned (fenced).
    async fn transition(
        &self,
        id: Uuid,
        owner: Uuid,
        from: Phase,
        t: &Transition,
        data: &StepData,
    ) -> Result<()>;
    /// Records the compute node picked for the container before it is started (fenced).
    async fn record_node(&self, id: Uuid, owner: Uuid, node: Uuid) -> Result<()>;
    /// The deployment as stored now (its cancel flag, node, image).
    async fn deployment(&self, id: Uuid) -> Result<Deployment>;
    /// The deployment's instances (its replicas' placements and containers), by replica.
    async fn instances(&self, deployment: Uuid) -> Result<Vec<Instance>>;
    /// Records an instance's placement or its container (fenced by the deployment's lease).
    async fn record_instance(&self, owner: Uuid, instance: &Instance) -> Result<()>;

    /// The service a deployment deploys, with its organization id.
    async fn service(&self, id: Uuid) -> Result<(Uuid, Service)>;
    async fn organization_name(&self, id: Uuid) -> Result<String>;
    /// The service's env vars and secrets in clear, for its container.
    async fn service_env(&self, service: Uuid) -> Result<BTreeMap<String, String>>;
    /// The git credentials of a project's private repositories (for the build request only);
    /// none by default.
    async fn git_credentials(&self, _project: Uuid) -> Result<Option<GitCredentials>> {
        Ok(None)
    }
    /// A project's SSH deploy key in clear (for the build request of an SSH source only);
    /// none by default.
    async fn deploy_key(&self, _project: Uuid) -> Result<Option<DeployKeySecret>> {
        Ok(None)
    }
    /// An environment's name (the `.internal` names of its services); empty by default.
    async fn environment_name(&self, _environment: Uuid) -> Result<String> {
        Ok(String::new())
    }
    /// What each service of an environment offers to `${{ service.VAR }}` references, by
    /// service name (`crate::managed::refs`). None by default.
    async fn environment_exports(
        &self,
        _environment: Uuid,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        Ok(BTreeMap::new())
    }
    /// The service's proxy route as of now (platform host and verified custom domains), to push.
    async fn service_route(
        &self,
        organization: Uuid,
        service: &Service,
        apps_domain: &str,
    ) -> Result<RouteSpec>;
    async fn node(&self, id: Uuid) -> Result<Node>;

    /// The build slot the deployment already holds, if any.
    async fn held_build_slot(&self, deployment: Uuid) -> Result<Option<Node>>;
    /// Every build node as [`crate::schedule::pick_build_node`] sees it, for `repository`.
    async fn build_nodes(&self, repository: &str) -> Result<Vec<BuildNodeView>>;
    /// Takes a slot of `node` for the deployment if the node still runs `seen_running` builds
    /// (the count the pick was made on); false when it changed (decide again).
    async fn reserve_build_slot(
        &self,
        deployment: Uuid,
        node: Uuid,
        seen_running: u32,
    ) -> Result<bool>;
    /// Frees the build slot; after a successful build the node's cache counts as warm.
    async fn release_build_slot(&self, deployment: Uuid, warm: Option<&str>) -> Result<()>;
    /// Every compute node as [`crate::schedule::pick_compute_node`] sees it, for `service`.
    async fn compute_nodes(&self, service: Uuid) -> Result<Vec<ComputeNodeView>>;
    /// The cluster's containers changed (a set became healthy, or a deployment ended): every
    /// compute node gets the new endpoint set (#15, [`crate::endpoints::push`]). Nothing here.
    async fn containers_changed(&self, _clients: &super::driver::Clients) {}
}

#[async_trait]
impl DeploymentQueue for Store {
    async fn containers_changed(&self, clients: &super::driver::Clients) {
        crate::endpoints::push(self, clients).await
    }

    async fn claim(&self, owner: Uuid, lease: Duration) -> Result<Option<Deployment>> {
        Store::claim(self, owner, lease).await
    }

    async fn renew_lease(&self, id: Uuid, owner: Uuid, lease: Duration) -> Result<bool> {
        Store::renew_lease(self, id, owner, lease).await
    }

    async fn release(&self, id: Uuid, owner: Uuid) -> Result<()> {
        Store::release(self, id, owner).await
    }

    async fn transition(
        &self,
        id: Uuid,
        owner: Uuid,
        from: Phase,
        t: &Transition,
        data: &StepData,
    ) -> Result<()> {
        self.apply_transition(id, owner, from, t, data)
            .await
            .map(|_| ())
    }

    async fn record_node(&self, id: Uuid, owner: Uuid, node: Uuid) -> Result<()> {
        Store::record_node(self, id, owner, node).await
    }

    async fn deployment(&self, id: Uuid) -> Result<Deployment> {
        self.deployment_unscoped(id).await
    }

    async fn instances(&self, deployment: Uuid) -> Result<Vec<Instance>> {
        Store::instances(self, deployment).await
    }

    async fn record_instance(&self, owner: Uuid, instance: &Instance) -> Result<()> {
        Store::record_instance(self, owner, instance).await
    }

    async fn service(&self, id: Uuid) -> Result<(Uuid, Service)> {
        self.service_unscoped(id).await
    }

    async fn organization_name(&self, id: Uuid) -> Result<String> {
        Ok(self.organization(id).await?.name)
    }

    async fn environment_exports(
        &self,
        environment: Uuid,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        Store::environment_exports(self, environment).await
    }

    async fn environment_name(&self, environment: Uuid) -> Result<String> {
        Store::environment_name(self, environment).await
    }

    async fn service_env(&self, service: Uuid) -> Result<BTreeMap<String, String>> {
        Ok(Store::service_env(self, service)
            .await?
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect())
    }

    async fn git_credentials(&self, project: Uuid) -> Result<Option<GitCredentials>> {
        Store::git_credentials(self, project).await
    }

    async fn deploy_key(&self, project: Uuid) -> Result<Option<DeployKeySecret>> {
        Store::deploy_key_secret(self, project).await
    }

    async fn service_route(
        &self,
        organization: Uuid,
        service: &Service,
        apps_domain: &str,
    ) -> Result<RouteSpec> {
        crate::domains::route::route_push(self, organization, service, apps_domain).await
    }

    async fn node(&self, id: Uuid) -> Result<Node> {
        Store::node(self, id).await
    }

    async fn held_build_slot(&self, deployment: Uuid) -> Result<Option<Node>> {
        Store::held_build_slot(self, deployment).await
    }

    async fn build_nodes(&self, repository: &str) -> Result<Vec<BuildNodeView>> {
        Store::build_nodes(self, repository).await
    }

    async fn reserve_build_slot(
        &self,
        deployment: Uuid,
        node: Uuid,
        seen_running: u32,
    ) -> Result<bool> {
        Store::reserve_build_slot(self, deployment, node, seen_running).await
    }

    async fn release_build_slot(&self, deployment: Uuid, warm: Option<&str>) -> Result<()> {
        Store::release_build_slot(self, deployment, warm).await
    }

    async fn compute_nodes(&self, service: Uuid) -> Result<Vec<ComputeNodeView>> {
        Store::compute_nodes(self, service).await
    }
}

/// Picks a build node for the deployment ([`crate::schedule::pick_build_node`]) and takes one
/// of its slots; the slot it already holds if any (idempotent per deployment). `None`: no node
/// has a free slot now. A pick made on views another taker changed meanwhile is made again.
pub async fn take_build_slot<Q: DeploymentQueue>(
    queue: &Q,
    deployment: Uuid,
    repository: &str,
) -> Result<Option<Node>> {
    loop {
        if let Some(node) = queue.held_build_slot(deployment).await? {
            return Ok(Some(node));
        }
        let views = queue.build_nodes(repository).await?;
        let Some(pick) = crate::schedule::pick_build_node(&views) else {
            return Ok(None);
        };
        let seen = views
            .iter()
            .find(|v| v.id == pick)
            .map_or(0, |v| v.builds_running);
        if queue.reserve_build_slot(deployment, pick, seen).await? {
            return queue.node(pick).await.map(Some);
        }
    }
}
