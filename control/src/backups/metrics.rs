//! Backups on control's `/metrics` (#14 item 8), read from PostgreSQL at scrape time like the
//! other store gauges: per managed service the last completed backup's age, size, duration and
//! verification result, the failed backups (a counter: failed rows are kept), whether its
//! backup is missed now and how many times it was, and for PostgreSQL its WAL shipping
//! (failed passes, failing now, age of the newest shipped file).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::store::backups::BackupSummary;

type Labels = [(&'static str, String); 3];

fn labels(s: &BackupSummary) -> Labels {
    [
        ("organization", s.organization_id.to_string()),
        ("service", s.service_id.to_string()),
        ("engine", s.engine.as_str().to_owned()),
    ]
}

/// The exposition text of the backup families (appended to control's `/metrics`).
pub fn render(summaries: &[BackupSummary]) -> String {
    let mut registry = Registry::default();
    register(&mut registry, summaries);
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

/// Registers the backup families for `summaries`.
pub fn register(registry: &mut Registry, summaries: &[BackupSummary]) {
    let age = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let size = Family::<Labels, Gauge>::default();
    let duration = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let verification = Family::<[(&'static str, String); 4], Gauge>::default();
    let failed = Family::<Labels, Counter>::default();
    let completed = Family::<Labels, Counter>::default();
    let missed = Family::<Labels, Gauge>::default();
    let missed_total = Family::<Labels, Counter>::default();
    let wal_failures = Family::<Labels, Counter>::default();
    let wal_failing = Family::<Labels, Gauge>::default();
    let wal_age = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for s in summaries {
        let l = labels(s);
        if let Some(a) = s.age_seconds {
            age.get_or_create(&l).set(a);
        }
        if let Some(b) = s.size_bytes {
            size.get_or_create(&l).set(b);
        }
        if let Some(ms) = s.duration_ms {
            duration.get_or_create(&l).set(ms as f64 / 1000.0);
        }
        if let Some(v) = s.verification {
            let [o, sv, e] = l.clone();
            verification
                .get_or_create(&[o, sv, e, ("result", v.as_str().to_owned())])
                .set(1);
        }
        failed
            .get_or_create(&l)
            .inc_by(s.failed_total.max(0) as u64);
        completed
            .get_or_create(&l)
            .inc_by(s.completed_total.max(0) as u64);
        missed.get_or_create(&l).set(i64::from(s.missed));
        missed_total
            .get_or_create(&l)
            .inc_by(s.missed_total.max(0) as u64);
        if s.engine == ::api::Engine::Postgres {
            wal_failures
                .get_or_create(&l)
                .inc_by(s.wal_failures.max(0) as u64);
            wal_failing.get_or_create(&l).set(i64::from(s.wal_failing));
            if let Some(a) = s.wal_age_seconds {
                wal_age.get_or_create(&l).set(a);
            }
        }
    }
    registry.register(
        "stackpad_control_backup_age_seconds",
        "Seconds since the service's last completed backup ended",
        age,
    );
    registry.register(
        "stackpad_control_backup_size_bytes",
        "Stored bytes (compressed, encrypted) of the service's last completed backup",
        size,
    );
    registry.register(
        "stackpad_control_backup_duration_seconds",
        "How long the service's last completed backup took",
        duration,
    );
    registry.register(
        "stackpad_control_backup_verification",
        "1 for the verification result (pending, verified, failed) of the last completed backup",
        verification,
    );
    registry.register(
        "stackpad_control_backups_failed",
        "Backups of the service that failed (kept as failed rows)",
        failed,
    );
    registry.register(
        "stackpad_control_backups_completed",
        "Completed backups of the service still kept (retention deletes older ones)",
        completed,
    );
    registry.register(
        "stackpad_control_backup_missed",
        "1 when no backup of the service completed for its interval and a grace (half an interval, at most an hour)",
        missed,
    );
    registry.register(
        "stackpad_control_backups_missed",
        "Stretches without a backup reported as backup_missed events on the service",
        missed_total,
    );
    registry.register(
        "stackpad_control_wal_shipping_failures",
        "PostgreSQL WAL shipping passes of the service that failed",
        wal_failures,
    );
    registry.register(
        "stackpad_control_wal_shipping_failing",
        "1 while the service's WAL shipping fails (since its last success)",
        wal_failing,
    );
    registry.register(
        "stackpad_control_wal_age_seconds",
        "Seconds since the newest shipped WAL file of the service was archived",
        wal_age,
    );
}
