//! Bridges: store-and-forward mirroring of a topic from one system to
//! another (edge → HPC → further tiers), surviving outages and restarts of
//! either side and of the bridge itself, with every source item exactly once
//! in the target, in order per partition.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | `contract` | [`BridgeSource`] and [`BridgeSink`], the contracts each side must keep, and the types passed between them |
//! | `mirror` | the loop over any source and sink: fetch, forward, acknowledge, commit, reconnect ([`MirrorConfig`], [`MirrorPartition`]) |
//! | `fabric` | the fabric pair ([`FabricSource`], [`FabricSink`]), [`BridgeConfig`] and [`Bridge::start`] between two nodes |
//!
//! Another system's bridge (say a Kafka-API source or sink) implements the
//! two traits in its own crate and hands its pairs to [`Bridge::spawn`]; the
//! fabric does not depend on it.
//!
//! # Why exactly-once holds, without coordination
//!
//! The loop of a partition keeps three numbers: `position` (next source
//! offset to fetch), `acked` (source offset up to which the sink
//! acknowledged, oldest batch first) and `committed` (the position stored
//! durably by the source). Always `committed ≤ acked ≤ position`, and each
//! only grows.
//!
//! 1. **Each source batch becomes exactly one sink batch, with the same
//!    identity every time.** Source batches are immutable and the position
//!    only moves to the end of a whole batch (or, after expiry, to the
//!    source's earliest item), so a re-fetch cuts the same batches. Each sink batch carries a [`BatchId`]: a **producer id** that
//!    is stable for the bridge partition (the fabric derives it from the
//!    bridge name, the topics and the partition: [`bridge_producer_id`]) and
//!    a **sequence equal to the source offset of its first item**. So the
//!    sink's sequence space *is* the source's offset space: batch `n + 1`
//!    continues batch `n`.
//! 2. **No loss.** `acked` moves only on the sink's acknowledgement of the
//!    oldest batch in flight, and only `acked` is ever committed. A batch
//!    that failed, or whose answer was lost, stays in flight and is re-sent
//!    (with every later one, in order) on a fresh connection. After a
//!    restart of the bridge the source resumes from `committed ≤` what the
//!    sink holds, so nothing between them is skipped.
//! 3. **No duplicates.** What a restarted or reconnected bridge re-sends is
//!    at most the batches since `committed` (restart) or the in-flight window
//!    (outage). The sink recognises each of them by `(producer id,
//!    sequence)` and answers [`Acked::AlreadyHeld`] instead of appending
//!    (counted in [`BridgeStats::duplicates_absorbed`]); its check survives
//!    its own restarts and covers every sequence below the producer's last,
//!    so no window size is part of the argument.
//! 4. **Order.** One task per partition, one connection at a time, answers
//!    taken oldest first; source partition `p` goes to sink partition `p`.
//! 5. **Loudly, not silently, when the contracts break.** A batch that
//!    neither continues nor repeats the sink's sequence (a gap, a partial
//!    overlap) is refused by the sink and stops that partition with the
//!    error in [`BridgeStats::failed`]; it is never appended.
//! 6. **The first batch is not overtaken.** A sink that does not know the
//!    producer yet takes its first batch at any sequence, so it cannot tell
//!    a gap there. Were batch `n + 1` sent behind a batch `n` refused for
//!    now, `n + 1` would become the producer's start and the re-sent `n`
//!    would look already held: a loss. Until the sink's first
//!    acknowledgement the loop therefore keeps one batch on the wire; after
//!    it, the sink knows the producer and refuses any gap (point 5).
//!
//! The traits state these obligations where an implementer reads them: see
//! the contract sections of [`BridgeSource`] and [`BridgeSink`].
//!
//! Between two fabric nodes, the target topic must exist with at least as
//! many partitions as the source topic; items keep their metadata, payload,
//! timestamp and original producer key; the position is the consumer group
//! `bridge.NAME` on the source node, committed every `commit_interval` and on
//! stop, only after the target acknowledged.
//!
//! Not handled: items the source expired (retention) before the bridge read
//! them are counted in [`BridgeStats::skipped_expired`]; the gap they leave in
//! the sequence makes the target refuse the next batch, which stops that
//! partition with a clear error (size the edge retention for the outages you
//! expect). Two bridges with the same name on the same topics share producer
//! ids and a position: run one.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::error::Result;

mod contract;
mod fabric;
mod mirror;
#[cfg(test)]
mod tests;

pub use contract::{
    Acked, BatchId, BoxError, BridgeError, BridgeSink, BridgeSource, Fetched, Pending,
};
pub use fabric::{bridge_producer_id, BridgeConfig, FabricSink, FabricSource};
pub use mirror::{MirrorConfig, MirrorPartition};

/// Counters of a running bridge.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Items acknowledged by the target.
    pub forwarded: AtomicU64,
    /// Batches the target already held (re-sends after a restart or outage).
    pub duplicates_absorbed: AtomicU64,
    /// Reconnections to either side.
    pub reconnects: AtomicU64,
    /// Items the source expired before the bridge read them.
    pub skipped_expired: AtomicU64,
    /// Position commits that reached the source.
    pub commits: AtomicU64,
    /// The last error per partition that stopped it, if any.
    pub failed: Mutex<Vec<(u32, String)>>,
}

/// A running bridge; [`Bridge::stop`] commits the position and stops.
pub struct Bridge {
    tasks: Vec<JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
    stats: Arc<BridgeStats>,
    partitions: u32,
}

impl Bridge {
    /// Starts one loop per partition over any source and sink, counting into
    /// `stats`. Fails if `config.in_flight_max` is 0 or exceeds the sink's
    /// [`BridgeSink::DUPLICATE_WINDOW`]. Between two fabric nodes use
    /// [`Bridge::start`].
    pub fn spawn<S: BridgeSource, K: BridgeSink>(
        parts: Vec<MirrorPartition<S, K>>,
        config: MirrorConfig,
        stats: Arc<BridgeStats>,
    ) -> Result<Bridge> {
        config.check::<K>()?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let partitions = parts.len() as u32;
        let tasks = parts
            .into_iter()
            .map(|part| {
                let mirror =
                    mirror::Mirror::new(part, config.clone(), stats.clone(), stop_rx.clone());
                tokio::spawn(mirror.run())
            })
            .collect();
        Ok(Bridge {
            tasks,
            stop,
            stats,
            partitions,
        })
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<BridgeStats> {
        &self.stats
    }

    /// Number of partitions mirrored.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Keeps mirroring until `stop` is set, handing the counters to
    /// `report` every `report_every` (never when `None`); then returns, with
    /// the bridge still running — [`Bridge::stop`] ends it. This is the
    /// loop of `diaspora bridge`.
    pub async fn run_until(
        &self,
        stop: &crate::Stop,
        report_every: Option<Duration>,
        mut report: impl FnMut(&BridgeStats),
    ) {
        loop {
            tokio::select! {
                _ = stop.wait() => return,
                _ = tokio::time::sleep(report_every.unwrap_or(Duration::from_secs(3600))) => {
                    if report_every.is_some() {
                        report(&self.stats);
                    }
                }
            }
        }
    }

    /// Stops the partition tasks after they commit their acknowledged position.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
