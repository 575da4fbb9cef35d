//! `diaspora bench kafka-bridge`: items through the Kafka bridge (fabric →
//! Kafka) against a plain Kafka producer writing the same records to the
//! same broker, in the same run.
//!
//! Per workload (item size × items) and round:
//! - **bridge**: the items are produced into a fabric topic of an embedded
//!   node first (not timed); then a bridge to a fresh Kafka topic starts,
//!   and the clock runs from its start until Kafka acknowledged every item
//!   (the bridge's `forwarded` count);
//! - **plain**: an rdkafka producer with the bridge's own settings
//!   (idempotent, `acks=all`, `linger.ms=2`) sends the very records the
//!   bridge writes (payload, `diaspora.item` and `diaspora.source` headers,
//!   metadata headers) to another fresh topic of the same partitions, and
//!   the clock runs until every delivery is acknowledged.
//!
//! Both Kafka topics are created before the clock starts. Which of the two
//! goes first alternates between rounds. The broker is the one named
//! (`--bootstrap`) or a Tansu started for the run.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diaspora_fabric::item::{meta, payload_item, Item, ItemRef};
use diaspora_fabric::node::Node;
use diaspora_fabric::stats::Spread;
use diaspora_fabric::{Client, ClientConfig, Producer, ProducerConfig};
use diaspora_fabric::{NodeConfig, TopicSettings};

use crate::bridge::{to_kafka, KafkaBridgeConfig};
use crate::client;
use crate::config::KafkaConfig;
use crate::record::to_record;
use crate::testing::Tansu;

/// What to run.
#[derive(Debug, Clone)]
pub struct KafkaBenchConfig {
    /// Workloads: (payload bytes, items).
    pub workloads: Vec<(usize, u64)>,
    /// Rounds of each.
    pub rounds: u32,
    /// Partitions of every topic (fabric and Kafka).
    pub partitions: u32,
    /// A broker to use; `None`: start `tansu` for the run.
    pub bootstrap: Option<String>,
    /// The Tansu binary (when no `bootstrap`).
    pub tansu: PathBuf,
    /// A run fails when nothing is acknowledged for this long.
    pub stall_timeout: Duration,
}

/// One workload's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KafkaBenchRow {
    /// Payload bytes per item.
    pub size: usize,
    /// Items per round.
    pub items: u64,
    /// Through the bridge, items/s.
    pub bridge_items_per_s: Spread,
    /// Through the bridge, payload MB/s.
    pub bridge_mb_per_s: Spread,
    /// The plain producer, items/s.
    pub plain_items_per_s: Spread,
    /// The plain producer, payload MB/s.
    pub plain_mb_per_s: Spread,
    /// Median bridge rate over median plain rate.
    pub ratio_to_plain: f64,
}

/// The report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KafkaBenchReport {
    /// The broker: `tansu (SQLite) at ADDR`, or the bootstrap named.
    pub broker: String,
    /// Partitions of every topic.
    pub partitions: u32,
    /// Rounds.
    pub rounds: u32,
    /// One row per workload.
    pub rows: Vec<KafkaBenchRow>,
}

fn payload(size: usize, seed: u64) -> Bytes {
    // Not compressible, not all alike: an xorshift stream.
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(size);
    Bytes::from(v)
}

fn item(size: usize, id: u64) -> Item {
    let mut it = payload_item(payload(size, id));
    it.metadata.insert("id".into(), meta::int(id as i64));
    it
}

