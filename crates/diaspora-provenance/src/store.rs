//! The provenance semantics, written once over any [`Backend`]: adding
//! records and edges (cycles refused), model versions, cascading
//! invalidation with recorded parents and roots, registering actions and
//! publishing notices, and the queries. Running the actions an
//! invalidation triggers, and recording their outcomes, is
//! [`crate::actions`]'s ([`ActionContext`], [`Callback`] and [`fill`] are
//! re-exported here).

use crate::actions::{check_kind, ActionRunner};
pub use crate::actions::{fill, ActionContext, Callback};
use crate::backend::Backend;
use crate::model::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where invalidation notices and `publish` actions go (the fabric, in a
/// deployment: [`crate::fabric::FabricSink`]).
pub trait EventSink: Send + Sync {
    /// Publishes one message on `topic`; returns once it is acknowledged.
    fn publish(&self, topic: &str, payload: Vec<u8>) -> std::result::Result<(), String>;
}

/// Bounds on the work one call may do.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Records one cascade may visit.
    pub cascade_records_max: usize,
    /// Action runs per invalidation; further matches are recorded as skipped.
    pub actions_per_event_max: usize,
    /// Records a cycle check may visit.
    pub cycle_check_max: usize,
    /// Records a lineage query may return.
    pub lineage_records_max: usize,
    /// Time limit of a `command` action.
    pub command_timeout: Duration,
    /// Bytes of action output kept in its outcome.
    pub detail_bytes_max: usize,
    /// Item locations per published invalidation notice.
    pub notice_items_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cascade_records_max: 50_000_000,
            actions_per_event_max: 10_000,
            cycle_check_max: 10_000_000,
            lineage_records_max: 1_000_000,
            command_timeout: Duration::from_secs(30),
            detail_bytes_max: 2048,
            notice_items_max: 8192,
        }
    }
}

/// What to invalidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One record.
    Record(RecordId),
    /// Streamed items at `topic`/`partition` with offsets `from..=to`.
    Items {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// First offset.
        from: u64,
        /// Last offset (inclusive).
        to: u64,
    },
    /// Every record with tag `key` = `value`.
    Tag {
        /// Key.
        key: String,
        /// Canonical value text.
        value: String,
    },
    /// Every record with this name.
    Name(String),
    /// One model version, `name@version`.
    ModelVersion {
        /// Model name.
        name: String,
        /// Version.
        version: i64,
    },
}

impl Target {
    /// Parses `42`, `topic/partition/offset`, `topic/partition/a..b`
    /// (half-open) or `a..=b`, `key=value`, `name@version`, or `name:NAME`.
    pub fn parse(s: &str) -> Result<Target> {
        let s = s.trim();
        if let Ok(id) = s.trim_start_matches('#').parse::<i64>() {
            return Ok(Target::Record(id));
        }
        if let Some(n) = s.strip_prefix("name:") {
            return Ok(Target::Name(n.to_string()));
        }
        if let Some((k, v)) = s.split_once('=') {
            if !k.is_empty() && !k.contains('/') {
                return Ok(Target::Tag {
                    key: k.to_string(),
                    value: TagValue::infer(v).text(),
                });
            }
        }
        if let Some(loc) = parse_loc(s) {
            return Ok(Target::Items {
                topic: loc.topic.to_string(),
                partition: loc.partition,
                from: loc.offset,
                to: loc.offset,
            });
        }
        if let Some((head, range)) = s.rsplit_once('/') {
            if let Some((a, b)) = range.split_once("..") {
                let (b, inclusive) = match b.strip_prefix('=') {
                    Some(b) => (b, true),
                    None => (b, false),
                };
                let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) else {
                    return Err(ProvError::Invalid(format!("bad offset range in {s:?}")));
                };
                let to = if inclusive { Some(b) } else { b.checked_sub(1) };
                let Some(to) = to.filter(|t| *t >= a) else {
                    return Err(ProvError::Invalid(format!("empty offset range in {s:?}")));
                };
                if let Some((topic, part)) = head.rsplit_once('/') {
                    if let Ok(partition) = part.parse() {
                        return Ok(Target::Items {
                            topic: topic.to_string(),
                            partition,
                            from: a,
                            to,
                        });
                    }
                }
            }
        }
        if let Some((name, v)) = s.rsplit_once('@') {
            if let Ok(version) = v.parse() {
                return Ok(Target::ModelVersion {
                    name: name.to_string(),
                    version,
                });
            }
        }
        Err(ProvError::Invalid(format!(
            "cannot read target {s:?}: expected an id (42), an item (topic/0/17), an offset range (topic/0/10..20), a tag (scan=17), a model version (surrogate@3) or name:NAME"
        )))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Record(id) => write!(f, "{id}"),
            Target::Items {
                topic,
                partition,
                from,
                to,
            } if from == to => write!(f, "{topic}/{partition}/{from}"),
            Target::Items {
                topic,
                partition,
                from,
                to,
            } => write!(f, "{topic}/{partition}/{from}..={to}"),
            Target::Tag { key, value } => write!(f, "{key}={value}"),
            Target::Name(n) => write!(f, "name:{n}"),
            Target::ModelVersion { name, version } => write!(f, "{name}@{version}"),
        }
    }
}

