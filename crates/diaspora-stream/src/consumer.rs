//! The QoS consumer: the shell around [`ConsumerCore`]. It reads the data
//! partitions, the replay topic and the control topic, holds items behind
//! gaps, asks for replays, makes substitutes, reports progress to the
//! producer, and checkpoints its position to a local file (fsynced, replaced
//! atomically) so a restart resumes exactly where it left off — even when
//! the fabric has expired those items since (they are replayed from the
//! producer's buffers).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diaspora_fabric::client::Client;
use diaspora_fabric::consumer::{Consumer, ConsumerConfig, StartFrom};
use diaspora_fabric::item::Item;
use diaspora_fabric::producer::{Producer, ProducerConfig};
use diaspora_proto::v1::{self, quality::Kind};
use serde::{Deserialize, Serialize};

use crate::control::{self, control_topic, replay_topic, Control};
use crate::core::consumer::{Arrival, ConsumerCore, ConsumerCounters, Event, SubstituteFor};
use crate::policy::{Policy, ReconstructMethod};
use crate::producer::StreamError;
use crate::reduce::{self, Reconstructor};

/// Largest `qos.reduced_before` / `qos.shed_before` accepted from the wire.
const SKIP_MAX: u64 = 1 << 32;

/// Reads a stream item's QoS headers: its partition (`data_partition` for
/// items read from the data topic, `qos.partition` for replays) and its
/// sequence number and skip counts. Anything missing or impossible is an
/// error naming it; never a panic.
///
/// ```
/// use diaspora_stream::control;
/// let mut it = diaspora_fabric::item::Item::default();
/// assert!(diaspora_stream::consumer::read_headers(&it, Some(0)).is_err());
/// it.metadata.insert(control::SEQ.into(), control::int(7));
/// let (p, a) = diaspora_stream::consumer::read_headers(&it, Some(2)).unwrap();
/// assert_eq!((p, a.seq), (2, 7));
/// ```
pub fn read_headers(item: &Item, data_partition: Option<u32>) -> Result<(u32, Arrival), String> {
    let partition = match data_partition {
        Some(p) => p,
        None => match control::get_u64(item, control::PARTITION) {
            Some(p) if p <= u64::from(u32::MAX) => p as u32,
            _ => return Err("a replayed item without a valid qos.partition".into()),
        },
    };
    let seq = control::get_u64(item, control::SEQ).ok_or("no qos.seq")?;
    let reduced_before = control::get_u64(item, control::REDUCED_BEFORE).unwrap_or(0);
    let shed_before = control::get_u64(item, control::SHED_BEFORE).unwrap_or(0);
    if reduced_before > SKIP_MAX || shed_before > SKIP_MAX || reduced_before + shed_before > seq {
        return Err(format!(
            "impossible skip counts {reduced_before} + {shed_before} before seq {seq}"
        ));
    }
    Ok((
        partition,
        Arrival {
            seq,
            reduced_before,
            shed_before,
        },
    ))
}

/// An item delivered by a QoS consumer.
#[derive(Debug, Clone)]
pub struct QosItem {
    /// Data partition.
    pub partition: u32,
    /// Stream sequence number.
    pub seq: u64,
    /// The item (payload restored if it travelled compressed; substitutes
    /// are marked `reconstructed(method)` with lineage to their sources).
    pub item: Item,
    /// Where it was read, when it was read from the fabric (not for substitutes).
    pub offset: Option<u64>,
    /// Came from the producer's replay buffers.
    pub replayed: bool,
    /// An original delivered after its substitute.
    pub supersedes: bool,
}

impl QosItem {
    /// `"original"`, `"reduced:METHOD"` or `"reconstructed:METHOD"`.
    pub fn quality(&self) -> String {
        quality_label(&self.item)
    }
}

/// The quality of an item as a label.
pub fn quality_label(item: &Item) -> String {
    match &item.quality {
        None => "original".into(),
        Some(q) => match Kind::try_from(q.kind) {
            Ok(Kind::Original) | Err(_) => "original".into(),
            Ok(Kind::Reduced) => format!("reduced:{}", q.method),
            Ok(Kind::Reconstructed) => format!("reconstructed:{}", q.method),
        },
    }
}

