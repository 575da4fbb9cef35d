//! The rdkafka clients the bridge uses, with the one client context that
//! answers OAUTHBEARER token requests from a token file.

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::client::OAuthToken;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientContext;

use crate::config::KafkaConfig;

/// The bridge's client context: it reads an
/// OAUTHBEARER token from a file whenever librdkafka asks for a fresh one.
#[derive(Clone, Default)]
pub struct Context {
    token_file: Option<PathBuf>,
}

impl ClientContext for Context {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let path = self
            .token_file
            .as_ref()
            .ok_or("OAUTHBEARER asked for a token, and no token file is configured")?;
        let token = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the OAUTHBEARER token {}: {e}", path.display()))?;
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(format!("the OAUTHBEARER token file {} is empty", path.display()).into());
        }
        // Asked again before this runs out: the file may hold a fresh one by then.
        let lifetime_ms = diaspora_fabric::item::now_us() / 1000 + 5 * 60 * 1000;
        Ok(OAuthToken {
            token,
            principal_name: "diaspora".into(),
            lifetime_ms,
        })
    }
}

impl ConsumerContext for Context {}

/// A producer.
pub type Producer = FutureProducer<Context>;
/// A consumer.
pub type Consumer = BaseConsumer<Context>;

fn context(cfg: &KafkaConfig) -> Context {
    Context {
        token_file: cfg.token_file.clone(),
    }
}

/// An idempotent producer (acks=all, in order, no duplicates within its
/// session) that gives up on a message after `delivery_timeout`.
pub fn producer(cfg: &KafkaConfig, delivery_timeout: Duration) -> Result<Producer, String> {
    let ms = delivery_timeout.as_millis().to_string();
    cfg.client_config(&[
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("linger.ms", "2"),
        ("delivery.timeout.ms", &ms),
        ("queue.buffering.max.messages", "1000000"),
        ("queue.buffering.max.kbytes", "1048576"),
        ("message.max.bytes", "16777216"),
    ])?
    .create_with_context(context(cfg))
    .map_err(|e| format!("a Kafka producer for {}: {e}", cfg.bootstrap))
}

/// A consumer of group `group` that commits only when told to.
pub fn consumer(cfg: &KafkaConfig, group: &str) -> Result<Consumer, String> {
    cfg.client_config(&[
        ("group.id", group),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("enable.partition.eof", "false"),
        ("fetch.message.max.bytes", "16777216"),
    ])?
    .create_with_context(context(cfg))
    .map_err(|e| format!("a Kafka consumer for {}: {e}", cfg.bootstrap))
}

/// A consumed Kafka message as a [`crate::record::Record`] (copied out of
/// librdkafka's buffer).
pub fn record_of(m: &impl rdkafka::message::Message) -> crate::record::Record {
    use bytes::Bytes;
    use rdkafka::message::Headers;
    crate::record::Record {
        key: m.key().map(Bytes::copy_from_slice),
        value: m.payload().map(Bytes::copy_from_slice),
        timestamp_ms: m.timestamp().to_millis(),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(Bytes::copy_from_slice)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// How many partitions `topic` has, or `None` when it does not exist.
pub fn partitions(c: &Consumer, topic: &str) -> Result<Option<u32>, String> {
    use rdkafka::consumer::Consumer as _;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("Kafka metadata of {topic}: {e}"))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as u32))
}

/// Creates the Kafka topic `topic` of `partitions` partitions (replication
/// factor: the broker's default).
pub async fn create_topic(cfg: &KafkaConfig, topic: &str, partitions: u32) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<Context> = cfg
        .client_config(&[])?
        .create_with_context(context(cfg))
        .map_err(|e| format!("a Kafka admin client for {}: {e}", cfg.bootstrap))?;
    let r = admin
        .create_topics(
            &[NewTopic::new(
                topic,
                partitions as i32,
                TopicReplication::Fixed(-1),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(|e| format!("creating Kafka topic {topic}: {e}"))?;
    for t in r {
        t.map_err(|(name, code)| format!("creating Kafka topic {name}: {code}"))?;
    }
    Ok(())
}

/// Hands `r` to `producer` for `topic`/`partition`, waiting while its
/// queue is full; the delivery future resolves when Kafka acknowledged it.
pub async fn send_record(
    producer: &Producer,
    topic: &str,
    partition: i32,
    r: &crate::record::Record,
) -> Result<rdkafka::producer::DeliveryFuture, rdkafka::error::KafkaError> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::FutureRecord;
    let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
    for (k, v) in &r.headers {
        headers = headers.insert(Header {
            key: k.as_str(),
            value: v.as_deref(),
        });
    }
    let empty: &[u8] = &[];
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
        .partition(partition)
        .headers(headers)
        .payload(r.value.as_deref().unwrap_or(empty));
    if let Some(k) = &r.key {
        record = record.key(k.as_ref());
    }
    if let Some(ts) = r.timestamp_ms {
        record = record.timestamp(ts);
    }
    loop {
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
