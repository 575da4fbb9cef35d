//! Metrics on the fabric: a publisher that snapshots a [`Registry`] every
//! interval and produces one [`MetricEvent`] per snapshot (JSON, see
//! [`crate::event`]) on a topic, and a subscriber that reads them back.
//!
//! Items carry the source as their key (so one source's events stay in one
//! partition, in order) and the header `content-type: application/json`.
//!
//! A publisher told to create its topic ([`TopicCreation`]) does it with
//! the fabric's [`ensure_topic`](diaspora_fabric::ensure_topic), on an
//! embedded node or through the admin plane.
//!
//! The publisher keeps going through node outages: the producer retries
//! (and de-duplicates) unacknowledged events across reconnections for
//! [`PublisherConfig::retry_for`]; events that fail for good, and snapshots
//! dropped because the producer's buffer stayed full, are counted in
//! [`PublisherStats`] (and in the registry as `telemetry.events_*`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use diaspora_fabric::item::payload_item;
use diaspora_fabric::{
    AdminClient, Broker, Client, Consumer, ConsumerConfig, FabricError, Producer, ProducerConfig,
    StartFrom, TopicSettings,
};
use diaspora_proto::v1::ErrorCode;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Result, TelemetryError};
use crate::event::{decode_event, encode_event, split_event, MetricEvent, SOURCE_CHARS_MAX};
use crate::registry::Registry;

/// Default metrics topic.
pub const DEFAULT_TOPIC: &str = "diaspora.metrics";
/// Shortest publishing interval.
pub const INTERVAL_MIN: Duration = Duration::from_millis(10);
/// Retention of a metrics topic the publisher creates: by age.
pub const CREATED_RETENTION_MS: u64 = 24 * 3600 * 1000;
/// Retention of a metrics topic the publisher creates: by size per partition.
pub const CREATED_RETENTION_BYTES: u64 = 256 << 20;
/// Bytes of events the producer may hold unacknowledged (an outage's worth
/// at one small event per second for many minutes); beyond, snapshots are
/// dropped and counted.
pub const BUFFER_BYTES_MAX: usize = 16 << 20;

/// How the publisher gets its topic when the node does not have it.
#[derive(Clone, Default)]
pub enum TopicCreation {
    /// The topic must exist; starting fails otherwise.
    #[default]
    MustExist,
    /// Create it through an embedded node's broker.
    Embedded(Arc<Broker>),
    /// Create it through the node's gRPC admin plane at this address
    /// (trusting the client's CA file).
    Admin(SocketAddr),
}

impl std::fmt::Debug for TopicCreation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicCreation::MustExist => f.write_str("MustExist"),
            TopicCreation::Embedded(b) => write!(f, "Embedded({})", b.node_id()),
            TopicCreation::Admin(a) => write!(f, "Admin({a})"),
        }
    }
}

/// Publisher settings.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Topic to publish on (default [`DEFAULT_TOPIC`]).
    pub topic: String,
    /// The events' source (a process or site name, stable across restarts).
    pub source: String,
    /// How often to snapshot and publish (default 1 s, at least [`INTERVAL_MIN`]).
    pub interval: Duration,
    /// What to do when the topic is absent (default: it must exist). A
    /// created topic has 1 partition and retention [`CREATED_RETENTION_MS`]
    /// / [`CREATED_RETENTION_BYTES`].
    pub create_topic: TopicCreation,
    /// How long an event is retried across an outage before it fails for
    /// good (default 60 s).
    pub retry_for: Duration,
    /// How long [`MetricsPublisher::stop`] waits for outstanding events
    /// (default 5 s).
    pub stop_timeout: Duration,
}

