//! Periodic jobs run by one control instance at a time (#15 item 9). Several `stackpad-control`
//! processes share one PostgreSQL: the pipeline's deployments are claimed with `SKIP LOCKED`
//! under a lease each (see [`super::worker`]); a periodic job (node monitor, domain checks, log
//! retention, backup scheduler) runs where its lease ([`crate::store::JobLease`]) is held.
//! [`run_singleton`] tries to take the lease every third of its length; once held, it starts
//! the job and renews the lease at the same pace; when the lease is lost (another instance took
//! it after this one stalled) or cannot be renewed before it would expire, the job is told to
//! stop and awaited. A dead instance's jobs move once its leases expire; a clean shutdown gives
//! them up at once.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

/// What [`run_singleton`] needs of the store: the job leases (PostgreSQL's `Store`; a fake in
/// unit tests).
pub trait JobLeases: Clone + Send + Sync + 'static {
    fn take(
        &self,
        job: &str,
        owner: Uuid,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, crate::store::StoreError>> + Send;
    fn release(
        &self,
        job: &str,
        owner: Uuid,
    ) -> impl Future<Output = Result<(), crate::store::StoreError>> + Send;
}

impl JobLeases for crate::store::Store {
    async fn take(
        &self,
        job: &str,
        owner: Uuid,
        ttl: Duration,
    ) -> Result<bool, crate::store::StoreError> {
        self.take_job_lease(job, owner, ttl).await
    }

    async fn release(&self, job: &str, owner: Uuid) -> Result<(), crate::store::StoreError> {
        self.release_job_lease(job, owner).await
    }
}

