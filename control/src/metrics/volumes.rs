//! The services' volumes on control's `/metrics` (#14): the bytes each uses and its size
//! limit, as the node holding it reports. A scrape never waits on a node: each control process
//! keeps the figures in a [`VolumeGauges`] that [`VolumeGauges::run`] refreshes every
//! `volume_metrics_interval_ms`, asking the nodes the way `GET /services/{id}/volumes` does
//! ([`crate::volumes::usage`]). A volume whose node does not answer keeps its last figures,
//! with their age (`stackpad_control_volume_sample_age_seconds`), for [`KEPT_INTERVALS`]
//! intervals; after that it is left out (no series rather than an old one that looks current).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::pipeline::driver::Clients;
use crate::store::Store;

/// How many refresh intervals a volume whose node stopped answering keeps its last figures.
pub const KEPT_INTERVALS: u32 = 10;

/// Services asked about their volumes at once, at most.
const VOLUME_SERVICES_AT_ONCE: usize = 8;

/// One volume of a live service as its node reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeSample {
    pub organization_id: Uuid,
    pub service_id: Uuid,
    pub volume: String,
    pub node: String,
    pub size_bytes: u64,
    pub used_bytes: u64,
}

/// A volume: its service and name.
pub type VolumeKey = (Uuid, String);

/// What one refresh learned of one volume.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Its node reported it.
    Reported(VolumeSample),
    /// The node that ran the service did not answer: the last figures stay, ageing.
    Unanswered,
    /// No node holds it (never deployed, or no node that ran it is registered): no figures.
    Unheld,
}

/// One refresh: every live service's volumes, or the services that could not be read (their
/// volumes keep what they had).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Round {
    pub answers: BTreeMap<VolumeKey, Answer>,
    pub unread_services: BTreeSet<Uuid>,
}

/// A volume's last figures and when its node gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    pub sample: VolumeSample,
    pub at: Instant,
}

/// The figures every volume has.
pub type Figures = BTreeMap<VolumeKey, Cached>;

/// The figures after `round` (`None`: the services could not be listed at all; everything
/// stays): a reported volume takes its new figures, an unanswered one keeps its last, a volume
/// no longer in a live service (deleted, removed) or held by no node is dropped, and so is
/// any volume whose figures are older than `keep_for`.
pub fn merge(old: &Figures, round: Option<&Round>, now: Instant, keep_for: Duration) -> Figures {
    let mut out = Figures::new();
    match round {
        None => out.clone_from(old),
        Some(round) => {
            for (key, answer) in &round.answers {
                match answer {
                    Answer::Reported(sample) => {
                        out.insert(
                            key.clone(),
                            Cached {
                                sample: sample.clone(),
                                at: now,
                            },
                        );
                    }
                    Answer::Unanswered => {
                        if let Some(c) = old.get(key) {
                            out.insert(key.clone(), c.clone());
                        }
                    }
                    Answer::Unheld => {}
                }
            }
            for (key, c) in old {
                if round.unread_services.contains(&key.0) {
                    out.insert(key.clone(), c.clone());
                }
            }
        }
    }
    out.retain(|_, c| now.saturating_duration_since(c.at) <= keep_for);
    out
}

/// Asks the nodes about every live service's volumes (a few services at once); `None` when
/// the services cannot be listed.
pub async fn gather(store: &Store, clients: &Clients) -> Option<Round> {
    let services: Vec<(Uuid, Uuid)> = match sqlx::query_as(
        "SELECT organization_id, id FROM services WHERE volumes <> '[]'::jsonb ORDER BY id",
    )
    .fetch_all(&store.pool)
    .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the services with volumes");
            return None;
        }
    };
    let per_service = futures::stream::iter(services)
        .map(|(org, id)| async move {
            let views = match store.service(org, id).await {
                Ok(service) => crate::volumes::usage(store, clients, &service).await,
                Err(e) => Err(e),
            };
            (org, id, views)
        })
        .buffer_unordered(VOLUME_SERVICES_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
    let mut round = Round::default();
    for (organization_id, service_id, views) in per_service {
        let views = match views {
            Ok(views) => views,
            Err(e) => {
                tracing::warn!(service = %service_id, error = %e, "cannot read the service's volumes");
                round.unread_services.insert(service_id);
                continue;
            }
        };
        for v in views {
            let key = (service_id, v.name.clone());
            let answer = match (v.used_bytes, v.node) {
                (Some(used_bytes), Some(node)) => Answer::Reported(VolumeSample {
                    organization_id,
                    service_id,
                    volume: v.name,
                    node,
                    size_bytes: v.size_bytes,
                    used_bytes,
                }),
                _ if v.error.is_some() => Answer::Unanswered,
                _ => Answer::Unheld,
            };
            round.answers.insert(key, answer);
        }
    }
    Some(round)
}

