//! A view on the fabric: reads its sources, joins them with the
//! [`JoinEngine`], and hands view items to an in-process consumer
//! ([`View::next`]) and, when the spec names an output topic, publishes
//! them there as references ([`crate::wire`]).
//!
//! - **No payload copies.** A source item is held once, behind an `Arc`,
//!   from the fetch that brought it (its payload is a slice of the fetched
//!   batch); a [`Delivery`] shares it. A member restored from a snapshot is
//!   read back from the fabric by reference, checked against the
//!   reference's time and key.
//! - **Liveness.** Invalidation notices (provenance, `prov.invalidations`)
//!   and source retention reach members: a pending member is dropped; a
//!   view item not yet consumed is discarded (policy `discard`: dropped and
//!   retracted, its members released) or flagged invalid with its members
//!   held until it is acknowledged (policy `pin`). A consumed item is
//!   retracted.
//! - **Healing.** A source that restarts and replays (re-read offsets, or
//!   re-published items with the same `id` key) adds nothing: the engine
//!   knows its members. Every view over that source heals the same way.
//! - **Snapshots.** [`View::snapshot`] saves the engine (pending members,
//!   used-member frontier), source positions and the items not yet
//!   acknowledged; [`ViewOptions::restore`] starts from one, without the
//!   original sources if they are gone. Delivery is at-least-once across a
//!   restore: unacknowledged items come again, with the same ids.
//! - **Lineage.** With a [`LineageRecorder`], each view item is recorded
//!   with its members as sources, so invalidating a member reaches the view
//!   item and whatever was derived from it.

use crate::engine::{JoinEngine, MemberId, Snapshot, ViewItem};
use crate::snapshot::{SnapshotInfo, SnapshotStore};
use crate::spec::{Policy, ViewSpec};
use crate::wire::{self, RefMember, ViewMessage};
use crate::ViewError;
use bytes::Bytes;
use diaspora_fabric::client::Client;
use diaspora_fabric::consumer::{Consumer, ConsumerConfig, StartFrom};
use diaspora_fabric::item::meta::meta_text;
use diaspora_fabric::item::{now_us, AckedItem, ConsumedItem, ItemRef};
use diaspora_fabric::producer::{Producer, ProducerConfig};
use diaspora_proto::v1;
use diaspora_provenance::fabric::InvalidationFeed;
use diaspora_provenance::lineage::LineageRecorder;
use diaspora_provenance::Notice;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Which snapshot a view starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restore {
    /// None: a fresh view.
    #[default]
    Fresh,
    /// The latest snapshot that loads (damaged newer ones are skipped).
    Latest,
    /// A given version.
    Version(u64),
}

/// How a view runs.
pub struct ViewOptions {
    /// Where sources start without a snapshot.
    pub start: StartFrom,
    /// Where snapshots go (and come from).
    pub snapshots: Option<SnapshotStore>,
    /// Save a snapshot this often (checked in [`View::next`]/[`View::pump`]).
    pub snapshot_every: Option<Duration>,
    /// Start from a snapshot.
    pub restore: Restore,
    /// Records each view item's lineage.
    pub lineage: Option<Arc<LineageRecorder>>,
    /// Topic of invalidation notices to follow (usually
    /// `diaspora_provenance::NOTICE_TOPIC`), read from its start.
    pub invalidations: Option<String>,
    /// How often sources' retention is checked.
    pub retention_check: Duration,
    /// Source items queued between the readers and the view.
    pub channel: usize,
    /// How long reading one member back from the fabric may take.
    pub fetch_timeout: Duration,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions {
            start: StartFrom::Earliest,
            snapshots: None,
            snapshot_every: None,
            restore: Restore::Fresh,
            lineage: None,
            invalidations: None,
            retention_check: Duration::from_secs(5),
            channel: 4096,
            fetch_timeout: Duration::from_secs(2),
        }
    }
}

