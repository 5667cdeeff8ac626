//! Idle previews (#17): a preview environment of a project with `preview_idle_seconds` that got
//! no request (the proxy's access logs in ClickHouse, newer than its last deploy or wake) for
//! that long is put to sleep: each web service is marked sleeping at the proxy
//! (`ProxyClient::sleep`: out of rotation, its requests held), then every container of the
//! services' current deployments is removed from its node. The environment's
//! `sleeping_since` is the claim, so one control instance stops it.
//!
//! The proxy asks for a wake when a request arrives for a sleeping service (`WatchWakes`,
//! control's own authenticated link to the proxy); [`Idle::wake`] ends the sleep in PostgreSQL
//! (one wake per sleep however many ask) and queues a deployment of the serving image of each
//! service (`Store::redeploy_current`, the pipeline's usual path): its switch ends the sleep at
//! the proxy and releases the held requests.
//!
//! The access logs are the activity source because they are already there, shared by every
//! proxy instance and survive a proxy restart; without ClickHouse nothing is stopped. Every
//! pass marks the sleeping services at the proxy again (after a proxy restart its marks are
//! gone), and ends the sleep of an environment a push deployed meanwhile.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use ::api::ServiceKind;

use crate::clients::ClientError;
use crate::logsearch::{Bind, LogSearch, LogSearchError};
use crate::pipeline::driver::Clients;
use crate::previews::is_idle;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IdleError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Logs(#[from] LogSearchError),
    #[error("{what}: {source}")]
    Call {
        what: String,
        #[source]
        source: ClientError,
    },
}

