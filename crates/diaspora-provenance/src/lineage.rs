//! Per-item lineage at stream rates: a [`LineageRecorder`] is the
//! [`AckHook`] of a `QosProducer`. Every acknowledged item becomes a record
//! (its fabric location, time, quality, chosen metadata tags) with edges to
//! its source items, the model versions it names and the activity that made
//! it. A writer thread stores them in batched transactions.
//!
//! Sources are resolved by location: first from the items this recorder
//! wrote (a bounded cache), then from the store with one range query per
//! (topic, partition); a source the store has never seen is recorded as a
//! placeholder item tagged `unrecorded_source`, so the derivation is kept
//! and an invalidation of that location still cascades.

use crate::model::*;
use crate::store::Provenance;
use diaspora_fabric::item::{AckHook, AckedItem, IdBuildHasher, ItemRef};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of a recorder.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Records per transaction at most.
    pub batch_max: usize,
    /// How long a partial batch waits for more before it is written.
    pub linger: Duration,
    /// Items queued at most; past it, the producer's ack path waits
    /// (backpressure: lineage is never dropped).
    pub queue_max: usize,
    /// Metadata keys recorded as tags (e.g. `scan`).
    pub tag_keys: Vec<String>,
    /// Item locations remembered for resolving sources without a query.
    pub cache_max: usize,
    /// Attempts per batch when the store fails, before the batch is
    /// reported lost in [`RecorderStats::lost`].
    pub attempts: u32,
    /// How long an item whose sources are not recorded yet is held back,
    /// waiting for them (their producers' acknowledgements may still be on
    /// the way), before a placeholder stands in for them. Zero: never wait.
    /// A flush or close writes held-back items at once.
    pub source_wait: Duration,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            batch_max: 8192,
            // Each batch is one durable commit (an fsync): 100 ms keeps the
            // store off the disk most of the time at stream rates.
            linger: Duration::from_millis(100),
            queue_max: 1 << 16,
            tag_keys: Vec::new(),
            cache_max: 1 << 20,
            attempts: 5,
            source_wait: Duration::from_secs(2),
        }
    }
}

/// What a recorder has done.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RecorderStats {
    /// Item records written.
    pub recorded: u64,
    /// Transactions.
    pub batches: u64,
    /// Sources found neither in the cache nor in the store (placeholders made).
    pub unrecorded_sources: u64,
    /// Model versions named by items that the store does not know.
    pub unknown_models: u64,
    /// Items whose batch could not be stored after every attempt.
    pub lost: u64,
    /// Items held back at least once until their sources were recorded.
    pub held_back: u64,
    /// The last store error.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    /// A flush or stop is queued: write without lingering.
    urgent: std::sync::atomic::AtomicBool,
    recorded: AtomicU64,
    batches: AtomicU64,
    unrecorded: AtomicU64,
    unknown_models: AtomicU64,
    lost: AtomicU64,
    held_back: AtomicU64,
    last_error: parking_lot::Mutex<Option<String>>,
}

enum Msg {
    Item(AckedItem),
    Flush(SyncSender<std::result::Result<(), String>>),
    Stop,
}

/// Records per-item lineage in batches on a writer thread. Give it to a
/// producer with `QosProducer::with_ack_hook(recorder.hook())`.
pub struct LineageRecorder {
    tx: SyncSender<Msg>,
    tag_keys: Vec<String>,
    counters: Arc<Counters>,
    join: parking_lot::Mutex<Option<std::thread::JoinHandle<Provenance>>>,
}