/// Figures of a QoS consumer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsumerReport {
    /// The core's counters.
    #[serde(flatten)]
    pub counters: ConsumerCounters,
    /// Items delivered that came from replays.
    pub replayed: u64,
    /// Items without QoS headers, or with bad ones: skipped (logged).
    pub malformed: u64,
    /// Items whose payload could not be restored (codec): delivered as missing.
    pub undecodable: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// partition → (next seq, data offset to read from)
    partitions: BTreeMap<u32, (u64, u64)>,
}

struct Held {
    item: Item,
    offset: Option<u64>,
    replayed: bool,
    source: v1::ItemRef,
}

/// A QoS consumer. See the module docs.
pub struct QosConsumer {
    name: String,
    topic: Arc<str>,
    core: ConsumerCore,
    policy: Policy,
    data: Consumer,
    replay: Consumer,
    control_in: Consumer,
    control_out: Producer,
    held: HashMap<(u32, u64), Held>,
    last: HashMap<u32, (u64, Item, v1::ItemRef)>,
    outbox: Vec<Item>,
    ready: VecDeque<QosItem>,
    checkpoint: Option<PathBuf>,
    reconstructor: Option<Box<dyn Reconstructor>>,
    origin: Instant,
    last_progress: Instant,
    /// Per partition: delivered since the last report, and the smoothed rate.
    delivered_since: HashMap<u32, u64>,
    rate_hz: HashMap<u32, f64>,
    last_latency_us: HashMap<u32, u64>,
    report: ConsumerReport,
}

impl QosConsumer {
    /// Starts a QoS consumer called `name` on `partitions` of `topic` (empty: all).
    /// With `checkpoint`, the position is kept in that file and a restart
    /// resumes from it; without, it starts at the fabric's earliest item.
    pub async fn new(
        client: &Client,
        topic: &str,
        partitions: &[u32],
        name: &str,
        policy: Policy,
        checkpoint: Option<&Path>,
    ) -> Result<QosConsumer, StreamError> {
        policy.validate()?;
        for t in [topic.to_string(), control_topic(topic), replay_topic(topic)] {
            client.metadata(&t).await.map_err(|e| match e {
                diaspora_fabric::FabricError::Remote { .. }
                | diaspora_fabric::FabricError::UnknownTopic(_) => {
                    StreamError::MissingTopic(t.clone(), topic.into())
                }
                e => e.into(),
            })?;
        }
        let saved = match checkpoint {
            Some(p) => read_checkpoint(p)?,
            None => Checkpoint::default(),
        };
        let mut data = Consumer::assign(client, ConsumerConfig::new(topic), partitions).await?;
        let mut core = ConsumerCore::new(&policy);
        for (&p, &(next, offset)) in &saved.partitions {
            if data.assignment().contains(&p) {
                core.resume(p, next);
                data.seek(p, offset)?;
            }
        }
        let replay = Consumer::assign(
            client,
            ConsumerConfig::new(replay_topic(topic)).start(StartFrom::Latest),
            &[0],
        )
        .await?;
        let control_in = Consumer::assign(
            client,
            ConsumerConfig::new(control_topic(topic)).start(StartFrom::Latest),
            &[0],
        )
        .await?;
        let mut cfg = ProducerConfig::new(control_topic(topic));
        cfg.retry_for = Duration::from_secs(5);
        let control_out = Producer::new(client, cfg).await?;
        Ok(QosConsumer {
            name: name.to_string(),
            topic: topic.into(),
            core,
            policy,
            data,
            replay,
            control_in,
            control_out,
            held: HashMap::new(),
            last: HashMap::new(),
            outbox: Vec::new(),
            ready: VecDeque::new(),
            checkpoint: checkpoint.map(Path::to_path_buf),
            reconstructor: None,
            origin: Instant::now(),
            last_progress: Instant::now(),
            delivered_since: HashMap::new(),
            rate_hz: HashMap::new(),
            last_latency_us: HashMap::new(),
            report: ConsumerReport::default(),
        })
    }

    /// Uses `r` for `reconstruct.method = "user"`.
    pub fn with_reconstructor(mut self, r: Box<dyn Reconstructor>) -> Self {
        self.reconstructor = Some(r);
        self
    }

