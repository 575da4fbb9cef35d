//! The QoS layer's overhead, behind `diaspora bench stream` (feature
//! `bench`). The same items move producer → node → consumer twice per round
//! on one embedded node: once with the raw fabric client (the baseline) and
//! once through a QoS stream (buffering, history, sequence numbers, progress
//! reports; no reduction engaged). Rounds alternate and medians are
//! reported.
//!
//! With a [`BenchLineage`] (`--lineage`: a provenance `LineageRecorder`
//! into an embedded SQLite store, which this crate cannot name since
//! provenance depends on it), each round also runs the QoS stream with the
//! lineage's ack hook on the producer, so every item becomes a durable
//! record, and the overhead against the plain QoS run of the same round is
//! reported.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use diaspora_fabric::bench::synthetic_payload;
use diaspora_fabric::item::{payload_item, AckHook};
use diaspora_fabric::topic::ensure_topic;
use diaspora_fabric::{
    Client, ClientConfig, Consumer, ConsumerConfig, FsyncPolicy, Node, NodeConfig, Producer,
    ProducerConfig, TopicSettings,
};
use serde::Serialize;
use std::sync::Arc;

use crate::control::{control_topic, replay_topic};
use crate::{Policy, QosConsumer, QosProducer, Sent};

/// Per-item lineage for the lineage runs: an ack hook that records every
/// acknowledged item, made durable on demand.
pub trait BenchLineage: Send + Sync {
    /// The hook a lineage run's QoS producer gets.
    fn hook(&self) -> Arc<dyn AckHook>;
    /// Makes what was recorded so far durable (blocking).
    fn flush(&self) -> Result<()>;
    /// Stops recording (blocking): the item records stored and those lost.
    fn close(&self) -> Result<(u64, u64)>;
}

/// What `diaspora bench stream` runs.
#[derive(Debug, Clone)]
pub struct StreamBenchConfig {
    /// Payload bytes per item.
    pub size: usize,
    /// Items per run.
    pub items: u64,
    /// Rounds (each: one baseline run and one QoS run); medians are reported.
    pub rounds: usize,
    /// fsync policy of the node.
    pub fsync: FsyncPolicy,
    /// QoS policy file (default: the default policy).
    pub policy: Option<std::path::PathBuf>,
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
    /// With `--lineage`: the QoS stream with lineage recorded, MB/s (median;
    /// the clock stops when the last item is delivered, as for the QoS run;
    /// see `lineage_durable_lag_ms` for when its lineage is durable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lineage_mb_per_s: Option<f64>,
    /// With `--lineage`: items per second of that run (median).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lineage_items_per_s: Option<f64>,
    /// With `--lineage`: `1 - mean(lineage runs) / mean(QoS runs)`. The two
    /// runs of a round alternate in order (the second run of a round is
    /// measurably faster on a small machine), so rounds are made even and
    /// the means compare runs in balanced positions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lineage_overhead: Option<f64>,
    /// With `--lineage`: from the last item delivered to its lineage being
    /// durable, ms (median). Not part of the throughput figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lineage_durable_lag_ms: Option<f64>,
    /// With `--lineage`: every lineage run, MB/s.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lineage_runs_mb_per_s: Vec<f64>,
    /// With `--lineage`: item records in the store after the last round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lineage_records: Option<u64>,
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
        )?;
        if let (Some(m), Some(o)) = (self.lineage_mb_per_s, self.lineage_overhead) {
            writeln!(
                f,
                "  with lineage {:>9.1} MB/s ({:.0} items/s) → overhead {:.1} %, lineage durable {:.0} ms after the last item",
                m,
                self.lineage_items_per_s.unwrap_or(0.0),
                o * 100.0,
                self.lineage_durable_lag_ms.unwrap_or(0.0)
            )?;
        }
        Ok(())
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
    lineage: Option<&Arc<dyn BenchLineage>>,
) -> Result<(f64, u64, f64)> {
    let pc = Client::connect(ccfg.clone()).await?;
    let cc = Client::connect(ccfg.clone()).await?;
    let mut consumer = QosConsumer::new(&cc, topic, &[0], "bench", policy.clone(), None).await?;
    let mut producer = QosProducer::new(&pc, topic, 0, policy.clone()).await?;
    if let Some(rec) = lineage {
        producer = producer.with_ack_hook(rec.hook());
    }
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
    // The lineage of the last items becomes durable with the recorder's next
    // commit: a lag, reported apart from the stream's throughput.
    let mut lag_ms = 0.0;
    if let Some(rec) = lineage {
        let rec = rec.clone();
        let t = Instant::now();
        tokio::task::spawn_blocking(move || rec.flush()).await??;
        lag_ms = t.elapsed().as_secs_f64() * 1e3;
    }
    let hw = producer.report().counters.memory_high_water;
    producer.close(Duration::from_secs(5)).await?;
    Ok((items as f64 * size as f64 / 1e6 / secs, hw, lag_ms))
}

