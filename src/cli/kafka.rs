//! `diaspora kafka-bridge`: mirror a fabric topic into a Kafka topic, or a
//! Kafka topic into a fabric topic (diaspora-kafka), until a signal.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use diaspora_kafka::bridge::{from_kafka, to_kafka, KafkaBridgeConfig};
use diaspora_kafka::config::KafkaConfig;

use super::{check_ca, DataConn};

/// Which way items go.
#[derive(Clone, Copy, ValueEnum)]
pub enum Direction {
    /// The fabric topic into the Kafka topic.
    ToKafka,
    /// The Kafka topic into the fabric topic.
    FromKafka,
}

/// Arguments of `diaspora kafka-bridge`.
#[derive(Args)]
pub struct KafkaBridgeArgs {
    /// Which way items go.
    #[arg(long, value_enum)]
    direction: Direction,
    /// The fabric topic (on the node of --addr). Towards Kafka its
    /// partition p goes to Kafka partition p; from Kafka it must have at
    /// least the Kafka topic's partitions.
    #[arg(long)]
    topic: String,
    /// The node.
    #[command(flatten)]
    conn: DataConn,
    /// The Kafka side, as BOOTSTRAP/TOPIC (BOOTSTRAP: host:port[,host:port…]).
    #[arg(long, value_name = "BOOTSTRAP/TOPIC")]
    kafka: String,
    /// Bridge name: its position is the group `bridge.NAME` on the source
    /// side (the fabric node, or the Kafka service). Keep it stable across
    /// restarts (default: derived from the topics and the direction).
    #[arg(long)]
    name: Option<String>,
    /// Kafka security protocol: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(long, default_value = "plaintext")]
    kafka_security: String,
    /// SASL mechanism: SCRAM-SHA-256, SCRAM-SHA-512, PLAIN or OAUTHBEARER.
    #[arg(long)]
    kafka_sasl_mechanism: Option<String>,
    /// SASL user (SCRAM, PLAIN).
    #[arg(long, env = "DIASPORA_KAFKA_USERNAME")]
    kafka_username: Option<String>,
    /// SASL password (SCRAM, PLAIN): from the environment only.
    #[arg(skip = std::env::var("DIASPORA_KAFKA_PASSWORD").ok())]
    kafka_password: Option<String>,
    /// OAUTHBEARER: a file holding the token, re-read when it is refreshed.
    #[arg(long)]
    kafka_token_file: Option<PathBuf>,
    /// A CA (PEM) to verify the Kafka brokers with (TLS).
    #[arg(long)]
    kafka_ca: Option<PathBuf>,
    /// Any other librdkafka setting, KEY=VALUE (repeatable).
    #[arg(long = "kafka-set", value_name = "KEY=VALUE")]
    kafka_set: Vec<String>,
    /// Commit the bridged position at most this often, ms.
    #[arg(long, default_value_t = 200)]
    commit_interval_ms: u64,
    /// Print counters to stderr this often, seconds (0 = only at exit).
    #[arg(long, default_value_t = 5)]
    stats_interval_s: u64,
}

/// Runs a Kafka bridge until SIGTERM or Ctrl-C.
pub async fn run(a: KafkaBridgeArgs) -> Result<()> {
    let (bootstrap, kafka_topic) = a
        .kafka
        .rsplit_once('/')
        .filter(|(b, t)| !b.is_empty() && !t.is_empty())
        .with_context(|| format!("--kafka {:?} is not BOOTSTRAP/TOPIC", a.kafka))?;
    check_ca(&a.conn.ca)?;
    let mut kafka = KafkaConfig::new(bootstrap);
    kafka.security = a
        .kafka_security
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--kafka-security: {e}"))?;
    kafka.mechanism = a
        .kafka_sasl_mechanism
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| anyhow::anyhow!("--kafka-sasl-mechanism: {e}"))?;
    kafka.username = a.kafka_username.clone();
    kafka.password = a.kafka_password.clone();
    kafka.token_file = a.kafka_token_file.clone();
    kafka.ca = a.kafka_ca.clone();
    for kv in &a.kafka_set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--kafka-set {kv:?} is not KEY=VALUE"))?;
        kafka.extra.insert(k.to_string(), v.to_string());
    }
    kafka
        .settings()
        .map_err(|e| anyhow::anyhow!("the Kafka settings: {e}"))?;
    let (dir, arrow) = match a.direction {
        Direction::ToKafka => ("to-kafka", "→"),
        Direction::FromKafka => ("from-kafka", "←"),
    };
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{dir}-{kafka_topic}", a.topic));
    let mut cfg =
        KafkaBridgeConfig::new(&name, a.conn.client_config(), &a.topic, kafka, kafka_topic);
    cfg.commit_interval = Duration::from_millis(a.commit_interval_ms.max(1));
    let bridge = match a.direction {
        Direction::ToKafka => to_kafka(cfg).await,
        Direction::FromKafka => from_kafka(cfg).await,
    }
    .with_context(|| format!("starting Kafka bridge {name}"))?;
    eprintln!(
        "kafka bridge '{name}': {}/{} {arrow} kafka {bootstrap}/{kafka_topic}, {} partition(s)",
        a.conn.addr,
        a.topic,
        bridge.partitions()
    );
    let label = format!("kafka bridge '{name}'");
    let failed = super::bridge::wait_for_signal(&bridge, &label, a.stats_interval_s).await?;
    super::bridge::finish(bridge, &label, failed).await
}
