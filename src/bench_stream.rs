//! `diaspora bench stream`: the QoS layer's overhead. The same items move
//! producer → node → consumer twice per round on one embedded node: once
//! with the raw fabric client (the baseline) and once through a QoS
//! stream (buffering, history, sequence numbers, progress reports; no
//! reduction engaged). Rounds alternate and medians are reported.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use diaspora_fabric::item::payload_item;
use diaspora_fabric::{
    Client, ClientConfig, Consumer, ConsumerConfig, FsyncPolicy, Node, NodeConfig, Producer,
    ProducerConfig, TopicSettings,
};
use diaspora_stream::control::{control_topic, replay_topic};
use diaspora_stream::{Policy, QosConsumer, QosProducer, Sent};
use serde::Serialize;

use crate::bench::synthetic_payload;

/// Arguments of `diaspora bench stream`.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamBenchArgs {
    /// Payload bytes per item.
    #[arg(long, default_value_t = 1 << 20)]
    pub size: usize,
    /// Items per run.
    #[arg(long, default_value_t = 2000)]
    pub items: u64,
    /// Rounds (each: one baseline run and one QoS run); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// fsync policy of the node.
    #[arg(long, default_value = "interval")]
    pub fsync: FsyncPolicy,
    /// QoS policy file (default: the default policy).
    #[arg(long)]
    pub policy: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Results of `diaspora bench stream`.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// Payload bytes per item.
    pub size: usize,
    /// Items per run.
    pub items: u64,
    /// Rounds.
    pub rounds: usize,
    /// QoS stream, end to end, MB/s (median).
    pub mb_per_s: f64,
    /// Raw fabric client, end to end, MB/s (median).
    pub baseline_mb_per_s: f64,
    /// `mb_per_s / baseline_mb_per_s`.
    pub ratio_to_baseline: f64,
    /// Every QoS run, MB/s.
    pub runs_mb_per_s: Vec<f64>,
    /// Every baseline run, MB/s.
    pub baseline_runs_mb_per_s: Vec<f64>,
    /// Largest memory-tier use of the QoS producer, bytes.
    pub memory_high_water: u64,
}

impl std::fmt::Display for StreamReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "stream: {} items × {} B, {} rounds (medians)",
            self.items, self.size, self.rounds
        )?;
        writeln!(f, "  QoS stream   {:>9.1} MB/s", self.mb_per_s)?;
        writeln!(
            f,
            "  raw fabric   {:>9.1} MB/s → ratio {:.3}",
            self.baseline_mb_per_s, self.ratio_to_baseline
        )
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

async fn raw_run(ccfg: &ClientConfig, topic: &str, size: usize, items: u64) -> Result<f64> {
    let pc = Client::connect(ccfg.clone()).await?;
    let cc = Client::connect(ccfg.clone()).await?;
    let mut consumer = Consumer::assign(&cc, ConsumerConfig::new(topic), &[0]).await?;
    let producer = Producer::new(&pc, ProducerConfig::new(topic)).await?;
    let payload = synthetic_payload(size);
    let started = Instant::now();
    let recv = tokio::spawn(async move {
        let mut n = 0;
        while n < items {
            if consumer.poll(Duration::from_secs(30)).await?.is_none() {
                anyhow::bail!("baseline consumer stalled at {n} of {items}");
            }
            n += 1;
        }
        consumer.close().await;
        anyhow::Ok(())
    });
    for _ in 0..items {
        producer
            .send_unacked(Some(0), payload_item(payload.clone()))
            .await?;
    }
    producer.flush().await?;
    recv.await??;
    let secs = started.elapsed().as_secs_f64();
    producer.close().await?;
    Ok(items as f64 * size as f64 / 1e6 / secs)
}

async fn qos_run(
    ccfg: &ClientConfig,
    topic: &str,
    size: usize,
    items: u64,
    policy: &Policy,
) -> Result<(f64, u64)> {
    let pc = Client::connect(ccfg.clone()).await?;
    let cc = Client::connect(ccfg.clone()).await?;
    let mut consumer = QosConsumer::new(&cc, topic, &[0], "bench", policy.clone(), None).await?;
    let mut producer = QosProducer::new(&pc, topic, 0, policy.clone()).await?;
    let payload = synthetic_payload(size);
    let started = Instant::now();
    let recv = tokio::spawn(async move {
        let mut n = 0;
        while n < items {
            match consumer.next(Duration::from_secs(30)).await? {
                Some(x) if x.seq == n => n += 1,
                Some(x) => anyhow::bail!("QoS consumer got seq {} expecting {n}", x.seq),
                None => anyhow::bail!("QoS consumer stalled at {n} of {items}"),
            }
        }
        consumer.close().await?;
        anyhow::Ok(())
    });
    for _ in 0..items {
        match producer.send(payload_item(payload.clone())).await? {
            Sent::Accepted(_) => {}
            other => anyhow::bail!("the benchmark policy reduced or shed an item: {other:?}"),
        }
    }
    producer.flush(Duration::from_secs(120)).await?;
    recv.await??;
    let secs = started.elapsed().as_secs_f64();
    let hw = producer.report().counters.memory_high_water;
    producer.close(Duration::from_secs(5)).await?;
    Ok((items as f64 * size as f64 / 1e6 / secs, hw))
}

/// Runs the benchmark.
pub async fn stream(args: &StreamBenchArgs) -> Result<StreamReport> {
    anyhow::ensure!(
        args.items > 0 && args.rounds > 0,
        "items and rounds must be > 0"
    );
    let policy = match &args.policy {
        Some(p) => Policy::from_file(p)?,
        None => Policy::default(),
    };
    let dir = tempfile::tempdir().context("temporary data directory")?;
    let mut cfg = NodeConfig::new(dir.path());
    cfg.fsync = args.fsync;
    cfg.admin_listen = None;
    let node = Node::start(cfg).await?;
    let ccfg = ClientConfig::new(node.data_addr(), node.ca_file());
    let b = node.broker().clone();
    let mut runs = Vec::new();
    let mut base = Vec::new();
    let mut hw = 0;
    for r in 0..args.rounds {
        let raw = format!("raw{r}");
        b.create_topic(&raw, TopicSettings::with_partitions(1))?;
        base.push(raw_run(&ccfg, &raw, args.size, args.items).await?);
        b.delete_topic(&raw)?;

        let qos = format!("qos{r}");
        for t in [qos.clone(), control_topic(&qos), replay_topic(&qos)] {
            b.create_topic(&t, TopicSettings::with_partitions(1))?;
        }
        let (mb, h) = qos_run(&ccfg, &qos, args.size, args.items, &policy).await?;
        runs.push(mb);
        hw = hw.max(h);
        for t in [qos.clone(), control_topic(&qos), replay_topic(&qos)] {
            b.delete_topic(&t)?;
        }
    }
    node.shutdown().await;
    let (m, bm) = (median(&runs), median(&base));
    Ok(StreamReport {
        size: args.size,
        items: args.items,
        rounds: args.rounds,
        mb_per_s: m,
        baseline_mb_per_s: bm,
        ratio_to_baseline: m / bm,
        runs_mb_per_s: runs,
        baseline_runs_mb_per_s: base,
        memory_high_water: hw,
    })
}
