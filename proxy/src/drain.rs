//! Graceful shutdown and upgrade of the downstream side.
//!
//! Pingora, on SIGTERM (shutdown) or SIGQUIT (upgrade, after handing the listening sockets to
//! the new process), stops accepting, sends h2 connections a GOAWAY, and turns keep-alive off
//! for HTTP/1 requests whose head it reads from then on; it then sleeps the whole grace period
//! and cuts whatever is left. [`GracefulApp`] wraps the proxy application to finish the job:
//!
//! - every response from the start of the drain carries `Connection: close` (the proxy's
//!   filters ask [`Drain::is_draining`]), so a request already in flight on a keep-alive
//!   connection is answered and that connection ends there;
//! - idle connections are closed once `idle_close` has passed (ours, the connections waiting
//!   for a request's first bytes in [`crate::keepalive`], then Pingora's own wake-up of
//!   requests whose head is being read): a request already on its way when the drain starts
//!   is still answered;
//! - once no connection is left, `on_drained` runs (the daemon exits), instead of sleeping out
//!   the grace period, which stays the upper bound.
//!
//! Each connection is served on a task of its own, spawned here: Pingora's task per
//! connection keeps its TLS-handshake future's space (~8.7 KiB) for the connection's whole
//! life, which would be most of what an idle keep-alive connection costs (bench/proxy's idle
//! step); ours is sized for our small futures only.
//!
//! The same [`Notify`] that closes idle connections also wakes them on the idle ticks
//! ([`Drain::start_idle_ticks`]): a connection waiting for a request checks its own idle time
//! then, so no connection holds a timer of its own (a tokio `Sleep` is ~100 bytes in every idle
//! connection, and registering and cancelling it was a timer-wheel update per request).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// The drain state shared by the application wrapper and the proxy's filters.
#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
    idle_closed: AtomicBool,
    /// Woken when idle connections are to be closed, and on every idle tick.
    idle: Notify,
    ticking: AtomicBool,
    /// Idle ticks so far: a waiting connection counts its idle time in them.
    ticks: AtomicU32,
    open: AtomicUsize,
    empty: Notify,
}

impl Drain {
    /// True from the start of a shutdown or upgrade: responses close their connection.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Downstream connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn connection(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenConnection(Arc::clone(self))
    }

    fn close_idle(&self) {
        self.idle_closed.store(true, Ordering::Release);
        self.idle.notify_waiters();
    }

    /// True once idle connections are to be closed.
    pub(crate) fn idle_closed(&self) -> bool {
        self.idle_closed.load(Ordering::Acquire)
    }

    /// Resolves when idle connections are to be closed or on the next idle tick, whichever
    /// comes first; `enable` it before checking [`Self::idle_closed`] and the connection's
    /// idle time, so no wake-up is missed in between.
    pub(crate) fn idle_wakeup(&self) -> Notified<'_> {
        self.idle.notified()
    }

    /// Wakes the connections waiting on [`Self::idle_wakeup`] every `period` from now on (the
    /// first call starts it, on the current tokio runtime; later calls do nothing). An idle
    /// timeout checked on these ticks ends between the timeout and the timeout plus `period`.
    pub(crate) fn start_idle_ticks(self: &Arc<Self>, period: Duration) {
        if self.ticking.load(Ordering::Relaxed) || self.ticking.swap(true, Ordering::AcqRel) {
            return;
        }
        let drain = Arc::downgrade(self);
        tokio::spawn(async move {
            // The first tick one period from now (not at once): a tick counted is a period
            // passed.
            let start = tokio::time::Instant::now() + period;
            let mut ticks = tokio::time::interval_at(start, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(drain) = drain.upgrade() else {
                    return;
                };
                drain.ticks.fetch_add(1, Ordering::Release);
                drain.idle.notify_waiters();
            }
        });
    }

    /// The idle ticks so far (wrapping): a connection that saw `n` and sees `n + k` later has
    /// waited more than `k - 1` periods (about `k`, more when the ticker runs late).
    pub(crate) fn idle_ticks(&self) -> u32 {
        self.ticks.load(Ordering::Acquire)
    }

    /// Resolves once no connection is open.
    async fn empty(&self) {
        wait_until(&self.empty, || self.open.load(Ordering::Acquire) == 0).await;
    }
}

/// Waits for `done` to hold; `notify` is woken (notify_waiters) each time it may have become
/// true. The waiter is registered before the check so no wake-up is missed.
async fn wait_until(notify: &Notify, done: impl Fn() -> bool) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return;
        }
        notified.await;
    }
}