    /// The figures so far.
    pub fn report(&self) -> ConsumerReport {
        let mut r = self.report.clone();
        r.counters = self.core.counters().clone();
        r
    }

    /// Items held for reordering (arrived ahead of a gap).
    pub fn held(&self) -> usize {
        self.core.held()
    }

    /// The next sequence number of `partition`.
    pub fn position(&self, partition: u32) -> Option<u64> {
        self.core.position(partition)
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// The next item, waiting up to `timeout`; `Ok(None)` on timeout.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<QosItem>, StreamError> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(x) = self.ready.pop_front() {
                *self.delivered_since.entry(x.partition).or_default() += 1;
                if !x.supersedes && x.item.timestamp_us > 0 {
                    let lat = (diaspora_fabric::item::now_us() - x.item.timestamp_us).max(0) as u64;
                    self.last_latency_us.insert(x.partition, lat);
                }
                return Ok(Some(x));
            }
            let now = self.now();
            let ev = self.core.tick(now);
            self.apply(ev);
            for it in std::mem::take(&mut self.outbox) {
                let _ = self.control_out.send_unacked(Some(0), it).await;
            }
            if self.last_progress.elapsed()
                >= Duration::from_millis(self.policy.progress_interval_ms)
            {
                self.progress().await?;
            }
            if !self.ready.is_empty() {
                continue;
            }
            let left = end.saturating_duration_since(Instant::now());
            if self.core.gap_open() {
                // Replays and "unavailable" answers first; new data only while the reorder buffer has room.
                while let Some(c) = self.replay.poll(Duration::ZERO).await? {
                    self.arrive(c.item, None, Some(c.offset));
                }
                while let Some(c) = self.control_in.poll(Duration::ZERO).await? {
                    if let Ok(Control::Unavailable {
                        partition,
                        from,
                        to,
                        ..
                    }) = Control::from_item(&c.item)
                    {
                        let now = self.now();
                        let ev = self.core.on_unavailable(partition, from, to, now);
                        self.apply(ev);
                    }
                }
                if !self.ready.is_empty() {
                    continue;
                }
                if !self.core.full() {
                    if let Some(c) = self.data.poll(Duration::from_millis(5)).await? {
                        self.arrive(c.item, Some((c.partition, c.offset)), None);
                        continue;
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if left.is_zero() {
                    return Ok(None);
                }
                continue;
            }
            let wait = left.min(Duration::from_millis(self.policy.progress_interval_ms));
            match self.data.poll(wait).await? {
                Some(c) => self.arrive(c.item, Some((c.partition, c.offset)), None),
                None if left.is_zero() => return Ok(None),
                None => {}
            }
        }
    }

    fn arrive(&mut self, item: Item, at: Option<(u32, u64)>, replay_offset: Option<u64>) {
        let replayed = replay_offset.is_some();
        let (partition, a) = match read_headers(&item, at.map(|a| a.0)) {
            Ok(x) => x,
            Err(why) => {
                self.report.malformed += 1;
                tracing::warn!(topic = %self.topic, ?at, "item skipped: {why}");
                return;
            }
        };
        let seq = a.seq;
        let now = self.now();
        let ev = self.core.on_arrival(partition, a, now);
        // Unless dropped (a duplicate), the core delivers it now or holds it behind a gap.
        let dropped = ev
            .iter()
            .any(|e| matches!(e, Event::Drop { partition: p, seq: s, .. } if *p == partition && *s == seq));
        if !dropped {
            let source = match (at, replay_offset) {
                (Some((p, o)), _) => v1::ItemRef {
                    topic: self.topic.to_string(),
                    partition: p,
                    offset: o,
                },
                (None, o) => v1::ItemRef {
                    topic: replay_topic(&self.topic),
                    partition: 0,
                    offset: o.unwrap_or(0),
                },
            };
            self.held.insert(
                (partition, seq),
                Held {
                    item,
                    offset: at.map(|a| a.1),
                    replayed,
                    source,
                },
            );
        }
        self.apply(ev);
    }