/// Runs the benchmark.
pub async fn run(cfg: &KafkaBenchConfig) -> Result<KafkaBenchReport, String> {
    let p = cfg.partitions.max(1);
    let tansu_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (_tansu, bootstrap, broker) = match &cfg.bootstrap {
        Some(b) => (None, b.clone(), b.clone()),
        None => {
            let t = Tansu::start(&cfg.tansu, tansu_dir.path()).map_err(|e| {
                format!(
                    "starting Tansu ({}): {e} — install it (`cargo install tansu --version 0.6.0 \
                     --locked --no-default-features --features libsql`), name it with --tansu, \
                     or bench another broker with --bootstrap",
                    cfg.tansu.display()
                )
            })?;
            let b = t.bootstrap();
            (Some(t), b.clone(), format!("tansu (SQLite) at {b}"))
        }
    };
    let kafka = KafkaConfig::new(bootstrap);
    let node_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut ncfg = NodeConfig::new(node_dir.path());
    ncfg.admin_listen = None;
    let node = Node::start(ncfg).await.map_err(|e| e.to_string())?;
    let client = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file()))
        .await
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for &(size, items) in &cfg.workloads {
        let (mut bridged, mut plain) = (Vec::new(), Vec::new());
        for round in 0..cfg.rounds.max(1) {
            let tag = format!("{size}-{items}-{round}");
            let fabric_topic = format!("bench.{tag}");
            diaspora_fabric::topic::ensure_topic(
                node.broker(),
                &fabric_topic,
                &TopicSettings::with_partitions(p),
            )
            .await
            .map_err(|e| e.to_string())?;
            fill(&client, &fabric_topic, size, items).await?;
            let (kb, kp) = (format!("bridged-{tag}"), format!("plain-{tag}"));
            client::create_topic(&kafka, &kb, p).await?;
            client::create_topic(&kafka, &kp, p).await?;
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for bridge_now in order {
                if bridge_now {
                    let mut bc = KafkaBridgeConfig::new(
                        format!("bench-{tag}"),
                        ClientConfig::new(node.data_addr(), node.ca_file()),
                        &fabric_topic,
                        kafka.clone(),
                        &kb,
                    );
                    bc.commit_interval = Duration::from_millis(500);
                    bridged.push(through_bridge(bc, items, cfg.stall_timeout).await?);
                } else {
                    plain.push(
                        plain_producer(&kafka, &kp, &fabric_topic, p, size, items, cfg).await?,
                    );
                }
            }
        }
        let mb = |v: &[f64]| Spread::of(v.iter().map(|s| items as f64 * size as f64 / 1e6 / s));
        let per_s = |v: &[f64]| Spread::of(v.iter().map(|s| items as f64 / s));
        let (b, pl) = (per_s(&bridged), per_s(&plain));
        rows.push(KafkaBenchRow {
            size,
            items,
            bridge_items_per_s: b,
            bridge_mb_per_s: mb(&bridged),
            plain_items_per_s: pl,
            plain_mb_per_s: mb(&plain),
            ratio_to_plain: b.median / pl.median.max(1e-9),
        });
    }
    client.close();
    node.shutdown().await;
    Ok(KafkaBenchReport {
        broker,
        partitions: p,
        rounds: cfg.rounds.max(1),
        rows,
    })
}

/// Produces `items` items of `size` bytes into `topic` and waits for every
/// acknowledgement.
async fn fill(client: &Client, topic: &str, size: usize, items: u64) -> Result<(), String> {
    let producer = Producer::new(client, ProducerConfig::new(topic))
        .await
        .map_err(|e| e.to_string())?;
    let mut acks = Vec::new();
    for id in 0..items {
        acks.push(
            producer
                .send(item(size, id))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    for a in acks {
        a.await.map_err(|e| e.to_string())?;
    }
    producer.close().await.map_err(|e| e.to_string())
}

/// Seconds from the bridge's start until Kafka acknowledged `items`.
async fn through_bridge(
    cfg: KafkaBridgeConfig,
    items: u64,
    stall: Duration,
) -> Result<f64, String> {
    let t0 = Instant::now();
    let bridge = to_kafka(cfg).await.map_err(|e| e.to_string())?;
    let (mut last, mut last_move) = (0, Instant::now());
    loop {
        let n = bridge.stats().forwarded.load(Ordering::Relaxed);
        if n >= items {
            break;
        }
        if n != last {
            (last, last_move) = (n, Instant::now());
        } else if last_move.elapsed() > stall {
            let failed = bridge.stats().failed.lock().clone();
            bridge.stop().await;
            return Err(format!(
                "the bridge stalled at {n} of {items} items for {stall:?} ({failed:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    bridge.stop().await;
    Ok(secs)
}

/// Seconds for a plain producer to have the same records acknowledged.
async fn plain_producer(
    kafka: &KafkaConfig,
    topic: &str,
    fabric_topic: &str,
    partitions: u32,
    size: usize,
    items: u64,
    cfg: &KafkaBenchConfig,
) -> Result<f64, String> {
    // The records the bridge writes, made before the clock starts.
    let records: Vec<_> = (0..items)
        .map(|id| {
            let p = (id % partitions as u64) as u32;
            let src = ItemRef {
                topic: fabric_topic.into(),
                partition: p,
                offset: id / partitions as u64,
            };
            (p as i32, to_record(&item(size, id), &src))
        })
        .collect();
    let t0 = Instant::now();
    let producer = client::producer(kafka, Duration::from_secs(30))?;
    let mut pending = Vec::with_capacity(records.len());
    for (p, r) in &records {
        let f = client::send_record(&producer, topic, *p, r)
            .await
            .map_err(|e| format!("producing to {topic}: {e}"))?;
        pending.push(f);
    }
    for f in pending {
        match tokio::time::timeout(cfg.stall_timeout, f).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err((e, _)))) => return Err(format!("a delivery to {topic}: {e}")),
            Ok(Err(_)) => return Err(format!("a delivery to {topic} was cancelled")),
            Err(_) => {
                return Err(format!(
                    "no delivery to {topic} for {:?}",
                    cfg.stall_timeout
                ))
            }
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}
