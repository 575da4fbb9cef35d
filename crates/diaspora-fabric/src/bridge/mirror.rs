//! The bridge loop, over any [`BridgeSource`] and [`BridgeSink`]: one task
//! per partition reads whole batches from the source, turns each into one
//! sink batch with a stable [`BatchId`], fetches again while fewer than
//! `in_flight_max` are unacknowledged, moves its position only on
//! acknowledgements (oldest first), commits that position on a timer and
//! when stopping, and reconnects either side with a bounded backoff.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::contract::{Acked, BatchId, BridgeError, BridgeSink, BridgeSource, Fetched, Pending};
use super::BridgeStats;
use crate::error::FabricError;
use crate::item::ConsumedItem;

/// First pause after a failed connection; it doubles up to
/// [`MirrorConfig::retry_backoff_max`] and resets on the next success.
const BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Settings of the loop, whatever the two sides are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// The loop fetches again while fewer sink batches than this are
    /// unacknowledged (1 ..= the sink's [`BridgeSink::DUPLICATE_WINDOW`]).
    /// One fetch may add more: its batches, at most the source's fetch size,
    /// are sent together.
    pub in_flight_max: usize,
    /// Commit the position at most this often.
    pub commit_interval: Duration,
    /// Longest pause between reconnection attempts.
    pub retry_backoff_max: Duration,
}

impl MirrorConfig {
    /// Checks `in_flight_max`: at least 1 (the loop would never fetch), at
    /// most the sink's [`BridgeSink::DUPLICATE_WINDOW`].
    pub fn check<K: BridgeSink>(&self) -> Result<(), FabricError> {
        if self.in_flight_max == 0 || self.in_flight_max > K::DUPLICATE_WINDOW {
            return Err(FabricError::Limit {
                what: "bridge in-flight batches".into(),
                value: self.in_flight_max as u64,
                unit: "",
                limit_name: "the sink's duplicate window",
                limit: K::DUPLICATE_WINDOW as u64,
            });
        }
        Ok(())
    }
}

/// One partition to mirror: its source, its sink and the producer id its
/// sink batches carry (stable across restarts of the bridge).
pub struct MirrorPartition<S, K> {
    /// Where the partition's batches come from.
    pub source: S,
    /// Where they go.
    pub sink: K,
    /// The [`BatchId::producer_id`] of every batch of this partition.
    pub producer_id: u64,
}

struct InFlight<B> {
    batch: B,
    /// Source offset after the batch's last item.
    end: u64,
    items: u64,
    /// `None` until the batch was written on the sink's current connection.
    answer: Option<Pending<Acked>>,
}

/// The loop of one partition.
pub(super) struct Mirror<S: BridgeSource, K: BridgeSink> {
    source: S,
    sink: K,
    config: MirrorConfig,
    partition: u32,
    producer_id: u64,
    /// Next source offset to fetch.
    position: u64,
    /// Source offset up to which the sink acknowledged.
    acked: u64,
    /// Source offset last committed on the source.
    committed: u64,
    inflight: VecDeque<InFlight<K::Batch>>,
    stats: Arc<BridgeStats>,
    stop: tokio::sync::watch::Receiver<bool>,
}

enum Step {
    Fetched(Result<Fetched, BridgeError>),
    Answer(Result<Acked, BridgeError>),
    Commit,
    Stop,
}

impl<S: BridgeSource, K: BridgeSink> Mirror<S, K> {
    pub(super) fn new(
        part: MirrorPartition<S, K>,
        config: MirrorConfig,
        stats: Arc<BridgeStats>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let start = part.source.resume_position();
        Mirror {
            partition: part.source.partition(),
            source: part.source,
            sink: part.sink,
            producer_id: part.producer_id,
            config,
            position: start,
            acked: start,
            committed: start,
            inflight: VecDeque::new(),
            stats,
            stop,
        }
    }

    /// Mirrors until stopped or refused for good, then commits what the
    /// sink acknowledged.
    pub(super) async fn run(mut self) {
        if let Err(e) = self.mirror().await {
            tracing::error!(partition = self.partition, error = %e, "bridge partition stopped");
            self.stats
                .failed
                .lock()
                .push((self.partition, e.to_string()));
        }
        let _ = self.commit().await;
    }

