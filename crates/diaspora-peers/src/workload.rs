//! The workload every system runs, and the loop that drives it.
//!
//! - **Payloads** ([`Stamper`]): a fixed pseudo-random body (the fabric
//!   benchmark's [`synthetic_payload`]), whose first 16 bytes carry the
//!   item's sequence number and its send time (µs since the run's
//!   [`Clock`] started), little-endian u64 each.
//! - **The producer** ([`drive`]): one task sends the items in order; each
//!   send gives an acknowledgement future; at most `window` of them are
//!   outstanding (the oldest is awaited before the next send). With a rate,
//!   item *i* is sent no earlier than *i / rate* seconds after the start.
//! - **The consumer** ([`Receiver`]): each system's read loop hands every
//!   payload to a receiver, which checks its length and that the sequence
//!   numbers arrive in order, each once, and records the send → receive
//!   latency (paced runs only, after a warm-up). The run ends when the
//!   last item is received; items/s is items ÷ (last receive − first send).
//! - **A watchdog** fails the run when neither an acknowledgement nor an
//!   item arrives for the stall timeout.
//!
//! Only [`Receiver`], [`Stamper`] and the schedule are pure; the drive
//! loop is the shell around them that every system's module shares.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use diaspora_fabric::bench::synthetic_payload;
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;

use crate::config::HEADER_BYTES;

/// One run: one stream of items through one system.
#[derive(Debug, Clone)]
pub(crate) struct RunSpec {
    /// Stream, topic or key name.
    pub stream: String,
    /// Payload bytes per item.
    pub size: usize,
    /// Items.
    pub items: u64,
    /// Items/s to send at; `None`: as fast as the window allows.
    pub rate: Option<f64>,
    /// Most unacknowledged items.
    pub window: usize,
    /// Most items a consumer asks for at once.
    pub fetch_items: usize,
    /// Warm-up left out of the latency percentiles (paced runs).
    pub warmup: Duration,
    /// No acknowledgement and no item for this long fails the run.
    pub stall_timeout: Duration,
}

impl RunSpec {
    /// Latency is recorded in paced runs only.
    fn records_latency(&self) -> bool {
        self.rate.is_some()
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub(crate) struct RunResult {
    /// First send → last receive.
    pub elapsed: Duration,
    /// Latency percentiles (paced runs).
    pub latency: Option<Latency>,
    /// Most the producer fell behind its schedule (paced runs), ms.
    pub schedule_lag_ms_max: f64,
}

/// Send → receive latency percentiles of a run, µs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Items the percentiles are over (the rest were warm-up).
    pub samples: u64,
}

/// The run's time base: µs since it started (monotonic; producer and
/// consumer are in this process).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    pub fn at_us(&self, us: u64) -> Instant {
        self.epoch + Duration::from_micros(us)
    }
}

/// When item `seq` is due at `rate` items/s, µs after the start.
pub(crate) fn due_us(seq: u64, rate: f64) -> u64 {
    (seq as f64 * 1e6 / rate) as u64
}

/// Builds payloads: the body once, a header per item.
pub(crate) struct Stamper {
    body: Bytes,
}

impl Stamper {
    pub fn new(size: usize) -> Stamper {
        assert!(
            size >= HEADER_BYTES,
            "payload of {size} B has no room for its header"
        );
        Stamper {
            body: synthetic_payload(size),
        }
    }

    /// Item `seq`'s payload, stamped `stamp_us`.
    pub fn payload(&self, seq: u64, stamp_us: u64) -> Bytes {
        let mut b = BytesMut::with_capacity(self.body.len());
        b.put_u64_le(seq);
        b.put_u64_le(stamp_us);
        b.extend_from_slice(&self.body[HEADER_BYTES..]);
        b.freeze()
    }
}

/// A payload's sequence number and stamp.
pub(crate) fn read_header(payload: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    let stamp = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((seq, stamp))
}

/// What the consumer side found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReceiveError {
    #[error("item {seq}: payload of {got} B, expected {expected} B")]
    Size {
        seq: u64,
        got: usize,
        expected: usize,
    },
    #[error("expected item {expected}, received item {got} (lost, duplicated or reordered)")]
    Order { expected: u64, got: u64 },
    #[error("received item {got} after all {items} items")]
    Extra { got: u64, items: u64 },
}

/// The consumer side of a run: checks and counts what arrives. Pure but
/// for the shared progress counter the watchdog reads.
pub(crate) struct Receiver {
    size: usize,
    items: u64,
    next_seq: u64,
    warmup_us: u64,
    hist: Option<hdrhistogram::Histogram<u64>>,
    finished_at: Option<Instant>,
    progress: Arc<AtomicU64>,
}

/// Latencies above this are clamped (10 minutes, µs).
const LATENCY_US_MAX: u64 = 600_000_000;

