//! `diaspora produce` and `diaspora consume`: items from the command line
//! through the plain fabric client ([`Producer`], [`Consumer`]), lines in
//! and lines out.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use diaspora_fabric::item::payload_item;
use diaspora_fabric::{Consumer, ConsumerConfig, Producer, ProducerConfig, StartFrom};
use diaspora_proto::v1;

use super::{client, DataConn, Stop, StopArgs};

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
    #[command(flatten)]
    conn: DataConn,
}

/// Produces items: lines of a file or stdin, or synthetic payloads.
pub async fn produce(a: ProduceArgs) -> Result<()> {
    let client = client(&a.conn).await?;
    let mut cfg = ProducerConfig::new(&a.topic);
    if a.zstd {
        cfg.compression = diaspora_log::Compression::Zstd { level: 3 };
    }
    let producer = Producer::new(&client, cfg).await?;
    let started = Instant::now();
    let mut items = 0u64;
    let mut bytes = 0u64;
    // With --acks, every item gets a delivery future; a writer task records
    // them in order as they resolve.
    let (ack_tx, ack_writer) = match &a.acks {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("create {}", path.display()))?;
            let (tx, rx) = tokio::sync::mpsc::channel::<(u64, diaspora_fabric::Delivery)>(65_536);
            (Some(tx), Some(tokio::spawn(write_acks(file, rx))))
        }
        None => (None, None),
    };
    let make_item = |i: u64, payload: bytes::Bytes| {
        let mut item = payload_item(payload);
        item.metadata.insert(
            "id".into(),
            v1::Value {
                kind: Some(v1::value::Kind::I((a.id_start + i) as i64)),
            },
        );
        item
    };
    let pace = |i: u64| {
        let due = (a.rate > 0.0).then(|| started + Duration::from_secs_f64(i as f64 / a.rate));
        async move {
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
        }
    };
    let submit = |item: v1::Item| {
        let ack_tx = ack_tx.clone();
        let producer = &producer;
        let partition = a.partition;
        async move {
            match ack_tx {
                Some(tx) => {
                    let id = match item.metadata.get("id").and_then(|v| v.kind.clone()) {
                        Some(v1::value::Kind::I(i)) => i as u64,
                        _ => 0,
                    };
                    let d = match partition {
                        Some(p) => producer.send_to(p, item).await?,
                        None => producer.send(item).await?,
                    };
                    tx.send((id, d))
                        .await
                        .map_err(|_| anyhow::anyhow!("ack writer stopped"))?;
                }
                None => producer.send_unacked(partition, item).await?,
            }
            anyhow::Ok(())
        }
    };
    if let Some(n) = a.synthetic {
        let payload = diaspora_fabric::bench::synthetic_payload(a.size);
        for i in 0..n {
            pace(i).await;
            submit(make_item(i, payload.clone())).await?;
            items += 1;
            bytes += a.size as u64;
        }
    } else {
        use tokio::io::AsyncBufReadExt;
        let reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match &a.file {
            Some(f) => Box::new(
                tokio::fs::File::open(f)
                    .await
                    .with_context(|| format!("open {}", f.display()))?,
            ),
            None => Box::new(tokio::io::stdin()),
        };
        let mut lines = tokio::io::BufReader::new(reader).lines();
        while let Some(line) = lines.next_line().await? {
            pace(items).await;
            bytes += line.len() as u64;
            submit(make_item(items, bytes::Bytes::from(line))).await?;
            items += 1;
        }
    }
    drop(ack_tx);
    let flushed = producer.flush().await;
    if let Some(w) = ack_writer {
        w.await.context("ack writer")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = producer.stats();
    let acked = stats.acked.load(std::sync::atomic::Ordering::Relaxed);
    let failed = stats.failed.load(std::sync::atomic::Ordering::Relaxed);
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

/// Consumes items until the stop condition or a signal.
pub async fn consume(a: ConsumeArgs) -> Result<()> {
    let client = client(&a.conn).await?;
    let mut cfg = ConsumerConfig::new(&a.topic).start(a.from);
    cfg.group = a.group.clone();
    let mut consumer = match (&a.group, a.partition) {
        (Some(_), None) => Consumer::subscribe(&client, cfg).await?,
        (_, p) => Consumer::assign(&client, cfg, &p.map(|p| vec![p]).unwrap_or_default()).await?,
    };
    let idle = a.stop.idle();
    let mut seen = 0u64;
    let mut last_commit = Instant::now();
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // SIGTERM or Ctrl-C ends consumption cleanly: output flushed, offsets committed.
    let stop = Stop::on_signal()?;
    let tick = Duration::from_millis(100);
    let mut idle_for = Duration::ZERO;
    let mut last_flush = Instant::now();
    while a.stop.more(seen) && !stop.stopped() {
        let Some(item) = consumer.poll(tick.min(idle)).await? else {
            // Readers of the output (a twin runner, a pipe) see items promptly.
            out.flush()?;
            idle_for += tick;
            if idle_for < idle {
                continue;
            }
            if a.group.is_some() {
                consumer.commit().await?;
            }
            if let Some(n) = a.stop.count {
                bail!("only {seen} of {n} items arrived within the idle timeout of {idle:?}");
            }
            break;
        };
        idle_for = Duration::ZERO;
        if last_flush.elapsed() >= tick {
            out.flush()?;
            last_flush = Instant::now();
        }
        seen += 1;
        if a.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "topic": &*item.topic, "partition": item.partition, "offset": item.offset,
                    "size": item.item.payload.len(), "timestamp_us": item.item.timestamp_us,
                    "latency_us": diaspora_fabric::broker::now_us() - item.item.timestamp_us,
                    "id": match item.item.metadata.get("id").and_then(|v| v.kind.as_ref()) {
                        Some(v1::value::Kind::I(i)) => serde_json::json!(i),
                        _ => serde_json::Value::Null,
                    },
                    "crc32c": crc32c_of(&item.item.payload),
                })
            )?;
        } else {
            let preview =
                String::from_utf8_lossy(&item.item.payload[..item.item.payload.len().min(80)])
                    .into_owned();
            writeln!(
                out,
                "{}/{}@{} {}B {}",
                item.topic,
                item.partition,
                item.offset,
                item.item.payload.len(),
                preview.escape_debug()
            )?;
        }
        if a.group.is_some() && last_commit.elapsed() > Duration::from_secs(1) {
            // A node that is down now is retried at the next commit; the
            // items keep flowing when it returns.
            if let Err(e) = consumer.commit().await {
                tracing::warn!(error = %e, "commit failed; will retry");
            }
            last_commit = Instant::now();
        }
    }
    out.flush()?;
    drop(out);
    if a.group.is_some() {
        consumer.commit().await?;
    }
    consumer.close().await;
    client.close();
    Ok(())
}

/// Writes `{"id","partition","offset","acked_us"}` for each acknowledged item, in send order.
async fn write_acks(
    file: std::fs::File,
    mut rx: tokio::sync::mpsc::Receiver<(u64, diaspora_fabric::Delivery)>,
) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(file);
    let mut last_flush = Instant::now();
    while let Some((id, delivery)) = rx.recv().await {
        if let Ok(d) = delivery.await {
            let acked_us = diaspora_fabric::broker::now_us();
            writeln!(
                out,
                r#"{{"id":{id},"partition":{},"offset":{},"acked_us":{acked_us}}}"#,
                d.partition, d.offset
            )?;
        }
        if last_flush.elapsed() > Duration::from_millis(100) {
            out.flush()?;
            last_flush = Instant::now();
        }
    }
    out.flush()?;
    Ok(())
}

fn crc32c_of(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}
