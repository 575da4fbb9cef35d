//! `diaspora produce` and `diaspora consume`: items from the command line
//! through the plain fabric client ([`Producer`], [`Consumer`]), lines in
//! and lines out. The loops are [`diaspora_fabric::pipe`]'s; this module
//! maps flags to their options and prints the summaries.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use diaspora_fabric::pipe::{self, ConsumeOptions, ProduceOptions, Produced, Source};
use diaspora_fabric::{Consumer, ConsumerConfig, Producer, ProducerConfig, StartFrom};

use super::{client, stop_on_signal, DataConn, StopArgs};

/// Arguments of `diaspora produce`.
#[derive(Args)]
pub struct ProduceArgs {
    /// Topic to produce to.
    #[arg(long)]
    topic: String,
    /// Read items from this file, one per line (default: stdin lines).
    #[arg(long, conflicts_with = "synthetic")]
    file: Option<PathBuf>,
    /// Produce N synthetic items of --size bytes instead of reading lines.
    #[arg(long, value_name = "N")]
    synthetic: Option<u64>,
    /// Payload size of synthetic items, bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Send every item to this partition (default: spread over all).
    #[arg(long)]
    partition: Option<u32>,
    /// Compress batches with zstd.
    #[arg(long)]
    zstd: bool,
    /// Pace production at this many items per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Write one JSON line per acknowledged item to FILE:
    /// {"id","partition","offset","acked_us"}. Items carry metadata "id"
    /// (--id-start + their index), so a consumer can match them.
    #[arg(long, value_name = "FILE")]
    acks: Option<PathBuf>,
    /// First item id (give producers sharing a topic disjoint ranges).
    #[arg(long, default_value_t = 0)]
    id_start: u64,
    /// Print a JSON summary (with "acked") at the end.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: DataConn,
}

/// Arguments of `diaspora consume`.
#[derive(Args)]
pub struct ConsumeArgs {
    /// Topic to consume.
    #[arg(long)]
    topic: String,
    /// Consumer group: resume from its committed offsets and commit as items are read.
    #[arg(long)]
    group: Option<String>,
    /// Where to start without a committed offset: earliest, latest, or an offset.
    #[arg(long, default_value = "earliest")]
    from: StartFrom,
    /// Only this partition (default: all, or the group's assignment).
    #[arg(long)]
    partition: Option<u32>,
    #[command(flatten)]
    stop: StopArgs,
    /// Print one JSON object per item.
    #[arg(long)]
    json: bool,
    /// With --json: include each item's payload as text ("payload"), for
    /// topics of small JSON messages (a pool's events and results).
    #[arg(long, requires = "json")]
    payload: bool,
    /// Read items' metadata and locations only: the node leaves the
    /// payloads out (sizes are printed, checksums are not).
    #[arg(long, conflicts_with = "payload")]
    metadata_only: bool,
    #[command(flatten)]
    conn: DataConn,
}

/// Produces items: lines of a file or stdin, or synthetic payloads
/// ([`diaspora_fabric::pipe::produce`]).
pub async fn produce(a: ProduceArgs) -> Result<()> {
    let client = client(&a.conn).await?;
    let mut cfg = ProducerConfig::new(&a.topic);
    if a.zstd {
        cfg.compression = diaspora_log::Compression::Zstd { level: 3 };
    }
    let producer = Producer::new(&client, cfg).await?;
    let source = match (a.synthetic, &a.file) {
        (Some(count), _) => Source::Synthetic {
            count,
            payload: pipe::synthetic_payload(a.size),
        },
        (None, Some(f)) => Source::Lines(Box::new(
            tokio::fs::File::open(f)
                .await
                .with_context(|| format!("open {}", f.display()))?,
        )),
        (None, None) => Source::Lines(Box::new(tokio::io::stdin())),
    };
    let opts = ProduceOptions {
        partition: a.partition,
        rate: a.rate,
        id_start: a.id_start,
        acks: a.acks.clone(),
    };
    let (done, flushed) = pipe::produce(&producer, source, &opts).await?;
    let stats = producer.stats();
    let acked = stats.acked.load(std::sync::atomic::Ordering::Relaxed);
    let failed = stats.failed.load(std::sync::atomic::Ordering::Relaxed);
    let Produced {
        items,
        bytes,
        elapsed_s: elapsed,
    } = done;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "topic": a.topic, "items": items, "acked": acked, "failed": failed, "bytes": bytes,
                "elapsed_s": elapsed, "items_per_s": items as f64 / elapsed.max(1e-9),
                "mb_per_s": bytes as f64 / 1e6 / elapsed.max(1e-9),
                "error": stats.first_error.lock().clone(),
            })
        );
    } else {
        eprintln!("produced {items} items ({bytes} bytes), {acked} acknowledged, {failed} failed in {elapsed:.2}s");
    }
    flushed?;
    client.close();
    Ok(())
}

/// Consumes items until the stop condition or a signal
/// ([`diaspora_fabric::pipe::consume`]).
pub async fn consume(a: ConsumeArgs) -> Result<()> {
    let client = client(&a.conn).await?;
    let mut cfg = ConsumerConfig::new(&a.topic).start(a.from);
    cfg.group = a.group.clone();
    cfg.metadata_only = a.metadata_only;
    let mut consumer = match (&a.group, a.partition) {
        (Some(_), None) => Consumer::subscribe(&client, cfg).await?,
        (_, p) => Consumer::assign(&client, cfg, &p.map(|p| vec![p]).unwrap_or_default()).await?,
    };
    let opts = ConsumeOptions {
        count: a.stop.count,
        idle: a.stop.idle(),
        json: a.json,
        payload: a.payload,
        commit: a.group.is_some(),
    };
    // SIGTERM or Ctrl-C ends consumption cleanly: output flushed, offsets committed.
    let stop = stop_on_signal()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    pipe::consume(&mut consumer, &mut out, &opts, &stop).await?;
    drop(out);
    consumer.close().await;
    client.close();
    Ok(())
}