impl Receiver {
    pub fn new(spec: &RunSpec, progress: Arc<AtomicU64>) -> Receiver {
        Receiver {
            size: spec.size,
            items: spec.items,
            next_seq: 0,
            warmup_us: spec.warmup.as_micros() as u64,
            hist: spec.records_latency().then(|| {
                hdrhistogram::Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                    .expect("static histogram bounds")
            }),
            finished_at: None,
            progress,
        }
    }

    /// Takes one payload received at `now_us`; true once every item is in.
    pub fn on_payload(&mut self, payload: &[u8], now_us: u64) -> Result<bool, ReceiveError> {
        let (seq, stamp) = read_header(payload).unwrap_or((u64::MAX, 0));
        if payload.len() != self.size {
            return Err(ReceiveError::Size {
                seq,
                got: payload.len(),
                expected: self.size,
            });
        }
        if self.next_seq >= self.items {
            return Err(ReceiveError::Extra {
                got: seq,
                items: self.items,
            });
        }
        if seq != self.next_seq {
            return Err(ReceiveError::Order {
                expected: self.next_seq,
                got: seq,
            });
        }
        self.next_seq += 1;
        self.progress.fetch_add(1, Ordering::Relaxed);
        // Warm-up: the first `warmup` of sending, but never more than
        // half the items.
        let warm = stamp >= self.warmup_us || seq >= self.items / 2;
        if let (Some(h), true) = (self.hist.as_mut(), warm) {
            let _ = h.record(now_us.saturating_sub(stamp).clamp(1, LATENCY_US_MAX));
        }
        let done = self.next_seq == self.items;
        if done {
            self.finished_at = Some(Instant::now());
        }
        Ok(done)
    }

    /// Whether every item is in.
    pub fn done(&self) -> bool {
        self.next_seq == self.items
    }

    fn latency(&self) -> Option<Latency> {
        self.hist.as_ref().map(|h| Latency {
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            samples: h.len(),
        })
    }
}

