//! Bridges: store-and-forward mirroring of a topic from one node to another
//! (edge → HPC → further tiers), surviving outages and restarts of either
//! side and of the bridge itself, with every source item exactly once in the
//! target, in order per partition.
//!
//! How exactly-once holds without coordination:
//! - each source batch becomes exactly one target batch (source batches are
//!   immutable, so a re-send after any restart has the same boundaries);
//! - the target batch carries a **stable producer id** derived from the
//!   bridge name, the topics and the partition, and a **sequence equal to the
//!   source offset** of its first record — so the target's idempotent-producer
//!   check recognises any batch it already holds, across bridge restarts;
//! - the bridge's position is a consumer-group offset on the source node
//!   (group `bridge.NAME`), committed only after the target acknowledged.
//!   A bridge that restarts resumes there and re-sends at most what was
//!   acknowledged since the last commit; the target absorbs those as
//!   duplicates.
//!
//! Source partition `p` is mirrored to target partition `p`: the target topic
//! must exist with at least as many partitions. Items keep their metadata,
//! payload, timestamp and original producer key.
//!
//! Not handled: items the source expired (retention) before the bridge read
//! them are counted in [`BridgeStats::skipped_expired`]; the gap they leave in
//! the sequence makes the target refuse the next batch, which stops that
//! partition with a clear error (size the edge retention for the outages you
//! expect).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use diaspora_log::{BatchBuilder, Compression};
use diaspora_proto::v1::{self, frame::Body, ErrorCode};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{unexpected, Client, ClientConfig, Lane};
use crate::error::{FabricError, Result};
use crate::item::{decode_batch_items_into, encode_item_parts, key_hash};
use crate::producer::retriable;

/// What to mirror, from where to where.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Identity of the bridge: names its position (group `bridge.NAME` on the
    /// source) and seeds its producer ids. Keep it stable across restarts.
    pub name: String,
    /// The source node.
    pub source: ClientConfig,
    /// Topic on the source.
    pub source_topic: String,
    /// The target node.
    pub target: ClientConfig,
    /// Topic on the target (must exist with at least the source's partitions).
    pub target_topic: String,
    /// Largest source fetch, bytes.
    pub fetch_bytes_max: u32,
    /// Target batches unacknowledged per partition (≤ 8, the target's duplicate window).
    pub in_flight_max: usize,
    /// Commit the position at most this often.
    pub commit_interval: Duration,
    /// Longest pause between reconnection attempts.
    pub retry_backoff_max: Duration,
    /// Compression of target batches.
    pub compression: Compression,
}

impl BridgeConfig {
    /// Defaults for mirroring `source_topic` on `source` to `target_topic` on `target`.
    pub fn new(
        name: impl Into<String>,
        source: ClientConfig,
        source_topic: impl Into<String>,
        target: ClientConfig,
        target_topic: impl Into<String>,
    ) -> Self {
        BridgeConfig {
            name: name.into(),
            source,
            source_topic: source_topic.into(),
            target,
            target_topic: target_topic.into(),
            fetch_bytes_max: 4 << 20,
            in_flight_max: 4,
            commit_interval: Duration::from_millis(200),
            retry_backoff_max: Duration::from_secs(1),
            compression: Compression::None,
        }
    }

    /// The consumer group holding the bridge's position on the source.
    pub fn group(&self) -> String {
        format!("bridge.{}", self.name)
    }
}

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

/// The stable producer id of a bridge partition (never 0).
pub fn bridge_producer_id(config: &BridgeConfig, partition: u32) -> u64 {
    let key = format!(
        "{}\u{0}{}\u{0}{}\u{0}{partition}",
        config.name, config.source_topic, config.target_topic
    );
    key_hash(key.as_bytes()) | 1
}

async fn connect_retrying(
    config: &ClientConfig,
    backoff_max: Duration,
    stats: &BridgeStats,
) -> Client {
    let mut backoff = Duration::from_millis(50);
    loop {
        match Client::connect(config.clone()).await {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(addr = %config.addr, error = %e, "bridge: node unreachable; retrying");
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(backoff_max);
            }
        }
    }
}

