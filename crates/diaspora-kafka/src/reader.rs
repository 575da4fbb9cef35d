//! A plain reader of a Kafka topic as items, for a consumer outside the
//! fabric: `diaspora kafka-consume` (a cloud consumer, a twin's) and
//! triggers whose source is a Kafka topic.
//!
//! Every partition is assigned at the group's committed offset (without
//! one: the partition's earliest record), records are taken back as items
//! ([`crate::record::from_record`]), and the position of what the caller
//! says it is done with ([`KafkaReader::done`]) is committed to the group
//! when it asks ([`KafkaReader::commit`]): at least once, a restarted
//! reader resumes after the last commit. The reader assigns rather than
//! subscribes, so it needs no group join (Tansu's can take tens of
//! seconds) — and so one group has one reader: two readers of the same
//! group would both read everything.
//!
//! Calls block (librdkafka); run them on a blocking thread from async code.

use std::collections::BTreeMap;
use std::time::Duration;

use diaspora_fabric::item::{Item, ItemRef};
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{self, Consumer};
use crate::config::KafkaConfig;
use crate::record::from_record;

/// One record read.
#[derive(Debug, Clone)]
pub struct KafkaRead {
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// The item it carries, or why it is not one (a record over a limit, a
    /// `diaspora.` header that does not decode): the caller decides whether
    /// to skip it.
    pub item: Result<Item, String>,
    /// Where a bridge took it from (`diaspora.source`), if one wrote it.
    pub source: Option<ItemRef>,
}

/// A reader of every partition of one Kafka topic for one group.
pub struct KafkaReader {
    consumer: Consumer,
    topic: String,
    group: String,
    partitions: u32,
    /// Per partition, the position after what the caller is done with.
    done: BTreeMap<i32, u64>,
    /// Per partition, the position last committed.
    committed: BTreeMap<i32, u64>,
}

/// Where `group` resumes on each partition of `topic`: its committed
/// offset, or the partition's earliest record. The topic must exist.
pub fn resume_positions(c: &Consumer, topic: &str, group: &str) -> Result<Vec<u64>, String> {
    let n = client::partitions(c, topic)?.ok_or_else(|| format!("Kafka has no topic {topic}"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..n as i32 {
        tpl.add_partition(topic, p);
    }
    let committed = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(|e| format!("the committed offsets of group {group} on {topic}: {e}"))?;
    (0..n as i32)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) if o >= 0 => Ok(o as u64),
                _ => c
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .map(|(lo, _)| lo.max(0) as u64)
                    .map_err(|e| format!("watermarks of {topic}/{p}: {e}")),
            },
        )
        .collect()
}

impl KafkaReader {
    /// A reader of `topic` for `group`, every partition assigned where the
    /// group left off.
    pub fn open(cfg: &KafkaConfig, topic: &str, group: &str) -> Result<KafkaReader, String> {
        let consumer = client::consumer(cfg, group)?;
        let resume = resume_positions(&consumer, topic, group)?;
        let mut tpl = TopicPartitionList::new();
        for (p, at) in resume.iter().enumerate() {
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(*at as i64))
                .map_err(|e| e.to_string())?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| format!("assigning {topic}: {e}"))?;
        let at: BTreeMap<i32, u64> = resume
            .iter()
            .enumerate()
            .map(|(p, o)| (p as i32, *o))
            .collect();
        Ok(KafkaReader {
            consumer,
            topic: topic.to_string(),
            group: group.to_string(),
            partitions: resume.len() as u32,
            done: at.clone(),
            committed: at,
        })
    }

    /// The topic's partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The next record, or `None` when none came within `timeout`. A
    /// broker that is away is not an error here: librdkafka reconnects and
    /// the read goes on where it was.
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<KafkaRead>, String> {
        let Some(m) = self.consumer.poll(timeout) else {
            return Ok(None);
        };
        let m = match m {
            Ok(m) => m,
            Err(KafkaError::MessageConsumption(
                code @ (RDKafkaErrorCode::OffsetOutOfRange
                | RDKafkaErrorCode::UnknownTopicOrPartition),
            )) => return Err(format!("reading Kafka topic {}: {code}", self.topic)),
            Err(e) => {
                tracing::debug!(error = %e, topic = %self.topic, "Kafka read; librdkafka retries");
                return Ok(None);
            }
        };
        let r = client::record_of(&m);
        let (partition, offset) = (m.partition(), m.offset().max(0) as u64);
        let (item, source) = match from_record(&r) {
            Ok((item, source)) => (Ok(item), source),
            Err(e) => (
                Err(format!(
                    "Kafka {}/{partition} offset {offset}: {e}",
                    self.topic
                )),
                None,
            ),
        };
        Ok(Some(KafkaRead {
            partition: partition as u32,
            offset,
            item,
            source,
        }))
    }

    /// The caller is done with the record at `offset` of `partition` (and
    /// with everything before it there).
    pub fn done(&mut self, partition: u32, offset: u64) {
        let e = self.done.entry(partition as i32).or_insert(0);
        *e = (*e).max(offset + 1);
    }

    /// Commits the group's position on every partition that moved since
    /// the last commit.
    pub fn commit(&mut self) -> Result<(), String> {
        let mut tpl = TopicPartitionList::new();
        for (p, at) in &self.done {
            if self.committed.get(p) != Some(at) {
                tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*at as i64))
                    .map_err(|e| e.to_string())?;
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| format!("committing group {} on {}: {e}", self.group, self.topic))?;
        self.committed.clone_from(&self.done);
        Ok(())
    }
}