/// What one invalidation did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InvalidationReport {
    /// Event id.
    pub event: i64,
    /// The records the target named.
    pub roots: Vec<RecordId>,
    /// Records newly invalid.
    pub invalidated: u64,
    /// Records visited that were invalid already.
    pub already_invalid: u64,
    /// Action runs, and how many failed.
    pub actions_run: u64,
    /// Failed action runs.
    pub actions_failed: u64,
    /// Invalidation notices published.
    pub notices_published: u64,
    /// Seconds the whole call took.
    pub elapsed_s: f64,
}

/// One step of a why-invalid chain.
#[derive(Debug, Clone, Serialize)]
pub struct WhyStep {
    /// Record.
    pub record: RecordId,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
}

/// Why a record is invalid: the chain from it back to the root, and the cause.
#[derive(Debug, Clone, Serialize)]
pub struct WhyChain {
    /// From the record asked about (first) to the root (last).
    pub chain: Vec<WhyStep>,
    /// The event.
    pub event: InvalidationEvent,
}

/// A record's validity at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Validity {
    /// It did not exist yet.
    NotYetRecorded,
    /// Valid.
    Valid,
    /// Invalid since the event.
    Invalid {
        /// Event id.
        event: i64,
        /// When.
        since_us: i64,
        /// Why.
        cause: String,
    },
}

/// Direction of a lineage walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Towards what a record was derived from.
    Up,
    /// Towards what was derived from it.
    Down,
}

/// The result of a lineage walk.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lineage {
    /// (record, depth) in breadth-first order; the start is at depth 0.
    pub nodes: Vec<(RecordId, usize)>,
    /// Edges walked.
    pub edges: Vec<Edge>,
    /// Whether the walk stopped at the record limit.
    pub truncated: bool,
}

/// What a model knew at a time.
#[derive(Debug, Clone, Serialize)]
pub struct ModelKnowledge {
    /// The version current at that time.
    pub version: i64,
    /// Its record.
    pub id: RecordId,
    /// When it was made.
    pub time_us: i64,
    /// Every record it or an earlier version was trained on, ascending.
    pub records: Vec<RecordId>,
}

/// A set of record ids.
pub(crate) type IdSet = HashSet<RecordId, diaspora_fabric::item::IdBuildHasher>;

/// A provenance store with its semantics. Blocking: call it from a plain
/// thread or `spawn_blocking`, not from an async task.
pub struct Provenance {
    backend: Box<dyn Backend>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    callbacks: HashMap<String, Callback>,
    sink: Option<Arc<dyn EventSink>>,
    notice_topic: Option<String>,
    /// Bounds on the work of one call.
    pub limits: Limits,
}

