//! A Kafka topic partition as a bridge sink (fabric → Kafka).
//!
//! Exactly once, without Kafka transactions (Tansu, for one, does not
//! implement them): each record carries `diaspora.source`, the place of
//! its item in the source. When the sink (re)connects it reads back the
//! tail of its Kafka partition for the last record of its source
//! partition: everything up to that offset is held. A batch wholly at or
//! below it is answered [`Acked::AlreadyHeld`]; a batch reaching past it
//! is written from the first item not yet held; a batch starting beyond
//! the next offset is a gap and refused. Between reconnects the producer
//! is idempotent (in order, no duplicates of its own retries), and the
//! held offset moves as batches are handed to it.
//!
//! The Kafka partition should be written by this bridge alone: the tail
//! read looks back at most [`TAIL_SCAN_MAX`] records for one of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diaspora_fabric::bridge::{Acked, BatchId, BridgeError, BridgeSink, Pending};
use diaspora_fabric::item::{ConsumedItem, ItemRef};
use rdkafka::consumer::Consumer as _;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{self, Producer};
use crate::config::KafkaConfig;
use crate::record::{parse_source, to_record, Record, SOURCE_HEADER};

/// How far back the tail read looks for the sink's last record.
pub const TAIL_SCAN_MAX: i64 = 10_000;
/// How long a tail read may take.
pub const TAIL_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A batch encoded for Kafka: the records with their source offsets.
pub struct KafkaBatch {
    first: u64,
    last: u64,
    records: Vec<(u64, Record)>,
}

/// One Kafka partition written by a bridge.
pub struct KafkaSink {
    cfg: Arc<KafkaConfig>,
    topic: String,
    partition: i32,
    source_topic: String,
    source_partition: u32,
    delivery_timeout: Duration,
    producer: Option<Producer>,
    /// The last source offset the Kafka partition holds (or was handed).
    held: Option<u64>,
}

impl KafkaSink {
    /// The sink of source partition `source_partition` of `source_topic`,
    /// writing Kafka partition `partition` of `topic`.
    pub fn new(
        cfg: Arc<KafkaConfig>,
        topic: &str,
        partition: i32,
        source_topic: &str,
        source_partition: u32,
        delivery_timeout: Duration,
    ) -> KafkaSink {
        KafkaSink {
            cfg,
            topic: topic.to_string(),
            partition,
            source_topic: source_topic.to_string(),
            source_partition,
            delivery_timeout,
            producer: None,
            held: None,
        }
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> BridgeError {
    BridgeError::unavailable(format!("{what}: {e}"))
}

/// The last source offset of `(source_topic, source_partition)` in Kafka
/// partition `topic/partition`, looking back at most [`TAIL_SCAN_MAX`]
/// records. Blocking.
pub fn read_tail(
    cfg: &KafkaConfig,
    topic: &str,
    partition: i32,
    source_topic: &str,
    source_partition: u32,
) -> Result<Option<u64>, BridgeError> {
    let c = client::consumer(cfg, "diaspora.bridge.tail")
        .map_err(|e| unavailable("reading the Kafka tail", e))?;
    let (lo, hi) = c
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map_err(|e| unavailable(&format!("watermarks of {topic}/{partition}"), e))?;
    if hi <= lo {
        return Ok(None);
    }
    let deadline = Instant::now() + TAIL_READ_TIMEOUT;
    let mut window = 1i64;
    loop {
        let start = (hi - window).max(lo);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(start))
            .map_err(|e| BridgeError::fatal(e.to_string()))?;
        c.assign(&tpl)
            .map_err(|e| unavailable("reading the Kafka tail", e))?;
        let mut found = None;
        let mut next = start;
        while next < hi {
            if Instant::now() > deadline {
                return Err(unavailable(
                    &format!("reading the tail of {topic}/{partition}"),
                    "timed out",
                ));
            }
            let Some(m) = c.poll(Duration::from_millis(500)) else {
                continue;
            };
            let m = m.map_err(|e| unavailable("reading the Kafka tail", e))?;
            next = m.offset() + 1;
            let mine = m
                .headers()
                .and_then(|h| h.iter().filter(|h| h.key == SOURCE_HEADER).last())
                .and_then(|h| parse_source(h.value.unwrap_or_default()).ok())
                .filter(|s| &*s.topic == source_topic && s.partition == source_partition);
            if let Some(s) = mine {
                found = Some(s.offset);
            }
        }
        if found.is_some() || start == lo {
            return Ok(found);
        }
        if window >= TAIL_SCAN_MAX {
            return Err(BridgeError::fatal(format!(
                "none of the last {TAIL_SCAN_MAX} records of Kafka partition {topic}/{partition} came from \
                 {source_topic}/{source_partition}, though the partition is not empty: another producer writes it; \
                 give the bridge a Kafka topic of its own"
            )));
        }
        window = (window * 16).min(TAIL_SCAN_MAX);
    }
}

impl BridgeSink for KafkaSink {
    type Batch = KafkaBatch;