/// Stops idle previews and wakes them on request.
#[derive(Debug)]
pub struct Idle {
    store: Store,
    clients: Clients,
    logs: LogSearch,
    /// The deployment workers' wake-up: a queued wake starts at once.
    queued: Arc<Notify>,
    stop_grace_ms: u32,
    /// Held while a preview is being put to sleep, and by a wake before it ends a sleep: a
    /// request arriving while the containers are being removed wakes the preview once they
    /// are gone, instead of redeploying beside the removal (within this control instance).
    stopping: tokio::sync::Mutex<()>,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct LastRequest {
    last_ns: i64,
}

impl LogSearch {
    /// The newest request the proxy logged for an environment at or after `since`.
    pub async fn last_request(
        &self,
        organization_id: Uuid,
        environment_id: Uuid,
        since: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, LogSearchError> {
        use logstore::access_logs::{TABLE, columns as col};
        let since_ns = since.timestamp_nanos_opt().unwrap_or(0);
        let sql = format!(
            "SELECT max({ts}) AS last_ns FROM {db}.{TABLE} WHERE {org} = ? AND {env} = ? \
             AND {date} >= toDate(toDateTime(?)) AND {ts} >= ?",
            ts = col::TS_NS,
            db = self.database(),
            org = col::ORGANIZATION_ID,
            env = col::ENVIRONMENT_ID,
            date = col::DATE,
        );
        let binds = vec![
            Bind::Text(organization_id.to_string()),
            Bind::Text(environment_id.to_string()),
            Bind::Int(since.timestamp()),
            Bind::Int(since_ns),
        ];
        let rows = match self.bound(&sql, binds).fetch_all::<LastRequest>().await {
            Ok(rows) => rows,
            Err(e) => self.empty_if_missing(e)?,
        };
        Ok(rows
            .first()
            .filter(|r| r.last_ns > 0)
            .map(|r| DateTime::from_timestamp_nanos(r.last_ns)))
    }
}

impl Idle {
    pub fn new(
        store: Store,
        clients: Clients,
        logs: LogSearch,
        queued: Arc<Notify>,
        stop_grace_ms: u32,
    ) -> Self {
        Self {
            store,
            clients,
            logs,
            queued,
            stop_grace_ms,
            stopping: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs [`Idle::pass`] every `interval` until shutdown.
    pub async fn run(self: Arc<Self>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "idle previews pass failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One pass: sleeps that a deploy ended are closed, sleeping services are marked at the
    /// proxy again, and idle previews are put to sleep.
    pub async fn pass(&self) -> Result<(), IdleError> {
        for env in self.store.end_sleeps_redeployed().await? {
            tracing::info!(environment_id = %env, "a deployment woke a sleeping preview");
        }
        for (org, env) in self.store.sleeping_environments().await? {
            self.mark_sleeping(org, env).await?;
        }
        let now = Utc::now();
        for p in self.store.awake_previews().await? {
            let last = self
                .logs
                .last_request(p.organization_id, p.environment_id, p.active_at)
                .await?;
            if !is_idle(now, p.active_at, last, p.idle_seconds) {
                continue;
            }
            let _stopping = self.stopping.lock().await;
            if !self.store.start_sleep(p.environment_id).await? {
                continue;
            }
            if let Err(e) = self.put_to_sleep(p.organization_id, p.environment_id).await {
                // Awake again; the next pass tries once more.
                self.store.end_sleep(p.environment_id).await?;
                return Err(e);
            }
            tracing::info!(environment_id = %p.environment_id, idle_seconds = p.idle_seconds, "idle preview stopped");
        }
        Ok(())
    }

    async fn web_services(&self, org: Uuid, env: Uuid) -> Result<Vec<Uuid>, IdleError> {
        let project = self.store.environment(org, env).await?.project_id;
        Ok(self
            .store
            .services_to_tear_down(org, project, Some(env))
            .await?
            .into_iter()
            .filter(|s| s.kind == ServiceKind::Web)
            .map(|s| s.id)
            .collect())
    }

    async fn mark_sleeping(&self, org: Uuid, env: Uuid) -> Result<(), IdleError> {
        let Some(proxy) = &self.clients.proxy else {
            return Ok(());
        };
        for service in self.web_services(org, env).await? {
            proxy
                .sleep(&service.to_string())
                .await
                .map_err(|source| IdleError::Call {
                    what: format!("putting service {service} to sleep at the proxy"),
                    source,
                })?;
        }
        Ok(())
    }

    /// The proxy first (its requests are held from then on), then the containers.
    async fn put_to_sleep(&self, org: Uuid, env: Uuid) -> Result<(), IdleError> {
        self.mark_sleeping(org, env).await?;
        let project = self.store.environment(org, env).await?.project_id;
        for service in self
            .store
            .services_to_tear_down(org, project, Some(env))
            .await?
        {
            let Some(current) = service.current_deployment_id else {
                continue;
            };
            for d in self.store.service_deployment_nodes(service.id).await? {
                let (true, Some(node)) = (d.id == current, d.node_id) else {
                    continue;
                };
                let node = self.store.node(node).await?;
                self.clients
                    .node
                    .remove_deployment(&node.address, &current.to_string(), self.stop_grace_ms)
                    .await
                    .map_err(|source| IdleError::Call {
                        what: format!("stopping deployment {current} on node {}", node.name),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// A request is waiting for `service_id`: when its environment sleeps, ends the sleep and
    /// queues each service's serving image again. True when this call woke it.
    pub async fn wake(&self, service_id: Uuid) -> Result<bool, IdleError> {
        // A stop under way finishes first.
        let _stopping = self.stopping.lock().await;
        let Some((org, env)) = self.store.end_sleep_of_service(service_id).await? else {
            return Ok(false);
        };
        let project = self.store.environment(org, env).await?.project_id;
        for service in self
            .store
            .services_to_tear_down(org, project, Some(env))
            .await?
        {
            self.store.redeploy_current(org, service.id).await?;
        }
        self.queued.notify_waiters();
        tracing::info!(environment_id = %env, %service_id, "sleeping preview woken by a request");
        Ok(true)
    }

    /// Follows the proxy's wake requests until shutdown, connecting again after a second
    /// when the stream ends or cannot be opened.
    pub async fn watch_wakes(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(proxy) = self.clients.proxy.clone() else {
            return;
        };
        loop {
            let follow = async {
                let mut wakes = match proxy.wakes().await {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot watch the proxy's wakes yet");
                        return;
                    }
                };
                while let Some(next) = wakes.next().await {
                    let service = match next.map(|s| Uuid::parse_str(&s)) {
                        Ok(Ok(id)) => id,
                        Ok(Err(_)) => continue,
                        Err(e) => {
                            tracing::debug!(error = %e, "the proxy's wake stream ended");
                            return;
                        }
                    };
                    if let Err(e) = self.wake(service).await {
                        tracing::warn!(error = %e, %service, "waking a sleeping preview failed");
                    }
                }
            };
            tokio::select! {
                _ = follow => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}