/// Runs the benchmark; with `lineage`, every round also runs the QoS stream
/// with its hook, and the lineage is closed at the end.
pub async fn stream(
    args: &StreamBenchConfig,
    lineage: Option<Arc<dyn BenchLineage>>,
) -> Result<StreamReport> {
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
    let mut lineage_runs = Vec::new();
    let mut lags = Vec::new();
    let recorder = lineage;
    // With lineage, an even number of rounds (see `lineage_overhead`).
    let rounds = if recorder.is_some() {
        args.rounds.div_ceil(2) * 2
    } else {
        args.rounds
    };
    for r in 0..rounds {
        let raw = format!("raw{r}");
        ensure_topic(&b, &raw, &TopicSettings::with_partitions(1)).await?;
        base.push(raw_run(&ccfg, &raw, args.size, args.items).await?);
        b.delete_topic(&raw)?;

        // The QoS run and (with --lineage) the lineage run of a round, in
        // alternating order so neither always runs on a warmer node.
        let lineage_first = recorder.is_some() && r % 2 == 1;
        let mut qos_mb = 0.0;
        let mut lin_mb = None;
        for with_lineage in [lineage_first, !lineage_first] {
            let rec = if with_lineage {
                match &recorder {
                    Some(rec) => Some(rec),
                    None => continue,
                }
            } else {
                None
            };
            let name = format!("{}{r}", if with_lineage { "lineage" } else { "qos" });
            for t in [name.clone(), control_topic(&name), replay_topic(&name)] {
                ensure_topic(&b, &t, &TopicSettings::with_partitions(1)).await?;
            }
            let (mb, h, lag) = qos_run(&ccfg, &name, args.size, args.items, &policy, rec).await?;
            if with_lineage {
                lin_mb = Some(mb);
                lags.push(lag);
            } else {
                qos_mb = mb;
                hw = hw.max(h);
            }
            for t in [name.clone(), control_topic(&name), replay_topic(&name)] {
                b.delete_topic(&t)?;
            }
        }
        runs.push(qos_mb);
        if let Some(lmb) = lin_mb {
            lineage_runs.push(lmb);
        }
    }
    let lineage_records = match recorder {
        Some(rec) => {
            let (recorded, lost) = tokio::task::spawn_blocking(move || rec.close()).await??;
            anyhow::ensure!(
                lost == 0 && recorded == args.items * rounds as u64,
                "lineage recorder stored {} of {} items ({} lost)",
                recorded,
                args.items * rounds as u64,
                lost
            );
            Some(recorded)
        }
        None => None,
    };
    node.shutdown().await;
    let (m, bm) = (median(&runs), median(&base));
    let lineage_overhead = (!lineage_runs.is_empty()).then(|| {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        1.0 - mean(&lineage_runs) / mean(&runs)
    });
    Ok(StreamReport {
        size: args.size,
        items: args.items,
        rounds,
        mb_per_s: m,
        baseline_mb_per_s: bm,
        ratio_to_baseline: m / bm,
        runs_mb_per_s: runs,
        baseline_runs_mb_per_s: base,
        memory_high_water: hw,
        lineage_mb_per_s: (!lineage_runs.is_empty()).then(|| median(&lineage_runs)),
        lineage_items_per_s: (!lineage_runs.is_empty())
            .then(|| median(&lineage_runs) * 1e6 / args.size as f64),
        lineage_overhead,
        lineage_durable_lag_ms: (!lags.is_empty()).then(|| median(&lags)),
        lineage_runs_mb_per_s: lineage_runs,
        lineage_records,
    })
}