/// Aborts a spawned task when dropped (a run that fails leaves no reader behind).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `spec`: spawns the consumer (`consume`, given the receiver to feed
/// and the clock), then sends every item with `send`, which hands the
/// payload to the client and returns the acknowledgement's future. A
/// client that sends a request only when its future is polled (redis-rs)
/// is served too: the outstanding futures are polled after every send.
pub(crate) async fn drive<S, SF, A, C, CF>(
    system: &str,
    spec: &RunSpec,
    mut send: S,
    consume: C,
) -> Result<RunResult>
where
    S: FnMut(Bytes) -> SF,
    SF: Future<Output = Result<A>>,
    A: Future<Output = Result<()>>,
    C: FnOnce(Receiver, Clock) -> CF,
    CF: Future<Output = Result<Receiver>> + Send + 'static,
{
    let received = Arc::new(AtomicU64::new(0));
    let acked = AtomicU64::new(0);
    let clock = Clock::start();
    let mut consumer = AbortOnDrop(tokio::spawn(consume(
        Receiver::new(spec, received.clone()),
        clock,
    )));
    let mut lag_us_max = 0u64;

    let produce = async {
        let stamper = Stamper::new(spec.size);
        let mut acks = FuturesOrdered::new();
        for seq in 0..spec.items {
            if let Some(rate) = spec.rate {
                let due = due_us(seq, rate);
                let now = clock.now_us();
                if due > now {
                    tokio::time::sleep_until(clock.at_us(due).into()).await;
                } else {
                    lag_us_max = lag_us_max.max(now - due);
                }
            }
            let ack = send(stamper.payload(seq, clock.now_us()))
                .await
                .with_context(|| format!("sending item {seq}"))?;
            acks.push_back(ack);
            while let Some(Some(r)) = acks.next().now_or_never() {
                r.context("acknowledgement")?;
                acked.fetch_add(1, Ordering::Relaxed);
            }
            while acks.len() >= spec.window {
                if let Some(r) = acks.next().await {
                    r.context("acknowledgement")?;
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        while let Some(r) = acks.next().await {
            r.context("acknowledgement")?;
            acked.fetch_add(1, Ordering::Relaxed);
        }
        anyhow::Ok(())
    };
    let receive = async {
        (&mut consumer.0)
            .await
            .context("consumer task")?
            .context("consumer")
    };
    let watchdog = async {
        let mut last = (u64::MAX, u64::MAX);
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = (
                acked.load(Ordering::Relaxed),
                received.load(Ordering::Relaxed),
            );
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= spec.stall_timeout {
                return anyhow::anyhow!(
                    "{system}: no progress for {:?}: {} of {} items acknowledged, {} received",
                    spec.stall_timeout,
                    now.0,
                    spec.items,
                    now.1
                );
            }
        }
    };
    let receiver = tokio::select! {
        r = async { tokio::try_join!(produce, receive) } => r?.1,
        e = watchdog => return Err(e),
    };
    anyhow::ensure!(receiver.done(), "{system}: the consumer ended early");
    let finished_at = receiver.finished_at.expect("a done receiver has finished");
    Ok(RunResult {
        elapsed: finished_at.duration_since(clock.epoch),
        latency: receiver.latency(),
        schedule_lag_ms_max: lag_us_max as f64 / 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(items: u64, rate: Option<f64>) -> RunSpec {
        RunSpec {
            stream: "s".into(),
            size: 64,
            items,
            rate,
            window: 4,
            fetch_items: 8,
            warmup: Duration::from_millis(1),
            stall_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn payloads_carry_sequence_and_stamp() {
        let s = Stamper::new(64);
        let p = s.payload(7, 1234);
        assert_eq!(p.len(), 64);
        assert_eq!(read_header(&p), Some((7, 1234)));
        // The body is the same for every item.
        assert_eq!(s.payload(8, 0)[16..], p[16..]);
        assert_eq!(read_header(&p[..10]), None);
    }

    #[test]
    fn the_schedule_spreads_items_evenly() {
        assert_eq!(due_us(0, 1000.0), 0);
        assert_eq!(due_us(1, 1000.0), 1000);
        assert_eq!(due_us(500, 1000.0), 500_000);
        assert_eq!(due_us(3, 2e6), 1);
    }

    #[test]
    fn the_receiver_checks_order_size_and_count() {
        let s = Stamper::new(64);
        let mut r = Receiver::new(&spec(2, None), Arc::default());
        assert_eq!(r.on_payload(&s.payload(0, 0), 5), Ok(false));
        assert_eq!(
            r.on_payload(&s.payload(0, 0), 5),
            Err(ReceiveError::Order {
                expected: 1,
                got: 0
            })
        );
        assert_eq!(
            r.on_payload(&s.payload(1, 0)[..63], 5),
            Err(ReceiveError::Size {
                seq: 1,
                got: 63,
                expected: 64
            })
        );
        assert_eq!(r.on_payload(&s.payload(1, 0), 5), Ok(true));
        assert!(r.done());
        assert_eq!(
            r.on_payload(&s.payload(2, 0), 5),
            Err(ReceiveError::Extra { got: 2, items: 2 })
        );
        assert_eq!(r.progress.load(Ordering::Relaxed), 2);
        // No latency outside paced runs.
        assert!(r.latency().is_none());
    }

    #[test]
    fn latency_leaves_out_the_warm_up_but_at_most_half() {
        let s = Stamper::new(64);
        // Warm-up 1 ms: items stamped before 1000 µs are left out...
        let mut r = Receiver::new(&spec(4, Some(1.0)), Arc::default());
        r.on_payload(&s.payload(0, 10), 110).unwrap();
        r.on_payload(&s.payload(1, 2000), 2300).unwrap();
        r.on_payload(&s.payload(2, 3000), 3300).unwrap();
        r.on_payload(&s.payload(3, 4000), 4300).unwrap();
        let l = r.latency().unwrap();
        assert_eq!(l.samples, 3);
        assert_eq!(l.p50_us, 300);
        // ...unless they are more than half of the run.
        let mut r = Receiver::new(&spec(4, Some(1.0)), Arc::default());
        for seq in 0..4 {
            r.on_payload(&s.payload(seq, 0), 50).unwrap();
        }
        assert_eq!(r.latency().unwrap().samples, 2);
    }

    #[tokio::test]
    async fn drive_sends_everything_within_the_window() {
        // A loopback "system": sends go to a channel, each acknowledged at once.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let outstanding = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let spec = spec(100, None);
        let r = drive(
            "loop",
            &spec,
            |p| {
                let n = outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                tx.send(p).unwrap();
                let outstanding = outstanding.clone();
                async move {
                    Ok(async move {
                        tokio::task::yield_now().await;
                        outstanding.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    })
                }
            },
            |mut receiver, clock| async move {
                while let Some(p) = rx.recv().await {
                    if receiver.on_payload(&p, clock.now_us())? {
                        break;
                    }
                }
                Ok(receiver)
            },
        )
        .await
        .unwrap();
        assert!(r.elapsed > Duration::ZERO);
        assert!(r.latency.is_none());
        assert!(most.load(Ordering::SeqCst) <= spec.window as u64);
    }

    #[tokio::test]
    async fn a_stalled_consumer_fails_the_run() {
        let mut spec = spec(3, None);
        spec.stall_timeout = Duration::from_millis(300);
        let e = drive(
            "stuck",
            &spec,
            |_p| async { Ok(async { Ok(()) }) },
            |receiver, _clock| async move {
                std::future::pending::<()>().await;
                Ok(receiver)
            },
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("no progress"), "{e}");
        assert!(
            e.to_string()
                .contains("3 of 3 items acknowledged, 0 received"),
            "{e}"
        );
    }
}
