//! The Kafka bridge in both directions, on the fabric's bridge loop:
//! [`to_kafka`] (a fabric topic into a Kafka topic) and [`from_kafka`] (a
//! Kafka topic into a fabric topic), partition to partition.

use std::sync::Arc;
use std::time::Duration;

use diaspora_fabric::bridge::{
    Bridge, BridgeStats, FabricSink, FabricSource, MirrorConfig, MirrorPartition,
};
use diaspora_fabric::item::key_hash;
use diaspora_fabric::{Client, ClientConfig, Compression};

use crate::client;
use crate::config::KafkaConfig;
use crate::sink::KafkaSink;
use crate::source::KafkaSource;

/// What both directions share.
#[derive(Debug, Clone)]
pub struct KafkaBridgeConfig {
    /// The bridge's name: its position is the group `bridge.NAME` on the
    /// source side.
    pub name: String,
    /// The fabric node.
    pub fabric: ClientConfig,
    /// The fabric topic.
    pub fabric_topic: String,
    /// The Kafka service.
    pub kafka: KafkaConfig,
    /// The Kafka topic.
    pub kafka_topic: String,
    /// Batches in flight per partition.
    pub in_flight_max: usize,
    /// Commit the position at most this often.
    pub commit_interval: Duration,
    /// Longest pause between reconnection attempts.
    pub retry_backoff_max: Duration,
    /// A Kafka delivery not acknowledged within this is retried (after a
    /// reconnect and a tail read).
    pub delivery_timeout: Duration,
    /// Towards Kafka: create the Kafka topic, with the fabric topic's
    /// partitions, when it does not exist.
    pub create_topic: bool,
}

impl KafkaBridgeConfig {
    /// Defaults for a bridge `name` between `fabric_topic` and `kafka_topic`.
    pub fn new(
        name: impl Into<String>,
        fabric: ClientConfig,
        fabric_topic: impl Into<String>,
        kafka: KafkaConfig,
        kafka_topic: impl Into<String>,
    ) -> Self {
        KafkaBridgeConfig {
            name: name.into(),
            fabric,
            fabric_topic: fabric_topic.into(),
            kafka,
            kafka_topic: kafka_topic.into(),
            in_flight_max: 64,
            commit_interval: Duration::from_millis(500),
            retry_backoff_max: Duration::from_secs(2),
            delivery_timeout: Duration::from_secs(30),
            create_topic: false,
        }
    }

    fn mirror(&self) -> MirrorConfig {
        MirrorConfig {
            in_flight_max: self.in_flight_max,
            commit_interval: self.commit_interval,
            retry_backoff_max: self.retry_backoff_max,
        }
    }

    fn group(&self) -> String {
        format!("bridge.{}", self.name)
    }

    fn producer_id(&self, direction: &str, partition: u32) -> u64 {
        let key = format!(
            "kafka\u{0}{direction}\u{0}{}\u{0}{}\u{0}{}\u{0}{partition}",
            self.name, self.fabric_topic, self.kafka_topic
        );
        key_hash(key.as_bytes()) | 1
    }
}

