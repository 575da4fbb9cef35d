//! `diaspora stream …`: QoS streams from the command line. The produce
//! and consume loops are [`diaspora_stream::pipe`]'s; this module maps
//! flags to their options, wires metrics and prints the summaries.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use diaspora_fabric::item::now_us;
use diaspora_proto::v1;
use diaspora_stream::pipe::{self, ConsumeOptions, Payload, ProduceOptions, Produced, Source};
use diaspora_stream::{Policy, QosConsumer, QosItem, QosProducer};

use diaspora_stream::consumer::ConsumerReport;
use diaspora_telemetry::ReportSlot;

use super::{admin, client, stop_on_signal, AdminConn, DataConn, MetricsArgs, StopArgs};

/// The subcommands of `diaspora stream`.
#[derive(Subcommand)]
pub enum StreamCommand {
    /// Create the topics a QoS stream needs: TOPIC, TOPIC.qos (control) and TOPIC.replay.
    Init {
        /// Data topic.
        topic: String,
        /// Partitions of the data topic (one QoS producer per partition).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Retention of the data topic by size per partition, bytes (0 = node default).
        #[arg(long, default_value_t = 0)]
        retention_bytes: u64,
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
    /// Print the default policy as TOML (a starting point for --policy files).
    Policy,
    /// Produce through a QoS stream: buffered (memory, then disk), flow-controlled,
    /// replayable. See `--policy`.
    Produce(StreamProduceArgs),
    /// Consume a QoS stream: in order, once per item, gaps replayed or reconstructed,
    /// position checkpointed.
    Consume(StreamConsumeArgs),
}

/// Synthetic payloads.
#[derive(Clone, Copy, ValueEnum)]
pub enum PayloadKind {
    /// Incompressible bytes.
    Random,
    /// u16 detector frames (64 rows; a bright spot that moves from item to
    /// item over a noisy background), tagged as ndarray payloads.
    Frame,
}

/// Arguments of `diaspora stream produce`.
#[derive(Args)]
pub struct StreamProduceArgs {
    /// Data topic.
    #[arg(long)]
    topic: String,
    /// Partition this stream owns.
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// Policy file (TOML; `diaspora stream policy` prints the defaults).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Produce N synthetic items of --size bytes (default: stdin lines).
    #[arg(long, value_name = "N")]
    synthetic: Option<u64>,
    /// Payload size of synthetic items, bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Kind of synthetic payload.
    #[arg(long, value_enum, default_value = "random")]
    payload: PayloadKind,
    /// Offer items at this many per second (0 = as fast as the stream takes them).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Write one JSON line per item to FILE: acknowledged ones as
    /// {"id","seq","partition","offset","acked_us"}; items shed or reduced away
    /// as {"id","seq","fate"} ("shed", "reduced").
    #[arg(long, value_name = "FILE")]
    acks: Option<PathBuf>,
    /// First item id (metadata "id").
    #[arg(long, default_value_t = 0)]
    id_start: u64,
    /// At the end, wait this long for every accepted item to be acknowledged.
    #[arg(long, default_value_t = 300)]
    drain_timeout_s: u64,
    /// After the last item is acknowledged, keep the stream open this long
    /// (or until SIGTERM) so consumers can still have its history replayed.
    #[arg(long, default_value_t = 0)]
    linger_s: u64,
    /// Print a JSON summary at the end.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: DataConn,
    /// `stream.producer.*` metrics (labels topic, partition).
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// Arguments of `diaspora stream consume`.
#[derive(Args)]
pub struct StreamConsumeArgs {
    /// Data topic.
    #[arg(long)]
    topic: String,
    /// Consumer name (in progress reports and replay requests).
    #[arg(long, default_value = "consumer")]
    name: String,
    /// Policy file (TOML): reconstruction, deadlines, reorder bound.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Keep the position in this file; a restart resumes from it.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    #[command(flatten)]
    stop: StopArgs,
    /// One JSON object per item: topic, partition, offset, seq, size,
    /// timestamp_us, latency_us, id, quality, replayed, supersedes, crc32c.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: DataConn,
    /// `stream.consumer.*` metrics (labels topic, consumer).
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// The producer's gauges (the rest of its figures are counters).
const PRODUCER_GAUGES: &[(&str, &str)] = &[
    ("memory_bytes", "By"),
    ("memory_fill", "1"),
    ("spill_bytes", "By"),
    ("unacked", "{item}"),
    ("congested", "1"),
    ("stages", "{stage}"),
    ("memory_high_water", "By"),
    ("spill_high_water", "By"),
    ("memory_bytes_max", "By"),
    ("level_max", "{stage}"),
];

/// A consumer's figures as its loop last saw them.
#[derive(Clone, Default, serde::Serialize)]
struct ConsumerFigures {
    #[serde(flatten)]
    report: ConsumerReport,
    /// Items held for reordering.
    held: u64,
    /// End-to-end latency of the latest item (now minus its timestamp), ms.
    latency_ms: f64,
}

const CONSUMER_GAUGES: &[(&str, &str)] = &[("held", "{item}"), ("latency_ms", "ms")];

fn load_policy(p: &Option<PathBuf>) -> Result<Policy> {
    Ok(match p {
        Some(p) => Policy::from_file(p)?,
        None => Policy::default(),
    })
}

/// Runs a `diaspora stream` command.
pub async fn run(cmd: StreamCommand) -> Result<()> {
    match cmd {
        StreamCommand::Init {
            topic,
            partitions,
            retention_bytes,
            conn,
        } => {
            let mut a = admin(&conn).await?;
            let created = diaspora_stream::init_topics(
                &mut a,
                &topic,
                v1::TopicConfig {
                    partitions,
                    retention_bytes,
                    ..Default::default()
                },
            )
            .await?;
            if created.is_empty() {
                println!("stream topics of '{topic}' exist already");
            } else {
                println!("created {}", created.join(", "));
            }
            Ok(())
        }
        StreamCommand::Policy => {
            print!("{}", toml::to_string(&Policy::default())?);
            Ok(())
        }
        StreamCommand::Produce(a) => produce(a).await,
        StreamCommand::Consume(a) => consume(a).await,
    }
}

fn vmhwm_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn produce(a: StreamProduceArgs) -> Result<()> {
    let policy = load_policy(&a.policy)?;
    // SIGTERM or Ctrl-C: stop offering items, drain what was accepted, report.
    let stop = stop_on_signal()?;
    let client = client(&a.conn).await?;
    let mut p = QosProducer::new(&client, &a.topic, a.partition, policy.clone()).await?;
    let probe = p.probe();
    let partition = a.partition.to_string();
    let publisher = a
        .metrics
        .publish_fields(
            &client,
            format!("producer:{}/{}", a.topic, a.partition),
            "stream.producer",
            &[
                ("topic", a.topic.as_str()),
                ("partition", partition.as_str()),
            ],
            PRODUCER_GAUGES,
            move || Some(probe.figures()),
        )
        .await?;
    let source = match a.synthetic {
        Some(count) => Source::Synthetic {
            count,
            size: a.size,
            payload: match a.payload {
                PayloadKind::Random => Payload::Random,
                PayloadKind::Frame => Payload::Frame,
            },
        },
        None => Source::Lines(Box::new(tokio::io::stdin())),
    };
    let opts = ProduceOptions {
        rate: a.rate,
        id_start: a.id_start,
        acks: a.acks.clone(),
        drain_timeout: Duration::from_secs(a.drain_timeout_s),
        linger: Duration::from_secs(a.linger_s),
    };
    let started = Instant::now();
    let (done, flushed) = pipe::produce(&mut p, source, &opts, &stop).await?;
    let Produced {
        offered,
        bytes,
        produce_s,
    } = done;
    let report = p.report();
    let elapsed = started.elapsed().as_secs_f64();
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        let extra = serde_json::json!({
            "topic": a.topic, "partition": a.partition, "items": offered, "bytes": bytes,
            "produce_s": produce_s, "elapsed_s": elapsed,
            "rate_target": a.rate, "rate_achieved": offered as f64 / produce_s.max(1e-9),
            "mb_per_s": bytes as f64 / 1e6 / elapsed.max(1e-9),
            "rss_max_kb": vmhwm_kb(),
            "error": flushed.as_ref().err().map(|e| e.to_string()),
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        println!("{v}");
    } else {
        eprintln!(
            "offered {offered} items: {} accepted, {} acknowledged, {} shed, {} reduced away; memory high-water {} of {} bytes, spilled {}",
            report.counters.accepted,
            report.counters.acked,
            report.counters.shed,
            report.counters.reduced_away,
            report.counters.memory_high_water,
            report.memory_bytes_max,
            report.counters.spilled
        );
    }
    if let Some(publisher) = publisher {
        publisher.stop().await;
    }
    p.close(Duration::from_secs(1)).await.ok();
    client.close();
    flushed?;
    Ok(())
}

async fn consume(a: StreamConsumeArgs) -> Result<()> {
    let policy = load_policy(&a.policy)?;
    let client = client(&a.conn).await?;
    let parts: Vec<u32> = a.partition.into_iter().collect();
    let mut c = QosConsumer::new(
        &client,
        &a.topic,
        &parts,
        &a.name,
        policy,
        a.checkpoint.as_deref(),
    )
    .await?;
    let figures = ReportSlot::new(ConsumerFigures::default());
    let reader = figures.clone();
    let publisher = a
        .metrics
        .publish_fields(
            &client,
            format!("consumer:{}/{}", a.topic, a.name),
            "stream.consumer",
            &[("topic", a.topic.as_str()), ("consumer", a.name.as_str())],
            CONSUMER_GAUGES,
            move || Some(reader.load()),
        )
        .await?;
    let mut latency_ms = 0.0;
    let observe = |c: &QosConsumer, x: Option<&QosItem>| {
        if publisher.is_some() {
            if let Some(x) = x {
                latency_ms = now_us().saturating_sub(x.item.timestamp_us) as f64 / 1e3;
            }
            figures.store(ConsumerFigures {
                report: c.report(),
                held: c.held() as u64,
                latency_ms,
            });
        }
    };
    let opts = ConsumeOptions {
        topic: a.topic.clone(),
        count: a.stop.count,
        idle: a.stop.idle(),
        json: a.json,
    };
    let stop = stop_on_signal()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let result = pipe::consume(&mut c, &mut out, &opts, &stop, observe).await;
    drop(out);
    if let Some(publisher) = publisher {
        publisher.stop().await;
    }
    let report = c.close().await?;
    eprintln!("{}", serde_json::to_string(&report)?);
    client.close();
    result?;
    Ok(())
}