/// Runs the job `start` makes (given the receiver it must stop on) while instance `owner`
/// holds the lease `job`, until `shutdown`. A job that ends by itself is started again at the
/// next hold.
pub async fn run_singleton<L, F, Fut>(
    leases: L,
    job: &'static str,
    owner: Uuid,
    ttl: Duration,
    mut shutdown: watch::Receiver<bool>,
    start: F,
) where
    L: JobLeases,
    F: Fn(watch::Receiver<bool>) -> Fut + Send,
    Fut: Future<Output = ()> + Send,
{
    let pace = ttl / 3;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match leases.take(job, owner, ttl).await {
            Ok(true) => {
                tracing::info!(job, instance = %owner, "job lease taken: the job runs here");
                let (stop, stop_rx) = watch::channel(false);
                let running = start(stop_rx);
                tokio::pin!(running);
                // Until when the lease is surely ours (measured from before the renewal asked).
                let mut held_until = Instant::now() + ttl;
                let ended_by_shutdown = loop {
                    tokio::select! {
                        () = &mut running => break false,
                        () = tokio::time::sleep(pace) => {
                            let asked = Instant::now();
                            match leases.take(job, owner, ttl).await {
                                Ok(true) => held_until = asked + ttl,
                                Ok(false) => {
                                    tracing::warn!(job, instance = %owner, "job lease lost to another instance: stopping the job here");
                                    let _ = stop.send(true);
                                    running.as_mut().await;
                                    break false;
                                }
                                Err(e) => {
                                    tracing::warn!(job, error = %e, "renewing the job lease failed");
                                    // Another instance may take it once it expires: stop first.
                                    if Instant::now() + pace >= held_until {
                                        let _ = stop.send(true);
                                        running.as_mut().await;
                                        break false;
                                    }
                                }
                            }
                        }
                        _ = shutdown.changed() => {
                            let _ = stop.send(true);
                            running.as_mut().await;
                            break true;
                        }
                    }
                };
                if ended_by_shutdown {
                    if let Err(e) = leases.release(job, owner).await {
                        tracing::warn!(job, error = %e, "giving the job lease up failed");
                    }
                    return;
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(job, error = %e, "taking the job lease failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(pace) => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Leases in memory with the store's rule (free, expired or one's own), on tokio's clock.
    #[derive(Clone, Default)]
    struct Fake {
        held: Arc<Mutex<HashMap<String, (Uuid, Instant)>>>,
    }

    impl JobLeases for Fake {
        async fn take(
            &self,
            job: &str,
            owner: Uuid,
            ttl: Duration,
        ) -> Result<bool, crate::store::StoreError> {
            let mut held = self.held.lock().unwrap();
            let now = Instant::now();
            match held.get(job) {
                Some((o, until)) if *o != owner && *until > now => Ok(false),
                _ => {
                    held.insert(job.to_owned(), (owner, now + ttl));
                    Ok(true)
                }
            }
        }

        async fn release(&self, job: &str, owner: Uuid) -> Result<(), crate::store::StoreError> {
            let mut held = self.held.lock().unwrap();
            if held.get(job).is_some_and(|(o, _)| *o == owner) {
                held.remove(job);
            }
            Ok(())
        }
    }

    /// A job that counts its ticks until told to stop.
    fn ticking(
        ticks: Arc<AtomicU32>,
    ) -> impl Fn(watch::Receiver<bool>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send
    {
        move |mut stop: watch::Receiver<bool>| {
            let ticks = ticks.clone();
            Box::pin(async move {
                loop {
                    ticks.fetch_add(1, Ordering::SeqCst);
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_instance_runs_the_job_and_the_other_takes_it_when_the_first_is_gone() {
        let leases = Fake::default();
        let ttl = Duration::from_millis(900);
        let (a_ticks, b_ticks) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (a_stop, a_rx) = watch::channel(false);
        let (_b_stop, b_rx) = watch::channel(false);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let a_task = tokio::spawn(run_singleton(
            leases.clone(),
            "monitor",
            a,
            ttl,
            a_rx,
            ticking(a_ticks.clone()),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let b_task = tokio::spawn(run_singleton(
            leases.clone(),
            "monitor",
            b,
            ttl,
            b_rx,
            ticking(b_ticks.clone()),
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(a_ticks.load(Ordering::SeqCst) >= 40);
        assert_eq!(b_ticks.load(Ordering::SeqCst), 0, "both ran the job");

        // A dies (its task is gone, its lease stays until it expires): B takes over within
        // the lease's length and a try.
        a_task.abort();
        let _ = a_task.await;
        drop(a_stop);
        let before = a_ticks.load(Ordering::SeqCst);
        tokio::time::sleep(ttl + ttl / 3 + Duration::from_millis(50)).await;
        assert!(b_ticks.load(Ordering::SeqCst) > 0, "B never took the job");
        assert_eq!(a_ticks.load(Ordering::SeqCst), before);
        b_task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_shutdown_stops_the_job_and_gives_the_lease_up() {
        let leases = Fake::default();
        let ttl = Duration::from_secs(30);
        let ticks = Arc::new(AtomicU32::new(0));
        let (stop, rx) = watch::channel(false);
        let a = Uuid::new_v4();
        let task = tokio::spawn(run_singleton(
            leases.clone(),
            "monitor",
            a,
            ttl,
            rx,
            ticking(ticks.clone()),
        ));
        tokio::time::sleep(Duration::from_millis(350)).await;
        stop.send(true).unwrap();
        task.await.unwrap();
        assert!(leases.held.lock().unwrap().is_empty(), "the lease was kept");
        // Another instance takes it at once, long before the 30 s expiry.
        assert!(leases.take("monitor", Uuid::new_v4(), ttl).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_taken_by_another_stops_the_job_here() {
        let leases = Fake::default();
        let ttl = Duration::from_millis(900);
        let ticks = Arc::new(AtomicU32::new(0));
        let (_stop, rx) = watch::channel(false);
        let a = Uuid::new_v4();
        let task = tokio::spawn(run_singleton(
            leases.clone(),
            "monitor",
            a,
            ttl,
            rx,
            ticking(ticks.clone()),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A stalled past its lease: another instance holds it now.
        let other = Uuid::new_v4();
        leases.held.lock().unwrap().insert(
            "monitor".into(),
            (other, Instant::now() + Duration::from_secs(60)),
        );
        tokio::time::sleep(ttl).await;
        let after = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            after,
            "the job still runs here"
        );
        task.abort();
    }
}
