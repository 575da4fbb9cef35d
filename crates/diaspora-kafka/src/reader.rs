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
    /// Per partition, its end when the reader opened.
    end_at_open: BTreeMap<i32, u64>,
    /// The last error librdkafka reported while reading (said once).
    last_error: Option<String>,
}

/// How long one metadata call (offsets, watermarks) may take: a busy
/// broker (Tansu scanning a large partition) answers slowly.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// Where `group` resumes on each partition of `topic`: its committed
/// offset, or the partition's earliest record. The topic must exist.
pub fn resume_positions(c: &Consumer, topic: &str, group: &str) -> Result<Vec<u64>, String> {
    Ok(positions(c, topic, group, false)?
        .into_iter()
        .map(|(at, _)| at)
        .collect())
}

/// Per partition of `topic`: where `group` resumes (its committed offset,
/// or without one the partition's start, or its end when `latest`), and
/// the partition's end now.
fn positions(
    c: &Consumer,
    topic: &str,
    group: &str,
    latest: bool,
) -> Result<Vec<(u64, u64)>, String> {
    let n = client::partitions(c, topic)?.ok_or_else(|| format!("Kafka has no topic {topic}"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..n as i32 {
        tpl.add_partition(topic, p);
    }
    let committed = c
        .committed_offsets(tpl, METADATA_TIMEOUT)
        .map_err(|e| format!("the committed offsets of group {group} on {topic}: {e}"))?;
    (0..n as i32)
        .map(|p| {
            let (lo, hi) = c
                .fetch_watermarks(topic, p, METADATA_TIMEOUT)
                .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
            let (lo, hi) = (lo.max(0) as u64, hi.max(0) as u64);
            let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) if o >= 0 => o as u64,
                _ if latest => hi,
                _ => lo,
            };
            Ok((at, hi))
        })
        .collect()
}

impl KafkaReader {
    /// A reader of `topic` for `group`, every partition assigned where the
    /// group left off (a partition it never committed: from its earliest
    /// record).
    pub fn open(cfg: &KafkaConfig, topic: &str, group: &str) -> Result<KafkaReader, String> {
        KafkaReader::open_from(cfg, topic, group, false)
    }

    /// As [`KafkaReader::open`]; a partition the group never committed is
    /// read from its end when `latest`.
    pub fn open_from(
        cfg: &KafkaConfig,
        topic: &str,
        group: &str,
        latest: bool,
    ) -> Result<KafkaReader, String> {
        let consumer = client::consumer(cfg, group)?;
        let at = positions(&consumer, topic, group, latest)?;
        let mut tpl = TopicPartitionList::new();
        for (p, (from, _)) in at.iter().enumerate() {
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(*from as i64))
                .map_err(|e| e.to_string())?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| format!("assigning {topic}: {e}"))?;
        let resume: BTreeMap<i32, u64> = at
            .iter()
            .enumerate()
            .map(|(p, (from, _))| (p as i32, *from))
            .collect();
        let end_at_open = at
            .iter()
            .enumerate()
            .map(|(p, (_, end))| (p as i32, *end))
            .collect();
        Ok(KafkaReader {
            consumer,
            topic: topic.to_string(),
            group: group.to_string(),
            partitions: at.len() as u32,
            done: resume.clone(),
            committed: resume,
            end_at_open,
            last_error: None,
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
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
                // librdkafka retries (a broker away, a connection lost);
                // an error that persists (refused credentials) is said
                // once, not on every poll.
                let e = e.to_string();
                if self.last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, topic = %self.topic, "reading Kafka; retrying");
                    self.last_error = Some(e);
                }
                return Ok(None);
            }
        };
        self.last_error = None;
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

    /// Moves the position to commit on `partition` back to `offset` (a
    /// record in hand that is not done after all): the next commit does not
    /// pass it. Reading goes on where it was.
    pub fn rewind(&mut self, partition: u32, offset: u64) {
        let e = self.done.entry(partition as i32).or_insert(offset);
        *e = (*e).min(offset);
    }

    /// Whether the caller is done with every record the topic held when
    /// the reader opened (a reader that is not has events to wait for,
    /// however long the broker takes to hand over the first of them).
    pub fn caught_up(&self) -> bool {
        self.end_at_open
            .iter()
            .all(|(p, end)| self.done.get(p).is_some_and(|d| d >= end))
    }

    /// The position to commit on each partition.
    pub fn positions(&self) -> BTreeMap<u32, u64> {
        self.done.iter().map(|(p, o)| (*p as u32, *o)).collect()
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