/// Counters of a view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewStats {
    /// Source items read.
    pub items_read: u64,
    /// Source items without the key (or id) field: skipped.
    pub unkeyed: u64,
    /// View items emitted.
    pub emitted: u64,
    /// Handed to the in-process consumer (again after a restore).
    pub delivered: u64,
    /// Acknowledged by it.
    pub acked: u64,
    /// Published on the output topic (items and retractions).
    pub published: u64,
    /// View items dropped before delivery (policy discard).
    pub discarded: u64,
    /// View items flagged invalid (policy pin).
    pub flagged_invalid: u64,
    /// Retractions of delivered or consumed items.
    pub retracted: u64,
    /// Members named by invalidation notices that the view held or used.
    pub members_invalidated: u64,
    /// Members that expired (time window, or source retention).
    pub members_expired: u64,
    /// Member payloads read back from the fabric by reference.
    pub payload_fetches: u64,
    /// Member payloads that could not be read back (source gone/changed).
    pub payload_missing: u64,
    /// Payload bytes the view copied (it shares the fetched bytes: must be 0).
    pub payload_bytes_copied: u64,
    /// Snapshots saved.
    pub snapshots: u64,
    /// Source errors (reattached).
    pub source_errors: u64,
}

/// A view item handed to an in-process consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Position in the view's metastream.
    pub seq: u64,
    /// The view item (references).
    pub item: ViewItem,
    /// Per member (same order): the source item, sharing its payload with
    /// the fetch that brought it; `None` if it could not be read back
    /// (restored from a snapshot while the source is gone).
    pub members: Vec<Option<Arc<ConsumedItem>>>,
    /// A member was invalidated or expired (policy pin).
    pub invalid: bool,
}

impl Delivery {
    /// The view item's id.
    pub fn id(&self) -> u64 {
        self.item.id
    }
    /// Member `i`'s payload, if it came with the member (`None` for a
    /// member read back unsuccessfully, or of a source whose payloads stay
    /// on the node: read those with [`View::read_payload`]).
    pub fn payload(&self, i: usize) -> Option<&Bytes> {
        self.members
            .get(i)?
            .as_ref()
            .filter(|c| !c.payload_left_out())
            .map(|c| &c.item.payload)
    }
    /// Members whose payload is not available.
    pub fn missing(&self) -> usize {
        self.members.iter().filter(|m| m.is_none()).count()
    }
}

/// A delivered or consumed view item that is no longer valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retraction {
    /// View item id.
    pub id: u64,
    /// Why.
    pub cause: String,
}

/// An emitted view item not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Emitted {
    /// Position in the metastream.
    pub seq: u64,
    /// The item.
    pub item: ViewItem,
    /// Flagged invalid (pin).
    #[serde(default)]
    pub invalid: bool,
}

/// What a view snapshot holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewState {
    /// The spec it ran with.
    pub spec: ViewSpec,
    /// The join engine.
    pub engine: Snapshot,
    /// Per source: next offset per partition.
    pub positions: Vec<BTreeMap<u32, u64>>,
    /// Emitted, not acknowledged (delivered again after a restore).
    pub unacked: Vec<Emitted>,
    /// Next metastream position.
    pub next_seq: u64,
    /// Counters.
    pub stats: ViewStats,
}

// Items are nearly all of the traffic: boxing them would allocate per item
// to shrink the rare variants.
#[allow(clippy::large_enum_variant)]
enum Input {
    Item(usize, ConsumedItem),
    Notice(Notice),
    Retention(usize, u32, u64),
    SourceDown(usize, String),
}

struct Held {
    item: Arc<ConsumedItem>,
    /// Where its payload lay when it arrived (checked at delivery).
    payload_at: usize,
}

/// A running view.
pub struct View {
    spec: ViewSpec,
    engine: JoinEngine,
    client: Client,
    rx: mpsc::Receiver<Input>,
    tasks: Vec<JoinHandle<()>>,
    held: HashMap<MemberId, Held>,
    outbox: VecDeque<Emitted>,
    delivered: HashMap<u64, Emitted>,
    retracted: HashSet<u64>,
    retractions: Vec<Retraction>,
    positions: Vec<BTreeMap<u32, u64>>,
    next_seq: u64,
    stats: ViewStats,
    output: Option<Producer>,
    lineage: Option<Arc<LineageRecorder>>,
    lineage_topic: Arc<str>,
    snapshots: Option<SnapshotStore>,
    snapshot_every: Option<Duration>,
    fetch_timeout: Duration,
    last_expire: Instant,
    last_snapshot: Instant,
    scratch: Vec<ViewItem>,
}

fn fnv(bytes: &[u8]) -> u64 {
    diaspora_fabric::item::key_hash(bytes)
}

