//! QoS streams between the fabric and a byte stream: the loops behind
//! `diaspora stream produce` and `diaspora stream consume`.
//!
//! [`produce`] offers lines of a reader (or synthetic payloads: random
//! bytes or u16 detector frames) to a [`QosProducer`], optionally paced,
//! logs each item's fate (acknowledged, shed, reduced away) as a JSON line,
//! drains what was accepted and can linger so late consumers still get
//! replays. [`consume`] writes what a [`QosConsumer`] delivers as text or
//! JSON lines until a count, an idle timeout or a [`Stop`]. The command line
//! only parses flags and prints the summaries these return.
//!
//! What it does not do: decide anything about rates, buffers or
//! reconstruction — the producer and consumer do, under their policy.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diaspora_fabric::item::{now_us, payload_item};
use diaspora_fabric::pipe::{synthetic_payload, PipeError as FabricPipeError};
use diaspora_fabric::Stop;
use diaspora_proto::v1;
use tokio::io::{AsyncBufReadExt, AsyncRead};

use crate::consumer::quality_label;
use crate::producer::Acked;
use crate::{control, QosConsumer, QosItem, QosProducer, Sent, StreamError};

/// What can end a stream pipe with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    /// The stream refused or failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// Input, output, or a consumer that went idle before its count.
    #[error(transparent)]
    Pipe(#[from] FabricPipeError),
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> PipeError {
    move |source| {
        PipeError::Pipe(FabricPipeError::Io {
            context: context.into(),
            source,
        })
    }
}

/// Synthetic payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Incompressible bytes.
    Random,
    /// u16 detector frames (64 rows; a bright spot that moves from item to
    /// item over a noisy background), tagged as ndarray payloads.
    Frame,
}

/// Where offered items come from.
pub enum Source {
    /// `count` items of about `size` bytes.
    Synthetic {
        /// How many.
        count: u64,
        /// Payload bytes of each.
        size: usize,
        /// What they hold.
        payload: Payload,
    },
    /// One item per line of the reader.
    Lines(Box<dyn AsyncRead + Unpin + Send>),
}

/// How [`produce`] offers items and finishes.
#[derive(Clone, Debug)]
pub struct ProduceOptions {
    /// Items per second; 0 offers as fast as the stream takes them. A paced
    /// item is stamped when it is offered.
    pub rate: f64,
    /// The `id` metadata of the first item; the n-th carries `id_start + n`.
    pub id_start: u64,
    /// Write one JSON line per item to this file: acknowledged ones as
    /// `{"id","seq","partition","offset","acked_us"}`, items shed or reduced
    /// away as `{"id","seq","fate"}` (`"shed"`, `"reduced"`).
    pub acks: Option<PathBuf>,
    /// At the end, wait this long for every accepted item to be acknowledged.
    pub drain_timeout: Duration,
    /// After the drain, keep the stream open this long (or until the stop)
    /// so consumers can still have its history replayed.
    pub linger: Duration,
}

/// What [`produce`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Produced {
    /// Items offered.
    pub offered: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Time spent offering, seconds.
    pub produce_s: f64,
}

