//! The loop alone, over an in-memory source and sink that keep the
//! contracts (immutable batches, a durable position, a sink that recognises
//! `(producer id, sequence)`) and fail on demand. The fabric pair is tested
//! against real nodes by the root `tests/bridge.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use super::*;
use crate::error::FabricError;
use crate::item::{payload_item, ConsumedItem};

const PRODUCER: u64 = 77;

/// A source partition: whole batches of consecutive offsets, items before
/// `start` expired, and the durable committed position.
#[derive(Default)]
struct SourceLog {
    batches: Vec<Vec<u64>>,
    start: u64,
    committed: Option<u64>,
}

impl SourceLog {
    fn with_batches(batches: u64, per_batch: u64) -> Self {
        let mut log = SourceLog::default();
        log.append(batches, per_batch);
        log
    }

    fn append(&mut self, batches: u64, per_batch: u64) {
        for _ in 0..batches {
            let first = self.batches.last().map_or(0, |b| b.last().unwrap() + 1);
            self.batches.push((first..first + per_batch).collect());
        }
    }

    fn end(&self) -> u64 {
        self.batches.last().map_or(0, |b| b.last().unwrap() + 1)
    }
}

struct MemSource {
    log: Arc<Mutex<SourceLog>>,
    partition: u32,
    resume: u64,
}

impl MemSource {
    /// Opens the source as a restarted bridge would: from the committed position.
    fn open(log: &Arc<Mutex<SourceLog>>, partition: u32) -> Self {
        let resume = {
            let l = log.lock();
            l.committed.unwrap_or(l.start)
        };
        MemSource {
            log: log.clone(),
            partition,
            resume,
        }
    }
}

fn consumed(partition: u32, offset: u64) -> ConsumedItem {
    ConsumedItem {
        topic: "source".into(),
        partition,
        offset,
        item: payload_item(Bytes::copy_from_slice(&offset.to_be_bytes())),
        record_bytes: 8,
        payload_bytes: 8,
    }
}

impl BridgeSource for MemSource {
    fn partition(&self) -> u32 {
        self.partition
    }

    fn resume_position(&self) -> u64 {
        self.resume
    }

    async fn connect(&mut self) -> std::result::Result<(), BridgeError> {
        Ok(())
    }

    async fn fetch(&mut self, position: u64) -> std::result::Result<Pending<Fetched>, BridgeError> {
        let log = self.log.lock();
        let fetched = if position < log.start {
            Fetched::OutOfRange
        } else {
            // At most three whole batches, as a byte-limited fetch would.
            let batches: Vec<Vec<ConsumedItem>> = log
                .batches
                .iter()
                .filter(|b| *b.last().unwrap() >= position)
                .take(3)
                .map(|b| {
                    b.iter()
                        .filter(|o| **o >= position)
                        .map(|o| consumed(self.partition, *o))
                        .collect()
                })
                .collect();
            Fetched::Batches(batches)
        };
        Ok(Box::pin(async move {
            if fetched == Fetched::Batches(Vec::new()) {
                // The long poll of a source with nothing new.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(fetched)
        }))
    }

    async fn earliest(&mut self) -> std::result::Result<Option<u64>, BridgeError> {
        Ok(Some(self.log.lock().start))
    }

    async fn commit(&mut self, position: u64) -> std::result::Result<(), BridgeError> {
        self.log.lock().committed = Some(position);
        Ok(())
    }
}

/// What the sink does with one `send`, in order; none left: behave.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Behave.
    None,
    /// Append (or recognise) the batch, then lose the answer: the bridge
    /// cannot know the batch is held and must re-send it.
    AppendThenLoseAnswer,
    /// Refuse for now without appending.
    Unavailable,
}

/// A sink partition with an idempotence check by `(producer id, sequence)`:
/// the next sequence it expects per producer, as the fabric's log keeps it.
#[derive(Default)]
struct SinkLog {
    items: Vec<u64>,
    next_sequence: HashMap<u64, u64>,
    faults: VecDeque<Fault>,
    failed_connects: u32,
    sends: u64,
}