/// A metadata value as a member identity: integers as they are, decimal
/// strings parsed, anything else hashed (FNV-1a, stable).
pub fn meta_ident(item: &v1::Item, key: &str) -> Option<u64> {
    use v1::value::Kind;
    Some(match item.metadata.get(key)?.kind.as_ref()? {
        Kind::I(i) => *i as u64,
        Kind::S(s) => s.parse().unwrap_or_else(|_| fnv(s.as_bytes())),
        Kind::F(f) => f.to_bits(),
        Kind::B(b) => u64::from(*b),
        Kind::Raw(r) => fnv(r),
    })
}

fn same_sources(a: &ViewSpec, b: &ViewSpec) -> bool {
    a.name == b.name
        && a.join.mode == b.join.mode
        && a.sources.len() == b.sources.len()
        && a.sources.iter().zip(&b.sources).all(|(x, y)| {
            x.name == y.name
                && x.topic == y.topic
                && x.key == y.key
                && x.count == y.count
                && x.id == y.id
        })
}

impl View {
    /// Starts a view over `spec`'s sources (which must exist unless the
    /// view restores from a snapshot: then they are attached when they
    /// appear).
    pub async fn start(
        client: &Client,
        spec: ViewSpec,
        opts: ViewOptions,
    ) -> Result<View, ViewError> {
        spec.validate()?;
        let n = spec.sources.len();
        let mut restored: Option<ViewState> = None;
        if opts.restore != Restore::Fresh {
            let store = opts.snapshots.as_ref().ok_or_else(|| {
                ViewError::Snapshot("restoring needs a snapshot directory".into())
            })?;
            let state: ViewState = match opts.restore {
                Restore::Version(v) => store.load(&spec.name, Some(v))?.1,
                _ => {
                    let (info, state, skipped) = store.load_latest_valid(&spec.name)?;
                    for (v, e) in skipped {
                        tracing::warn!(view = %spec.name, version = v, error = %e, "damaged snapshot skipped");
                    }
                    tracing::info!(view = %spec.name, version = info.version, "view restored");
                    state
                }
            };
            if !same_sources(&state.spec, &spec) {
                return Err(ViewError::Snapshot(format!(
                    "the snapshot of view {:?} was taken with other sources or join; a changed view starts fresh",
                    spec.name
                )));
            }
            if state.positions.len() != n {
                return Err(ViewError::Snapshot(
                    "positions for another number of sources".into(),
                ));
            }
            restored = Some(state);
        }
        let (engine, positions, outbox, next_seq, stats) = match restored {
            Some(s) => (
                JoinEngine::restore(spec.clone(), s.engine)?,
                s.positions,
                s.unacked.into_iter().collect(),
                s.next_seq,
                s.stats,
            ),
            None => (
                JoinEngine::new(spec.clone())?,
                vec![BTreeMap::new(); n],
                VecDeque::new(),
                0,
                ViewStats::default(),
            ),
        };
        let output = match &spec.output.topic {
            Some(t) => Some(
                Producer::new(client, ProducerConfig::new(t.clone()))
                    .await
                    .map_err(ViewError::fabric(format!("output topic {t:?}")))?,
            ),
            None => None,
        };
        let (tx, rx) = mpsc::channel(opts.channel.max(1));
        let mut tasks = Vec::new();
        for (i, s) in spec.sources.iter().enumerate() {
            if opts.restore == Restore::Fresh {
                // A fresh view needs its sources now: say so at once.
                client
                    .metadata(&s.topic)
                    .await
                    .map_err(ViewError::fabric(format!(
                        "source {:?} (topic {:?})",
                        s.name, s.topic
                    )))?;
            }
            tasks.push(tokio::spawn(read_source(
                client.clone(),
                i,
                s.topic.clone(),
                s.payloads == crate::spec::Payloads::Reference,
                positions[i].clone(),
                opts.start,
                tx.clone(),
                opts.retention_check,
            )));
        }
        if let Some(topic) = &opts.invalidations {
            tasks.push(tokio::spawn(read_notices(
                client.clone(),
                topic.clone(),
                tx.clone(),
            )));
        }
        drop(tx);
        let lineage_topic: Arc<str> = Arc::from(
            spec.output
                .topic
                .clone()
                .unwrap_or_else(|| format!("view:{}", spec.name)),
        );
        Ok(View {
            engine,
            client: client.clone(),
            rx,
            tasks,
            held: HashMap::new(),
            outbox,
            delivered: HashMap::new(),
            retracted: HashSet::new(),
            retractions: Vec::new(),
            positions,
            next_seq,
            stats,
            output,
            lineage: opts.lineage,
            lineage_topic,
            snapshots: opts.snapshots,
            snapshot_every: opts.snapshot_every,
            fetch_timeout: opts.fetch_timeout,
            last_expire: Instant::now(),
            last_snapshot: Instant::now(),
            scratch: Vec::new(),
            spec,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &ViewSpec {
        &self.spec
    }

    /// Member `i`'s payload: the one it came with, or — for a source whose
    /// payloads stay on the node (`payloads = "reference"`) — read by
    /// reference now. `None` if the member is missing.
    pub async fn read_payload(&self, d: &Delivery, i: usize) -> Result<Option<Bytes>, ViewError> {
        let Some(Some(m)) = d.members.get(i) else {
            return Ok(None);
        };
        if !m.payload_left_out() {
            return Ok(Some(m.item.payload.clone()));
        }
        let p = self
            .client
            .read_payload(&m.topic, m.partition, m.offset)
            .await
            .map_err(ViewError::fabric(format!(
                "{}/{}/{}",
                m.topic, m.partition, m.offset
            )))?;
        Ok(Some(p))
    }

    /// Counters.
    pub fn stats(&self) -> &ViewStats {
        &self.stats
    }

    /// The join engine (its counters: duplicates, pending, …).
    pub fn engine(&self) -> &JoinEngine {
        &self.engine
    }

    /// Emitted view items waiting for delivery.
    pub fn outbox(&self) -> usize {
        self.outbox.len()
    }

    /// Whether the view still holds (pins) a member's source item.
    pub fn is_held(&self, id: MemberId) -> bool {
        self.held.contains_key(&id)
    }

    /// Source items held (pending members, members of unacknowledged items).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Retractions since the last call.
    pub fn take_retractions(&mut self) -> Vec<Retraction> {
        std::mem::take(&mut self.retractions)
    }

    /// The next view item, waiting up to `timeout`. Acknowledge it with
    /// [`View::ack`] once consumed: until then its members are held.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>, ViewError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.housekeeping()?;
            if let Some(d) = self.deliver_one().await {
                return Ok(Some(d));
            }
            if self.delivered.len() >= self.spec.limits.outbox_max {
                return Err(ViewError::Limit(format!(
                    "{} view items delivered and not acknowledged (limits.outbox_max): ack what you consume",
                    self.delivered.len()
                )));
            }
            if !self.receive(deadline).await? {
                return Ok(None);
            }
        }
    }

    /// Reads sources and notices for up to `timeout` without delivering
    /// (view items collect in the outbox, and are published if the spec
    /// has an output topic). Returns inputs handled.
    pub async fn pump(&mut self, timeout: Duration) -> Result<u64, ViewError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut n = 0;
        loop {
            self.housekeeping()?;
            if self.outbox.len() + self.delivered.len() >= self.spec.limits.outbox_max {
                return Ok(n);
            }
            let before = self.stats.items_read + self.stats.members_invalidated;
            if !self.receive(deadline).await? {
                return Ok(n);
            }
            n += (self.stats.items_read + self.stats.members_invalidated - before).max(1);
        }
    }