impl Provenance {
    /// Wraps a backend.
    pub fn new(backend: Box<dyn Backend>) -> Provenance {
        Provenance {
            backend,
            clock: Arc::new(diaspora_fabric::item::now_us),
            callbacks: HashMap::new(),
            sink: None,
            notice_topic: None,
            limits: Limits::default(),
        }
    }

    /// Opens a store by URL: `postgres://…` / `postgresql://…`, or a SQLite
    /// path (optionally `sqlite:PATH`).
    pub fn open(url: &str) -> Result<Provenance> {
        Ok(Provenance::new(crate::open_backend(url)?))
    }

    /// Replaces the clock (µs since the Unix epoch), for tests.
    pub fn set_clock(&mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) {
        self.clock = Arc::new(clock);
    }

    /// The current time by this store's clock.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// The backend, for interchange and maintenance.
    pub fn backend(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }

    /// Registers a Rust callback for `callback` actions named `name`.
    pub fn register_callback(
        &mut self,
        name: impl Into<String>,
        f: impl Fn(&ActionContext) -> std::result::Result<String, String> + Send + Sync + 'static,
    ) {
        self.callbacks.insert(name.into(), Arc::new(f));
    }

    /// Sets where `publish` actions and invalidation notices go; notices are
    /// published on `notice_topic` when given.
    pub fn set_event_sink(&mut self, sink: Arc<dyn EventSink>, notice_topic: Option<String>) {
        self.sink = Some(sink);
        self.notice_topic = notice_topic;
    }

    // ----- records and edges -----

    /// Adds one record; returns its id.
    pub fn add(&mut self, rec: Record) -> Result<RecordId> {
        Ok(self.add_batch(vec![rec])?[0])
    }

    /// Adds records in one durable transaction; returns their ids in order.
    /// A parent must exist already or be earlier in the batch, referred to
    /// by `-(index + 1)` (so a batch can carry its own derivations). New
    /// records cannot close a cycle, so no check is needed.
    pub fn add_batch(&mut self, mut recs: Vec<Record>) -> Result<Vec<RecordId>> {
        if recs.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.backend.allocate_ids(recs.len())?;
        let now = self.now();
        let mut external: Vec<RecordId> = Vec::new();
        let mut models: HashMap<String, i64> = HashMap::new();
        for (i, r) in recs.iter_mut().enumerate() {
            r.id = first + i as i64;
            if r.time_us == 0 {
                r.time_us = now;
            }
            if r.kind == Kind::Model && r.version.is_none() {
                let next = match models.get(&r.name) {
                    Some(v) => *v + 1,
                    None => self
                        .backend
                        .model_versions(&r.name)?
                        .last()
                        .map_or(1, |v| v.0 + 1),
                };
                if next != 1 {
                    return Err(ProvError::Invalid(format!(
                        "model {:?} exists (version {}): make new versions with update_model",
                        r.name,
                        next - 1
                    )));
                }
                r.version = Some(1);
                models.insert(r.name.clone(), 1);
            }
            for (p, _) in r.parents.iter_mut() {
                if *p < 0 {
                    let idx = (-*p - 1) as usize;
                    if idx >= i {
                        return Err(ProvError::Invalid(format!(
                            "record {i} of the batch names batch parent {idx}, which is not earlier"
                        )));
                    }
                    *p = first + idx as i64;
                } else {
                    external.push(*p);
                }
            }
        }
        external.sort_unstable();
        external.dedup();
        if !external.is_empty() {
            let found: HashSet<RecordId> = self.backend.existing(&external)?.into_iter().collect();
            if let Some(missing) = external.iter().find(|p| !found.contains(p)) {
                return Err(ProvError::NotFound(format!(
                    "{missing} (named as a parent)"
                )));
            }
        }
        self.backend.insert_records(&recs)?;
        Ok(recs.iter().map(|r| r.id).collect())
    }

    /// One record.
    pub fn get(&mut self, id: RecordId) -> Result<Record> {
        self.backend
            .records(&[id])?
            .pop()
            .ok_or_else(|| ProvError::NotFound(id.to_string()))
    }