/// The acknowledgement log: acks as they arrive, fates as they are decided.
struct AckLog {
    file: Option<BufWriter<File>>,
    acks: tokio::sync::mpsc::UnboundedReceiver<Acked>,
    fates: Vec<(u64, u64, &'static str)>,
}

impl AckLog {
    fn write(&mut self) -> Result<(), PipeError> {
        let Some(f) = self.file.as_mut() else {
            while self.acks.try_recv().is_ok() {}
            self.fates.clear();
            return Ok(());
        };
        let now = now_us();
        let werr = || io("write the acks file");
        while let Ok(k) = self.acks.try_recv() {
            writeln!(
                f,
                r#"{{"id":{},"seq":{},"partition":{},"offset":{},"acked_us":{now}}}"#,
                k.id.unwrap_or(u64::MAX),
                k.seq,
                k.partition,
                k.offset
            )
            .map_err(werr())?;
        }
        for (id, seq, fate) in self.fates.drain(..) {
            writeln!(f, r#"{{"id":{id},"seq":{seq},"fate":"{fate}"}}"#).map_err(werr())?;
        }
        f.flush().map_err(werr())
    }
}

/// Offers every item of `source` until it ends or `stop`, then drains and
/// lingers. The figures come back also when the drain failed: its error
/// comes second, so a caller can report both.
pub async fn produce(
    p: &mut QosProducer,
    source: Source,
    opts: &ProduceOptions,
    stop: &Stop,
) -> Result<(Produced, Result<(), StreamError>), PipeError> {
    let mut log = AckLog {
        file: match &opts.acks {
            Some(path) => Some(BufWriter::new(File::create(path).map_err(|source| {
                PipeError::Pipe(FabricPipeError::Io {
                    context: format!("create {}", path.display()),
                    source,
                })
            })?)),
            None => None,
        },
        acks: p.subscribe_acks(),
        fates: Vec::new(),
    };
    let started = Instant::now();
    let mut done = Produced::default();
    let mut last_write = Instant::now();
    let (count, random, mut lines) = match source {
        Source::Synthetic {
            count,
            size,
            payload,
        } => {
            let random = (payload == Payload::Random).then(|| synthetic_payload(size));
            (Some((count, size)), random, None)
        }
        Source::Lines(r) => (None, None, Some(tokio::io::BufReader::new(r).lines())),
    };
    let mut aggregating: Vec<u64> = Vec::new();
    while !stop.stopped() {
        let n = done.offered;
        let mut item = match (count, lines.as_mut()) {
            (Some((count, _)), _) if n >= count => break,
            (Some((_, size)), _) => match &random {
                Some(r) => payload_item(r.clone()),
                None => frame_item(n, size),
            },
            (None, Some(l)) => match l.next_line().await.map_err(io("read a line"))? {
                Some(line) => payload_item(Bytes::from(line)),
                None => break,
            },
            (None, None) => unreachable!("a source is synthetic or lines"),
        };
        if opts.rate > 0.0 {
            let due = started + Duration::from_secs_f64(n as f64 / opts.rate);
            tokio::time::sleep_until(due.into()).await;
            item.timestamp_us = now_us();
        }
        let id = opts.id_start + n;
        item.metadata.insert("id".into(), control::int(id as i64));
        done.bytes += item.payload.len() as u64;
        match p.send(item).await? {
            Sent::Accepted(_) => {
                // The aggregate carries the last id; the others were reduced into it.
                log.fates
                    .extend(aggregating.drain(..).map(|i| (i, u64::MAX, "reduced")));
            }
            Sent::Aggregating => aggregating.push(id),
            Sent::Decimated(seq) => log.fates.push((id, seq, "reduced")),
            Sent::Shed(seq) => log.fates.push((id, seq, "shed")),
        }
        done.offered += 1;
        if last_write.elapsed() >= Duration::from_millis(100) {
            log.write()?;
            last_write = Instant::now();
        }
    }
    done.produce_s = started.elapsed().as_secs_f64();
    log.fates
        .extend(aggregating.drain(..).map(|i| (i, u64::MAX, "reduced")));
    let deadline = Instant::now() + opts.drain_timeout;
    let flushed = loop {
        log.write()?;
        match p.flush(Duration::from_millis(100)).await {
            Ok(()) => break Ok(()),
            Err(e) if Instant::now() >= deadline => break Err(e),
            Err(_) => {}
        }
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.write()?;
    if !opts.linger.is_zero() && flushed.is_ok() {
        stop.sleep(opts.linger).await;
    }
    Ok((done, flushed))
}

/// A synthetic u16 frame of about `size` bytes for item `i`: 64 rows, a
/// bright spot that moves from item to item over a noisy background,
/// tagged as an ndarray payload.
pub fn frame_item(i: u64, size: usize) -> v1::Item {
    let rows = 64usize;
    let cols = (size / 2 / rows).max(1);
    let (cx, cy) = (
        (i as f64 * 0.7) % cols as f64,
        rows as f64 / 2.0 + 10.0 * (i as f64 * 0.05).sin(),
    );
    let mut px = Vec::with_capacity(rows * cols * 2);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ i;
    for r in 0..rows {
        for c in 0..cols {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d2 = (c as f64 - cx).powi(2) + (r as f64 - cy).powi(2);
            let v = 100.0 + 3000.0 * (-d2 / 50.0).exp() + (x % 8) as f64;
            px.extend_from_slice(&(v as u16).to_le_bytes());
        }
    }
    let mut item = payload_item(Bytes::from(px));
    crate::ndarray::tag_array(&mut item, "u16", &[rows, cols]);
    item
}

/// How [`consume`] writes and when it stops.
#[derive(Clone, Debug)]
pub struct ConsumeOptions {
    /// The data topic (named in each JSON line).
    pub topic: String,
    /// Stop after this many items; reaching the idle timeout first is an
    /// error ([`diaspora_fabric::pipe::PipeError::Incomplete`]).
    pub count: Option<u64>,
    /// Stop after this long without an item.
    pub idle: Duration,
    /// One JSON object per item (`topic`, `partition`, `offset`, `seq`,
    /// `size`, `timestamp_us`, `latency_us`, `id`, `quality`, `replayed`,
    /// `supersedes`, `crc32c`) instead of a text line.
    pub json: bool,
}

/// Writes what `c` delivers, one line per item, until the count, the idle
/// timeout or `stop`; returns how many were delivered. `observe` sees the
/// consumer after every wait, with the item it delivered if any (for
/// metrics). Output is flushed at least every 100 ms and whenever the
/// consumer waits, and before any return.
pub async fn consume(
    c: &mut QosConsumer,
    out: &mut impl Write,
    opts: &ConsumeOptions,
    stop: &Stop,
    mut observe: impl FnMut(&QosConsumer, Option<&QosItem>),
) -> Result<u64, PipeError> {
    let tick = Duration::from_millis(100);
    let mut idle_for = Duration::ZERO;
    let mut seen = 0u64;
    let mut last_flush = Instant::now();
    let werr = || io("write the output");
    while !opts.count.is_some_and(|n| seen >= n) && !stop.stopped() {
        let next = c.next(tick.min(opts.idle)).await?;
        observe(c, next.as_ref());
        let Some(x) = next else {
            out.flush().map_err(werr())?;
            idle_for += tick;
            if idle_for < opts.idle {
                continue;
            }
            if let Some(wanted) = opts.count {
                return Err(FabricPipeError::Incomplete {
                    seen,
                    wanted,
                    idle: opts.idle,
                }
                .into());
            }
            break;
        };
        idle_for = Duration::ZERO;
        seen += 1;
        if opts.json {
            let mut line = serde_json::json!({
                "topic": opts.topic, "partition": x.partition, "seq": x.seq,
                "size": x.item.payload.len(), "timestamp_us": x.item.timestamp_us,
                "latency_us": now_us().saturating_sub(x.item.timestamp_us),
                "id": control::get_u64(&x.item, "id"),
                "quality": x.quality(), "replayed": x.replayed, "supersedes": x.supersedes,
                "crc32c": crc32c::crc32c(&x.item.payload),
            });
            if let Some(o) = x.offset {
                line["offset"] = o.into();
            }
            writeln!(out, "{line}").map_err(werr())?;
        } else {
            writeln!(
                out,
                "{}/{} seq {} {}B {}{}",
                opts.topic,
                x.partition,
                x.seq,
                x.item.payload.len(),
                quality_label(&x.item),
                if x.replayed { " (replayed)" } else { "" }
            )
            .map_err(werr())?;
        }
        if last_flush.elapsed() >= tick {
            out.flush().map_err(werr())?;
            last_flush = Instant::now();
        }
    }
    out.flush().map_err(werr())?;
    Ok(seen)
}