    /// Any re-sent batch is recognised by its source offsets.
    const DUPLICATE_WINDOW: usize = 1 << 16;

    fn encode(&self, id: BatchId, items: Vec<ConsumedItem>) -> Result<KafkaBatch, BridgeError> {
        let last = items
            .last()
            .map(|i| i.offset)
            .ok_or_else(|| BridgeError::fatal("an empty batch"))?;
        let records = items
            .into_iter()
            .map(|ci| {
                let at = ItemRef::new(ci.topic.clone(), ci.partition, ci.offset);
                (ci.offset, to_record(&ci.item, &at))
            })
            .collect();
        Ok(KafkaBatch {
            first: id.sequence,
            last,
            records,
        })
    }

    async fn connect(&mut self) -> Result<(), BridgeError> {
        if let Some(old) = self.producer.take() {
            // What it still holds is delivered or given up before the tail
            // is read, so nothing of it lands after.
            tokio::task::spawn_blocking(move || {
                let _ = old.flush(Duration::from_secs(5));
                old.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
                drop(old);
            })
            .await
            .map_err(|e| unavailable("closing the Kafka producer", e))?;
        }
        let cfg = self.cfg.clone();
        let (topic, p, st, sp) = (
            self.topic.clone(),
            self.partition,
            self.source_topic.clone(),
            self.source_partition,
        );
        self.held = tokio::task::spawn_blocking(move || read_tail(&cfg, &topic, p, &st, sp))
            .await
            .map_err(|e| unavailable("reading the Kafka tail", e))??;
        self.producer = Some(
            client::producer(&self.cfg, self.delivery_timeout)
                .map_err(|e| unavailable("connecting to Kafka", e))?,
        );
        Ok(())
    }

    async fn send(&mut self, batch: &KafkaBatch) -> Result<Pending<Acked>, BridgeError> {
        let producer = self
            .producer
            .as_ref()
            .ok_or_else(|| unavailable("sending to Kafka", "not connected"))?;
        if let Some(h) = self.held {
            if batch.last <= h {
                return Ok(Box::pin(async { Ok(Acked::AlreadyHeld) }));
            }
            if batch.first > h + 1 {
                return Err(BridgeError::fatal(format!(
                    "Kafka {}/{} holds {}/{} up to offset {h}, and the next batch starts at {}: a gap",
                    self.topic, self.partition, self.source_topic, self.source_partition, batch.first
                )));
            }
        }
        let mut pending = Vec::with_capacity(batch.records.len());
        for (offset, r) in &batch.records {
            if self.held.is_some_and(|h| *offset <= h) {
                continue;
            }
            let f = client::send_record(producer, &self.topic, self.partition, r)
                .await
                .map_err(|e| unavailable("producing to Kafka", e))?;
            pending.push(f);
        }
        self.held = Some(batch.last);
        Ok(Box::pin(async move {
            for f in pending {
                match f.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => return Err(unavailable("a Kafka delivery", e)),
                    Err(_) => return Err(unavailable("a Kafka delivery", "cancelled")),
                }
            }
            Ok(Acked::Appended)
        }))
    }
}