    /// Records `child` as depending on `parent` (both exist). Refused if it
    /// would close a cycle.
    pub fn derive(&mut self, child: RecordId, parent: RecordId, kind: EdgeKind) -> Result<()> {
        let found = self.backend.existing(&[child, parent])?;
        for id in [child, parent] {
            if !found.contains(&id) {
                return Err(ProvError::NotFound(id.to_string()));
            }
        }
        if let Some(path) = self.path_up(parent, child)? {
            return Err(ProvError::Cycle {
                parent,
                child,
                path: path
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(" -> "),
            });
        }
        self.backend.insert_edges(&[Edge {
            parent,
            child,
            kind,
        }])
    }

    /// A path of derivations from `target` down to `from` (walking up from
    /// `from`), if one exists: `child` reaches `from`'s ancestors.
    fn path_up(&mut self, from: RecordId, target: RecordId) -> Result<Option<Vec<RecordId>>> {
        if from == target {
            return Ok(Some(vec![target, from]));
        }
        let mut came: HashMap<RecordId, RecordId> = HashMap::new();
        let mut frontier = vec![from];
        came.insert(from, from);
        while !frontier.is_empty() {
            let edges = self.backend.parents(&frontier)?;
            frontier.clear();
            for e in edges {
                if came.contains_key(&e.parent) {
                    continue;
                }
                came.insert(e.parent, e.child);
                if e.parent == target {
                    // target -> … -> from, following `came` back down.
                    let mut path = vec![target];
                    let mut at = target;
                    while at != from {
                        at = came[&at];
                        path.push(at);
                    }
                    return Ok(Some(path));
                }
                frontier.push(e.parent);
            }
            if came.len() > self.limits.cycle_check_max {
                return Err(ProvError::Limit(format!(
                    "cycle check visited more than {} records",
                    self.limits.cycle_check_max
                )));
            }
        }
        Ok(None)
    }

    // ----- models -----

    /// Makes the next version of the model `model` (any of its versions)
    /// exposed to `records`; returns the new version's id.
    pub fn update_model(&mut self, model: RecordId, records: &[RecordId]) -> Result<RecordId> {
        Ok(self.update_models(&[(model, records)])?[0])
    }

    /// [`Provenance::update_model`] for several models in one transaction
    /// (each model at most once).
    pub fn update_models(&mut self, updates: &[(RecordId, &[RecordId])]) -> Result<Vec<RecordId>> {
        let ms = self
            .backend
            .records(&updates.iter().map(|u| u.0).collect::<Vec<_>>())?;
        let by_id: HashMap<RecordId, &Record> = ms.iter().map(|r| (r.id, r)).collect();
        let mut names = HashSet::new();
        let mut recs = Vec::with_capacity(updates.len());
        for (model, records) in updates {
            let m = by_id
                .get(model)
                .ok_or_else(|| ProvError::NotFound(model.to_string()))?;
            if m.kind != Kind::Model {
                return Err(ProvError::Invalid(format!(
                    "record {model} is a {}, not a model",
                    m.kind
                )));
            }
            if !names.insert(m.name.clone()) {
                return Err(ProvError::Invalid(format!(
                    "model {:?} named twice in one update",
                    m.name
                )));
            }
            let versions = self.backend.model_versions(&m.name)?;
            let (latest, latest_id, _) = *versions
                .last()
                .ok_or_else(|| ProvError::Corrupt(format!("model {:?} has no versions", m.name)))?;
            let mut rec =
                Record::new(Kind::Model, m.name.clone()).parent(latest_id, EdgeKind::Revision);
            rec.version = Some(latest + 1);
            rec.tags = m.tags.clone();
            let mut seen = HashSet::with_capacity(records.len());
            rec.parents.reserve(records.len());
            for &r in records.iter() {
                if seen.insert(r) {
                    rec.parents.push((r, EdgeKind::Trained));
                }
            }
            recs.push(rec);
        }
        self.add_batch(recs)
    }

