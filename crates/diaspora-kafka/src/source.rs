//! A Kafka topic partition as a bridge source (Kafka → fabric).
//!
//! The bridge's position is the offset of the Kafka consumer group
//! `bridge.NAME`, committed only after the fabric acknowledged everything
//! before it. Every record is a batch of its own: Kafka does not show a
//! client its record batches, and a batch cut must be the same on every
//! re-fetch for the fabric sink to recognise a re-send by its first offset.
//! Offsets must be contiguous (a compacted or transactional topic leaves
//! gaps, which the fabric sink refuses: that partition stops, loudly).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diaspora_fabric::bridge::{BridgeError, BridgeSource, Fetched, Pending};
use diaspora_fabric::item::ConsumedItem;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{self, Consumer};
use crate::config::KafkaConfig;
use crate::record::from_record;

/// Most records one fetch returns (each is a batch of its own; the bridge
/// lowers it to its in-flight window, so that a fetch never puts more
/// batches in flight than the fabric sink takes at once).
pub const FETCH_RECORDS_MAX: usize = 512;

/// One Kafka partition read by a bridge.
pub struct KafkaSource {
    cfg: Arc<KafkaConfig>,
    group: String,
    topic: String,
    topic_name: Arc<str>,
    partition: i32,
    resume: u64,
    consumer: Option<Arc<Consumer>>,
    /// Where the consumer will read next, as far as this source knows.
    at: Arc<Mutex<Option<u64>>>,
    /// Most records (batches) one fetch returns.
    fetch_max: usize,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> BridgeError {
    BridgeError::unavailable(format!("{what}: {e}"))
}

impl KafkaSource {
    /// One source per partition of `topic`, in partition order, each
    /// resuming from `group`'s committed offset or, without one, from the
    /// partition's earliest record. Blocking.
    pub fn open(
        cfg: Arc<KafkaConfig>,
        topic: &str,
        group: &str,
    ) -> Result<Vec<KafkaSource>, String> {
        let c = client::consumer(&cfg, group)?;
        let resume = crate::reader::resume_positions(&c, topic, group)?;
        let n = resume.len() as i32;
        let mut out = Vec::with_capacity(n as usize);
        for p in 0..n {
            let resume = resume[p as usize];
            out.push(KafkaSource {
                cfg: cfg.clone(),
                group: group.to_string(),
                topic: topic.to_string(),
                topic_name: Arc::from(topic),
                partition: p,
                resume,
                consumer: None,
                at: Arc::new(Mutex::new(None)),
                fetch_max: FETCH_RECORDS_MAX,
            });
        }
        Ok(out)
    }

    /// Returns at most `n` records (at least 1) per fetch.
    pub fn with_fetch_max(mut self, n: usize) -> KafkaSource {
        self.fetch_max = n.clamp(1, FETCH_RECORDS_MAX);
        self
    }

    fn consumer(&self) -> Result<Arc<Consumer>, BridgeError> {
        self.consumer
            .clone()
            .ok_or_else(|| unavailable("reading Kafka", "not connected"))
    }
}

impl BridgeSource for KafkaSource {
    fn partition(&self) -> u32 {
        self.partition as u32
    }

    fn resume_position(&self) -> u64 {
        self.resume
    }

    async fn connect(&mut self) -> Result<(), BridgeError> {
        self.consumer = None;
        *self.at.lock().unwrap() = None;
        let c = client::consumer(&self.cfg, &self.group)
            .map_err(|e| unavailable("connecting to Kafka", e))?;
        self.consumer = Some(Arc::new(c));
        Ok(())
    }

    async fn fetch(&mut self, position: u64) -> Result<Pending<Fetched>, BridgeError> {
        let c = self.consumer()?;
        let at = self.at.clone();
        let (topic, partition, name) =
            (self.topic.clone(), self.partition, self.topic_name.clone());
        let fetch_max = self.fetch_max;
        Ok(Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut at_now = at.lock().unwrap();
                if *at_now != Some(position) {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition_offset(&topic, partition, Offset::Offset(position as i64))
                        .map_err(|e| BridgeError::fatal(e.to_string()))?;
                    c.assign(&tpl)
                        .map_err(|e| unavailable("reading Kafka", e))?;
                    *at_now = Some(position);
                }
                let mut batches = Vec::new();
                let mut wait = Duration::from_millis(500);
                while batches.len() < fetch_max {
                    let Some(m) = c.poll(wait) else { break };
                    wait = Duration::ZERO;
                    let m = match m {
                        Ok(m) => m,
                        Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange)) => {
                            *at_now = None;
                            return Ok(Fetched::OutOfRange);
                        }
                        // librdkafka reports what it retries by itself (a
                        // request timed out, a broker away): keep the
                        // consumer and its fetch position — a new one would
                        // start over, and a broker such as Tansu pays for a
                        // first fetch with a scan of the partition.
                        Err(e) => {
                            tracing::debug!(error = %e, topic, partition, "reading Kafka; librdkafka retries");
                            break;
                        }
                    };
                    let r = client::record_of(&m);
                    let offset = m.offset() as u64;
                    let (item, _) = from_record(&r).map_err(|e| {
                        BridgeError::fatal(format!(
                            "Kafka {topic}/{partition} offset {offset}: {e}"
                        ))
                    })?;
                    let payload_bytes = item.payload.len() as u64;
                    *at_now = Some(offset + 1);
                    batches.push(vec![ConsumedItem {
                        topic: name.clone(),
                        partition: partition as u32,
                        offset,
                        record_bytes: payload_bytes as usize,
                        payload_bytes,
                        item,
                    }]);
                }
                Ok(Fetched::Batches(batches))
            })
            .await
            .map_err(|e| unavailable("reading Kafka", e))?
        }))
    }

    async fn earliest(&mut self) -> Result<Option<u64>, BridgeError> {
        let c = self.consumer()?;
        let (topic, p) = (self.topic.clone(), self.partition);
        tokio::task::spawn_blocking(move || {
            c.fetch_watermarks(&topic, p, Duration::from_secs(10))
                .map(|(lo, _)| Some(lo.max(0) as u64))
                .map_err(|e| BridgeError::fatal(format!("watermarks of {topic}/{p}: {e}")))
        })
        .await
        .map_err(|e| unavailable("reading Kafka", e))?
    }

    async fn commit(&mut self, position: u64) -> Result<(), BridgeError> {
        let c = self.consumer()?;
        let (topic, p) = (self.topic.clone(), self.partition);
        tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, p, Offset::Offset(position as i64))
                .map_err(|e| BridgeError::fatal(e.to_string()))?;
            c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
                .map_err(|e| unavailable("committing to Kafka", e))
        })
        .await
        .map_err(|e| unavailable("committing to Kafka", e))?
    }
}
