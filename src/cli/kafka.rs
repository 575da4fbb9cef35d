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

/// How to reach a Kafka-API service (shared by `kafka-bridge` and
/// `kafka-consume`).
#[derive(Args)]
pub struct KafkaConnArgs {
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
}

impl KafkaConnArgs {
    /// The settings for `bootstrap`, checked.
    fn config(&self, bootstrap: &str) -> Result<KafkaConfig> {
        let mut kafka = KafkaConfig::new(bootstrap);
        kafka.security = self
            .kafka_security
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--kafka-security: {e}"))?;
        kafka.mechanism = self
            .kafka_sasl_mechanism
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: String| anyhow::anyhow!("--kafka-sasl-mechanism: {e}"))?;
        kafka.username = self.kafka_username.clone();
        kafka.password = self.kafka_password.clone();
        kafka.token_file = self.kafka_token_file.clone();
        kafka.ca = self.kafka_ca.clone();
        for kv in &self.kafka_set {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--kafka-set {kv:?} is not KEY=VALUE"))?;
            kafka.extra.insert(k.to_string(), v.to_string());
        }
        kafka
            .settings()
            .map_err(|e| anyhow::anyhow!("the Kafka settings: {e}"))?;
        Ok(kafka)
    }
}

/// `BOOTSTRAP/TOPIC` split.
fn bootstrap_topic(s: &str) -> Result<(&str, &str)> {
    s.rsplit_once('/')
        .filter(|(b, t)| !b.is_empty() && !t.is_empty())
        .with_context(|| format!("--kafka {s:?} is not BOOTSTRAP/TOPIC"))
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
    /// How to reach the Kafka service.
    #[command(flatten)]
    kafka_conn: KafkaConnArgs,
    /// Towards Kafka: create the Kafka topic, with the fabric topic's
    /// partitions, if it does not exist (replication: the service's
    /// default).
    #[arg(long)]
    create_topic: bool,
    /// Commit the bridged position at most this often, ms.
    #[arg(long, default_value_t = 200)]
    commit_interval_ms: u64,
    /// Print counters to stderr this often, seconds (0 = only at exit).
    #[arg(long, default_value_t = 5)]
    stats_interval_s: u64,
}

/// Runs a Kafka bridge until SIGTERM or Ctrl-C.
pub async fn run(a: KafkaBridgeArgs) -> Result<()> {
    let (bootstrap, kafka_topic) = bootstrap_topic(&a.kafka)?;
    check_ca(&a.conn.ca)?;
    if a.create_topic && matches!(a.direction, Direction::FromKafka) {
        anyhow::bail!("--create-topic is for --direction to-kafka (from Kafka, create the fabric topic with `diaspora topic create`)");
    }
    let kafka = a.kafka_conn.config(bootstrap)?;
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
    cfg.create_topic = a.create_topic;
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

/// Arguments of `diaspora kafka-consume`.
#[derive(Args)]
pub struct KafkaConsumeArgs {
    /// The Kafka topic, as BOOTSTRAP/TOPIC.
    #[arg(long, value_name = "BOOTSTRAP/TOPIC")]
    kafka: String,
    /// The consumer group whose position is kept on the Kafka service
    /// (committed about once a second and at exit, after the output is
    /// written: at least once). One reader per group: every partition is
    /// assigned to it, without a group join.
    #[arg(long)]
    group: String,
    /// How to reach the Kafka service.
    #[command(flatten)]
    kafka_conn: KafkaConnArgs,
    /// When to stop.
    #[command(flatten)]
    stop: super::StopArgs,
    /// One JSON object per record (as `diaspora consume --json`, plus
    /// `source`: where a bridge took it from).
    #[arg(long)]
    json: bool,
    /// With --json: the payload too, as text.
    #[arg(long)]
    payload: bool,
}

/// Reads a Kafka topic's records as items and prints a line each, until
/// the count, the idle time-out or SIGTERM/Ctrl-C.
pub async fn consume(a: KafkaConsumeArgs) -> Result<()> {
    use diaspora_kafka::reader::KafkaReader;
    use std::io::Write;
    let (bootstrap, topic) = bootstrap_topic(&a.kafka)?;
    let kafka = a.kafka_conn.config(bootstrap)?;
    let (t, g) = (topic.to_string(), a.group.clone());
    let reader = tokio::task::spawn_blocking(move || KafkaReader::open(&kafka, &t, &g))
        .await?
        .map_err(|e| anyhow::anyhow!(e))
        .with_context(|| format!("reading Kafka topic {topic} at {bootstrap}"))?;
    let stop = super::stop_on_signal()?;
    let (tick, idle) = (Duration::from_millis(100), a.stop.idle());
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let (mut seen, mut idle_for) = (0u64, Duration::ZERO);
    let mut last_commit = std::time::Instant::now();
    // The reader goes to a blocking thread for each poll and comes back.
    let mut slot = Some(reader);
    let result: Result<()> = async {
        while a.stop.more(seen) && !stop.stopped() {
            let mut reader = slot.take().expect("the reader is back");
            let (r, reader) = tokio::task::spawn_blocking(move || {
                let r = reader.poll(tick.min(idle));
                (r, reader)
            })
            .await?;
            let reader = slot.insert(reader);
            let Some(read) = r.map_err(|e| anyhow::anyhow!(e))? else {
                out.flush()?;
                idle_for += tick;
                if idle_for >= idle {
                    if let Some(wanted) = a.stop.count {
                        anyhow::bail!("{seen} of {wanted} records within the idle time-out");
                    }
                    break;
                }
                continue;
            };
            idle_for = Duration::ZERO;
            seen += 1;
            match &read.item {
                Ok(item) if a.json => {
                    let mut line = diaspora_fabric::pipe::item_json(
                        topic,
                        read.partition,
                        read.offset,
                        item,
                        item.payload.len() as u64,
                        false,
                        a.payload,
                    );
                    if let Some(s) = &read.source {
                        line["source"] = s.to_string().into();
                    }
                    writeln!(out, "{line}")?;
                }
                Ok(item) => {
                    let p = &item.payload[..item.payload.len().min(80)];
                    writeln!(
                        out,
                        "{topic}/{}@{} {}B {}",
                        read.partition,
                        read.offset,
                        item.payload.len(),
                        String::from_utf8_lossy(p).escape_debug()
                    )?;
                }
                // A record that is not an item is reported and passed over:
                // one bad record does not stop the reader.
                Err(e) => eprintln!("warning: skipped: {e}"),
            }
            reader.done(read.partition, read.offset);
            if last_commit.elapsed() >= Duration::from_secs(1) {
                out.flush()?;
                if let Err(e) = reader.commit() {
                    eprintln!("warning: {e}; will retry");
                }
                last_commit = std::time::Instant::now();
            }
        }
        Ok(())
    }
    .await;
    out.flush()?;
    let committed = match slot {
        Some(mut reader) => tokio::task::spawn_blocking(move || reader.commit()).await?,
        None => Ok(()),
    };
    result?;
    committed.map_err(|e| anyhow::anyhow!(e))
}
