//! The provenance layer on the event fabric: [`FabricSink`] publishes
//! invalidation notices and `publish` actions; [`InvalidationFeed`] is how
//! consumers, views and trainers learn of invalidations and react.

use crate::model::*;
use crate::store::EventSink;
use crate::Notice;
use diaspora_fabric::consumer::{Consumer, ConsumerConfig, StartFrom};
use diaspora_fabric::item::payload_item;
use diaspora_fabric::producer::{Producer, ProducerConfig};
use diaspora_fabric::Client;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::mpsc;

type Request = (
    String,
    Vec<u8>,
    std::sync::mpsc::SyncSender<std::result::Result<(), String>>,
);

/// Publishes on fabric topics from blocking code (the provenance store's
/// thread). Each call waits for the node's acknowledgement, up to a time
/// limit. Topics must exist.
pub struct FabricSink {
    tx: mpsc::Sender<Request>,
    timeout: Duration,
}

impl FabricSink {
    /// Starts the publishing task on `runtime` with `client`.
    pub fn start(client: Client, runtime: &tokio::runtime::Handle) -> FabricSink {
        let (tx, mut rx) = mpsc::channel::<Request>(256);
        runtime.spawn(async move {
            let mut producers: HashMap<String, Producer> = HashMap::new();
            while let Some((topic, payload, reply)) = rx.recv().await {
                let r = async {
                    if !producers.contains_key(&topic) {
                        let p = Producer::new(&client, ProducerConfig::new(topic.clone()))
                            .await
                            .map_err(|e| format!("producer for {topic}: {e}"))?;
                        producers.insert(topic.clone(), p);
                    }
                    let p = &producers[&topic];
                    let d = p
                        .send(payload_item(payload.into()))
                        .await
                        .map_err(|e| format!("publish on {topic}: {e}"))?;
                    d.await.map_err(|e| format!("publish on {topic}: {e}"))?;
                    Ok::<(), String>(())
                }
                .await;
                if r.is_err() {
                    producers.remove(&topic);
                }
                let _ = reply.send(r);
            }
        });
        FabricSink {
            tx,
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets how long a publish waits for its acknowledgement.
    pub fn with_timeout(mut self, timeout: Duration) -> FabricSink {
        self.timeout = timeout;
        self
    }
}

impl EventSink for FabricSink {
    fn publish(&self, topic: &str, payload: Vec<u8>) -> std::result::Result<(), String> {
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        self.tx
            .try_send((topic.to_string(), payload, reply))
            .map_err(|e| format!("fabric publisher: {e}"))?;
        rx.recv_timeout(self.timeout).map_err(|_| {
            format!(
                "no acknowledgement from the fabric within {:?}",
                self.timeout
            )
        })?
    }
}

/// Follows the invalidation notices on a fabric topic and keeps the set of
/// invalid item locations and records, so a consumer can drop or flag an
/// item, a view can retract a row, a trainer can drop a sample.
pub struct InvalidationFeed {
    consumer: Consumer,
    items: HashSet<ItemRef>,
    records: HashSet<RecordId>,
    notices: u64,
    malformed: u64,
}

impl InvalidationFeed {
    /// Reads `topic` (all partitions) from `start`.
    pub async fn subscribe(
        client: &Client,
        topic: &str,
        start: StartFrom,
    ) -> Result<InvalidationFeed> {
        let consumer = Consumer::assign(client, ConsumerConfig::new(topic).start(start), &[])
            .await
            .map_err(|e| ProvError::Store(format!("subscribe to {topic}: {e}")))?;
        Ok(InvalidationFeed {
            consumer,
            items: HashSet::new(),
            records: HashSet::new(),
            notices: 0,
            malformed: 0,
        })
    }

    /// The next notice, if one arrives within `timeout`. A malformed
    /// message is counted, logged and skipped.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Option<Notice>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(got) = self
                .consumer
                .poll(left)
                .await
                .map_err(|e| ProvError::Store(format!("invalidation feed: {e}")))?
            else {
                return Ok(None);
            };
            match serde_json::from_slice::<Notice>(got.payload()) {
                Ok(n) => {
                    self.items.extend(n.items.iter().cloned());
                    self.records.extend(n.records.iter().copied());
                    self.notices += 1;
                    return Ok(Some(n));
                }
                Err(e) => {
                    self.malformed += 1;
                    tracing::warn!(error = %e, offset = got.offset, "malformed invalidation notice skipped");
                    if left.is_zero() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Whether the item at `loc` has been invalidated.
    pub fn is_invalid(&self, loc: &ItemRef) -> bool {
        self.items.contains(loc)
    }

    /// Whether the record has been invalidated.
    pub fn is_record_invalid(&self, id: RecordId) -> bool {
        self.records.contains(&id)
    }

    /// (notices read, malformed messages skipped).
    pub fn counts(&self) -> (u64, u64) {
        (self.notices, self.malformed)
    }
}
