//! The fabric pair, the first implementation of the bridge contracts:
//! [`FabricSource`] reads a partition of a topic on a node the way a consumer
//! does and keeps the bridge's position as the consumer group `bridge.NAME`
//! there; [`FabricSink`] appends to a partition on another node as an
//! idempotent producer whose id and sequences come from the loop. Also
//! [`BridgeConfig`] and [`Bridge::start`], which wire both to the loop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use diaspora_log::{BatchBuilder, Compression, PRODUCER_BATCHES_RETAINED};
use diaspora_proto::v1::{self, frame::Body, ErrorCode};

use super::contract::{Acked, BatchId, BridgeError, BridgeSink, BridgeSource, Fetched, Pending};
use super::mirror::{MirrorConfig, MirrorPartition};
use super::{Bridge, BridgeStats};
use crate::client::{unexpected, Client, ClientConfig, Lane};
use crate::error::{FabricError, Result};
use crate::item::{decode_batch_items_into, encode_item_parts, key_hash, ConsumedItem};
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

    /// The settings of the loop.
    pub fn mirror_config(&self) -> MirrorConfig {
        MirrorConfig {
            in_flight_max: self.in_flight_max,
            commit_interval: self.commit_interval,
            retry_backoff_max: self.retry_backoff_max,
        }
    }
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
    /// Starts mirroring between two fabric nodes. Waits (retrying) until
    /// both nodes answer, then checks the topics and starts one task per
    /// source partition, each resuming from the position committed on the
    /// source.
    pub async fn start(config: BridgeConfig) -> Result<Bridge> {
        let mirror = config.mirror_config();
        mirror.check::<FabricSink>()?;
        let stats = Arc::new(BridgeStats::default());
        let source = connect_retrying(&config.source, config.retry_backoff_max, &stats).await;
        let target = connect_retrying(&config.target, config.retry_backoff_max, &stats).await;
        let sources = FabricSource::open(
            &source,
            &config.source_topic,
            &config.group(),
            config.fetch_bytes_max,
        )
        .await?;
        let mut sinks: Vec<Option<FabricSink>> =
            FabricSink::open(&target, &config.target_topic, config.compression)
                .await?
                .into_iter()
                .map(Some)
                .collect();
        if sinks.len() < sources.len() {
            return Err(FabricError::Invalid(format!(
                "target topic '{}' has {} partitions, fewer than the {} of source topic '{}'",
                config.target_topic,
                sinks.len(),
                sources.len(),
                config.source_topic
            )));
        }
        let mut parts = Vec::with_capacity(sources.len());
        for source in sources {
            let p = source.partition();
            let sink = sinks
                .get_mut(p as usize)
                .and_then(Option::take)
                .ok_or_else(|| {
                    FabricError::Invalid(format!(
                        "target topic '{}' has no partition {p} for source partition {p}",
                        config.target_topic
                    ))
                })?;
            parts.push(MirrorPartition {
                source,
                sink,
                producer_id: bridge_producer_id(&config, p),
            });
        }
        Bridge::spawn(parts, mirror, stats)
    }
}

/// One partition of a topic on a fabric node, read as a consumer reads it,
/// with the bridge's position kept as a consumer-group offset on that node.
pub struct FabricSource {
    client: Client,
    topic: String,
    /// The topic shared by decoded items.
    topic_name: Arc<str>,
    group: String,
    partition: u32,
    fetch_bytes_max: u32,
    resume: u64,
    lane: Option<Lane>,
}