impl SinkLog {
    fn take(&mut self, id: BatchId, items: &[u64]) -> std::result::Result<Acked, BridgeError> {
        let end = id.sequence + items.len() as u64;
        match self.next_sequence.get(&id.producer_id) {
            Some(&next) if end <= next => Ok(Acked::AlreadyHeld),
            Some(&next) if id.sequence != next => Err(BridgeError::fatal(FabricError::Invalid(
                format!("sequence {} does not continue {next}", id.sequence),
            ))),
            _ => {
                self.items.extend_from_slice(items);
                self.next_sequence.insert(id.producer_id, end);
                Ok(Acked::Appended)
            }
        }
    }
}

struct MemSink {
    log: Arc<Mutex<SinkLog>>,
}

fn unavailable() -> BridgeError {
    BridgeError::unavailable(FabricError::Shutdown)
}

impl BridgeSink for MemSink {
    type Batch = (BatchId, Vec<u64>);

    const DUPLICATE_WINDOW: usize = 8;

    fn encode(
        &self,
        id: BatchId,
        items: Vec<ConsumedItem>,
    ) -> std::result::Result<Self::Batch, BridgeError> {
        Ok((id, items.iter().map(|i| i.offset).collect()))
    }

    async fn connect(&mut self) -> std::result::Result<(), BridgeError> {
        let mut log = self.log.lock();
        if log.failed_connects > 0 {
            log.failed_connects -= 1;
            return Err(unavailable());
        }
        Ok(())
    }

    async fn send(
        &mut self,
        (id, items): &Self::Batch,
    ) -> std::result::Result<Pending<Acked>, BridgeError> {
        let mut log = self.log.lock();
        log.sends += 1;
        let answer = match log.faults.pop_front() {
            None | Some(Fault::None) => log.take(*id, items),
            Some(Fault::AppendThenLoseAnswer) => log.take(*id, items).and(Err(unavailable())),
            Some(Fault::Unavailable) => Err(unavailable()),
        };
        Ok(Box::pin(async move { answer }))
    }
}

fn config(commit_interval: Duration) -> MirrorConfig {
    MirrorConfig {
        in_flight_max: 4,
        commit_interval,
        retry_backoff_max: Duration::from_millis(20),
    }
}

fn start(
    sources: &[Arc<Mutex<SourceLog>>],
    sinks: &[Arc<Mutex<SinkLog>>],
    config: MirrorConfig,
) -> Bridge {
    let parts = sources
        .iter()
        .zip(sinks)
        .enumerate()
        .map(|(p, (source, sink))| MirrorPartition {
            source: MemSource::open(source, p as u32),
            sink: MemSink { log: sink.clone() },
            producer_id: PRODUCER + p as u64,
        })
        .collect();
    Bridge::spawn(parts, config, Arc::default()).unwrap()
}

