//! Build metrics in Prometheus' text format: builds by outcome, queue length, running builds,
//! a duration histogram and the cache hit ratio (steps served from cache / completed steps).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How a build ended, for the outcome counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

const OUTCOMES: [(Outcome, &str); 4] = [
    (Outcome::Succeeded, "succeeded"),
    (Outcome::Failed, "failed"),
    (Outcome::TimedOut, "timed_out"),
    (Outcome::Cancelled, "cancelled"),
];

/// Upper bounds (seconds) of the duration histogram's buckets.
const BUCKETS: [f64; 10] = [
    5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
];

/// Counters, updated lock-free.
#[derive(Debug, Default)]
pub struct Metrics {
    outcomes: [AtomicU64; 4],
    buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_ms: AtomicU64,
    cached_steps: AtomicU64,
    total_steps: AtomicU64,
}

impl Metrics {
    pub fn record_outcome(&self, outcome: Outcome, ran_for: Option<Duration>) {
        let i = OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .unwrap_or(1);
        self.outcomes[i].fetch_add(1, Ordering::Relaxed);
        if let Some(d) = ran_for {
            let secs = d.as_secs_f64();
            for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
                if secs <= bound {
                    bucket.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.duration_count.fetch_add(1, Ordering::Relaxed);
            self.duration_sum_ms
                .fetch_add(d.as_millis() as u64, Ordering::Relaxed);
        }
    }

    pub fn record_steps(&self, cached: u32, total: u32) {
        self.cached_steps
            .fetch_add(u64::from(cached), Ordering::Relaxed);
        self.total_steps
            .fetch_add(u64::from(total), Ordering::Relaxed);
    }

    /// The exposition text, with the queue's current load.
    pub fn render(&self, running: usize, waiting: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP stackpad_buildd_builds_total Builds that ended, by outcome."
        );
        let _ = writeln!(out, "# TYPE stackpad_buildd_builds_total counter");
        for (i, (_, name)) in OUTCOMES.iter().enumerate() {
            let v = self.outcomes[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "stackpad_buildd_builds_total{{outcome=\"{name}\"}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP stackpad_buildd_queue_length Builds waiting for a slot."
        );
        let _ = writeln!(out, "# TYPE stackpad_buildd_queue_length gauge");
        let _ = writeln!(out, "stackpad_buildd_queue_length {waiting}");
        let _ = writeln!(
            out,
            "# HELP stackpad_buildd_running_builds Builds running now."
        );
        let _ = writeln!(out, "# TYPE stackpad_buildd_running_builds gauge");
        let _ = writeln!(out, "stackpad_buildd_running_builds {running}");
        let _ = writeln!(
            out,
            "# HELP stackpad_buildd_build_duration_seconds Wall time of builds that ran."
        );
        let _ = writeln!(
            out,
            "# TYPE stackpad_buildd_build_duration_seconds histogram"
        );
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let v = bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "stackpad_buildd_build_duration_seconds_bucket{{le=\"{bound}\"}} {v}"
            );
        }
        let count = self.duration_count.load(Ordering::Relaxed);
        let sum = self.duration_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "stackpad_buildd_build_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "stackpad_buildd_build_duration_seconds_sum {sum}");
        let _ = writeln!(out, "stackpad_buildd_build_duration_seconds_count {count}");
        let cached = self.cached_steps.load(Ordering::Relaxed);
        let total = self.total_steps.load(Ordering::Relaxed);
        let ratio = if total == 0 {
            0.0
        } else {
            cached as f64 / total as f64
        };
        let _ = writeln!(
            out,
            "# HELP stackpad_buildd_cache_hit_ratio Build steps served from cache / completed steps, over successful builds."
        );
        let _ = writeln!(out, "# TYPE stackpad_buildd_cache_hit_ratio gauge");
        let _ = writeln!(out, "stackpad_buildd_cache_hit_ratio {ratio}");
        let _ = writeln!(
            out,
            "# HELP stackpad_buildd_cached_steps_total Build steps served from cache, over successful builds.\n\
             # TYPE stackpad_buildd_cached_steps_total counter\n\
             stackpad_buildd_cached_steps_total {cached}"
        );
        let _ = writeln!(
            out,
            "# HELP stackpad_buildd_steps_total Build steps completed, over successful builds.\n\
             # TYPE stackpad_buildd_steps_total counter\n\
             stackpad_buildd_steps_total {total}"
        );
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