impl Bridge {
    /// Starts mirroring. Waits (retrying) until both nodes answer, then
    /// checks the topics and starts one task per source partition.
    pub async fn start(config: BridgeConfig) -> Result<Bridge> {
        if config.in_flight_max == 0 || config.in_flight_max > 8 {
            return Err(FabricError::Limit {
                what: "bridge in-flight batches".into(),
                value: config.in_flight_max as u64,
                unit: "",
                limit_name: "duplicate window (8)",
                limit: 8,
            });
        }
        let stats = Arc::new(BridgeStats::default());
        let source = connect_retrying(&config.source, config.retry_backoff_max, &stats).await;
        let target = connect_retrying(&config.target, config.retry_backoff_max, &stats).await;
        let src_meta = source.metadata(&config.source_topic).await?;
        let dst_meta = target.metadata(&config.target_topic).await?;
        let partitions = src_meta.partitions.len() as u32;
        if dst_meta.partitions.len() < src_meta.partitions.len() {
            return Err(FabricError::Invalid(format!(
                "target topic '{}' has {} partitions, fewer than the {} of source topic '{}'",
                config.target_topic,
                dst_meta.partitions.len(),
                partitions,
                config.source_topic
            )));
        }
        let committed = match source
            .call(Body::OffsetFetchRequest(v1::OffsetFetchRequest {
                group: config.group(),
                topic: config.source_topic.clone(),
            }))
            .await?
        {
            Body::OffsetFetchResponse(r) => r.offsets,
            other => return Err(unexpected("OffsetFetchResponse", &other)),
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for info in &src_meta.partitions {
            let p = info.partition;
            let start = committed
                .iter()
                .find(|o| o.partition == p)
                .map_or(info.start_offset, |o| o.offset);
            let mirror = Mirror {
                producer_id: bridge_producer_id(&config, p),
                config: config.clone(),
                source: source.clone(),
                target: target.clone(),
                partition: p,
                position: start,
                acked: start,
                committed: start,
                inflight: VecDeque::new(),
                stats: stats.clone(),
                stop: stop_rx.clone(),
            };
            tasks.push(tokio::spawn(mirror.run()));
        }
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

struct InFlight {
    batch: Bytes,
    /// Source offset after the batch's last record.
    end: u64,
    records: u64,
    answer: Option<oneshot::Receiver<Result<Body>>>,
}

struct Mirror {
    config: BridgeConfig,
    source: Client,
    target: Client,
    partition: u32,
    producer_id: u64,
    /// Next source offset to fetch.
    position: u64,
    /// Source offset up to which the target acknowledged.
    acked: u64,
    committed: u64,
    inflight: VecDeque<InFlight>,
    stats: Arc<BridgeStats>,
    stop: tokio::sync::watch::Receiver<bool>,
}

enum Step {
    Fetched(Result<Body>),
    Answer(Result<Body>),
    Commit,
    Stop,
}

impl Mirror {
    async fn run(mut self) {
        if let Err(e) = self.mirror().await {
            tracing::error!(partition = self.partition, error = %e, "bridge partition stopped");
            self.stats
                .failed
                .lock()
                .push((self.partition, e.to_string()));
        }
        let _ = self.commit().await;
    }

    async fn mirror(&mut self) -> Result<()> {
        let mut src_lane: Option<Lane> = None;
        let mut dst_lane: Option<Lane> = None;
        let mut fetch: Option<oneshot::Receiver<Result<Body>>> = None;
        let mut backoff = Duration::from_millis(50);
        let mut next_commit = Instant::now() + self.config.commit_interval;
        loop {
            // Keep one fetch outstanding while the in-flight window has room.
            if fetch.is_none() && self.inflight.len() < self.config.in_flight_max {
                if src_lane.is_none() {
                    src_lane = self.lane(&self.source.clone(), &mut backoff).await;
                }
                if let Some(l) = &src_lane {
                    match l
                        .send(Body::FetchRequest(v1::FetchRequest {
                            topic: self.config.source_topic.clone(),
                            partition: self.partition,
                            offset: self.position,
                            max_bytes: self.config.fetch_bytes_max,
                            max_wait_ms: 250,
                        }))
                        .await
                    {
                        Ok(r) => fetch = Some(r),
                        Err(_) => src_lane = None,
                    }
                }
            }
            // Batches whose send failed are re-sent on a fresh lane, in order.
            if self.inflight.iter().any(|f| f.answer.is_none()) {
                dst_lane = self.lane(&self.target.clone(), &mut backoff).await;
                if let Some(l) = &dst_lane {
                    for f in self.inflight.iter_mut() {
                        f.answer =
                            send_produce(l, &self.config.target_topic, self.partition, &f.batch)
                                .await;
                    }
                }
            }
            let step = tokio::select! {
                biased;
                _ = self.stop.changed() => Step::Stop,
                a = async {
                    match self.inflight.front_mut().and_then(|f| f.answer.as_mut()) {
                        Some(a) => a.await.unwrap_or_else(|_| Err(lane_closed())),
                        None => std::future::pending().await,
                    }
                } => Step::Answer(a),
                r = async {
                    match fetch.as_mut() {
                        Some(f) => f.await.unwrap_or_else(|_| Err(lane_closed())),
                        None => std::future::pending().await,
                    }
                } => Step::Fetched(r),
                _ = tokio::time::sleep_until(next_commit) => Step::Commit,
            };
            match step {
                Step::Stop => return Ok(()),
                Step::Commit => {
                    next_commit = Instant::now() + self.config.commit_interval;
                    if self.acked > self.committed {
                        if let Err(e) = self.commit().await {
                            tracing::debug!(error = %e, "bridge: commit failed; will retry");
                        }
                    }
                }
                Step::Fetched(r) => {
                    fetch = None;
                    match r {
                        Ok(Body::FetchResponse(resp)) => {
                            backoff = Duration::from_millis(50);
                            if dst_lane.is_none() {
                                dst_lane = self.lane(&self.target.clone(), &mut backoff).await;
                            }
                            for raw in &resp.batches {
                                self.forward(raw, dst_lane.as_ref()).await?;
                            }
                        }
                        Ok(other) => return Err(unexpected("FetchResponse", &other)),
                        Err(FabricError::Remote {
                            code: ErrorCode::OffsetOutOfRange,
                            ..
                        }) => {
                            let meta = self.source.metadata(&self.config.source_topic).await?;
                            let start = meta
                                .partitions
                                .get(self.partition as usize)
                                .map_or(self.position, |p| p.start_offset);
                            if start <= self.position {
                                return Err(FabricError::Invalid(format!(
                                    "source offset {} of partition {} is out of range",
                                    self.position, self.partition
                                )));
                            }
                            self.stats
                                .skipped_expired
                                .fetch_add(start - self.position, Ordering::Relaxed);
                            tracing::warn!(
                                skipped = start - self.position,
                                "bridge: source expired items before they were mirrored"
                            );
                            self.position = start;
                        }
                        Err(e @ FabricError::Remote { .. }) => return Err(e),
                        Err(_) => {
                            src_lane = None;
                            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Step::Answer(a) => match a {
                    Ok(Body::ProduceResponse(r)) => {
                        backoff = Duration::from_millis(50);
                        if r.duplicate {
                            self.stats
                                .duplicates_absorbed
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        self.ack_front();
                    }
                    Err(FabricError::Remote {
                        code: ErrorCode::DuplicateSequence,
                        ..
                    }) => {
                        // The target holds these sequences already (older than its window).
                        self.stats
                            .duplicates_absorbed
                            .fetch_add(1, Ordering::Relaxed);
                        self.ack_front();
                    }
                    Ok(other) => return Err(unexpected("ProduceResponse", &other)),
                    Err(e) if retriable(&e) => {
                        tracing::debug!(error = %e, "bridge: target unavailable; will re-send");
                        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        dst_lane = None;
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

    fn ack_front(&mut self) {
        let f = self
            .inflight
            .pop_front()
            .expect("answer for the front batch");
        self.acked = f.end;
        self.stats.forwarded.fetch_add(f.records, Ordering::Relaxed);
    }

    /// Turns one raw source batch into one target batch and sends it.
    async fn forward(&mut self, raw: &Bytes, lane: Option<&Lane>) -> Result<()> {
        let topic: Arc<str> = self.config.source_topic.as_str().into();
        let mut items = Vec::new();
        decode_batch_items_into(&topic, self.partition, raw, self.position, &mut items)?;
        let (Some(first), Some(last)) = (items.first(), items.last()) else {
            return Ok(());
        };
        let (first_offset, end) = (first.offset, last.offset + 1);
        let bytes: usize = items.iter().map(|i| i.record_bytes + 16).sum();
        let mut builder = BatchBuilder::with_capacity(self.config.compression, bytes)
            .with_producer(self.producer_id, first_offset);
        let records = items.len() as u64;
        for it in items {
            let ts = it.item.timestamp_us;
            let (head, payload) = encode_item_parts(it.item);
            builder.push_parts(&[&head, &payload], ts);
        }
        let batch = builder.finish();
        let answer = match lane {
            Some(l) => send_produce(l, &self.config.target_topic, self.partition, &batch).await,
            None => None,
        };
        self.inflight.push_back(InFlight {
            batch,
            end,
            records,
            answer,
        });
        self.position = end;
        Ok(())
    }

    async fn lane(&self, client: &Client, backoff: &mut Duration) -> Option<Lane> {
        match client.lane(self.partition as usize).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::debug!(error = %e, "bridge: lane unavailable");
                self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(self.config.retry_backoff_max);
                None
            }
        }
    }

    async fn commit(&mut self) -> Result<()> {
        if self.acked <= self.committed {
            return Ok(());
        }
        let body = self
            .source
            .call(Body::OffsetCommitRequest(v1::OffsetCommitRequest {
                group: self.config.group(),
                topic: self.config.source_topic.clone(),
                partition: self.partition,
                offset: self.acked,
            }))
            .await?;
        match body {
            Body::OffsetCommitResponse(_) => {
                self.committed = self.acked;
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            other => Err(unexpected("OffsetCommitResponse", &other)),
        }
    }
}

fn lane_closed() -> FabricError {
    FabricError::Connection {
        addr: "bridge lane".into(),
        message: "lane closed before the answer".into(),
    }
}

async fn send_produce(
    lane: &Lane,
    topic: &str,
    partition: u32,
    batch: &Bytes,
) -> Option<oneshot::Receiver<Result<Body>>> {
    lane.send(Body::ProduceRequest(v1::ProduceRequest {
        topic: topic.to_string(),
        partition,
        batch: batch.clone(),
    }))
    .await
    .ok()
}
