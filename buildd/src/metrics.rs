//! Build metrics, served with `prometheus-client`: builds by outcome, queue length, running
//! builds, a duration histogram and the cache hit ratio (steps served from cache / completed
//! steps).

use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How a build ended, for the outcome counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::TimedOut,
        Outcome::Cancelled,
    ];

    /// The `outcome` label's value.
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Upper bounds (seconds) of the duration histogram's buckets.
const BUCKETS: [f64; 10] = [
    5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
];

type Labels = [(&'static str, &'static str); 1];

/// The daemon's counters and histogram; the queue's load is read at scrape time.
#[derive(Debug)]
pub struct Metrics {
    outcomes: Family<Labels, Counter>,
    durations: Histogram,
    cached_steps: Counter,
    total_steps: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let outcomes = Family::default();
        for outcome in Outcome::ALL {
            let _ = outcomes.get_or_create(&[("outcome", outcome.as_str())]);
        }
        Self {
            outcomes,
            durations: Histogram::new(BUCKETS),
            cached_steps: Counter::default(),
            total_steps: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn record_outcome(&self, outcome: Outcome, ran_for: Option<Duration>) {
        self.outcomes
            .get_or_create(&[("outcome", outcome.as_str())])
            .inc();
        if let Some(d) = ran_for {
            self.durations.observe(d.as_secs_f64());
        }
    }

    pub fn record_steps(&self, cached: u32, total: u32) {
        self.cached_steps.inc_by(u64::from(cached));
        self.total_steps.inc_by(u64::from(total));
    }

    /// The exposition text (Prometheus text format 0.0.4), with the queue's current load.
    pub fn render(&self, running: usize, waiting: usize) -> String {
        let mut registry = Registry::default();
        registry.register(
            "stackpad_buildd_builds",
            "Builds that ended, by outcome",
            self.outcomes.clone(),
        );
        let gauge = |v: usize| {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            g
        };
        registry.register(
            "stackpad_buildd_queue_length",
            "Builds waiting for a slot",
            gauge(waiting),
        );
        registry.register(
            "stackpad_buildd_running_builds",
            "Builds running now",
            gauge(running),
        );
        registry.register(
            "stackpad_buildd_build_duration_seconds",
            "Wall time of builds that ran",
            self.durations.clone(),
        );
        let (cached, total) = (self.cached_steps.get(), self.total_steps.get());
        let ratio = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        ratio.set(if total == 0 {
            0.0
        } else {
            cached as f64 / total as f64
        });
        registry.register(
            "stackpad_buildd_cache_hit_ratio",
            "Build steps served from cache / completed steps, over successful builds",
            ratio,
        );
        registry.register(
            "stackpad_buildd_cached_steps",
            "Build steps served from cache, over successful builds",
            self.cached_steps.clone(),
        );
        registry.register(
            "stackpad_buildd_steps",
            "Build steps completed, over successful builds",
            self.total_steps.clone(),
        );
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_outcomes_histogram_and_ratio() {
        let m = Metrics::default();
        m.record_outcome(Outcome::Succeeded, Some(Duration::from_secs(7)));
        m.record_outcome(Outcome::Cancelled, None);
        m.record_steps(3, 4);
        let text = m.render(2, 5);
        assert!(
            text.contains("stackpad_buildd_builds_total{outcome=\"succeeded\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("stackpad_buildd_builds_total{outcome=\"cancelled\"} 1"),
            "{text}"
        );
        assert!(text.contains("stackpad_buildd_queue_length 5"), "{text}");
        assert!(text.contains("stackpad_buildd_running_builds 2"), "{text}");
        assert!(
            text.contains("duration_seconds_bucket{le=\"5\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("duration_seconds_bucket{le=\"10\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("stackpad_buildd_build_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("stackpad_buildd_cache_hit_ratio 0.75"),
            "{text}"
        );
        stackpad_tests::prometheus::assert_conventions(&text);
    }
}
