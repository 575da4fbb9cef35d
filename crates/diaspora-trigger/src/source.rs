//! Where a trigger's events come from: a fabric topic (the consumer group
//! `trigger.NAME` on the node, events read without their payloads) or a
//! Kafka topic (the same group on the Kafka service, every partition
//! assigned to this runner: see [`diaspora_kafka::reader`]).
//!
//! Both are read the same way by the runner: poll an event, and the
//! position moves past it; `unread` moves it back to an event in hand that
//! is not done; `commit` makes the position durable on the source's side.

use std::collections::BTreeMap;
use std::time::Duration;

use diaspora_fabric::item::{ConsumedItem, ItemRef};
use diaspora_fabric::{Client, Consumer, ConsumerConfig, StartFrom};

use crate::runner::TriggerError;
use crate::spec::{SourceKind, Start, TriggerSpec};

/// An event read, and the fabric place it stands for (for provenance): the
/// item itself for a fabric source; for a Kafka record a bridge wrote, the
/// place it was bridged from.
pub(crate) struct Polled {
    pub item: ConsumedItem,
    pub origin: Option<ItemRef>,
}

/// A trigger's source.
pub(crate) enum EventSource {
    /// The group's consumer, and the topic's name.
    Fabric(Box<Consumer>, String),
    #[cfg(feature = "kafka")]
    Kafka(diaspora_kafka::reader::KafkaReader),
}

impl EventSource {
    /// Opens `spec`'s source: joins the group on the node, or assigns the
    /// Kafka topic where the group left off.
    pub async fn open(spec: &TriggerSpec, client: &Client) -> Result<EventSource, TriggerError> {
        let latest = spec.source.start == Start::Latest;
        match spec.source.kind {
            SourceKind::Fabric => {
                let consumer = Consumer::subscribe(
                    client,
                    ConsumerConfig::new(spec.source.topic.clone())
                        .group(spec.group())
                        .start(if latest {
                            StartFrom::Latest
                        } else {
                            StartFrom::Earliest
                        })
                        .metadata_only(),
                )
                .await
                .map_err(|source| TriggerError::Fabric {
                    what: format!("joining group {} on {}", spec.group(), spec.source.topic),
                    source,
                })?;
                Ok(EventSource::Fabric(
                    Box::new(consumer),
                    spec.source.topic.clone(),
                ))
            }
            #[cfg(feature = "kafka")]
            SourceKind::Kafka => {
                let k = spec.source.kafka.as_ref().ok_or_else(|| {
                    TriggerError::Spec("a Kafka source without [source.kafka]".into())
                })?;
                let cfg = k
                    .config(std::env::var("DIASPORA_KAFKA_PASSWORD").ok())
                    .map_err(TriggerError::Spec)?;
                cfg.settings()
                    .map_err(|e| TriggerError::Spec(format!("source.kafka: {e}")))?;
                let (topic, group) = (spec.source.topic.clone(), spec.group());
                let reader = tokio::task::block_in_place(|| {
                    diaspora_kafka::reader::KafkaReader::open_from(&cfg, &topic, &group, latest)
                })
                .map_err(|e| {
                    TriggerError::Kafka(format!("opening {topic} at {}: {e}", k.bootstrap))
                })?;
                Ok(EventSource::Kafka(reader))
            }
            #[cfg(not(feature = "kafka"))]
            SourceKind::Kafka => Err(TriggerError::Spec(
                "this build has no Kafka client (diaspora-trigger's feature `kafka`)".into(),
            )),
        }
    }

    /// `fabric` or `kafka`: the scheme of an event's place in provenance.
    pub fn scheme(&self) -> &'static str {
        match self {
            EventSource::Fabric(..) => "fabric",
            #[cfg(feature = "kafka")]
            EventSource::Kafka(_) => "kafka",
        }
    }

    /// The next event, or `None` within `timeout`.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Option<Polled>, TriggerError> {
        match self {
            EventSource::Fabric(c, topic) => {
                let item = c
                    .poll(timeout)
                    .await
                    .map_err(|source| TriggerError::Fabric {
                        what: format!("reading {topic}"),
                        source,
                    })?;
                Ok(item.map(|item| Polled {
                    origin: Some(ItemRef::new(
                        item.topic.clone(),
                        item.partition,
                        item.offset,
                    )),
                    item,
                }))
            }
            #[cfg(feature = "kafka")]
            EventSource::Kafka(r) => {
                let Some(read) =
                    tokio::task::block_in_place(|| r.poll(timeout)).map_err(TriggerError::Kafka)?
                else {
                    return Ok(None);
                };
                r.done(read.partition, read.offset);
                match read.item {
                    Ok(item) => {
                        let payload_bytes = item.payload.len() as u64;
                        Ok(Some(Polled {
                            item: ConsumedItem {
                                topic: r.topic().into(),
                                partition: read.partition,
                                offset: read.offset,
                                record_bytes: payload_bytes as usize,
                                payload_bytes,
                                item,
                            },
                            origin: read.source,
                        }))
                    }
                    // Not an item: passed over (as a non-matching event
                    // is), loudly.
                    Err(e) => {
                        tracing::warn!(error = %e, "a Kafka record that is not an event: skipped");
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Whether the source is not ready to be called idle: a fabric group
    /// with nothing assigned yet (waiting for a dead member's session to
    /// time out), a Kafka reader not yet through what the topic held when
    /// it opened (a broker's first fetch may take long: Tansu's does).
    pub fn waiting(&self) -> bool {
        match self {
            EventSource::Fabric(c, _) => c.assignment().is_empty(),
            #[cfg(feature = "kafka")]
            EventSource::Kafka(r) => !r.caught_up(),
        }
    }

    /// Moves the position back to `item` (in hand, not done).
    pub fn unread(&mut self, item: &ConsumedItem) {
        match self {
            EventSource::Fabric(c, _) => {
                if let Err(e) = c.seek(item.partition, item.offset) {
                    tracing::warn!(error = %e, "cannot move back to {}/{}", item.partition, item.offset);
                }
            }
            #[cfg(feature = "kafka")]
            EventSource::Kafka(r) => r.rewind(item.partition, item.offset),
        }
    }

    /// Commits the position.
    pub async fn commit(&mut self, group: &str) -> Result<(), TriggerError> {
        match self {
            EventSource::Fabric(c, _) => c.commit().await.map_err(|source| TriggerError::Fabric {
                what: format!("committing group {group}"),
                source,
            }),
            #[cfg(feature = "kafka")]
            EventSource::Kafka(r) => {
                tokio::task::block_in_place(|| r.commit()).map_err(TriggerError::Kafka)
            }
        }
    }

    /// The position on each partition.
    pub fn positions(&self) -> BTreeMap<u32, u64> {
        match self {
            EventSource::Fabric(c, _) => c.positions().clone(),
            #[cfg(feature = "kafka")]
            EventSource::Kafka(r) => r.positions(),
        }
    }

    /// Leaves the group (fabric); a Kafka reader just drops.
    pub async fn close(self) {
        match self {
            EventSource::Fabric(c, _) => c.close().await,
            #[cfg(feature = "kafka")]
            EventSource::Kafka(_) => {}
        }
    }
}