    /// Waits for input until `deadline` and handles what is queued; false
    /// on timeout.
    async fn receive(&mut self, deadline: tokio::time::Instant) -> Result<bool, ViewError> {
        let first = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Err(_) => return Ok(false),
            Ok(None) => return Err(ViewError::Closed("every reader stopped".into())),
            Ok(Some(i)) => i,
        };
        self.handle(first).await?;
        for _ in 0..1024 {
            match self.rx.try_recv() {
                Ok(i) => self.handle(i).await?,
                Err(_) => break,
            }
        }
        Ok(true)
    }

    fn housekeeping(&mut self) -> Result<(), ViewError> {
        if self.spec.join.window_ms.is_some()
            && self.last_expire.elapsed() >= Duration::from_secs(1)
        {
            self.last_expire = Instant::now();
            for p in self.engine.expire(now_us()) {
                self.held.remove(&p.member.id());
                self.stats.members_expired += 1;
            }
        }
        if let Some(every) = self.snapshot_every {
            if self.last_snapshot.elapsed() >= every && self.snapshots.is_some() {
                self.snapshot()?;
            }
        }
        Ok(())
    }

    async fn handle(&mut self, input: Input) -> Result<(), ViewError> {
        match input {
            Input::Item(src, ci) => self.ingest(src, ci).await,
            Input::Notice(n) => {
                for loc in &n.items {
                    self.on_location_invalid(
                        &loc.topic,
                        loc.partition,
                        loc.offset,
                        &n.cause,
                        false,
                    )
                    .await?;
                }
                Ok(())
            }
            Input::Retention(src, partition, start) => {
                self.on_retention(src, partition, start).await
            }
            Input::SourceDown(src, e) => {
                self.stats.source_errors += 1;
                tracing::warn!(view = %self.spec.name, source = %self.spec.sources[src].name, error = %e, "source unavailable; retrying");
                Ok(())
            }
        }
    }

    async fn ingest(&mut self, src: usize, ci: ConsumedItem) -> Result<(), ViewError> {
        self.stats.items_read += 1;
        let (partition, offset) = (ci.partition, ci.offset);
        let s = &self.spec.sources[src];
        let key = meta_text(&ci.item, &s.key);
        let ident = s.id.as_deref().map(|k| meta_ident(&ci.item, k));
        let (Some(key), None | Some(Some(_))) = (key, ident) else {
            if self.stats.unkeyed == 0 {
                tracing::warn!(view = %self.spec.name, source = %s.name, partition, offset, "item without the view's key or id metadata skipped");
            }
            self.stats.unkeyed += 1;
            self.positions[src].insert(partition, offset + 1);
            return Ok(());
        };
        let key = key.into_owned();
        let m = crate::engine::Member {
            source: src as u32,
            partition,
            offset,
            ident: ident.flatten(),
            time_us: ci.item.timestamp_us,
        };
        let before = self.engine.stats().accepted;
        let mut out = std::mem::take(&mut self.scratch);
        self.engine.offer(&key, m, now_us(), &mut out)?;
        if self.engine.stats().accepted > before {
            let payload_at = ci.item.payload.as_ptr() as usize;
            self.held.insert(
                m.id(),
                Held {
                    item: Arc::new(ci),
                    payload_at,
                },
            );
        }
        self.positions[src].insert(partition, offset + 1);
        for item in out.drain(..) {
            self.emit(item).await?;
        }
        self.scratch = out;
        Ok(())
    }

    fn refs(&self, item: &ViewItem) -> Vec<RefMember> {
        item.members
            .iter()
            .map(|m| {
                let s = &self.spec.sources[m.source as usize];
                RefMember {
                    source: s.name.clone(),
                    item: ItemRef::new(s.topic.as_str(), m.partition, m.offset),
                    ident: m.ident,
                    time_us: m.time_us,
                }
            })
            .collect()
    }

    async fn publish(
        &mut self,
        msg: &ViewMessage,
        id: u64,
        seq: Option<u64>,
    ) -> Result<(), ViewError> {
        let Some(p) = &self.output else {
            return Ok(());
        };
        let mut item = diaspora_fabric::item::payload_item(Bytes::from(wire::encode(msg)));
        let mut put = |k: &str, v: v1::value::Kind| {
            item.metadata.insert(k.into(), v1::Value { kind: Some(v) });
        };
        put("view.id", v1::value::Kind::S(format!("{id:016x}")));
        if let Some(seq) = seq {
            put("view.seq", v1::value::Kind::I(seq as i64));
        }
        p.send(item)
            .await
            .map_err(ViewError::fabric(format!("publishing on {:?}", p.topic())))?;
        self.stats.published += 1;
        Ok(())
    }

    async fn emit(&mut self, item: ViewItem) -> Result<(), ViewError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.emitted += 1;
        let refs = self.refs(&item);
        if let Some(rec) = &self.lineage {
            rec.record(AckedItem {
                item: ItemRef::new(self.lineage_topic.clone(), 0, seq),
                timestamp_us: now_us(),
                lineage: Some(v1::Lineage {
                    sources: refs
                        .iter()
                        .map(|r| v1::ItemRef {
                            topic: r.item.topic.to_string(),
                            partition: r.item.partition,
                            offset: r.item.offset,
                        })
                        .collect(),
                    model_versions: Vec::new(),
                    activity: format!("view:{}", self.spec.name),
                }),
                quality: None,
                tags: vec![
                    ("view".into(), self.spec.name.clone()),
                    ("view_id".into(), format!("{:016x}", item.id)),
                    ("view_key".into(), item.key.clone()),
                ],
            });
        }
        if self.output.is_some() {
            let msg = ViewMessage::Item {
                view: self.spec.name.clone(),
                seq,
                id: item.id,
                key: item.key.clone(),
                members: refs,
                invalid: false,
            };
            self.publish(&msg, item.id, Some(seq)).await?;
        }
        self.outbox.push_back(Emitted {
            seq,
            item,
            invalid: false,
        });
        Ok(())
    }

    async fn deliver_one(&mut self) -> Option<Delivery> {
        let e = self.outbox.pop_front()?;
        let mut members = Vec::with_capacity(e.item.members.len());
        for m in &e.item.members {
            let got = match self.held.get(&m.id()) {
                Some(h) => {
                    if h.item.item.payload.as_ptr() as usize != h.payload_at {
                        self.stats.payload_bytes_copied += h.item.item.payload.len() as u64;
                    }
                    Some(h.item.clone())
                }
                None => {
                    let fetched = self.fetch(m, &e.item.key).await;
                    if let Some(f) = &fetched {
                        // Held from now on, like any member.
                        self.held.insert(
                            m.id(),
                            Held {
                                payload_at: f.item.payload.as_ptr() as usize,
                                item: f.clone(),
                            },
                        );
                    }
                    fetched
                }
            };
            members.push(got);
        }
        self.stats.delivered += 1;
        let d = Delivery {
            seq: e.seq,
            item: e.item.clone(),
            members,
            invalid: e.invalid,
        };
        self.delivered.insert(e.item.id, e);
        Some(d)
    }

    /// Reads a member back from the fabric by reference; checks that it is
    /// the same item (time and key), since a source may have been reset.
    async fn fetch(&mut self, m: &crate::engine::Member, key: &str) -> Option<Arc<ConsumedItem>> {
        self.stats.payload_fetches += 1;
        let s = &self.spec.sources[m.source as usize];
        let got = read_ref(
            &self.client,
            &s.topic,
            m.partition,
            m.offset,
            self.fetch_timeout,
        )
        .await
        .ok()
        .flatten();
        match got {
            Some(ci)
                if ci.item.timestamp_us == m.time_us
                    && meta_text(&ci.item, &s.key).as_deref() == Some(key) =>
            {
                Some(Arc::new(ci))
            }
            _ => {
                self.stats.payload_missing += 1;
                None
            }
        }
    }

    /// The consumer is done with view item `id`: its members are released.
    /// False if it was not delivered (or already acknowledged).
    pub fn ack(&mut self, id: u64) -> bool {
        let Some(e) = self.delivered.remove(&id) else {
            return false;
        };
        for m in &e.item.members {
            self.held.remove(&m.id());
        }
        self.stats.acked += 1;
        true
    }

    async fn on_location_invalid(
        &mut self,
        topic: &str,
        partition: u32,
        offset: u64,
        cause: &str,
        expired: bool,
    ) -> Result<(), ViewError> {
        for src in 0..self.spec.sources.len() {
            if self.spec.sources[src].topic != topic {
                continue;
            }
            let id = if self.spec.sources[src].id.is_none() {
                Some(MemberId {
                    source: src as u32,
                    lane: partition,
                    seq: offset,
                })
            } else {
                // Identified by metadata: find it among the held members or
                // the unacknowledged items.
                self.held
                    .iter()
                    .find(|(k, h)| {
                        k.source == src as u32
                            && h.item.partition == partition
                            && h.item.offset == offset
                    })
                    .map(|(k, _)| *k)
                    .or_else(|| {
                        self.outbox
                            .iter()
                            .chain(self.delivered.values())
                            .flat_map(|e| &e.item.members)
                            .find(|m| {
                                m.source == src as u32
                                    && m.partition == partition
                                    && m.offset == offset
                            })
                            .map(|m| m.id())
                    })
            };
            if let Some(id) = id {
                self.on_member_invalid(id, cause, expired).await?;
            }
        }
        Ok(())
    }

    async fn on_member_invalid(
        &mut self,
        id: MemberId,
        cause: &str,
        expired: bool,
    ) -> Result<(), ViewError> {
        let key = self.held.get(&id).and_then(|h| {
            meta_text(&h.item.item, &self.spec.sources[id.source as usize].key)
                .map(|k| k.into_owned())
        });
        let r = self.engine.invalidate(id, key.as_deref());
        if r.pending_removed {
            self.held.remove(&id);
        }
        if r.pending_removed || r.view_item.is_some() {
            if expired {
                self.stats.members_expired += 1;
            } else {
                self.stats.members_invalidated += 1;
            }
        }
        if let Some(v) = r.view_item {
            self.item_invalid(v, cause).await?;
        }
        Ok(())
    }

    fn release(&mut self, item: &ViewItem) {
        for m in &item.members {
            self.held.remove(&m.id());
        }
    }

    async fn retract(&mut self, id: u64, cause: &str) -> Result<(), ViewError> {
        if !self.retracted.insert(id) {
            return Ok(());
        }
        self.stats.retracted += 1;
        self.retractions.push(Retraction {
            id,
            cause: cause.to_string(),
        });
        let msg = ViewMessage::Retract {
            view: self.spec.name.clone(),
            id,
            cause: cause.to_string(),
        };
        self.publish(&msg, id, None).await
    }

    async fn item_invalid(&mut self, v: u64, cause: &str) -> Result<(), ViewError> {
        let policy = self.spec.liveness.policy;
        if let Some(pos) = self.outbox.iter().position(|e| e.item.id == v) {
            match policy {
                Policy::Discard => {
                    let e = self.outbox.remove(pos).expect("present");
                    self.release(&e.item);
                    self.stats.discarded += 1;
                    // Published already (if the view publishes): retract.
                    if self.output.is_some() {
                        self.retract(v, cause).await?;
                    } else {
                        self.retracted.insert(v);
                    }
                }
                Policy::Pin => {
                    let e = &mut self.outbox[pos];
                    if !e.invalid {
                        e.invalid = true;
                        self.stats.flagged_invalid += 1;
                    }
                }
            }
            return Ok(());
        }
        if let Some(e) = self.delivered.get_mut(&v) {
            if !e.invalid {
                e.invalid = true;
                self.stats.flagged_invalid += u64::from(policy == Policy::Pin);
            }
            if policy == Policy::Discard {
                // The consumer holds its own references; the view lets go.
                let item = e.item.clone();
                self.release(&item);
            }
        }
        self.retract(v, cause).await
    }

    async fn on_retention(
        &mut self,
        src: usize,
        partition: u32,
        start: u64,
    ) -> Result<(), ViewError> {
        if self.spec.sources[src].id.is_none() {
            self.engine.forget_below(src as u32, partition, start);
        }
        let gone: Vec<MemberId> = self
            .held
            .iter()
            .filter(|(k, h)| {
                k.source == src as u32 && h.item.partition == partition && h.item.offset < start
            })
            .map(|(k, _)| *k)
            .collect();
        if self.spec.liveness.policy == Policy::Pin {
            // Held members outlive their source's retention until consumed.
            return Ok(());
        }
        let cause = format!(
            "expired: {}/{partition} retains offsets from {start}",
            self.spec.sources[src].topic
        );
        for id in gone {
            self.on_member_invalid(id, &cause, true).await?;
        }
        Ok(())
    }

    /// The view's state now.
    pub fn state(&self) -> ViewState {
        let mut unacked: Vec<Emitted> = self
            .delivered
            .values()
            .chain(&self.outbox)
            .cloned()
            .collect();
        unacked.sort_by_key(|e| e.seq);
        ViewState {
            spec: self.spec.clone(),
            engine: self.engine.snapshot(),
            positions: self.positions.clone(),
            unacked,
            next_seq: self.next_seq,
            stats: self.stats.clone(),
        }
    }

    /// Saves a snapshot (consistent: the view is single-owner, so engine,
    /// positions and unacknowledged items are of the same moment).
    pub fn snapshot(&mut self) -> Result<SnapshotInfo, ViewError> {
        let store = self
            .snapshots
            .as_ref()
            .ok_or_else(|| ViewError::Snapshot("no snapshot directory configured".into()))?;
        self.stats.snapshots += 1;
        let state = self.state();
        let summary = serde_json::json!({
            "pending": self.engine.pending(),
            "used": self.engine.used(),
            "unacked": state.unacked.len(),
            "emitted": self.stats.emitted,
            "next_seq": self.next_seq,
        });
        let info = store.save(&self.spec.name, &state, summary)?;
        self.last_snapshot = Instant::now();
        Ok(info)
    }

    /// Stops the readers, flushes the output topic; returns the counters.
    pub async fn close(mut self) -> Result<ViewStats, ViewError> {
        for t in &self.tasks {
            t.abort();
        }
        self.rx.close();
        if let Some(p) = self.output.take() {
            p.close()
                .await
                .map_err(ViewError::fabric("closing the output topic"))?;
        }
        Ok(self.stats)
    }
}