    fn apply(&mut self, events: Vec<Event>) {
        for e in events {
            match e {
                Event::Deliver { partition, seq } | Event::Supersede { partition, seq } => {
                    let supersedes = matches!(e, Event::Supersede { .. });
                    let Some(h) = self.held.remove(&(partition, seq)) else {
                        continue;
                    };
                    let mut item = h.item;
                    if let Err(err) = reduce::restore(&mut item) {
                        tracing::warn!(seq, error = %err, "payload could not be restored");
                        self.report.undecodable += 1;
                        continue;
                    }
                    if h.replayed {
                        self.report.replayed += 1;
                    }
                    if supersedes {
                        item.metadata
                            .insert(control::SUPERSEDES.into(), control::boolean(true));
                    } else {
                        self.last
                            .insert(partition, (seq, item.clone(), h.source.clone()));
                    }
                    self.ready.push_back(QosItem {
                        partition,
                        seq,
                        item,
                        offset: h.offset,
                        replayed: h.replayed,
                        supersedes,
                    });
                }
                Event::Substitute {
                    partition,
                    seq,
                    next,
                    reason,
                    ..
                } => {
                    let prev = self.last.get(&partition).map(|(s, i, _)| (*s, i));
                    let mut next_item =
                        next.and_then(|n| self.held.get(&(partition, n))).map(|h| {
                            let mut it = h.item.clone();
                            let _ = reduce::restore(&mut it);
                            (next.unwrap_or(0), it)
                        });
                    let next_ref = next_item.as_mut().map(|(s, i)| (*s, &*i));
                    let method = self.policy.reconstruct.method;
                    let made = match method {
                        ReconstructMethod::None => None,
                        ReconstructMethod::HoldLast => reduce::hold_last(prev, next_ref),
                        ReconstructMethod::Linear => reduce::linear(seq, prev, next_ref),
                        ReconstructMethod::User => self
                            .reconstructor
                            .as_mut()
                            .and_then(|r| r.reconstruct(seq, prev, next_ref)),
                    };
                    let Some(mut item) = made else {
                        // No substitute could be made: that is a loss, counted as one.
                        tracing::warn!(seq, "no substitute could be made");
                        self.report.undecodable += 1;
                        continue;
                    };
                    let mut sources = Vec::new();
                    if let Some((_, _, r)) = self.last.get(&partition) {
                        sources.push(r.clone());
                    }
                    if let Some(h) = next.and_then(|n| self.held.get(&(partition, n))) {
                        sources.push(h.source.clone());
                    }
                    item.metadata.remove("id");
                    item.metadata.remove(control::REDUCED_BEFORE);
                    item.metadata.remove(control::SHED_BEFORE);
                    item.metadata.remove(control::REPLAY);
                    item.metadata
                        .insert(control::SEQ.into(), control::int(seq as i64));
                    item.metadata.insert(
                        "qos.substitute_for".into(),
                        control::string(match reason {
                            SubstituteFor::Missing => "missing",
                            SubstituteFor::Reduced => "reduced",
                        }),
                    );
                    item.lineage = Some(v1::Lineage {
                        sources,
                        model_versions: Vec::new(),
                        activity: format!("qos-reconstruct:{}", method.name()),
                    });
                    reduce::mark(&mut item, Kind::Reconstructed, method.name());
                    self.ready.push_back(QosItem {
                        partition,
                        seq,
                        item,
                        offset: None,
                        replayed: false,
                        supersedes: false,
                    });
                }
                Event::RequestReplay {
                    partition,
                    from,
                    to,
                } => {
                    let ev = Control::Replay {
                        consumer: self.name.clone(),
                        partition,
                        from,
                        to,
                    };
                    tracing::info!(partition, from, to, "gap: replay requested");
                    // Sent by `next` right after; if it is lost, the gap's deadline still resolves it.
                    self.outbox.push(ev.to_item());
                }
                Event::Lost {
                    partition,
                    from,
                    to,
                } => {
                    tracing::warn!(partition, from, to, "items lost: not replayed in time");
                }
                Event::Drop { .. } => {}
            }
        }
        // Items dropped as duplicates were never inserted; nothing else to free.
    }