/// A failure to start a Kafka bridge.
#[derive(Debug, thiserror::Error)]
pub enum KafkaBridgeError {
    /// On the fabric side.
    #[error("fabric: {0}")]
    Fabric(#[from] diaspora_fabric::FabricError),
    /// On the Kafka side.
    #[error("kafka: {0}")]
    Kafka(String),
}

fn kafka_partitions(cfg: &KafkaConfig, topic: &str) -> Result<Option<u32>, KafkaBridgeError> {
    let c = client::consumer(cfg, "diaspora.bridge.metadata").map_err(KafkaBridgeError::Kafka)?;
    client::partitions(&c, topic).map_err(KafkaBridgeError::Kafka)
}

/// Starts a bridge from a fabric topic into a Kafka topic with at least as
/// many partitions.
pub async fn to_kafka(cfg: KafkaBridgeConfig) -> Result<Bridge, KafkaBridgeError> {
    let client = Client::connect(cfg.fabric.clone()).await?;
    let sources = FabricSource::open(&client, &cfg.fabric_topic, &cfg.group(), 4 << 20).await?;
    let (kcfg, ktopic) = (cfg.kafka.clone(), cfg.kafka_topic.clone());
    let n = tokio::task::spawn_blocking(move || kafka_partitions(&kcfg, &ktopic))
        .await
        .map_err(|e| KafkaBridgeError::Kafka(e.to_string()))??;
    let n = match n {
        Some(n) => n,
        None if cfg.create_topic => {
            let n = sources.len() as u32;
            client::create_topic(&cfg.kafka, &cfg.kafka_topic, n)
                .await
                .map_err(KafkaBridgeError::Kafka)?;
            n
        }
        None => {
            return Err(KafkaBridgeError::Kafka(format!(
                "topic {} does not exist: create it with at least the {} partitions of {} \
                 (or let the bridge create it)",
                cfg.kafka_topic,
                sources.len(),
                cfg.fabric_topic
            )))
        }
    };
    if (n as usize) < sources.len() {
        return Err(KafkaBridgeError::Kafka(format!(
            "Kafka topic {} has {n} partitions, fewer than the {} of {}",
            cfg.kafka_topic,
            sources.len(),
            cfg.fabric_topic
        )));
    }
    let kafka = Arc::new(cfg.kafka.clone());
    let parts = sources
        .into_iter()
        .map(|source| {
            let p = diaspora_fabric::bridge::BridgeSource::partition(&source);
            MirrorPartition {
                sink: KafkaSink::new(
                    kafka.clone(),
                    &cfg.kafka_topic,
                    p as i32,
                    &cfg.fabric_topic,
                    p,
                    cfg.delivery_timeout,
                ),
                source,
                producer_id: cfg.producer_id("out", p),
            }
        })
        .collect();
    Ok(Bridge::spawn(
        parts,
        cfg.mirror(),
        Arc::new(BridgeStats::default()),
    )?)
}

/// Starts a bridge from a Kafka topic into a fabric topic with at least as
/// many partitions.
pub async fn from_kafka(cfg: KafkaBridgeConfig) -> Result<Bridge, KafkaBridgeError> {
    let client = Client::connect(cfg.fabric.clone()).await?;
    let kafka = Arc::new(cfg.kafka.clone());
    let (k, topic, group) = (kafka.clone(), cfg.kafka_topic.clone(), cfg.group());
    let sources = tokio::task::spawn_blocking(move || KafkaSource::open(k, &topic, &group))
        .await
        .map_err(|e| KafkaBridgeError::Kafka(e.to_string()))?
        .map_err(KafkaBridgeError::Kafka)?;
    let mut sinks: Vec<Option<FabricSink>> =
        FabricSink::open(&client, &cfg.fabric_topic, Compression::None)
            .await?
            .into_iter()
            .map(Some)
            .collect();
    if sinks.len() < sources.len() {
        return Err(KafkaBridgeError::Fabric(
            diaspora_fabric::FabricError::Invalid(format!(
                "fabric topic {} has {} partitions, fewer than the {} of Kafka topic {}",
                cfg.fabric_topic,
                sinks.len(),
                sources.len(),
                cfg.kafka_topic
            )),
        ));
    }
    // The fabric sink answers re-sends plainly only within its window; a
    // fetch (one record per batch) adds at most the window's room.
    let mut mirror = cfg.mirror();
    mirror.in_flight_max = mirror
        .in_flight_max
        .min(<FabricSink as diaspora_fabric::bridge::BridgeSink>::DUPLICATE_WINDOW);
    let parts = sources
        .into_iter()
        .map(|source| {
            let source = source.with_fetch_max(mirror.in_flight_max);
            let p = diaspora_fabric::bridge::BridgeSource::partition(&source);
            MirrorPartition {
                sink: sinks[p as usize].take().expect("one sink per partition"),
                source,
                producer_id: cfg.producer_id("in", p),
            }
        })
        .collect();
    Ok(Bridge::spawn(
        parts,
        mirror,
        Arc::new(BridgeStats::default()),
    )?)
}
