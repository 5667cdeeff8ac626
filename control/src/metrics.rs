//! The control plane's Prometheus metrics: REST requests by status class and their latency
//! (counted by a middleware around the API router), and deployments, nodes and custom domains by
//! state, read from PostgreSQL at scrape time (so every control plane instance reports the same
//! totals).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::store::Store;

/// Upper bounds of the request latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// REST request counters, updated lock-free.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    by_class: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl HttpMetrics {
    pub fn record(&self, status: u16, took: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let name = "stackpad_control_http_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} REST API responses, by status class.\n# TYPE {name} counter"
        );
        for (i, c) in self.by_class.iter().enumerate() {
            let v = c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{class=\"{}xx\"}} {v}", i + 1);
        }
        let name = "stackpad_control_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} REST API request to response.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, b) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += b.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
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
    Some(StoreCounts {
        deployments,
        nodes,
        domains,
    })
}

/// The exposition text.
pub fn render(http: &HttpMetrics, counts: Option<&StoreCounts>) -> String {
    let mut out = String::new();
    http.render(&mut out);
    let name = "stackpad_control_store_up";
    let _ = writeln!(
        out,
        "# HELP {name} 1 when PostgreSQL answered this scrape.\n# TYPE {name} gauge\n{name} {}",
        u8::from(counts.is_some())
    );
    let Some(counts) = counts else {
        return out;
    };
    let name = "stackpad_control_deployments";
    let _ = writeln!(
        out,
        "# HELP {name} Deployments by state (queued, building, deploying, ready, failed, superseded, cancelled).\n# TYPE {name} gauge"
    );
    for (state, n) in &counts.deployments {
        let _ = writeln!(out, "{name}{{state=\"{}\"}} {n}", escape(state));
    }
    let name = "stackpad_control_nodes";
    let _ = writeln!(
        out,
        "# HELP {name} Registered nodes by role and status.\n# TYPE {name} gauge"
    );
    for (role, status, n) in &counts.nodes {
        let _ = writeln!(
            out,
            "{name}{{role=\"{}\",status=\"{}\"}} {n}",
            escape(role),
            escape(status)
        );
    }
    let name = "stackpad_control_custom_domains";
    let _ = writeln!(
        out,
        "# HELP {name} Custom domains by DNS verification status (pending, verified, failed).\n# TYPE {name} gauge"
    );
    for (status, n) in &counts.domains {
        let _ = writeln!(out, "{name}{{status=\"{}\"}} {n}", escape(status));
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics` on its own listener.
pub fn router(store: Store, http: Arc<HttpMetrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (store, http) = (store.clone(), http.clone());
            async move {
                let counts = store_counts(&store).await;
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    render(&http, counts.as_ref()),
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
        stackpad_tests::prometheus::assert_conventions(&text);
        stackpad_tests::prometheus::assert_conventions(&render(&http, None));
    }
}