    /// Reports progress to the producer and writes the checkpoint.
    async fn progress(&mut self) -> Result<(), StreamError> {
        let dt = self.last_progress.elapsed().as_secs_f64().max(1e-3);
        self.last_progress = Instant::now();
        for p in self.data.assignment() {
            // Each partition is its own stream with its own producer: its rate
            // is what that producer's backlog estimate divides by.
            let n = self.delivered_since.remove(&p).unwrap_or(0);
            let now_rate = n as f64 / dt;
            let rate = self.rate_hz.entry(p).or_insert(now_rate);
            *rate = 0.7 * *rate + 0.3 * now_rate;
            let rate = *rate;
            if let Some(next) = self.core.position(p) {
                let ev = Control::Progress {
                    consumer: self.name.clone(),
                    partition: p,
                    next_seq: next,
                    // Nothing delivered since the last report: nothing is waiting behind.
                    latency_us: if n > 0 {
                        self.last_latency_us.get(&p).copied().unwrap_or(0)
                    } else {
                        0
                    },
                    rate_hz: rate,
                };
                let _ = self.control_out.send_unacked(Some(0), ev.to_item()).await;
            }
        }
        self.write_checkpoint()
    }

    /// Writes the checkpoint now (also done every `progress_interval_ms`).
    pub fn write_checkpoint(&mut self) -> Result<(), StreamError> {
        let Some(path) = self.checkpoint.clone() else {
            return Ok(());
        };
        let mut cp = Checkpoint::default();
        for p in self.data.assignment() {
            let Some(next) = self.core.position(p) else {
                continue;
            };
            // Items already delivered to `ready` but not yet returned are
            // re-read after a crash (and dropped as duplicates if delivered).
            let queued_min = self
                .ready
                .iter()
                .filter(|q| q.partition == p)
                .map(|q| q.seq)
                .min();
            let next = queued_min.map_or(next, |q| q.min(next));
            let held_min = self
                .held
                .iter()
                .filter(|((hp, _), h)| *hp == p && h.offset.is_some())
                .filter_map(|(_, h)| h.offset)
                .min();
            let ready_min = self
                .ready
                .iter()
                .filter(|q| q.partition == p)
                .filter_map(|q| q.offset)
                .min();
            let pos = self.data.positions().get(&p).copied().unwrap_or(0);
            let offset = [held_min, ready_min]
                .into_iter()
                .flatten()
                .fold(pos, u64::min);
            cp.partitions.insert(p, (next, offset));
        }
        write_checkpoint(&path, &cp)?;
        self.report.checkpoints += 1;
        Ok(())
    }

    /// Writes the checkpoint and stops.
    pub async fn close(mut self) -> Result<ConsumerReport, StreamError> {
        self.write_checkpoint()?;
        let _ = self.control_out.flush().await;
        let r = self.report();
        self.data.close().await;
        self.replay.close().await;
        self.control_in.close().await;
        Ok(r)
    }
}

fn read_checkpoint(path: &Path) -> Result<Checkpoint, StreamError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|source| StreamError::CheckpointFormat {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
        Err(source) => Err(StreamError::Checkpoint {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_checkpoint(path: &Path, cp: &Checkpoint) -> Result<(), StreamError> {
    use std::io::Write;
    let io = |source: std::io::Error| StreamError::Checkpoint {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&serde_json::to_vec(cp).expect("checkpoint serializes"))
        .map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trip_and_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp.json");
        assert!(read_checkpoint(&p).unwrap().partitions.is_empty());
        let mut cp = Checkpoint::default();
        cp.partitions.insert(3, (10, 99));
        write_checkpoint(&p, &cp).unwrap();
        assert_eq!(read_checkpoint(&p).unwrap().partitions[&3], (10, 99));
        std::fs::write(&p, b"{not json").unwrap();
        assert!(read_checkpoint(&p)
            .unwrap_err()
            .to_string()
            .contains("cp.json"));
    }

    #[test]
    fn quality_labels() {
        let mut it = Item::default();
        assert_eq!(quality_label(&it), "original");
        reduce::mark(&mut it, Kind::Reconstructed, "linear");
        assert_eq!(quality_label(&it), "reconstructed:linear");
    }
}