impl FabricSource {
    /// One source per partition of `topic` on `client`'s node, in partition
    /// order, each resuming from `group`'s committed offset or, without one,
    /// from the partition's earliest item.
    pub async fn open(
        client: &Client,
        topic: &str,
        group: &str,
        fetch_bytes_max: u32,
    ) -> Result<Vec<FabricSource>> {
        let meta = client.metadata(topic).await?;
        let committed = match client
            .call(Body::OffsetFetchRequest(v1::OffsetFetchRequest {
                group: group.to_string(),
                topic: topic.to_string(),
            }))
            .await?
        {
            Body::OffsetFetchResponse(r) => r.offsets,
            other => return Err(unexpected("OffsetFetchResponse", &other)),
        };
        let topic_name: Arc<str> = topic.into();
        Ok(meta
            .partitions
            .iter()
            .map(|info| FabricSource {
                client: client.clone(),
                topic: topic.to_string(),
                topic_name: topic_name.clone(),
                group: group.to_string(),
                partition: info.partition,
                fetch_bytes_max,
                resume: committed
                    .iter()
                    .find(|o| o.partition == info.partition)
                    .map_or(info.start_offset, |o| o.offset),
                lane: None,
            })
            .collect())
    }
}

impl BridgeSource for FabricSource {
    fn partition(&self) -> u32 {
        self.partition
    }

    fn resume_position(&self) -> u64 {
        self.resume
    }

    async fn connect(&mut self) -> std::result::Result<(), BridgeError> {
        reconnect(&self.client, self.partition, &mut self.lane).await
    }

    async fn fetch(&mut self, position: u64) -> std::result::Result<Pending<Fetched>, BridgeError> {
        let lane = self.lane.as_ref().ok_or_else(not_connected)?;
        let answer = lane
            .send(Body::FetchRequest(v1::FetchRequest {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: position,
                max_bytes: self.fetch_bytes_max,
                max_wait_ms: 250,
                metadata_only: false,
            }))
            .await
            .map_err(|e| {
                self.lane = None;
                BridgeError::unavailable(e)
            })?;
        let (topic, partition) = (self.topic_name.clone(), self.partition);
        Ok(Box::pin(async move {
            match answer.await.unwrap_or_else(|_| Err(lane_closed())) {
                Ok(Body::FetchResponse(resp)) => {
                    let mut batches = Vec::with_capacity(resp.batches.len());
                    for raw in &resp.batches {
                        let mut items = Vec::new();
                        decode_batch_items_into(&topic, partition, raw, position, &mut items)
                            .map_err(BridgeError::fatal)?;
                        batches.push(items);
                    }
                    Ok(Fetched::Batches(batches))
                }
                Ok(other) => Err(BridgeError::fatal(unexpected("FetchResponse", &other))),
                Err(FabricError::Remote {
                    code: ErrorCode::OffsetOutOfRange,
                    ..
                }) => Ok(Fetched::OutOfRange),
                // A refusal by the source node is final; anything else is the way there.
                Err(e @ FabricError::Remote { .. }) => Err(BridgeError::fatal(e)),
                Err(e) => Err(BridgeError::unavailable(e)),
            }
        }))
    }

    async fn earliest(&mut self) -> std::result::Result<Option<u64>, BridgeError> {
        let meta = self
            .client
            .metadata(&self.topic)
            .await
            .map_err(BridgeError::fatal)?;
        Ok(meta
            .partitions
            .get(self.partition as usize)
            .map(|p| p.start_offset))
    }

    async fn commit(&mut self, position: u64) -> std::result::Result<(), BridgeError> {
        let body = self
            .client
            .call(Body::OffsetCommitRequest(v1::OffsetCommitRequest {
                group: self.group.clone(),
                topic: self.topic.clone(),
                partition: self.partition,
                offset: position,
                // The bridge is no group member: its group has none.
                ..Default::default()
            }))
            .await
            .map_err(classify)?;
        match body {
            Body::OffsetCommitResponse(_) => Ok(()),
            other => Err(BridgeError::fatal(unexpected(
                "OffsetCommitResponse",
                &other,
            ))),
        }
    }
}