async fn until(what: &str, done: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Mirrors one partition until the source's committed position is
/// `offset`, then stops the bridge; its figures.
async fn mirror_until_committed(
    sources: &[Arc<Mutex<SourceLog>>; 1],
    sinks: &[Arc<Mutex<SinkLog>>; 1],
    offset: u64,
) -> Arc<BridgeStats> {
    let bridge = start(sources, sinks, config(Duration::from_millis(5)));
    until("the partition is mirrored", || {
        sources[0].lock().committed == Some(offset)
    })
    .await;
    let stats = bridge.stats().clone();
    bridge.stop().await;
    stats
}

fn count(stats: &BridgeStats, counter: fn(&BridgeStats) -> &std::sync::atomic::AtomicU64) -> u64 {
    counter(stats).load(Ordering::Relaxed)
}

fn shared<T>(t: T) -> Arc<Mutex<T>> {
    Arc::new(Mutex::new(t))
}

#[tokio::test]
async fn every_item_arrives_once_in_order_and_the_position_is_committed() {
    let sources = [
        shared(SourceLog::with_batches(10, 3)),
        shared(SourceLog::with_batches(7, 5)),
    ];
    let sinks = [shared(SinkLog::default()), shared(SinkLog::default())];
    let bridge = start(&sources, &sinks, config(Duration::from_millis(5)));
    assert_eq!(bridge.partitions(), 2);
    until("both partitions are mirrored", || {
        sinks[0].lock().items.len() == 30 && sinks[1].lock().items.len() == 35
    })
    .await;
    let stats = bridge.stats().clone();
    bridge.stop().await;
    assert_eq!(sinks[0].lock().items, (0..30).collect::<Vec<_>>());
    assert_eq!(sinks[1].lock().items, (0..35).collect::<Vec<_>>());
    assert_eq!(sources[0].lock().committed, Some(30));
    assert_eq!(sources[1].lock().committed, Some(35));
    assert_eq!(count(&stats, |s| &s.forwarded), 65);
    assert_eq!(count(&stats, |s| &s.duplicates_absorbed), 0);
    assert!(count(&stats, |s| &s.commits) >= 2);
    assert!(stats.failed.lock().is_empty());
}

#[tokio::test]
async fn a_batch_resent_after_a_lost_answer_is_recognised_by_producer_and_sequence() {
    let sources = [shared(SourceLog::with_batches(10, 3))];
    let sink = SinkLog {
        // The second batch is appended but its answer lost: the bridge
        // re-sends it and every later in-flight batch.
        faults: [Fault::None, Fault::AppendThenLoseAnswer].into(),
        ..SinkLog::default()
    };
    let sinks = [shared(sink)];
    let stats = mirror_until_committed(&sources, &sinks, 30).await;
    assert_eq!(sinks[0].lock().items, (0..30).collect::<Vec<_>>());
    assert!(
        count(&stats, |s| &s.duplicates_absorbed) >= 1,
        "the re-sent batch was answered as already held"
    );
    assert!(count(&stats, |s| &s.reconnects) >= 1);
    assert_eq!(count(&stats, |s| &s.forwarded), 30);
    assert!(sinks[0].lock().sends > 10, "batches were re-sent");
}

#[tokio::test]
async fn a_sink_unavailable_for_a_while_loses_nothing() {
    let sources = [shared(SourceLog::with_batches(12, 2))];
    let sink = SinkLog {
        // Batches after the first are refused for a while; the ones sent
        // behind them meanwhile are refused as gaps and re-sent.
        faults: [
            Fault::None,
            Fault::Unavailable,
            Fault::Unavailable,
            Fault::Unavailable,
        ]
        .into(),
        failed_connects: 3,
        ..SinkLog::default()
    };
    let sinks = [shared(sink)];
    let stats = mirror_until_committed(&sources, &sinks, 24).await;
    assert_eq!(sinks[0].lock().items, (0..24).collect::<Vec<_>>());
    assert!(count(&stats, |s| &s.reconnects) >= 4);
    assert!(stats.failed.lock().is_empty());
}

#[tokio::test]
async fn a_restarted_bridge_resumes_from_the_committed_position() {
    let sources = [shared(SourceLog::with_batches(10, 3))];
    let sinks = [shared(SinkLog::default())];
    let never = Duration::from_secs(3600);

    // A bridge that never committed crashes (aborted: no final commit) once
    // the sink holds everything.
    let crashed = start(&sources, &sinks, config(never));
    until("the first run is mirrored", || {
        sinks[0].lock().items.len() == 30
    })
    .await;
    drop(crashed);
    assert_eq!(sources[0].lock().committed, None);

    // Its successor resumes from the start, re-sends all ten batches, and
    // the sink recognises every one of them.
    let second = start(&sources, &sinks, config(never));
    until("the re-sends are acknowledged", || {
        second.stats().forwarded.load(Ordering::Relaxed) == 30
    })
    .await;
    let stats = second.stats().clone();
    second.stop().await;
    assert_eq!(count(&stats, |s| &s.duplicates_absorbed), 10);
    assert_eq!(sinks[0].lock().items, (0..30).collect::<Vec<_>>());
    assert_eq!(sources[0].lock().committed, Some(30), "committed on stop");

    // New items; the next bridge starts from the committed position and
    // re-sends nothing.
    sources[0].lock().append(4, 3);
    let third = start(&sources, &sinks, config(never));
    until("the new items are mirrored", || {
        sinks[0].lock().items.len() == 42
    })
    .await;
    let stats = third.stats().clone();
    third.stop().await;
    assert_eq!(sinks[0].lock().items, (0..42).collect::<Vec<_>>());
    assert_eq!(count(&stats, |s| &s.duplicates_absorbed), 0);
    assert_eq!(count(&stats, |s| &s.forwarded), 12);
    assert_eq!(sources[0].lock().committed, Some(42));
}

#[tokio::test]
async fn expired_items_are_counted_and_the_gap_stops_the_partition() {
    let sources = [shared(SourceLog::with_batches(2, 3))];
    let sinks = [shared(SinkLog::default())];
    let first = start(&sources, &sinks, config(Duration::from_millis(5)));
    until("the first run is mirrored", || {
        sources[0].lock().committed == Some(6)
    })
    .await;
    first.stop().await;

    // While the bridge is down the source takes four batches and expires
    // the first two of them.
    {
        let mut log = sources[0].lock();
        log.append(4, 3);
        log.start = 12;
        assert_eq!(log.end(), 18);
    }
    let second = start(&sources, &sinks, config(Duration::from_millis(5)));
    let stats = second.stats().clone();
    until("the partition stops", || !stats.failed.lock().is_empty()).await;
    second.stop().await;
    assert_eq!(count(&stats, |s| &s.skipped_expired), 6);
    let failed = stats.failed.lock().clone();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, 0);
    assert!(
        failed[0].1.contains("sequence 12 does not continue 6"),
        "{failed:?}"
    );
    assert_eq!(
        sinks[0].lock().items,
        (0..6).collect::<Vec<_>>(),
        "the sink appended nothing past the gap"
    );
    assert_eq!(sources[0].lock().committed, Some(6));
}

