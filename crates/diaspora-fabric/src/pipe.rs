//! Items between the fabric and a byte stream: the loops behind
//! `diaspora produce` and `diaspora consume`.
//!
//! [`produce`] sends lines of a reader (or a count of synthetic payloads)
//! through a [`Producer`], optionally paced, each item tagged with an `id`
//! metadata value, and can log every acknowledgement as a JSON line.
//! [`consume`] writes what a [`Consumer`] reads as text or JSON lines until
//! a count, an idle timeout or a [`Stop`], committing a group's offsets as
//! it goes and at the end. The command line only parses flags and prints
//! the summaries these return.
//!
//! What it does not do: quality of service (that is `diaspora-stream`'s
//! pipe) or any parsing of the payload beyond a text preview.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diaspora_proto::v1;
use tokio::io::{AsyncBufReadExt, AsyncRead};

use crate::item::{meta, now_us, payload_item};
use crate::shutdown::Stop;
use crate::{Consumer, Delivery, FabricError, Producer};

/// What can end a pipe with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    /// The fabric refused or failed.
    #[error(transparent)]
    Fabric(#[from] FabricError),
    /// Reading the input or writing the output failed.
    #[error("{context}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A consumer with a count to reach went idle first.
    #[error("only {seen} of {wanted} items arrived within the idle timeout of {idle:?}")]
    Incomplete {
        /// Items read.
        seen: u64,
        /// Items wanted.
        wanted: u64,
        /// The idle timeout.
        idle: Duration,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PipeError {
    let context = context.into();
    move |source| PipeError::Io { context, source }
}

/// A payload of `size` pseudo-random bytes (incompressible, like detector noise).
pub fn synthetic_payload(size: usize) -> Bytes {
    let mut v = vec![0u8; size];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    Bytes::from(v)
}

/// Where produced items come from.
pub enum Source {
    /// `count` items, each with this payload.
    Synthetic {
        /// How many.
        count: u64,
        /// The payload every item carries.
        payload: Bytes,
    },
    /// One item per line of the reader (the line without its end).
    Lines(Box<dyn AsyncRead + Unpin + Send>),
}

/// How [`produce`] sends.
#[derive(Clone, Debug, Default)]
pub struct ProduceOptions {
    /// Send every item to this partition (default: spread over all).
    pub partition: Option<u32>,
    /// Items per second; 0 sends as fast as the producer takes them.
    pub rate: f64,
    /// The `id` of the first item; the n-th carries `id_start + n`.
    pub id_start: u64,
    /// Write `{"id","partition","offset","acked_us"}` for each acknowledged
    /// item to this file, in send order. Without it items are sent without
    /// a delivery future (cheaper).
    pub acks: Option<PathBuf>,
}

/// What [`produce`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Produced {
    /// Items handed to the producer.
    pub items: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// From the start to the end of the flush, seconds.
    pub elapsed_s: f64,
}

/// Sends every item of `source` and flushes. The returned figures are also
/// there when the flush failed: the error comes second, so a caller can
/// report both.
pub async fn produce(
    producer: &Producer,
    source: Source,
    opts: &ProduceOptions,
) -> Result<(Produced, Result<(), FabricError>), PipeError> {
    let started = Instant::now();
    let mut done = Produced::default();
    // With an acks file every item gets a delivery future; a writer task
    // records them in order as they resolve.
    let (ack_tx, ack_writer) = match &opts.acks {
        Some(path) => {
            let file =
                std::fs::File::create(path).map_err(io(format!("create {}", path.display())))?;
            let (tx, rx) = tokio::sync::mpsc::channel::<(u64, Delivery)>(65_536);
            (Some(tx), Some(tokio::spawn(write_acks(file, rx))))
        }
        None => (None, None),
    };
    let mut send = |n: u64, payload: Bytes| {
        let id = opts.id_start + n;
        let mut item = payload_item(payload);
        item.metadata.insert("id".into(), meta::int(id as i64));
        let due =
            (opts.rate > 0.0).then(|| started + Duration::from_secs_f64(n as f64 / opts.rate));
        done.items += 1;
        done.bytes += item.payload.len() as u64;
        let ack_tx = ack_tx.clone();
        async move {
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
            match ack_tx {
                Some(tx) => {
                    let d = match opts.partition {
                        Some(p) => producer.send_to(p, item).await?,
                        None => producer.send(item).await?,
                    };
                    // The writer only stops early on a write error, which it returns below.
                    let _ = tx.send((id, d)).await;
                }
                None => producer.send_unacked(opts.partition, item).await?,
            }
            Ok::<_, PipeError>(())
        }
    };
    match source {
        Source::Synthetic { count, payload } => {
            for n in 0..count {
                send(n, payload.clone()).await?;
            }
        }
        Source::Lines(reader) => {
            let mut lines = tokio::io::BufReader::new(reader).lines();
            let mut n = 0;
            while let Some(line) = lines.next_line().await.map_err(io("read a line"))? {
                send(n, Bytes::from(line)).await?;
                n += 1;
            }
        }
    }
    drop(ack_tx);
    let flushed = producer.flush().await;
    if let Some(w) = ack_writer {
        w.await
            .map_err(|e| io("the acks writer")(std::io::Error::other(e)))??;
    }
    done.elapsed_s = started.elapsed().as_secs_f64();
    Ok((done, flushed))
}

/// Writes `{"id","partition","offset","acked_us"}` for each acknowledged item, in send order.
async fn write_acks(
    file: std::fs::File,
    mut rx: tokio::sync::mpsc::Receiver<(u64, Delivery)>,
) -> Result<(), PipeError> {
    let mut out = std::io::BufWriter::new(file);
    let mut last_flush = Instant::now();
    while let Some((id, delivery)) = rx.recv().await {
        if let Ok(d) = delivery.await {
            let acked_us = now_us();
            writeln!(
                out,
                r#"{{"id":{id},"partition":{},"offset":{},"acked_us":{acked_us}}}"#,
                d.partition, d.offset
            )
            .map_err(io("write the acks file"))?;
        }
        if last_flush.elapsed() > Duration::from_millis(100) {
            out.flush().map_err(io("write the acks file"))?;
            last_flush = Instant::now();
        }
    }
    out.flush().map_err(io("write the acks file"))
}

/// How [`consume`] reads and when it stops.
#[derive(Clone, Debug)]
pub struct ConsumeOptions {
    /// Stop after this many items; reaching the idle timeout first is an
    /// error ([`PipeError::Incomplete`]).
    pub count: Option<u64>,
    /// Stop after this long without an item.
    pub idle: Duration,
    /// One JSON object per item (`topic`, `partition`, `offset`, `size`,
    /// `timestamp_us`, `latency_us`, `id`, `crc32c`) instead of a text line.
    pub json: bool,
    /// With `json`: also the payload, as text (`payload`; bytes that are not
    /// UTF-8 are replaced) — for topics of small JSON messages, such as a
    /// pool's events, that a reader outside the process must parse.
    pub payload: bool,
    /// The consumer is in a group: commit its offsets about once a second,
    /// when idle, and at the end.
    pub commit: bool,
}

/// The JSON line of a read item (`consume --json`, `kafka-consume
/// --json`): `topic`, `partition`, `offset`, `size` (`payload_bytes`),
/// `timestamp_us`, `latency_us` (now minus the item's timestamp), `id`
/// (metadata "id" when an integer), `crc32c` of the payload (null when the
/// payload was `left_out` on the node, which adds `payload_left_out`), and
/// with `with_payload` the payload as text.
pub fn item_json(
    topic: &str,
    partition: u32,
    offset: u64,
    item: &crate::item::Item,
    payload_bytes: u64,
    left_out: bool,
    with_payload: bool,
) -> serde_json::Value {
    let payload = &item.payload;
    let mut line = serde_json::json!({
        "topic": topic, "partition": partition, "offset": offset,
        "size": payload_bytes, "timestamp_us": item.timestamp_us,
        "latency_us": now_us() - item.timestamp_us,
        "id": match item.metadata.get("id").and_then(|v| v.kind.as_ref()) {
            Some(v1::value::Kind::I(i)) => serde_json::json!(i),
            _ => serde_json::Value::Null,
        },
        "crc32c": if left_out { serde_json::Value::Null } else { crc32c::crc32c(payload).into() },
    });
    if left_out {
        line["payload_left_out"] = true.into();
    }
    if with_payload {
        line["payload"] = String::from_utf8_lossy(payload).into();
    }
    line
}

/// Reads items and writes one line each to `out` until the count, the idle
/// timeout or `stop`; returns how many were read. Output is flushed at
/// least every 100 ms while items flow, and whenever the consumer waits, so
/// a reader of a pipe sees items promptly.
pub async fn consume(
    consumer: &mut Consumer,
    out: &mut impl Write,
    opts: &ConsumeOptions,
    stop: &Stop,
) -> Result<u64, PipeError> {
    let tick = Duration::from_millis(100);
    let mut seen = 0u64;
    let mut idle_for = Duration::ZERO;
    let mut last_flush = Instant::now();
    let mut last_commit = Instant::now();
    let werr = || io("write the output");
    while opts.count.is_none_or(|n| seen < n) && !stop.stopped() {
        let Some(item) = consumer.poll(tick.min(opts.idle)).await? else {
            out.flush().map_err(werr())?;
            idle_for += tick;
            if idle_for < opts.idle {
                continue;
            }
            if opts.commit {
                consumer.commit().await?;
            }
            if let Some(wanted) = opts.count {
                return Err(PipeError::Incomplete {
                    seen,
                    wanted,
                    idle: opts.idle,
                });
            }
            break;
        };
        idle_for = Duration::ZERO;
        if last_flush.elapsed() >= tick {
            out.flush().map_err(werr())?;
            last_flush = Instant::now();
        }
        seen += 1;
        let payload = &item.item.payload;
        // A metadata-only read left the payload on the node: its size is
        // known, its checksum is not.
        let left_out = item.payload_left_out();
        if opts.json {
            let line = item_json(
                &item.topic,
                item.partition,
                item.offset,
                &item.item,
                item.payload_bytes,
                left_out,
                opts.payload,
            );
            writeln!(out, "{line}").map_err(werr())?;
        } else {
            let preview = String::from_utf8_lossy(&payload[..payload.len().min(80)]).into_owned();
            writeln!(
                out,
                "{}/{}@{} {}B {}",
                item.topic,
                item.partition,
                item.offset,
                item.payload_bytes,
                if left_out {
                    "(payload left on the node)".to_string()
                } else {
                    preview.escape_debug().to_string()
                }
            )
            .map_err(werr())?;
        }
        if opts.commit && last_commit.elapsed() > Duration::from_secs(1) {
            // A node that is down now is retried at the next commit; the
            // items keep flowing when it returns.
            if let Err(e) = consumer.commit().await {
                tracing::warn!(error = %e, "commit failed; will retry");
            }
            last_commit = Instant::now();
        }
    }
    out.flush().map_err(werr())?;
    if opts.commit {
        consumer.commit().await?;
    }
    Ok(seen)
}