    /// The record of `name@version`.
    pub fn model_version(&mut self, name: &str, version: i64) -> Result<Option<RecordId>> {
        Ok(self
            .backend
            .model_versions(name)?
            .into_iter()
            .find(|v| v.0 == version)
            .map(|v| v.1))
    }

    /// What model `name` knew at time `t`: the version current then and
    /// every record it (or an earlier version) was trained on.
    pub fn model_at(&mut self, name: &str, t: i64) -> Result<Option<ModelKnowledge>> {
        let versions = self.backend.model_versions(name)?;
        let Some(&(version, id, time_us)) = versions.iter().rev().find(|v| v.2 <= t) else {
            return Ok(None);
        };
        let ids: Vec<RecordId> = versions
            .iter()
            .filter(|v| v.0 <= version)
            .map(|v| v.1)
            .collect();
        let mut records: Vec<RecordId> = self
            .backend
            .parents(&ids)?
            .into_iter()
            .filter(|e| e.kind == EdgeKind::Trained)
            .map(|e| e.parent)
            .collect();
        records.sort_unstable();
        records.dedup();
        Ok(Some(ModelKnowledge {
            version,
            id,
            time_us,
            records,
        }))
    }

    // ----- queries -----

    /// Resolves a target to record ids.
    pub fn resolve(&mut self, target: &Target) -> Result<Vec<RecordId>> {
        const MAX: usize = 100_000_000;
        Ok(match target {
            Target::Record(id) => {
                if self.backend.existing(&[*id])?.is_empty() {
                    return Err(ProvError::NotFound(id.to_string()));
                }
                vec![*id]
            }
            Target::Items {
                topic,
                partition,
                from,
                to,
            } => self
                .backend
                .find_items(topic, *partition, *from, *to, MAX)?
                .into_iter()
                .map(|x| x.1)
                .collect(),
            Target::Tag { key, value } => self.backend.find_tag(key, value, MAX)?,
            Target::Name(n) => self.backend.find_name(n, MAX)?,
            Target::ModelVersion { name, version } => {
                self.model_version(name, *version)?.into_iter().collect()
            }
        })
    }

    /// Records with this name (or, for `topic/partition/offset`, that item).
    pub fn find_name(&mut self, name: &str, limit: usize) -> Result<Vec<RecordId>> {
        let mut ids = self.backend.find_name(name, limit)?;
        if let Some(loc) = parse_loc(name) {
            ids.extend(
                self.backend
                    .find_items(&loc.topic, loc.partition, loc.offset, loc.offset, limit)?
                    .into_iter()
                    .map(|x| x.1),
            );
        }
        Ok(ids)
    }

    /// Records with tag `key` = `value` (canonical text).
    pub fn find_tag(&mut self, key: &str, value: &TagValue, limit: usize) -> Result<Vec<RecordId>> {
        self.backend.find_tag(key, &value.text(), limit)
    }

    /// Records with this URI.
    pub fn find_uri(&mut self, uri: &str, limit: usize) -> Result<Vec<RecordId>> {
        self.backend.find_uri(uri, limit)
    }

    /// Walks lineage from `id` up or down, to `depth` levels (all if `None`).
    pub fn lineage(
        &mut self,
        id: RecordId,
        dir: Direction,
        depth: Option<usize>,
    ) -> Result<Lineage> {
        if self.backend.existing(&[id])?.is_empty() {
            return Err(ProvError::NotFound(id.to_string()));
        }
        let mut out = Lineage {
            nodes: vec![(id, 0)],
            ..Default::default()
        };
        let mut seen: HashSet<RecordId> = HashSet::from([id]);
        let mut frontier = vec![id];
        let mut level = 0;
        while !frontier.is_empty() && depth.map_or(true, |d| level < d) {
            level += 1;
            let edges = match dir {
                Direction::Up => self.backend.parents(&frontier)?,
                Direction::Down => self.backend.children(&frontier)?,
            };
            frontier.clear();
            for e in edges {
                let next = match dir {
                    Direction::Up => e.parent,
                    Direction::Down => e.child,
                };
                out.edges.push(e);
                if seen.insert(next) {
                    if out.nodes.len() >= self.limits.lineage_records_max {
                        out.truncated = true;
                        return Ok(out);
                    }
                    out.nodes.push((next, level));
                    frontier.push(next);
                }
            }
        }
        Ok(out)
    }