#[tokio::test]
async fn the_in_flight_window_is_bounded_by_the_sinks_duplicate_window() {
    for in_flight_max in [0, MemSink::DUPLICATE_WINDOW + 1] {
        let parts: Vec<MirrorPartition<MemSource, MemSink>> = Vec::new();
        let config = MirrorConfig {
            in_flight_max,
            ..config(Duration::from_millis(5))
        };
        let e = Bridge::spawn(parts, config, Arc::default())
            .err()
            .expect("refused");
        assert!(
            matches!(e, FabricError::Limit { value, limit: 8, .. } if value == in_flight_max as u64),
            "{e}"
        );
    }
}

#[tokio::test]
async fn a_first_batch_refused_for_now_is_not_overtaken_by_the_next() {
    // The sink does not know the bridge's producer yet, so it would take any
    // sequence as the producer's start: had the second batch been sent
    // behind a refused first one, the first would later look already held
    // and its items would be lost.
    let sources = [shared(SourceLog::with_batches(10, 3))];
    let sink = SinkLog {
        faults: [Fault::Unavailable].into(),
        ..SinkLog::default()
    };
    let sinks = [shared(sink)];
    let stats = mirror_until_committed(&sources, &sinks, 30).await;
    assert_eq!(sinks[0].lock().items, (0..30).collect::<Vec<_>>());
    assert_eq!(count(&stats, |s| &s.duplicates_absorbed), 0);
    assert_eq!(count(&stats, |s| &s.forwarded), 30);
}
