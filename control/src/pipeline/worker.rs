//! Pipeline workers: claim deployments from the queue and drive them, until shut down.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::driver::Driver;
use super::queue::DeploymentQueue;

/// Runs one worker: claims the oldest claimable deployment, drives it, repeats. Sleeps until
/// `wake` is notified (a deployment was queued in this process) or `poll` passed.
pub async fn run_worker<Q: DeploymentQueue>(
    driver: Driver<Q>,
    wake: Arc<Notify>,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        match driver.queue.claim(driver.owner, driver.config.lease).await {
            Ok(Some(d)) => {
                let id = d.id;
                tokio::select! {
                    result = driver.drive(d) => match result {
                        Ok(phase) => tracing::info!(deployment = %id, phase = phase.as_str(), "deployment finished"),
                        Err(e) => tracing::error!(deployment = %id, error = %e, "driving the deployment stopped"),
                    },
                    _ = shutdown.changed() => {
                        // Hand it back: another worker (or the next start) resumes it.
                        let _ = driver.queue.release(id, driver.owner).await;
                        return;
                    }
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "claiming a deployment failed"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.changed() => {}
        }
    }
}