    /// A record's validity at time `t` (µs since the Unix epoch).
    pub fn validity_at(&mut self, id: RecordId, t: i64) -> Result<Validity> {
        let r = self.get(id)?;
        if r.time_us > t {
            return Ok(Validity::NotYetRecorded);
        }
        let Some(inv) = self.backend.invalid(&[id])?.pop() else {
            return Ok(Validity::Valid);
        };
        let ev = self.backend.event(inv.event)?.ok_or_else(|| {
            ProvError::Corrupt(format!("invalidation event {} missing", inv.event))
        })?;
        Ok(if ev.time_us <= t {
            Validity::Invalid {
                event: ev.id,
                since_us: ev.time_us,
                cause: ev.cause,
            }
        } else {
            Validity::Valid
        })
    }

    /// Whether a record is invalid now.
    pub fn is_invalid(&mut self, id: RecordId) -> Result<bool> {
        Ok(!self.backend.invalid(&[id])?.is_empty())
    }

    /// Why a record is invalid: the chain back to the root and the cause;
    /// `None` if it is valid.
    pub fn why(&mut self, id: RecordId) -> Result<Option<WhyChain>> {
        let Some(first) = self.backend.invalid(&[id])?.pop() else {
            if self.backend.existing(&[id])?.is_empty() {
                return Err(ProvError::NotFound(id.to_string()));
            }
            return Ok(None);
        };
        let mut ids = vec![id];
        let mut at = first;
        while let Some(p) = at.parent {
            if ids.len() > 1_000_000 || ids.contains(&p) {
                return Err(ProvError::Corrupt(format!(
                    "invalidation chain of {id} does not end"
                )));
            }
            ids.push(p);
            at = self.backend.invalid(&[p])?.pop().ok_or_else(|| {
                ProvError::Corrupt(format!("{p} named as an invalid parent but is valid"))
            })?;
        }
        let event = self.backend.event(at.event)?.ok_or_else(|| {
            ProvError::Corrupt(format!("invalidation event {} missing", at.event))
        })?;
        let recs: HashMap<RecordId, Record> = self
            .backend
            .records(&ids)?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let chain = ids
            .iter()
            .map(|i| {
                let r = recs.get(i);
                WhyStep {
                    record: *i,
                    name: r.map(|r| r.name.clone()).unwrap_or_default(),
                    kind: r.map_or(Kind::Data, |r| r.kind),
                }
            })
            .collect();
        Ok(Some(WhyChain { chain, event }))
    }

    // ----- invalidation -----