/// One partition of a topic on a fabric node, appended to as an idempotent
/// producer: each batch carries the loop's `(producer id, sequence)`, and
/// the node's sequence check answers a re-send with the original offsets
/// (within its last [`PRODUCER_BATCHES_RETAINED`] batches) or
/// `DuplicateSequence` (older), both taken as [`Acked::AlreadyHeld`].
pub struct FabricSink {
    client: Client,
    topic: String,
    partition: u32,
    compression: Compression,
    lane: Option<Lane>,
}

impl FabricSink {
    /// One sink per partition of `topic` on `client`'s node, in partition
    /// order, writing batches compressed with `compression`.
    pub async fn open(
        client: &Client,
        topic: &str,
        compression: Compression,
    ) -> Result<Vec<FabricSink>> {
        let meta = client.metadata(topic).await?;
        Ok((0..meta.partitions.len() as u32)
            .map(|partition| FabricSink {
                client: client.clone(),
                topic: topic.to_string(),
                partition,
                compression,
                lane: None,
            })
            .collect())
    }
}

impl BridgeSink for FabricSink {
    type Batch = Bytes;

    const DUPLICATE_WINDOW: usize = PRODUCER_BATCHES_RETAINED;

    fn encode(
        &self,
        id: BatchId,
        items: Vec<ConsumedItem>,
    ) -> std::result::Result<Bytes, BridgeError> {
        let bytes: usize = items.iter().map(|i| i.record_bytes + 16).sum();
        let mut builder = BatchBuilder::with_capacity(self.compression, bytes)
            .with_producer(id.producer_id, id.sequence);
        for it in items {
            let ts = it.item.timestamp_us;
            let (head, payload) = encode_item_parts(it.item);
            builder.push_parts(&[&head, &payload], ts);
        }
        Ok(builder.finish())
    }

    async fn connect(&mut self) -> std::result::Result<(), BridgeError> {
        reconnect(&self.client, self.partition, &mut self.lane).await
    }

    async fn send(&mut self, batch: &Bytes) -> std::result::Result<Pending<Acked>, BridgeError> {
        let lane = self.lane.as_ref().ok_or_else(not_connected)?;
        let answer = lane
            .send(Body::ProduceRequest(v1::ProduceRequest {
                topic: self.topic.clone(),
                partition: self.partition,
                batch: batch.clone(),
            }))
            .await
            .map_err(BridgeError::unavailable)?;
        Ok(Box::pin(async move {
            match answer.await.unwrap_or_else(|_| Err(lane_closed())) {
                Ok(Body::ProduceResponse(r)) if r.duplicate => Ok(Acked::AlreadyHeld),
                Ok(Body::ProduceResponse(_)) => Ok(Acked::Appended),
                // The target holds these sequences already (older than its window).
                Err(FabricError::Remote {
                    code: ErrorCode::DuplicateSequence,
                    ..
                }) => Ok(Acked::AlreadyHeld),
                Ok(other) => Err(BridgeError::fatal(unexpected("ProduceResponse", &other))),
                Err(e) => Err(classify(e)),
            }
        }))
    }
}

/// Retriable fabric errors (connection lost, node shutting down or
/// overloaded) are [`BridgeError::Unavailable`], the rest fatal.
fn classify(e: FabricError) -> BridgeError {
    if retriable(&e) {
        BridgeError::unavailable(e)
    } else {
        BridgeError::fatal(e)
    }
}

/// Replaces `lane` with a fresh one for `partition` (none if that fails).
async fn reconnect(
    client: &Client,
    partition: u32,
    lane: &mut Option<Lane>,
) -> std::result::Result<(), BridgeError> {
    *lane = None;
    *lane = Some(
        client
            .lane(partition as usize)
            .await
            .map_err(BridgeError::unavailable)?,
    );
    Ok(())
}

fn not_connected() -> BridgeError {
    BridgeError::unavailable(FabricError::Connection {
        addr: "bridge lane".into(),
        message: "not connected".into(),
    })
}

fn lane_closed() -> FabricError {
    FabricError::Connection {
        addr: "bridge lane".into(),
        message: "lane closed before the answer".into(),
    }
}