/// Reads the item a reference names (`topic/partition/offset`, e.g. a
/// member of a view item read from a view's output topic): `None` if it is
/// not there within `timeout` (retention passed it, or the source is gone).
/// The payload is the fetched bytes, not a copy.
pub async fn read_ref(
    client: &Client,
    topic: &str,
    partition: u32,
    offset: u64,
    timeout: Duration,
) -> Result<Option<ConsumedItem>, ViewError> {
    let cfg = ConsumerConfig::new(topic).start(StartFrom::Offset(offset));
    let read = async {
        let mut c = Consumer::assign(client, cfg, &[partition])
            .await
            .map_err(ViewError::fabric(format!("{topic}/{partition}")))?;
        let r = c
            .poll(timeout)
            .await
            .map_err(ViewError::fabric(format!("{topic}/{partition}/{offset}")));
        c.close().await;
        r
    };
    match tokio::time::timeout(timeout * 2, read).await {
        Ok(Ok(Some(ci))) if ci.offset == offset => Ok(Some(ci)),
        Ok(Ok(_)) | Err(_) => Ok(None),
        Ok(Err(e)) => Err(e),
    }
}

/// Attaches to a source topic at the saved positions. A saved position
/// beyond the partition's end means the source was reset (a new
/// incarnation): it is read from its start.
async fn attach(
    client: &Client,
    topic: &str,
    saved: &BTreeMap<u32, u64>,
    start: StartFrom,
    metadata_only: bool,
) -> diaspora_fabric::error::Result<Consumer> {
    let mut cfg = ConsumerConfig::new(topic).start(start);
    cfg.metadata_only = metadata_only;
    let mut c = Consumer::assign(client, cfg, &[]).await?;
    if !saved.is_empty() {
        let meta = client.metadata(topic).await?;
        for info in &meta.partitions {
            let p = info.partition;
            let Some(&o) = saved.get(&p) else {
                continue;
            };
            let at = if o > info.next_offset {
                tracing::warn!(
                    topic,
                    partition = p,
                    saved = o,
                    end = info.next_offset,
                    "source partition reset; reading it from its start"
                );
                info.start_offset
            } else {
                o.max(info.start_offset)
            };
            c.seek(p, at)?;
        }
    }
    Ok(c)
}