impl LineageRecorder {
    /// Starts a recorder writing to `prov` (it owns the store until
    /// [`LineageRecorder::close`] hands it back).
    pub fn start(prov: Provenance, config: RecorderConfig) -> LineageRecorder {
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue_max.max(1));
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let tag_keys = config.tag_keys.clone();
        let join = std::thread::Builder::new()
            .name("prov-lineage".into())
            .spawn(move || Writer::new(prov, config, c).run(rx))
            .expect("spawn lineage writer");
        LineageRecorder {
            tx,
            tag_keys,
            counters,
            join: parking_lot::Mutex::new(Some(join)),
        }
    }

    /// Queues one acknowledged item; waits while the queue is full.
    pub fn record(&self, item: AckedItem) {
        match self.tx.try_send(Msg::Item(item)) {
            Ok(()) => {}
            Err(TrySendError::Full(m)) => {
                let send = || self.tx.send(m).is_ok();
                let sent = match tokio::runtime::Handle::try_current() {
                    Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                        tokio::task::block_in_place(send)
                    }
                    _ => send(),
                };
                if !sent {
                    self.counters.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits until everything queued so far is stored; the error of a
    /// batch that could not be stored is returned.
    pub fn flush(&self) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.counters.urgent.store(true, Ordering::Relaxed);
        self.tx
            .send(Msg::Flush(tx))
            .map_err(|_| ProvError::Store("lineage writer has stopped".into()))?;
        rx.recv()
            .map_err(|_| ProvError::Store("lineage writer has stopped".into()))?
            .map_err(ProvError::Store)
    }

    /// What it has done so far.
    pub fn stats(&self) -> RecorderStats {
        let c = &self.counters;
        RecorderStats {
            recorded: c.recorded.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            unrecorded_sources: c.unrecorded.load(Ordering::Relaxed),
            unknown_models: c.unknown_models.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            held_back: c.held_back.load(Ordering::Relaxed),
            last_error: c.last_error.lock().clone(),
        }
    }

    /// Stores what is queued, stops the writer and hands the store back.
    /// Items offered afterwards are counted in [`RecorderStats::lost`].
    pub fn close(&self) -> Result<(RecorderStats, Provenance)> {
        let flushed = self.flush();
        let join = self
            .join
            .lock()
            .take()
            .ok_or_else(|| ProvError::Invalid("lineage recorder already closed".into()))?;
        self.counters.urgent.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Msg::Stop);
        let prov = join
            .join()
            .map_err(|_| ProvError::Store("lineage writer panicked".into()))?;
        flushed?;
        Ok((self.stats(), prov))
    }

    /// This recorder as a producer's ack hook.
    pub fn hook(self: &Arc<Self>) -> Arc<dyn AckHook> {
        self.clone()
    }
}

impl AckHook for LineageRecorder {
    fn tag_keys(&self) -> &[String] {
        &self.tag_keys
    }
    fn acked(&self, item: AckedItem) {
        self.record(item);
    }
}

/// A source location, as a cache and set key.
type LocKey = ItemRef;

/// A run of items this recorder wrote: (first offset, count, first id).
type OwnRun = (u64, u64, RecordId);

struct Writer {
    prov: Provenance,
    config: RecorderConfig,
    counters: Arc<Counters>,
    cache: HashMap<LocKey, RecordId, IdBuildHasher>,
    /// Items this recorder wrote: per topic and partition, runs of
    /// (first offset, count, first id).
    own: HashMap<Arc<str>, HashMap<u32, Vec<OwnRun>>>,
    own_runs: usize,
    activities: HashMap<String, RecordId>,
    models: HashMap<String, Option<RecordId>>,
    started_us: i64,
    /// Items waiting for their sources: (first seen, item).
    deferred: Vec<(Instant, AckedItem)>,
}

impl Writer {
    fn new(prov: Provenance, config: RecorderConfig, counters: Arc<Counters>) -> Writer {
        let started_us = prov.now();
        Writer {
            prov,
            config,
            counters,
            cache: HashMap::default(),
            own: HashMap::new(),
            own_runs: 0,
            activities: HashMap::new(),
            models: HashMap::new(),
            started_us,
            deferred: Vec::new(),
        }
    }

