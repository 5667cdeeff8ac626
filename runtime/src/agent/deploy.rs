//! Deploy: pull, network, spec, container, task, start, health. Idempotent per deployment id;
//! a failure before the process runs removes everything it had made.

use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_client::services::v1::Container;

use super::record::{self, Entry, State, Status};
use super::{Agent, ContainerEngine, task};
use crate::error::{Result, RuntimeError};
use crate::image::PulledImage;
use crate::network::{ContainerNetwork, Endpoint};
use crate::spec::{DeploySpec, SpecInput, build_spec, spec_any};
use crate::userns::IdMap;

/// What the first task of a new container starts from.
struct FirstTask {
    rootfs: Vec<containerd_client::types::Mount>,
    created_ms: i64,
    id_map: IdMap,
}

impl<E: ContainerEngine, N: ContainerNetwork> Agent<E, N> {
    /// Runs the deployment's container and waits for its health check. A retried call for the
    /// same deployment returns the container it already made.
    pub async fn deploy(self: &Arc<Self>, spec: DeploySpec) -> Result<Status> {
        spec.validate(&self.limits())?;
        let id = spec.container_id();
        let _op = self.op_lock(&id).await;
        // Held until this container is tracked: two deploys of one service cannot both find
        // its volumes free.
        let _volumes = self.claim_volumes(&id, &spec).await?;
        let started = Instant::now();
        if let Some(entry) = self.entry(&id) {
            let current = entry.status();
            if current.state.is_running() || current.state == State::Restarting {
                drop(_op);
                return self.await_health(&entry).await;
            }
            // Stopped or failed: start it again.
            entry.update(|s| {
                s.wanted_running = true;
                s.restart_count = 0;
            });
            self.engine
                .set_labels(&id, &[(record::LABEL_DESIRED, "running".into())])
                .await?;
            self.start_new_task(&entry).await?;
            drop(_op);
            return self.await_health(&entry).await;
        }
        let cap = self.capacity();
        if cap.containers_running >= cap.containers_max {
            return Err(RuntimeError::Capacity {
                reason: format!(
                    "{} of {} containers running",
                    cap.containers_running, cap.containers_max
                ),
            });
        }
        let pull_started = Instant::now();
        let bridge = crate::network::bridge_name(
            &self.config.namespace,
            &spec.workload.project_id,
            &spec.workload.environment_id,
        );
        // The network endpoint and the container record do not depend on each other (the
        // spec names the netns and hosts file by path): build both at once.
        let w = &spec.workload;
        let created_ms = record::now_ms();
        let record = async {
            let pulled = self.engine.pull(&spec.image).await;
            self.metrics
                .observe_pull(pull_started.elapsed(), pulled.is_ok());
            let pulled = pulled?;
            let id_map = self.userns.ensure(&self.config.namespace, &w.project_id)?;
            let rootfs = self
                .create_record(&id, &spec, &pulled, &bridge, created_ms, id_map)
                .await?;
            Ok::<_, RuntimeError>((pulled, rootfs, id_map))
        };
        let host_names = w.host_names();
        let attach = self
            .networks
            .attach(&id, &w.project_id, &w.environment_id, &host_names);
        let (record, endpoint) = tokio::join!(record, attach);
        let prepared = started.elapsed();
        let created = match (record, endpoint) {
            (Ok((pulled, rootfs, id_map)), Ok(ep)) => {
                let first = FirstTask {
                    rootfs,
                    created_ms,
                    id_map,
                };
                self.start_first(&id, &spec, &pulled, &ep, first).await
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let entry = match created {
            Ok(entry) => entry,
            Err(e) => {
                self.metrics.count_failure();
                if let Err(cleanup) = self.teardown(&id, &bridge).await {
                    tracing::warn!(container_id = %id, error = %cleanup, "clean-up after a failed deploy");
                }
                return Err(e);
            }
        };
        self.insert_entry(&id, entry.clone());
        self.watch(&entry);
        drop(_volumes);
        drop(_op);
        let running = started.elapsed();
        let result = self.await_health(&entry).await;
        tracing::debug!(
            container_id = %id,
            pull_create_and_network_ms = prepared.as_millis() as u64,
            task_started_ms = (running - prepared).as_millis() as u64,
            healthy_ms = (started.elapsed() - running).as_millis() as u64,
            "deploy phases"
        );
        if result.is_ok() {
            self.metrics.observe_start(started.elapsed());
        } else {
            self.metrics.count_failure();
        }
        result
    }

    /// The container record and its rootfs snapshot, on the image remapped into `id_map`.
    async fn create_record(
        &self,
        id: &str,
        spec: &DeploySpec,
        pulled: &PulledImage,
        bridge: &str,
        created_ms: i64,
        id_map: IdMap,
    ) -> Result<Vec<containerd_client::types::Mount>> {
        let netns_path = crate::network::host::netns_path(id);
        let hosts_path = self.networks.hosts_path(bridge);
        let hosts = hosts_path.display().to_string();
        // The network's DNS responder, written beside its hosts file by the attach that runs
        // beside this (#15).
        let resolv = hosts_path
            .with_file_name("resolv.conf")
            .display()
            .to_string();
        let oci = build_spec(&SpecInput {
            deploy: spec,
            image: &pulled.config,
            namespace: &self.config.namespace,
            container_id: id,
            netns_path: &netns_path,
            hosts_path: &hosts,
            resolv_path: Some(&resolv),
            memory_bytes: self.memory_of(spec),
            pids_limit: self.pids_of(spec),
            id_map,
            volumes: &self.volumes,
        })?;
        self.engine
            .create_container(Container {
                id: id.to_owned(),
                labels: record::labels(spec, bridge, &pulled.digest, created_ms, id_map),
                image: pulled.name.clone(),
                runtime: task::runtime(&self.config.runtime),
                spec: Some(spec_any(&oci)),
                snapshotter: self.config.snapshotter.clone(),
                snapshot_key: id.to_owned(),
                extensions: [(record::EXT_DEPLOY.to_owned(), record::spec_extension(spec))].into(),
                ..Default::default()
            })
            .await?;
        let parent = self.engine.remapped(pulled, id_map).await?;
        // Prepared after the container record exists: the record keeps the fresh snapshot from
        // the garbage collector (an unreferenced active snapshot is fair game for it).
        self.engine.prepare_rootfs(id, &parent).await
    }

    /// The first task of a new container, once its record and endpoint exist.
    async fn start_first(
        &self,
        id: &str,
        spec: &DeploySpec,
        pulled: &PulledImage,
        ep: &Endpoint,
        first: FirstTask,
    ) -> Result<Arc<Entry>> {
        let FirstTask {
            rootfs,
            created_ms,
            id_map,
        } = first;
        let entry = Arc::new(Entry::new(Status {
            container_id: id.to_owned(),
            spec: spec.clone(),
            image_digest: pulled.digest.clone(),
            state: State::Created,
            ip: Some(ep.ip),
            bridge: ep.bridge.clone(),
            exit_code: 0,
            oom_killed: false,
            restart_count: 0,
            message: String::new(),
            created_ms,
            started_ms: 0,
            pid: 0,
            wanted_running: true,
            generation: 0,
            id_map: Some(id_map),
        }));
        self.run_task(&entry, rootfs).await?;
        Ok(entry)
    }

    /// Creates and starts a task for a container whose previous task is gone.
    pub(crate) async fn start_new_task(&self, entry: &Arc<Entry>) -> Result<()> {
        let id = entry.status().container_id;
        self.engine.delete_task(&id).await?;
        let rootfs = self.engine.rootfs_mounts(&id).await?;
        self.run_task(entry, rootfs).await
    }

    /// Task create, isolation attach, start.
    async fn run_task(
        &self,
        entry: &Arc<Entry>,
        rootfs: Vec<containerd_client::types::Mount>,
    ) -> Result<()> {
        let status = entry.status();
        let id = &status.container_id;
        self.mount_volumes(&status).await?;
        let io = self.logs.open(&self.log_labels(id, &status.spec))?;
        self.engine
            .create_task(id, rootfs, &io, status.id_map)
            .await?;
        let endpoint = self.isolation_endpoint(&status);
        let attached = self
            .isolation
            .attach(&endpoint)
            .map_err(|e| RuntimeError::network(id.clone(), e.to_string()));
        let started = match attached {
            Ok(()) => self.engine.start_task(id).await,
            Err(e) => Err(e),
        };
        match started {
            Ok(pid) => {
                entry.update(|s| {
                    s.pid = pid;
                    s.started_ms = record::now_ms();
                    s.generation += 1;
                    s.state = if s.spec.health.is_some() {
                        State::Starting
                    } else {
                        State::Healthy
                    };
                    s.message.clear();
                });
                self.metrics.count_start();
                Ok(())
            }
            Err(e) => {
                let _ = self.engine.kill_and_delete(id).await;
                Err(e)
            }
        }
    }

    /// Waits until the container is healthy, or fails with why not (deadline, exit).
    pub(crate) async fn await_health(&self, entry: &Arc<Entry>) -> Result<Status> {
        let mut changes = entry.subscribe();
        let status = entry.status();
        let deadline_ms = status
            .spec
            .health
            .as_ref()
            .map(|h| h.deadline_ms)
            .unwrap_or(0);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(u64::from(deadline_ms.max(1)));
        loop {
            let s = entry.status();
            match s.state {
                State::Healthy => return Ok(s),
                State::Failed | State::Stopped => {
                    return Err(RuntimeError::Unhealthy {
                        container_id: s.container_id.clone(),
                        reason: if s.message.is_empty() {
                            format!("exited with code {}", s.exit_code)
                        } else {
                            s.message.clone()
                        },
                    });
                }
                _ => {}
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    let s = entry.status();
                    if s.state == State::Healthy {
                        return Ok(s);
                    }
                    // Give up on this deployment: stop it so the policy does not keep it alive.
                    let reason = format!(
                        "no healthy verdict within {deadline_ms} ms (state {}, last: {})",
                        s.state.name(),
                        if s.message.is_empty() {
                            "-"
                        } else {
                            &s.message
                        }
                    );
                    entry.update(|st| {
                        st.wanted_running = false;
                        st.message = reason.clone();
                    });
                    let _ = self
                        .engine
                        .set_labels(
                            &s.container_id,
                            &[(record::LABEL_DESIRED, "stopped".into())],
                        )
                        .await;
                    let _ = self.engine.kill(&s.container_id, 9).await;
                    entry.update(|st| st.state = State::Failed);
                    return Err(RuntimeError::Unhealthy {
                        container_id: s.container_id,
                        reason,
                    });
                }
            }
        }
    }
}