/// Counts one downstream connection while it is held.
struct OpenConnection(Arc<Drain>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.empty.notify_waiters();
        }
    }
}

/// Runs once the drain has ended: no connection is left.
pub type OnDrained = Box<dyn Fn() + Send + Sync>;

/// Wraps a Pingora application (the proxy) with the drain described in the module docs.
pub struct GracefulApp<A> {
    inner: Arc<A>,
    drain: Arc<Drain>,
    idle_close: Duration,
    on_drained: OnDrained,
}

impl<A> std::fmt::Debug for GracefulApp<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GracefulApp")
            .field("drain", &self.drain)
            .field("idle_close", &self.idle_close)
            .finish_non_exhaustive()
    }
}

impl<A: ServerApp + Send + Sync + 'static> GracefulApp<A> {
    /// The task serving one connection, counted as open while it runs.
    fn connection_task(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> impl Future<Output = ()> + Send + 'static {
        let open = self.drain.connection();
        let app = Arc::clone(self);
        let shutdown = shutdown.clone();
        async move {
            let _open = open;
            app.serve(stream, &shutdown).await;
        }
    }

    /// Serves one connection until it ends, as Pingora's task would. (A new connection waits
    /// for its first bytes in [`crate::keepalive`], where the drain closes it when idle.)
    async fn serve(&self, stream: Stream, shutdown: &ShutdownWatch) {
        let mut next = self.inner.process_new(stream, shutdown).await;
        while let Some(stream) = next {
            next = self.inner.process_new(stream, shutdown).await;
        }
    }
}

impl<A: ServerApp + Send + Sync + 'static> GracefulApp<A> {
    /// The size of a connection's task future (for the test keeping it small).
    #[cfg(test)]
    pub(crate) fn task_size(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> usize {
        std::mem::size_of_val(&self.connection_task(stream, shutdown))
    }
}

impl<A> GracefulApp<A> {
    pub fn new(inner: A, drain: Arc<Drain>, idle_close: Duration, on_drained: OnDrained) -> Self {
        Self {
            inner: Arc::new(inner),
            drain,
            idle_close,
            on_drained,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for GracefulApp<A> {
    /// Moves the connection to a task of its own (see the module docs), so Pingora's ends.
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        tokio::spawn(self.connection_task(stream, shutdown));
        None
    }

    /// Called by Pingora once the listeners stopped accepting (shutdown or upgrade).
    async fn cleanup(&self) {
        self.drain.draining.store(true, Ordering::Relaxed);
        tracing::info!(
            connections = self.drain.open_connections(),
            "draining: responses close their connection"
        );
        tokio::time::sleep(self.idle_close).await;
        self.drain.close_idle();
        // Wakes the keep-alive connections Pingora holds waiting for a request: they close.
        self.inner.cleanup().await;
        self.drain.empty().await;
        tracing::info!("drained: no connection left");
        (self.on_drained)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn empty_resolves_when_the_last_connection_ends() {
        let drain = Arc::new(Drain::default());
        drain.empty().await;
        let a = drain.connection();
        let b = drain.connection();
        assert_eq!(drain.open_connections(), 2);
        let waiter = async {
            drain.empty().await;
            drain.open_connections()
        };
        let closer = async {
            tokio::task::yield_now().await;
            drop(a);
            tokio::task::yield_now().await;
            drop(b);
        };
        let (left, ()) = tokio::join!(waiter, closer);
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn idle_close_wakes_waiters() {
        let drain = Drain::default();
        assert!(!drain.is_draining());
        let waiter = async {
            let wakeup = drain.idle_wakeup();
            tokio::pin!(wakeup);
            wakeup.as_mut().enable();
            assert!(!drain.idle_closed());
            wakeup.await;
            drain.idle_closed()
        };
        let closer = async {
            tokio::task::yield_now().await;
            drain.close_idle();
        };
        let (closed, ()) = tokio::join!(waiter, closer);
        assert!(closed);
    }

    #[tokio::test]
    async fn idle_ticks_wake_waiters() {
        let drain = Arc::new(Drain::default());
        drain.start_idle_ticks(Duration::from_millis(10));
        drain.start_idle_ticks(Duration::from_millis(10));
        for _ in 0..3 {
            let wakeup = drain.idle_wakeup();
            tokio::time::timeout(Duration::from_secs(5), wakeup)
                .await
                .expect("no idle tick");
        }
        assert!(drain.idle_ticks() >= 3, "each tick is counted");
        assert!(!drain.idle_closed(), "a tick is not a close");
    }
}