/// The volume figures of one control process, refreshed in the background; a scrape reads
/// them as they are.
#[derive(Debug)]
pub struct VolumeGauges {
    interval: Duration,
    figures: Mutex<Arc<Figures>>,
}

impl VolumeGauges {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            figures: Mutex::new(Arc::new(Figures::new())),
        }
    }

    /// How long a volume whose node stopped answering keeps its last figures.
    pub fn keep_for(&self) -> Duration {
        self.interval * KEPT_INTERVALS
    }

    fn figures(&self) -> Arc<Figures> {
        self.figures.lock().expect("volume figures lock").clone()
    }

    /// Asks the nodes once and keeps what they said.
    pub async fn refresh(&self, store: &Store, clients: &Clients) {
        let round = gather(store, clients).await;
        let new = merge(
            &self.figures(),
            round.as_ref(),
            Instant::now(),
            self.keep_for(),
        );
        *self.figures.lock().expect("volume figures lock") = Arc::new(new);
    }

    /// Refreshes every interval (from the end of the last refresh) until shutdown.
    pub async fn run(
        self: Arc<Self>,
        store: Store,
        clients: Clients,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            self.refresh(&store, &clients).await;
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// The exposition text of the figures kept now.
    pub fn render(&self) -> String {
        render(&self.figures(), Instant::now(), self.keep_for())
    }
}