#[allow(clippy::too_many_arguments)]
async fn read_source(
    client: Client,
    src: usize,
    topic: String,
    metadata_only: bool,
    mut saved: BTreeMap<u32, u64>,
    start: StartFrom,
    tx: mpsc::Sender<Input>,
    retention_every: Duration,
) {
    let mut down = false;
    loop {
        if tx.is_closed() {
            return;
        }
        match attach(&client, &topic, &saved, start, metadata_only).await {
            Ok(mut c) => {
                down = false;
                let mut checked = Instant::now();
                loop {
                    match c.poll(Duration::from_millis(200)).await {
                        Ok(Some(ci)) => {
                            if tx.send(Input::Item(src, ci)).await.is_err() {
                                c.close().await;
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            let _ = tx.send(Input::SourceDown(src, e.to_string())).await;
                            break;
                        }
                    }
                    if checked.elapsed() >= retention_every {
                        checked = Instant::now();
                        if let Ok(m) = client.metadata(&topic).await {
                            for p in m.partitions {
                                if p.start_offset > 0
                                    && tx
                                        .send(Input::Retention(src, p.partition, p.start_offset))
                                        .await
                                        .is_err()
                                {
                                    return;
                                }
                            }
                        }
                    }
                }
                saved = c.positions().clone();
                c.close().await;
            }
            Err(e) => {
                if !down {
                    down = true;
                    if tx
                        .send(Input::SourceDown(src, e.to_string()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn read_notices(client: Client, topic: String, tx: mpsc::Sender<Input>) {
    loop {
        match InvalidationFeed::subscribe(&client, &topic, StartFrom::Earliest).await {
            Ok(mut feed) => loop {
                match feed.poll(Duration::from_millis(500)).await {
                    Ok(Some(n)) => {
                        if tx.send(Input::Notice(n)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        if tx.is_closed() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(topic, error = %e, "invalidation feed failed; resubscribing");
                        break;
                    }
                }
            },
            Err(e) => {
                tracing::debug!(topic, error = %e, "invalidation feed not available yet");
                if tx.is_closed() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