    /// Invalidates what `target` names with `cause`; with `cascade`,
    /// everything derived from it too. Records that are invalid already
    /// keep their first cause (idempotent). Registered actions run for the
    /// records newly invalidated, and their outcomes are recorded.
    pub fn invalidate(
        &mut self,
        target: &Target,
        cause: &str,
        cascade: bool,
    ) -> Result<InvalidationReport> {
        let t0 = Instant::now();
        if cause.trim().is_empty() {
            return Err(ProvError::Invalid("an invalidation needs a cause".into()));
        }
        let roots = self.resolve(target)?;
        if roots.is_empty() {
            return Err(ProvError::NotFound(format!("nothing matches {target}")));
        }
        let mut rows: Vec<(RecordId, Option<RecordId>)> = Vec::with_capacity(roots.len());
        let mut seen: IdSet = IdSet::with_capacity_and_hasher(roots.len() * 2, Default::default());
        for &r in &roots {
            if seen.insert(r) {
                rows.push((r, None));
            }
        }
        if cascade {
            let mut frontier: Vec<RecordId> = rows.iter().map(|r| r.0).collect();
            while !frontier.is_empty() {
                let mut next = Vec::new();
                for chunk in frontier.chunks(1 << 16) {
                    for e in self.backend.children(chunk)? {
                        if seen.insert(e.child) {
                            rows.push((e.child, Some(e.parent)));
                            next.push(e.child);
                        }
                    }
                }
                if rows.len() > self.limits.cascade_records_max {
                    return Err(ProvError::Limit(format!(
                        "cascade reached more than {} records; nothing was invalidated",
                        self.limits.cascade_records_max
                    )));
                }
                frontier = next;
            }
        }
        let mut event = InvalidationEvent {
            id: 0,
            time_us: self.now(),
            cause: cause.to_string(),
            target: target.to_string(),
            cascade,
            invalidated: 0,
        };
        let walked = t0.elapsed();
        let (ev, newly) = self.backend.insert_invalidation(&event, &rows)?;
        tracing::debug!(
            walk_s = walked.as_secs_f64(),
            total_s = t0.elapsed().as_secs_f64(),
            rows = rows.len(),
            "invalidation stored"
        );
        event.id = ev;
        event.invalidated = newly.len() as i64;
        let mut report = InvalidationReport {
            event: ev,
            roots,
            invalidated: newly.len() as u64,
            already_invalid: (rows.len() - newly.len()) as u64,
            ..Default::default()
        };
        if !newly.is_empty() {
            ActionRunner {
                backend: self.backend.as_mut(),
                callbacks: &self.callbacks,
                sink: self.sink.as_ref(),
                limits: &self.limits,
                now: &*self.clock,
            }
            .run(&event, &newly, &rows, &mut report)?;
            let roots = report.roots.clone();
            self.publish_notices(&event, &roots, &newly, &mut report)?;
        }
        report.elapsed_s = t0.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Registers an action; it runs whenever a record it targets is newly
    /// invalidated.
    pub fn register_action(&mut self, target: ActionTarget, kind: ActionKind) -> Result<i64> {
        if let ActionTarget::Record(id) = target {
            if self.backend.existing(&[id])?.is_empty() {
                return Err(ProvError::NotFound(id.to_string()));
            }
        }
        check_kind(&kind)?;
        self.backend.insert_action(&target, &kind)
    }

    /// Recorded action outcomes (for one record, or all), at most `limit`.
    pub fn action_runs(
        &mut self,
        record: Option<RecordId>,
        limit: usize,
    ) -> Result<Vec<ActionRun>> {
        self.backend.action_runs(record, limit)
    }

    /// Store-wide counts.
    pub fn counts(&mut self) -> Result<Counts> {
        self.backend.counts()
    }

    fn publish_notices(
        &mut self,
        event: &InvalidationEvent,
        roots: &[RecordId],
        newly: &[RecordId],
        report: &mut InvalidationReport,
    ) -> Result<()> {
        let (Some(sink), Some(topic)) = (self.sink.clone(), self.notice_topic.clone()) else {
            return Ok(());
        };
        let per = self.limits.notice_items_max.max(1);
        let parts = newly.len().div_ceil(per);
        for (i, chunk) in newly.chunks(per).enumerate() {
            let items: Vec<ItemRef> = self
                .backend
                .records(chunk)?
                .into_iter()
                .filter_map(|r| r.item)
                .collect();
            let notice = crate::Notice {
                event: event.id,
                cause: event.cause.clone(),
                target: event.target.clone(),
                time_us: event.time_us,
                roots: roots.to_vec(),
                part: i as u32,
                parts: parts as u32,
                records: chunk.to_vec(),
                items,
            };
            let payload = serde_json::to_vec(&notice).expect("serializable");
            match sink.publish(&topic, payload) {
                Ok(()) => report.notices_published += 1,
                Err(e) => {
                    tracing::warn!(error = %e, topic, "invalidation notice not published");
                    return Err(ProvError::Store(format!(
                        "invalidation {} is recorded, but its notice was not published on {topic}: {e}",
                        event.id
                    )));
                }
            }
        }
        Ok(())
    }
}