    /// Moves items of `batch` whose sources are not recorded yet (neither
    /// known, nor in the store, nor written earlier in this batch) to the
    /// held-back list, and brings back held-back items whose sources have
    /// appeared or whose wait is over. `force` writes everything.
    fn hold_back(&mut self, batch: &mut Vec<AckedItem>, force: bool) -> Result<()> {
        let wait = self.config.source_wait;
        let sourced = |a: &AckedItem| a.lineage.as_ref().is_some_and(|l| !l.sources.is_empty());
        if self.deferred.is_empty() && (wait.is_zero() || !batch.iter().any(sourced)) {
            return Ok(());
        }
        let now = Instant::now();
        let mut all: Vec<(Instant, AckedItem)> = std::mem::take(&mut self.deferred);
        all.extend(batch.drain(..).map(|a| (now, a)));
        let mut missing: Vec<LocKey> = Vec::new();
        for (_, a) in &all {
            for s in a.lineage.iter().flat_map(|l| &l.sources) {
                let k: LocKey = ItemRef::new(s.topic.as_str(), s.partition, s.offset);
                if self.known(&k).is_none() {
                    missing.push(k);
                }
            }
        }
        if !missing.is_empty() {
            self.resolve(&mut missing)?;
        }
        let mut present: HashSet<LocKey> = HashSet::new();
        let room = self.config.queue_max.max(1);
        // Items whose sources are known or written earlier in this batch go
        // first, pass after pass, so a source always precedes what derives
        // from it (held-back items may arrive before their sources).
        let mut waiting = all;
        loop {
            let before = waiting.len();
            let mut rest = Vec::with_capacity(before);
            for (seen, a) in waiting {
                let ready = a.lineage.iter().flat_map(|l| &l.sources).all(|s| {
                    let k: LocKey = ItemRef::new(s.topic.as_str(), s.partition, s.offset);
                    self.known(&k).is_some() || present.contains(&k)
                });
                if ready {
                    present.insert(a.item.clone());
                    batch.push(a);
                } else {
                    rest.push((seen, a));
                }
            }
            waiting = rest;
            if waiting.is_empty() || waiting.len() == before {
                break;
            }
        }
        // The rest: written with placeholders when forced, when their wait
        // is over or when too many wait; else held back.
        let mut newly = 0u64;
        for (seen, a) in waiting {
            if force || now.duration_since(seen) >= wait || self.deferred.len() >= room {
                batch.push(a);
            } else {
                newly += u64::from(seen == now);
                self.deferred.push((seen, a));
            }
        }
        self.counters.held_back.fetch_add(newly, Ordering::Relaxed);
        Ok(())
    }