impl PublisherConfig {
    /// Defaults for `source`.
    pub fn new(source: impl Into<String>) -> Self {
        PublisherConfig {
            topic: DEFAULT_TOPIC.to_string(),
            source: source.into(),
            interval: Duration::from_secs(1),
            create_topic: TopicCreation::MustExist,
            retry_for: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of a publisher (also registered on its registry, labelled
/// `source`, as `telemetry.events_published`, `telemetry.events_failed`,
/// `telemetry.snapshots_dropped`).
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Events acknowledged by the node.
    pub events_published: AtomicU64,
    /// Events that failed for good (retries exhausted, refused).
    pub events_failed: AtomicU64,
    /// Snapshots not published: the producer's buffer stayed full for an interval.
    pub snapshots_dropped: AtomicU64,
    /// The last failure, if any.
    pub last_error: Mutex<Option<String>>,
}

impl PublisherStats {
    fn fail(&self, counter: &AtomicU64, e: impl std::fmt::Display) {
        counter.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(e.to_string());
    }
}

/// A running publisher; [`MetricsPublisher::stop`] publishes a last
/// snapshot, waits for outstanding events and stops. Dropping it stops it
/// too, without waiting.
pub struct MetricsPublisher {
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<()>,
    stats: Arc<PublisherStats>,
}

/// The settings of a topic the publisher creates: 1 partition, retention
/// [`CREATED_RETENTION_MS`] / [`CREATED_RETENTION_BYTES`].
pub fn created_topic_settings() -> TopicSettings {
    TopicSettings {
        retention_bytes: Some(CREATED_RETENTION_BYTES),
        retention_ms: Some(CREATED_RETENTION_MS),
        ..TopicSettings::with_partitions(1)
    }
}

/// Makes sure `topic` exists, creating it as `how` says (with
/// [`created_topic_settings`], through the fabric's one
/// [`ensure_topic`](diaspora_fabric::ensure_topic)). A topic that exists
/// already is used as it is, whatever its partition count.
pub async fn ensure_topic(client: &Client, topic: &str, how: &TopicCreation) -> Result<()> {
    match client.metadata(topic).await {
        Ok(_) => return Ok(()),
        Err(e) if e.code() == ErrorCode::UnknownTopic => {}
        Err(e) => return Err(e.into()),
    }
    let settings = created_topic_settings();
    match how {
        TopicCreation::MustExist => {
            return Err(TelemetryError::Fabric(FabricError::Invalid(format!(
                "metrics topic '{topic}' does not exist; create it or set PublisherConfig::create_topic"
            ))))
        }
        TopicCreation::Embedded(broker) => {
            diaspora_fabric::ensure_topic(broker, topic, &settings).await?;
        }
        TopicCreation::Admin(addr) => {
            let mut admin = AdminClient::connect(*addr, &client.config().ca_file).await?;
            diaspora_fabric::ensure_topic(&mut admin, topic, &settings).await?;
        }
    }
    Ok(())
}

impl MetricsPublisher {
    /// Checks the configuration, makes sure the topic exists, creates the
    /// producer (so an unreachable node or a missing topic is reported now)
    /// and starts publishing. Must be called within a tokio runtime.
    pub async fn start(
        client: Client,
        config: PublisherConfig,
        registry: Registry,
    ) -> Result<MetricsPublisher> {
        if config.topic.is_empty() {
            return Err(TelemetryError::Config("publisher topic is empty".into()));
        }
        if config.source.chars().count() > SOURCE_CHARS_MAX {
            return Err(TelemetryError::Config(format!(
                "publisher source of {} characters exceeds {SOURCE_CHARS_MAX}",
                config.source.chars().count()
            )));
        }
        if config.interval < INTERVAL_MIN {
            return Err(TelemetryError::Config(format!(
                "publisher interval {:?} is below INTERVAL_MIN {INTERVAL_MIN:?}",
                config.interval
            )));
        }
        ensure_topic(&client, &config.topic, &config.create_topic).await?;
        let mut pc = ProducerConfig::new(config.topic.clone());
        pc.buffer_bytes_max = BUFFER_BYTES_MAX;
        pc.retry_for = config.retry_for;
        pc.linger = Duration::from_millis(1);
        let producer = Producer::new(&client, pc).await?;
        let stats = Arc::new(PublisherStats::default());
        let labels = [("source", config.source.as_str())];
        for (name, pick) in [
            (
                "telemetry.events_published",
                (|s| &s.events_published) as fn(&PublisherStats) -> &AtomicU64,
            ),
            ("telemetry.events_failed", |s| &s.events_failed),
            ("telemetry.snapshots_dropped", |s| &s.snapshots_dropped),
        ] {
            let s = stats.clone();
            registry.observe_counter(name, "{event}", &labels, move || {
                Some(pick(&s).load(Ordering::Relaxed))
            })?;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(producer, config, registry, stats.clone(), stop_rx));
        Ok(MetricsPublisher {
            stop_tx,
            task,
            stats,
        })
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<PublisherStats> {
        &self.stats
    }

    /// Publishes a last snapshot, waits (up to the configured stop timeout)
    /// until every event is acknowledged or failed, and stops.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(true);
        let _ = self.task.await;
    }
}

async fn run(
    producer: Producer,
    config: PublisherConfig,
    registry: Registry,
    stats: Arc<PublisherStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut deliveries = JoinSet::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        publish(&producer, &config, &registry, &stats, &mut deliveries).await;
        while deliveries.try_join_next().is_some() {}
    }
    publish(&producer, &config, &registry, &stats, &mut deliveries).await;
    let drained = async {
        let _ = producer.flush().await;
        while deliveries.join_next().await.is_some() {}
    };
    if tokio::time::timeout(config.stop_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(topic = %config.topic, "metrics publisher stopped with events outstanding");
    }
    let _ = tokio::time::timeout(config.stop_timeout, producer.close()).await;
}

/// One snapshot, as one or more events (see [`split_event`]).
async fn publish(
    producer: &Producer,
    config: &PublisherConfig,
    registry: &Registry,
    stats: &Arc<PublisherStats>,
    deliveries: &mut JoinSet<()>,
) {
    let event = MetricEvent {
        source: config.source.clone(),
        t_us: diaspora_fabric::item::now_us(),
        interval_ms: config.interval.as_millis().min(u64::MAX.into()) as u64,
        samples: registry.snapshot(),
    };
    for part in split_event(event) {
        let mut item = payload_item(Bytes::from(encode_event(&part)));
        item.key = Bytes::from(config.source.clone().into_bytes());
        item.headers
            .insert("content-type".into(), "application/json".into());
        // Waits only while the producer's buffer is full (a long outage);
        // then this snapshot is dropped rather than delaying the next one.
        match tokio::time::timeout(config.interval, producer.send(item)).await {
            Ok(Ok(delivery)) => {
                let stats = stats.clone();
                deliveries.spawn(async move {
                    match delivery.await {
                        Ok(_) => {
                            stats.events_published.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => stats.fail(&stats.events_failed, e),
                    }
                });
            }
            Ok(Err(e)) => stats.fail(&stats.events_failed, e),
            Err(_) => {
                stats.fail(
                    &stats.snapshots_dropped,
                    "producer buffer full for a whole interval",
                );
                return;
            }
        }
    }
}

/// An event read from the fabric with its place.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    /// The event.
    pub event: MetricEvent,
    /// Partition it was read from.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
}

/// Reads [`MetricEvent`]s from a metrics topic, skipping (and counting)
/// items that do not decode. Made by [`subscribe`].
pub struct MetricStream {
    consumer: Consumer,
    malformed: u64,
}

/// Reads the metrics topic from `start` on (every partition, no consumer
/// group). Fails if the topic does not exist.
pub async fn subscribe(client: &Client, topic: &str, start: StartFrom) -> Result<MetricStream> {
    let consumer = Consumer::assign(client, ConsumerConfig::new(topic).start(start), &[]).await?;
    Ok(MetricStream {
        consumer,
        malformed: 0,
    })
}

impl MetricStream {
    /// The next event, waiting up to `timeout` in all; `Ok(None)` on timeout.
    /// Items that do not decode are skipped and counted ([`MetricStream::malformed`]).
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<MetricEvent>> {
        Ok(self.next_received(timeout).await?.map(|r| r.event))
    }

    /// Like [`MetricStream::next`], with the event's partition and offset.
    pub async fn next_received(&mut self, timeout: Duration) -> Result<Option<ReceivedEvent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(item) = self.consumer.poll(left).await? else {
                return Ok(None);
            };
            match decode_event(item.payload()) {
                Ok(event) => {
                    return Ok(Some(ReceivedEvent {
                        event,
                        partition: item.partition,
                        offset: item.offset,
                    }))
                }
                Err(e) => {
                    self.malformed += 1;
                    tracing::debug!(
                        partition = item.partition,
                        offset = item.offset,
                        "skipping a metrics item: {e}"
                    );
                    if left.is_zero() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Items skipped because they did not decode.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Stops reading.
    pub async fn close(self) {
        self.consumer.close().await;
    }
}
