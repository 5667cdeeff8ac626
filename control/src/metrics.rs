//! The control plane's Prometheus metrics: REST requests by status class and their latency
//! (counted by a middleware around the API router), and deployments, nodes and custom domains by
//! state, read from PostgreSQL at scrape time (so every control plane instance reports the same
//! totals); backups per managed service ([`crate::backups::metrics`]); the services' volumes
//! with the bytes each uses, as a background refresh last asked the nodes holding them
//! ([`volumes`]).

pub mod volumes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::Store;

/// Upper bounds of the request latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The status classes counted, `1xx` to `5xx`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// REST request counters.
#[derive(Debug)]
pub struct HttpMetrics {
    by_class: Family<[(&'static str, &'static str); 1], Counter>,
    durations: Histogram,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let by_class = Family::default();
        for class in CLASSES {
            let _ = by_class.get_or_create(&[("class", class)]);
        }
        Self {
            by_class,
            durations: Histogram::new(BUCKETS),
        }
    }
}

impl HttpMetrics {
    pub fn record(&self, status: u16, took: Duration) {
        let class = CLASSES[usize::from((status / 100).clamp(1, 5)) - 1];
        self.by_class.get_or_create(&[("class", class)]).inc();
        self.durations.observe(took.as_secs_f64());
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "stackpad_control_http_requests",
            "REST API responses, by status class",
            self.by_class.clone(),
        );
        registry.register(
            "stackpad_control_http_request_duration_seconds",
            "REST API request to response",
            self.durations.clone(),
        );
    }
}

/// Middleware counting every API response.
pub async fn track(
    State(metrics): State<Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.record(response.status().as_u16(), started.elapsed());
    response
}

/// Deployments and nodes by state, as PostgreSQL holds them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StoreCounts {
    pub deployments: Vec<(String, i64)>,
    pub nodes: Vec<(String, String, i64)>,
    /// Custom domains by verification status (pending, verified, failed).
    pub domains: Vec<(String, i64)>,
    /// Services waiting for room to move off a lost or drained node (#15).
    pub waiting_for_room: i64,
}

/// Counts of the rows the dashboard shows; `None` when the database does not answer.
pub async fn store_counts(store: &Store) -> Option<StoreCounts> {
    let deployments = sqlx::query_as::<_, (String, i64)>(
        "SELECT state, count(*) FROM deployments GROUP BY state ORDER BY state",
    )
    .fetch_all(&store.pool)
    .await
    .ok()?;
    let nodes = sqlx::query_as::<_, (String, String, i64)>(
        "SELECT role, status, count(*) FROM nodes GROUP BY role, status ORDER BY role, status",
    )
    .fetch_all(&store.pool)
    .await
    .ok()?;
    let domains = sqlx::query_as::<_, (String, i64)>(
        "SELECT status, count(*) FROM custom_domains GROUP BY status ORDER BY status",
    )
    .fetch_all(&store.pool)
    .await
    .ok()?;
    let waiting_for_room = sqlx::query_scalar("SELECT count(*) FROM room_waits")
        .fetch_one(&store.pool)
        .await
        .ok()?;
    Some(StoreCounts {
        deployments,
        nodes,
        domains,
        waiting_for_room,
    })
}

/// The exposition text (Prometheus text format 0.0.4).
pub fn render(http: &HttpMetrics, counts: Option<&StoreCounts>) -> String {
    let mut registry = Registry::default();
    http.register(&mut registry);
    let up = Gauge::<i64>::default();
    up.set(i64::from(counts.is_some()));
    registry.register(
        "stackpad_control_store_up",
        "1 when PostgreSQL answered this scrape",
        up,
    );
    if let Some(counts) = counts {
        let deployments = Family::<[(&str, String); 1], Gauge>::default();
        for (state, n) in &counts.deployments {
            deployments
                .get_or_create(&[("state", state.clone())])
                .set(*n);
        }
        registry.register(
            "stackpad_control_deployments",
            "Deployments by state (queued, building, deploying, ready, failed, superseded, cancelled)",
            deployments,
        );
        let nodes = Family::<[(&str, String); 2], Gauge>::default();
        for (role, status, n) in &counts.nodes {
            nodes
                .get_or_create(&[("role", role.clone()), ("status", status.clone())])
                .set(*n);
        }
        registry.register(
            "stackpad_control_nodes",
            "Registered nodes by role and status",
            nodes,
        );
        let domains = Family::<[(&str, String); 1], Gauge>::default();
        for (status, n) in &counts.domains {
            domains.get_or_create(&[("status", status.clone())]).set(*n);
        }
        let waiting = Gauge::<i64>::default();
        waiting.set(counts.waiting_for_room);
        registry.register(
            "stackpad_control_services_waiting_for_room",
            "Services whose replicas must move off a lost or drained node while no node up has room for their set",
            waiting,
        );
        registry.register(
            "stackpad_control_custom_domains",
            "Custom domains by DNS verification status (pending, verified, failed)",
            domains,
        );
    }
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// `GET /metrics` on its own listener; with `volumes`, the services' volumes as the process's
/// background refresh last heard of them (a scrape never waits on a node).
pub fn router(
    store: Store,
    http: Arc<HttpMetrics>,
    volumes: Option<Arc<volumes::VolumeGauges>>,
) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (store, http, volumes) = (store.clone(), http.clone(), volumes.clone());
            async move {
                let counts = store_counts(&store).await;
                let mut text = render(&http, counts.as_ref());
                // Backups of managed services (#14), per service.
                if let Ok(backups) = store.backup_summaries().await {
                    text.push_str(&crate::backups::metrics::render(&backups));
                }
                if let Some(volumes) = &volumes {
                    text.push_str(&volumes.render());
                }
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    text,
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests_deployments_and_nodes_by_convention() {
        let http = HttpMetrics::default();
        http.record(201, Duration::from_millis(7));
        http.record(404, Duration::from_millis(30));
        let counts = StoreCounts {
            deployments: vec![("ready".into(), 3), ("failed".into(), 1)],
            nodes: vec![("compute".into(), "up".into(), 2)],
            domains: vec![("verified".into(), 2), ("failed".into(), 1)],
            waiting_for_room: 1,
        };
        let text = render(&http, Some(&counts));
        assert!(text.contains("stackpad_control_http_requests_total{class=\"2xx\"} 1\n"));
        assert!(text.contains("stackpad_control_http_requests_total{class=\"4xx\"} 1\n"));
        assert!(
            text.contains("stackpad_control_http_request_duration_seconds_bucket{le=\"0.01\"} 1\n")
        );
        assert!(text.contains("stackpad_control_http_request_duration_seconds_count 2\n"));
        assert!(text.contains("stackpad_control_deployments{state=\"ready\"} 3\n"));
        assert!(text.contains("stackpad_control_nodes{role=\"compute\",status=\"up\"} 2\n"));
        assert!(text.contains("stackpad_control_store_up 1\n"));
        assert!(text.contains("stackpad_control_custom_domains{status=\"failed\"} 1\n"));
        assert!(text.contains("stackpad_control_services_waiting_for_room 1\n"));
        stackpad_tests::prometheus::assert_conventions(&text);
        stackpad_tests::prometheus::assert_conventions(&render(&http, None));
    }
}