    fn run(mut self, rx: Receiver<Msg>) -> Provenance {
        let mut batch: Vec<AckedItem> = Vec::with_capacity(self.config.batch_max);
        let mut flushes: Vec<SyncSender<std::result::Result<(), String>>> = Vec::new();
        let mut failed: Option<String> = None;
        loop {
            let first = if self.deferred.is_empty() {
                match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                }
            } else {
                // Held-back items are looked at again every 50 ms.
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(m) => Some(m),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            let deadline = Instant::now() + self.config.linger;
            let mut next = first;
            let mut closed = false;
            loop {
                match next.take() {
                    Some(Msg::Item(a)) => batch.push(a),
                    Some(Msg::Flush(tx)) => {
                        flushes.push(tx);
                        break;
                    }
                    Some(Msg::Stop) => {
                        closed = true;
                        break;
                    }
                    None => {}
                }
                if batch.len() >= self.config.batch_max {
                    break;
                }
                match rx.try_recv() {
                    Ok(m) => next = Some(m),
                    Err(std::sync::mpsc::TryRecvError::Empty) => {
                        // Sleep rather than wait on the channel: a waiting
                        // receiver is woken by every send, which at stream
                        // rates costs the producers a context switch per item.
                        let now = Instant::now();
                        if now >= deadline || self.counters.urgent.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep((deadline - now).min(Duration::from_millis(2)));
                    }
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            self.counters.urgent.store(false, Ordering::Relaxed);
            if let Err(e) = self.hold_back(&mut batch, closed || !flushes.is_empty()) {
                // The store could not answer which sources exist: write
                // now, with placeholders, rather than hold items forever.
                tracing::warn!(error = %e, "lineage sources not resolved; writing with placeholders");
                batch.extend(self.deferred.drain(..).map(|(_, a)| a));
            }
            if !batch.is_empty() {
                if let Err(e) = self.write_with_retries(&batch) {
                    self.counters
                        .lost
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    *self.counters.last_error.lock() = Some(e.clone());
                    tracing::error!(error = %e, items = batch.len(), "lineage batch not stored");
                    failed = Some(e);
                }
                batch.clear();
            }
            for f in flushes.drain(..) {
                let _ = f.send(match failed.take() {
                    Some(e) => Err(e),
                    None => Ok(()),
                });
            }
            if closed {
                break;
            }
        }
        self.prov
    }

    fn write_with_retries(&mut self, batch: &[AckedItem]) -> std::result::Result<(), String> {
        let mut delay = Duration::from_millis(20);
        let mut last = String::new();
        for attempt in 0..self.config.attempts.max(1) {
            match self.write(batch) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = e.to_string();
                    tracing::warn!(error = %last, attempt, "lineage batch failed; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
        Err(last)
    }

    fn activity(&mut self, name: &str) -> Result<RecordId> {
        if let Some(&id) = self.activities.get(name) {
            return Ok(id);
        }
        let rec = Record::new(Kind::Activity, name)
            .tag("pid", TagValue::Int(std::process::id() as i64))
            .at(self.started_us);
        let id = self.prov.add(rec)?;
        self.activities.insert(name.to_string(), id);
        Ok(id)
    }

    fn model(&mut self, spec: &str) -> Result<Option<RecordId>> {
        if let Some(id) = self.models.get(spec) {
            return Ok(*id);
        }
        let id = match spec
            .rsplit_once('@')
            .and_then(|(n, v)| Some((n, v.parse::<i64>().ok()?)))
        {
            Some((name, v)) => self.prov.model_version(name, v)?,
            None => None,
        };
        self.models.insert(spec.to_string(), id);
        Ok(id)
    }

    /// Resolves source locations not in the cache, one range query per
    /// (topic, partition).
    fn resolve(&mut self, missing: &mut Vec<LocKey>) -> Result<()> {
        missing.sort();
        missing.dedup();
        let mut i = 0;
        while i < missing.len() {
            let ItemRef {
                topic: t,
                partition: p,
                offset: lo,
            } = missing[i].clone();
            let mut j = i;
            while j + 1 < missing.len()
                && missing[j + 1].topic == t
                && missing[j + 1].partition == p
            {
                j += 1;
            }
            let hi = missing[j].offset;
            let want = j - i + 1;
            if hi - lo < (want as u64) * 64 + 1024 {
                for (off, id) in
                    self.prov
                        .backend()
                        .find_items(&t, p, lo, hi, (hi - lo + 1) as usize)?
                {
                    self.cache.insert(ItemRef::new(t.clone(), p, off), id);
                }
            } else {
                for k in &missing[i..=j] {
                    if let Some((off, id)) = self
                        .prov
                        .backend()
                        .find_items(&t, p, k.offset, k.offset, 1)?
                        .pop()
                    {
                        self.cache.insert(ItemRef::new(t.clone(), p, off), id);
                    }
                }
            }
            i = j + 1;
        }
        Ok(())
    }

    /// The record of an item location this recorder knows.
    fn known(&self, k: &LocKey) -> Option<RecordId> {
        if let Some(runs) = self.own.get(&*k.topic).and_then(|p| p.get(&k.partition)) {
            // Runs are in recording order; offsets rarely go back, so look
            // from the end.
            for &(first, count, id) in runs.iter().rev().take(64) {
                if k.offset >= first && k.offset < first + count {
                    return Some(id + (k.offset - first) as i64);
                }
            }
        }
        self.cache.get(k).copied()
    }

    /// Remembers an item this recorder wrote, extending the partition's last
    /// run when offsets and ids both continue it.
    fn remember(&mut self, topic: &Arc<str>, partition: u32, offset: u64, id: RecordId) {
        if self.own_runs > self.config.cache_max {
            self.own.clear();
            self.own_runs = 0;
        }
        let runs = self
            .own
            .entry(topic.clone())
            .or_default()
            .entry(partition)
            .or_default();
        if let Some(last) = runs.last_mut() {
            if last.0 + last.1 == offset && last.2 + last.1 as i64 == id {
                last.1 += 1;
                return;
            }
        }
        runs.push((offset, 1, id));
        self.own_runs += 1;
    }

    fn write(&mut self, batch: &[AckedItem]) -> Result<()> {
        if self.cache.len() > self.config.cache_max {
            self.cache.clear();
        }
        // Sources not yet known.
        let mut missing: Vec<LocKey> = Vec::new();
        for a in batch {
            if let Some(l) = &a.lineage {
                for s in &l.sources {
                    let k: LocKey = ItemRef::new(s.topic.as_str(), s.partition, s.offset);
                    if self.known(&k).is_none() {
                        missing.push(k);
                    }
                }
            }
        }
        // Items of this batch may be sources of later ones (only looked up
        // when some item names sources).
        let sourced = batch
            .iter()
            .any(|a| a.lineage.as_ref().is_some_and(|l| !l.sources.is_empty()));
        let mut in_batch: HashMap<LocKey, usize> = HashMap::new();
        if !missing.is_empty() {
            self.resolve(&mut missing)?;
        }
        let mut recs: Vec<Record> = Vec::with_capacity(batch.len());
        let mut placeholders: HashMap<LocKey, usize> = HashMap::new();
        let mut positions: Vec<usize> = Vec::with_capacity(batch.len());
        let mut unrecorded = 0u64;
        for a in batch {
            let mut rec = Record::item(a.item.clone());
            rec.time_us = a.timestamp_us;
            for (k, v) in &a.tags {
                rec.tags.insert(k.clone(), TagValue::infer(v));
            }
            if let Some(q) = &a.quality {
                if q.kind != 0 {
                    let kind = if q.kind == 1 {
                        "reduced"
                    } else {
                        "reconstructed"
                    };
                    rec.tags.insert(
                        "quality".into(),
                        TagValue::Str(format!("{kind}({})", q.method)),
                    );
                }
            }
            if let Some(l) = &a.lineage {
                for s in &l.sources {
                    let k: LocKey = ItemRef::new(s.topic.as_str(), s.partition, s.offset);
                    let parent = if let Some(id) = self.known(&k) {
                        id
                    } else if let Some(&i) = in_batch.get(&k).or_else(|| placeholders.get(&k)) {
                        -(i as i64 + 1)
                    } else {
                        // Never recorded: keep the derivation with a placeholder.
                        let mut ph = Record::item(k.clone());
                        ph.tags
                            .insert("unrecorded_source".into(), TagValue::Bool(true));
                        recs.push(ph);
                        unrecorded += 1;
                        placeholders.insert(k, recs.len() - 1);
                        -(recs.len() as i64)
                    };
                    rec.parents.push((parent, EdgeKind::Derived));
                }
                for m in &l.model_versions {
                    match self.model(m)? {
                        Some(id) => rec.parents.push((id, EdgeKind::Inferred)),
                        None => {
                            self.counters.unknown_models.fetch_add(1, Ordering::Relaxed);
                            rec.tags
                                .insert("unknown_model".into(), TagValue::Str(m.clone()));
                        }
                    }
                }
                if !l.activity.is_empty() {
                    let act = self.activity(&l.activity)?;
                    rec.parents.push((act, EdgeKind::Generated));
                }
            }
            recs.push(rec);
            if sourced {
                in_batch.insert(a.item.clone(), recs.len() - 1);
            }
            positions.push(recs.len() - 1);
        }
        let ids = self.prov.add_batch(recs)?;
        for (a, i) in batch.iter().zip(positions) {
            self.remember(&a.item.topic, a.item.partition, a.item.offset, ids[i]);
        }
        for (k, i) in placeholders {
            self.cache.insert(k, ids[i]);
        }
        let c = &self.counters;
        c.recorded.fetch_add(batch.len() as u64, Ordering::Relaxed);
        c.unrecorded.fetch_add(unrecorded, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diaspora_proto::v1;

    fn acked(topic: &str, offset: u64, sources: &[(&str, u64)]) -> AckedItem {
        AckedItem {
            item: ItemRef::new(topic, 0, offset),
            timestamp_us: 1,
            lineage: (!sources.is_empty()).then(|| v1::Lineage {
                sources: sources
                    .iter()
                    .map(|(t, o)| v1::ItemRef {
                        topic: t.to_string(),
                        partition: 0,
                        offset: *o,
                    })
                    .collect(),
                ..Default::default()
            }),
            quality: None,
            tags: Vec::new(),
        }
    }

    /// A derived item recorded before its source (the consumer was faster
    /// than the producer's acknowledgement) waits for it instead of making
    /// a placeholder; a source that never comes gets one once the wait is
    /// over.
    #[test]
    fn items_wait_for_sources_acknowledged_later() {
        let dir = tempfile::tempdir().unwrap();
        let prov = Provenance::open(&dir.path().join("p.sqlite").display().to_string()).unwrap();
        let rec = LineageRecorder::start(
            prov,
            RecorderConfig {
                linger: Duration::from_millis(5),
                source_wait: Duration::from_millis(400),
                ..Default::default()
            },
        );
        rec.record(acked("view", 0, &[("patterns", 7)]));
        std::thread::sleep(Duration::from_millis(100));
        rec.record(acked("patterns", 7, &[]));
        rec.record(acked("view", 1, &[("patterns", 99)]));
        std::thread::sleep(Duration::from_millis(700));
        let stats = rec.stats();
        assert_eq!(
            (stats.recorded, stats.unrecorded_sources),
            (3, 1),
            "{stats:?}"
        );
        assert_eq!(stats.held_back, 2);
        let (_, mut prov) = rec.close().unwrap();
        let pattern = prov.backend().find_items("patterns", 0, 7, 7, 10).unwrap();
        assert_eq!(
            pattern.len(),
            1,
            "one record for patterns/0/7, no placeholder"
        );
        let view = prov.backend().find_items("view", 0, 0, 0, 1).unwrap()[0].1;
        assert_eq!(prov.get(view).unwrap().parents[0].0, pattern[0].1);
        let ph = prov
            .backend()
            .find_items("patterns", 0, 99, 99, 10)
            .unwrap();
        assert_eq!(ph.len(), 1);
    }

    /// Closing writes held-back items at once, each after its sources even
    /// when they were recorded later.
    #[test]
    fn a_close_writes_sources_before_what_derives_from_them() {
        let dir = tempfile::tempdir().unwrap();
        let prov = Provenance::open(&dir.path().join("p.sqlite").display().to_string()).unwrap();
        let rec = LineageRecorder::start(
            prov,
            RecorderConfig {
                linger: Duration::from_millis(1),
                source_wait: Duration::from_secs(30),
                ..Default::default()
            },
        );
        rec.record(acked("view", 0, &[("recons", 3)]));
        std::thread::sleep(Duration::from_millis(50));
        rec.record(acked("recons", 3, &[("patterns", 3)]));
        std::thread::sleep(Duration::from_millis(50));
        rec.record(acked("patterns", 3, &[]));
        let (stats, mut prov) = rec.close().unwrap();
        assert_eq!(
            (stats.recorded, stats.unrecorded_sources),
            (3, 0),
            "{stats:?}"
        );
        let view = prov.backend().find_items("view", 0, 0, 0, 1).unwrap()[0].1;
        let recon = prov.backend().find_items("recons", 0, 3, 3, 9).unwrap();
        assert_eq!(recon.len(), 1);
        assert_eq!(prov.get(view).unwrap().parents[0].0, recon[0].1);
    }
}