    async fn mirror(&mut self) -> Result<(), BridgeError> {
        let mut source_up = false;
        let mut sink_up = false;
        let mut fetch: Option<Pending<Fetched>> = None;
        let mut backoff = BACKOFF_MIN;
        let mut next_commit = Instant::now() + self.config.commit_interval;
        // Until the sink acknowledged a batch it may not know the producer,
        // and a sink takes an unknown producer's first batch at any
        // sequence: a second batch sent behind a first one refused for now
        // would become the producer's start, and the first would then look
        // already held. So one batch is on the wire until the first answer.
        let mut probing = true;
        loop {
            let (window, resend) = if probing {
                (1, 1)
            } else {
                (self.config.in_flight_max, usize::MAX)
            };
            // Keep one fetch outstanding while the in-flight window has room.
            if fetch.is_none() && self.inflight.len() < window {
                if !source_up {
                    source_up = self.connect_source(&mut backoff).await;
                }
                if source_up {
                    match self.source.fetch(self.position).await {
                        Ok(f) => fetch = Some(f),
                        Err(_) => source_up = false,
                    }
                }
            }
            // Batches not written on the current connection are re-sent on a
            // fresh one, all of them (while probing, the first), in order.
            if self
                .inflight
                .iter()
                .take(resend)
                .any(|f| f.answer.is_none())
            {
                sink_up = self.connect_sink(&mut backoff).await;
                if sink_up {
                    for f in self.inflight.iter_mut().take(resend) {
                        f.answer = self.sink.send(&f.batch).await.ok();
                    }
                }
            }
            let step = tokio::select! {
                biased;
                _ = self.stop.changed() => Step::Stop,
                a = async {
                    match self.inflight.front_mut().and_then(|f| f.answer.as_mut()) {
                        Some(a) => a.await,
                        None => std::future::pending().await,
                    }
                } => Step::Answer(a),
                r = async {
                    match fetch.as_mut() {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                } => Step::Fetched(r),
                _ = tokio::time::sleep_until(next_commit) => Step::Commit,
            };
            match step {
                Step::Stop => return Ok(()),
                Step::Commit => {
                    next_commit = Instant::now() + self.config.commit_interval;
                    if let Err(e) = self.commit().await {
                        tracing::debug!(error = %e, "bridge: commit failed; will retry");
                    }
                }
                Step::Fetched(r) => {
                    fetch = None;
                    match r {
                        Ok(Fetched::Batches(batches)) => {
                            backoff = BACKOFF_MIN;
                            if !sink_up {
                                sink_up = self.connect_sink(&mut backoff).await;
                            }
                            for items in batches {
                                let send = sink_up && (!probing || self.inflight.is_empty());
                                self.forward(items, send).await?;
                            }
                        }
                        Ok(Fetched::OutOfRange) => self.skip_expired().await?,
                        Err(BridgeError::Unavailable(_)) => {
                            source_up = false;
                            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Step::Answer(a) => match a {
                    Ok(acked) => {
                        backoff = BACKOFF_MIN;
                        probing = false;
                        if acked == Acked::AlreadyHeld {
                            self.stats
                                .duplicates_absorbed
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        self.ack_front();
                    }
                    Err(BridgeError::Unavailable(e)) => {
                        tracing::debug!(error = %e, "bridge: target unavailable; will re-send");
                        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        sink_up = false;
                        for f in self.inflight.iter_mut() {
                            f.answer = None;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(self.config.retry_backoff_max);
                    }
                    Err(e) => return Err(e),
                },
            }
        }
    }

    /// The source expired items before they were read: count them and go on
    /// from its earliest item. The sink will refuse the gap this leaves.
    async fn skip_expired(&mut self) -> Result<(), BridgeError> {
        let start = self.source.earliest().await?.unwrap_or(self.position);
        if start <= self.position {
            return Err(BridgeError::fatal(FabricError::Invalid(format!(
                "source offset {} of partition {} is out of range",
                self.position, self.partition
            ))));
        }
        self.stats
            .skipped_expired
            .fetch_add(start - self.position, Ordering::Relaxed);
        tracing::warn!(
            skipped = start - self.position,
            "bridge: source expired items before they were mirrored"
        );
        self.position = start;
        Ok(())
    }

    fn ack_front(&mut self) {
        let f = self
            .inflight
            .pop_front()
            .expect("answer for the front batch");
        debug_assert!(f.end > self.acked, "acknowledgements move forward");
        self.acked = f.end;
        self.stats.forwarded.fetch_add(f.items, Ordering::Relaxed);
    }

    /// Turns one source batch into one sink batch and sends it if `send`
    /// (otherwise the re-send pass sends it).
    async fn forward(&mut self, items: Vec<ConsumedItem>, send: bool) -> Result<(), BridgeError> {
        let (Some(first), Some(last)) = (items.first(), items.last()) else {
            return Ok(());
        };
        let (sequence, end) = (first.offset, last.offset + 1);
        let count = items.len() as u64;
        let id = BatchId {
            producer_id: self.producer_id,
            sequence,
        };
        let batch = self.sink.encode(id, items)?;
        let answer = if send {
            self.sink.send(&batch).await.ok()
        } else {
            None
        };
        self.inflight.push_back(InFlight {
            batch,
            end,
            items: count,
            answer,
        });
        self.position = end;
        Ok(())
    }

    async fn connect_source(&mut self, backoff: &mut Duration) -> bool {
        let r = self.source.connect().await;
        self.connected(r, backoff).await
    }

    async fn connect_sink(&mut self, backoff: &mut Duration) -> bool {
        let r = self.sink.connect().await;
        self.connected(r, backoff).await
    }

    /// Counts and backs off after a failed connection.
    async fn connected(&mut self, r: Result<(), BridgeError>, backoff: &mut Duration) -> bool {
        match r {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "bridge: lane unavailable");
                self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(self.config.retry_backoff_max);
                false
            }
        }
    }

    /// Commits the acknowledged position if it moved since the last commit.
    async fn commit(&mut self) -> Result<(), BridgeError> {
        if self.acked <= self.committed {
            return Ok(());
        }
        self.source.commit(self.acked).await?;
        self.committed = self.acked;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
