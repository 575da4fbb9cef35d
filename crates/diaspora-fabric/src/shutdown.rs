//! [`Stop`]: the one way a long-running loop of any service is told to
//! finish. A command wires it to SIGTERM and Ctrl-C; a test or an embedding
//! program calls [`Stop::trigger`] itself. Loops check [`Stop::stopped`]
//! between steps, or wait on [`Stop::wait`] / [`Stop::sleep`], and then
//! finish cleanly (output flushed, offsets committed, buffers drained)
//! instead of dying mid-write.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A shared "please finish" flag that loops can also wait on.
#[derive(Debug, Default)]
pub struct Stop {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Stop {
    /// A flag not yet set.
    pub fn new() -> Arc<Stop> {
        Arc::new(Stop::default())
    }

    /// A flag set when `signal` completes (a task awaits it). Call from
    /// inside a tokio runtime.
    pub fn when<F>(signal: F) -> Arc<Stop>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = Stop::new();
        let s = stop.clone();
        tokio::spawn(async move {
            signal.await;
            s.trigger();
        });
        stop
    }

    /// Sets the flag and wakes every waiter.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether the flag is set.
    pub fn stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Completes once the flag is set (at once if it is already).
    pub async fn wait(&self) {
        loop {
            let woken = self.notify.notified();
            tokio::pin!(woken);
            // Registered before the check, so a trigger in between is not missed.
            woken.as_mut().enable();
            if self.stopped() {
                return;
            }
            woken.await;
        }
    }

    /// Waits up to `d`, or until the flag is set.
    pub async fn sleep(&self, d: Duration) {
        let _ = tokio::time::timeout(d, self.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trigger_wakes_a_waiter_and_later_waits_return_at_once() {
        let stop = Stop::new();
        assert!(!stop.stopped());
        let s = stop.clone();
        let waiter = tokio::spawn(async move { s.wait().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a wait returned before the trigger");
        stop.trigger();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter was woken")
            .unwrap();
        assert!(stop.stopped());
        tokio::time::timeout(Duration::from_millis(100), stop.wait())
            .await
            .expect("a wait after the trigger returns at once");
    }

    #[tokio::test]
    async fn sleep_ends_early_on_a_trigger_and_otherwise_at_its_time() {
        let stop = Stop::new();
        let t = std::time::Instant::now();
        stop.sleep(Duration::from_millis(50)).await;
        assert!(t.elapsed() >= Duration::from_millis(50));
        let stopped = Stop::when(async {});
        let t = std::time::Instant::now();
        stopped.sleep(Duration::from_secs(30)).await;
        assert!(stopped.stopped());
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