/// The exposition text of `figures` as of `now` (those older than `keep_for` left out): bytes
/// used, size limit and the figures' age, per volume and node.
pub fn render(figures: &Figures, now: Instant, keep_for: Duration) -> String {
    type Labels = [(&'static str, String); 4];
    let used = Family::<Labels, Gauge>::default();
    let size = Family::<Labels, Gauge>::default();
    let age = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for c in figures.values() {
        let elapsed = now.saturating_duration_since(c.at);
        if elapsed > keep_for {
            continue;
        }
        let v = &c.sample;
        let l = [
            ("organization", v.organization_id.to_string()),
            ("service", v.service_id.to_string()),
            ("volume", v.volume.clone()),
            ("node", v.node.clone()),
        ];
        used.get_or_create(&l)
            .set(i64::try_from(v.used_bytes).unwrap_or(i64::MAX));
        size.get_or_create(&l)
            .set(i64::try_from(v.size_bytes).unwrap_or(i64::MAX));
        age.get_or_create(&l).set(elapsed.as_secs_f64());
    }
    let mut registry = Registry::default();
    registry.register(
        "stackpad_control_volume_used_bytes",
        "Bytes in use inside the service's volume, as the node holding it last reported",
        used,
    );
    registry.register(
        "stackpad_control_volume_size_bytes",
        "The size limit of the service's volume",
        size,
    );
    registry.register(
        "stackpad_control_volume_sample_age_seconds",
        "Seconds since the node holding the volume last reported it (kept while the node does not answer, for ten refresh intervals)",
        age,
    );
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(service: u128, volume: &str, used: u64) -> VolumeSample {
        VolumeSample {
            organization_id: Uuid::nil(),
            service_id: Uuid::from_u128(service),
            volume: volume.into(),
            node: "compute-1".into(),
            size_bytes: 1 << 30,
            used_bytes: used,
        }
    }

    fn key(service: u128, volume: &str) -> VolumeKey {
        (Uuid::from_u128(service), volume.into())
    }

    fn round(answers: Vec<(VolumeKey, Answer)>) -> Round {
        Round {
            answers: answers.into_iter().collect(),
            unread_services: BTreeSet::new(),
        }
    }

    fn used(figures: &Figures) -> Vec<(VolumeKey, u64)> {
        figures
            .iter()
            .map(|(k, c)| (k.clone(), c.sample.used_bytes))
            .collect()
    }

    #[test]
    fn renders_volumes_by_service_and_node_with_their_age() {
        let t0 = Instant::now();
        let figures: Figures = [(
            key(7, "data"),
            Cached {
                sample: sample(7, "data", 4096),
                at: t0,
            },
        )]
        .into_iter()
        .collect();
        let text = render(
            &figures,
            t0 + Duration::from_millis(2500),
            Duration::from_secs(10),
        );
        let labels = r#"{organization="00000000-0000-0000-0000-000000000000",service="00000000-0000-0000-0000-000000000007",volume="data",node="compute-1"}"#;
        assert!(
            text.contains(&format!(
                "stackpad_control_volume_used_bytes{labels} 4096\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "stackpad_control_volume_size_bytes{labels} 1073741824\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "stackpad_control_volume_sample_age_seconds{labels} 2.5\n"
            )),
            "{text}"
        );
        stackpad_tests::prometheus::assert_conventions(&text);
        // Past the bound: left out, though not merged away yet.
        let text = render(
            &figures,
            t0 + Duration::from_secs(11),
            Duration::from_secs(10),
        );
        assert!(!text.contains("service=\""), "{text}");
    }

    #[test]
    fn an_unanswered_node_keeps_its_volumes_last_figures_until_the_bound() {
        let keep = Duration::from_secs(10);
        let t0 = Instant::now();
        let first = merge(
            &Figures::new(),
            Some(&round(vec![
                (key(1, "data"), Answer::Reported(sample(1, "data", 100))),
                (key(2, "data"), Answer::Reported(sample(2, "data", 200))),
            ])),
            t0,
            keep,
        );
        assert_eq!(used(&first), [(key(1, "data"), 100), (key(2, "data"), 200)]);

        // Service 1's node is silent: its figures stay with their time; service 2 reports.
        let t1 = t0 + Duration::from_secs(4);
        let second = merge(
            &first,
            Some(&round(vec![
                (key(1, "data"), Answer::Unanswered),
                (key(2, "data"), Answer::Reported(sample(2, "data", 250))),
            ])),
            t1,
            keep,
        );
        assert_eq!(
            used(&second),
            [(key(1, "data"), 100), (key(2, "data"), 250)]
        );
        assert_eq!(second[&key(1, "data")].at, t0, "the age goes on");
        assert_eq!(second[&key(2, "data")].at, t1);

        // Still silent past the bound: dropped.
        let third = merge(
            &second,
            Some(&round(vec![
                (key(1, "data"), Answer::Unanswered),
                (key(2, "data"), Answer::Reported(sample(2, "data", 260))),
            ])),
            t0 + Duration::from_secs(11),
            keep,
        );
        assert_eq!(used(&third), [(key(2, "data"), 260)]);
        // An unanswered volume with no figures yet gets none.
        let fourth = merge(
            &third,
            Some(&round(vec![(key(1, "data"), Answer::Unanswered)])),
            t0 + Duration::from_secs(12),
            keep,
        );
        assert!(
            fourth.is_empty(),
            "service 2 is gone from the round: {fourth:?}"
        );
    }

    #[test]
    fn gone_and_unheld_volumes_drop_and_an_unreadable_store_keeps_everything() {
        let keep = Duration::from_secs(10);
        let t0 = Instant::now();
        let figures = merge(
            &Figures::new(),
            Some(&round(vec![
                (key(1, "data"), Answer::Reported(sample(1, "data", 100))),
                (key(1, "cache"), Answer::Reported(sample(1, "cache", 10))),
                (key(2, "data"), Answer::Reported(sample(2, "data", 200))),
                (key(3, "data"), Answer::Reported(sample(3, "data", 300))),
            ])),
            t0,
            keep,
        );
        let t1 = t0 + Duration::from_secs(1);
        // The services could not be listed: everything stays as it was.
        assert_eq!(merge(&figures, None, t1, keep), figures);
        // Service 1's `cache` removed, service 2 deleted, service 3 no longer held by a node,
        // service 4 unreadable this round (kept, though absent from the answers).
        let mut r = round(vec![
            (key(1, "data"), Answer::Reported(sample(1, "data", 110))),
            (key(3, "data"), Answer::Unheld),
        ]);
        r.unread_services.insert(Uuid::from_u128(4));
        let mut with_4 = figures.clone();
        with_4.insert(
            key(4, "data"),
            Cached {
                sample: sample(4, "data", 400),
                at: t0,
            },
        );
        let after = merge(&with_4, Some(&r), t1, keep);
        assert_eq!(used(&after), [(key(1, "data"), 110), (key(4, "data"), 400)]);
    }
}
