//! The join engine: pure, deterministic, no I/O, clock injected. It holds
//! references only — a member is (source, partition, offset, key, time) —
//! so a view never copies a payload.
//!
//! - Members wait per key until the spec's counts are met, then leave as one
//!   [`ViewItem`] whose id is a stable hash of its members: the same members
//!   always make the same id, across restarts.
//! - A member is accepted once: a duplicate delivery, or a replay of a
//!   member already in an emitted item, is counted and ignored, so a source
//!   that restarts and replays heals the view without duplicates.
//! - With a time window, pending members older than the window expire.
//! - [`JoinEngine::invalidate`] says which emitted item depended on a member
//!   (the shell discards it, or pins the member until it is consumed).
//! - [`JoinEngine::snapshot`] / [`JoinEngine::restore`] capture pending
//!   members and the used-member frontier, so a view recovers without its
//!   sources.

use crate::spec::{Mode, ViewSpec};
use crate::ViewError;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};

/// A reference to one item of a source, with its join key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Index of the source in the spec.
    pub source: usize,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Join key (the value of the source's key field).
    pub key: String,
    /// Item time, µs since the Unix epoch.
    pub time_us: i64,
}

/// A member's identity: (source, partition, offset).
pub type MemberId = (usize, u32, u64);

impl Member {
    /// Its identity.
    pub fn id(&self) -> MemberId {
        (self.source, self.partition, self.offset)
    }
}

/// One emitted view item: references to its members, no payloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewItem {
    /// Stable id: a hash of its members' identities.
    pub id: u64,
    /// The join key.
    pub key: String,
    /// Members, by source, then in arrival order.
    pub members: Vec<Member>,
}

/// FNV-1a over member identities (sorted): stable across processes, unlike
/// the standard library's seeded hasher.
pub fn view_id(members: &[Member]) -> u64 {
    let mut ids: Vec<MemberId> = members.iter().map(Member::id).collect();
    ids.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (s, p, o) in ids {
        for b in (s as u64)
            .to_le_bytes()
            .into_iter()
            .chain(p.to_le_bytes())
            .chain(o.to_le_bytes())
        {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Members accepted.
    pub accepted: u64,
    /// Deliveries of a member already pending or used (ignored).
    pub duplicates: u64,
    /// View items emitted.
    pub emitted: u64,
    /// Pending members dropped by the time window.
    pub expired: u64,
    /// Pending members removed by invalidation.
    pub invalidated_pending: u64,
}

/// What invalidating a member affected.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invalidated {
    /// The member was still pending and is gone.
    pub pending_removed: bool,
    /// The emitted view item that contains it.
    pub view_item: Option<u64>,
}

/// The state a snapshot holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// View name (checked on restore).
    pub view: String,
    /// Pending members, in arrival order.
    pub pending: Vec<Member>,
    /// Members already in emitted items, with the item's id.
    pub used: Vec<(MemberId, u64)>,
    /// Counters.
    pub stats: EngineStats,
}

/// A hasher for member identities (integers the fabric assigned, not
/// attacker-chosen strings): a multiply per word instead of SipHash.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ *b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

type IdBuild = std::hash::BuildHasherDefault<IdHasher>;

/// The join engine of one view.
pub struct JoinEngine {
    spec: ViewSpec,
    counts: Vec<usize>,
    /// key → per source, members waiting (arrival order). Keys come from
    /// item metadata, so this map keeps the standard (seeded) hasher.
    pending: HashMap<String, Vec<VecDeque<Member>>>,
    pending_ids: HashSet<MemberId, IdBuild>,
    used: HashMap<MemberId, u64, IdBuild>,
    stats: EngineStats,
}

impl JoinEngine {
    /// An engine for a (valid) spec.
    pub fn new(spec: ViewSpec) -> Result<JoinEngine, ViewError> {
        spec.validate()?;
        Ok(JoinEngine {
            counts: spec.sources.iter().map(|s| s.count as usize).collect(),
            spec,
            pending: HashMap::new(),
            pending_ids: HashSet::default(),
            used: HashMap::default(),
            stats: EngineStats::default(),
        })
    }

    /// The spec.
    pub fn spec(&self) -> &ViewSpec {
        &self.spec
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Members waiting now.
    pub fn pending(&self) -> usize {
        self.pending_ids.len()
    }

    /// Offers a member; returns the view items it completed (none, usually
    /// one). `now_us` drives the time window.
    pub fn offer(&mut self, m: Member, now_us: i64) -> Result<Vec<ViewItem>, ViewError> {
        if m.source >= self.spec.sources.len() {
            return Err(ViewError::Spec(format!(
                "member names source {} of a view with {}",
                m.source,
                self.spec.sources.len()
            )));
        }
        let id = m.id();
        if self.pending_ids.contains(&id) || self.used.contains_key(&id) {
            self.stats.duplicates += 1;
            return Ok(Vec::new());
        }
        if self.pending_ids.len() >= self.spec.limits.pending_members_max {
            self.expire(now_us);
            if self.pending_ids.len() >= self.spec.limits.pending_members_max {
                return Err(ViewError::Limit(format!(
                    "{} members pending (limits.pending_members_max); member {id:?} refused",
                    self.pending_ids.len()
                )));
            }
        }
        if self.used.len() >= self.spec.limits.used_members_max {
            return Err(ViewError::Limit(format!(
                "{} used members remembered (limits.used_members_max); snapshot and compact the view",
                self.used.len()
            )));
        }
        self.stats.accepted += 1;
        let key = m.key.clone();
        let n = self.spec.sources.len();
        let group = self
            .pending
            .entry(key.clone())
            .or_insert_with(|| vec![VecDeque::new(); n]);
        group[m.source].push_back(m);
        self.pending_ids.insert(id);
        let out = self.take_ready(&key);
        Ok(out)
    }

    /// Forms every view item key `key` now satisfies.
    fn take_ready(&mut self, key: &str) -> Vec<ViewItem> {
        let mut out = Vec::new();
        let counts = &self.counts;
        let window = self.spec.join.window_ms.map(|w| w as i64 * 1000);
        while let Some(group) = self.pending.get_mut(key) {
            let members: Vec<Member> = match self.spec.join.mode {
                Mode::AllOf => {
                    if group.iter().zip(counts).any(|(q, c)| q.len() < *c) {
                        break;
                    }
                    if let Some(w) = window {
                        // Members must lie within the window: drop the oldest
                        // candidate until they do.
                        let times = group
                            .iter()
                            .zip(counts)
                            .flat_map(|(q, c)| q.iter().take(*c).map(|m| (m.time_us, m.source)));
                        let (min, max) = times
                            .clone()
                            .fold((i64::MAX, i64::MIN), |(lo, hi), (t, _)| {
                                (lo.min(t), hi.max(t))
                            });
                        if max - min > w {
                            let oldest = times.min().map(|(_, s)| s).expect("non-empty");
                            let gone = group[oldest].pop_front().expect("non-empty");
                            self.pending_ids.remove(&gone.id());
                            self.stats.expired += 1;
                            continue;
                        }
                    }
                    let mut ms = Vec::with_capacity(counts.iter().sum());
                    for (q, c) in group.iter_mut().zip(counts) {
                        ms.extend(q.drain(..*c));
                    }
                    ms
                }
                Mode::AnyOf => {
                    let Some(s) = group.iter().zip(counts).position(|(q, c)| q.len() >= *c) else {
                        break;
                    };
                    group[s].drain(..counts[s]).collect()
                }
            };
            let id = view_id(&members);
            for m in &members {
                self.pending_ids.remove(&m.id());
                self.used.insert(m.id(), id);
            }
            self.stats.emitted += 1;
            out.push(ViewItem {
                id,
                key: key.to_string(),
                members,
            });
        }
        if self
            .pending
            .get(key)
            .is_some_and(|g| g.iter().all(VecDeque::is_empty))
        {
            self.pending.remove(key);
        }
        out
    }

    /// Drops pending members older than the window; returns them.
    pub fn expire(&mut self, now_us: i64) -> Vec<Member> {
        let Some(w) = self.spec.join.window_ms else {
            return Vec::new();
        };
        let cutoff = now_us - w as i64 * 1000;
        let mut gone = Vec::new();
        self.pending.retain(|_, group| {
            for q in group.iter_mut() {
                while q.front().is_some_and(|m| m.time_us < cutoff) {
                    gone.push(q.pop_front().expect("non-empty"));
                }
            }
            group.iter().any(|q| !q.is_empty())
        });
        for m in &gone {
            self.pending_ids.remove(&m.id());
        }
        self.stats.expired += gone.len() as u64;
        gone
    }

    /// A member was invalidated (or expired from its source): drop it if
    /// pending, and say which emitted item contained it.
    pub fn invalidate(&mut self, id: MemberId) -> Invalidated {
        let mut out = Invalidated {
            view_item: self.used.get(&id).copied(),
            ..Default::default()
        };
        if self.pending_ids.remove(&id) {
            out.pending_removed = true;
            self.stats.invalidated_pending += 1;
            self.pending.retain(|_, group| {
                if let Some(q) = group.get_mut(id.0) {
                    q.retain(|m| m.id() != id);
                }
                group.iter().any(|q| !q.is_empty())
            });
        }
        out
    }

    /// The engine's state.
    pub fn snapshot(&self) -> Snapshot {
        let mut pending: Vec<Member> = self.pending.values().flatten().flatten().cloned().collect();
        pending.sort_by_key(|m| (m.time_us, m.id()));
        let mut used: Vec<(MemberId, u64)> = self.used.iter().map(|(k, v)| (*k, *v)).collect();
        used.sort_unstable();
        Snapshot {
            view: self.spec.name.clone(),
            pending,
            used,
            stats: self.stats.clone(),
        }
    }

    /// An engine in the state of `snap`.
    pub fn restore(spec: ViewSpec, snap: Snapshot) -> Result<JoinEngine, ViewError> {
        if snap.view != spec.name {
            return Err(ViewError::Snapshot(format!(
                "snapshot of view {:?} cannot restore view {:?}",
                snap.view, spec.name
            )));
        }
        let mut e = JoinEngine::new(spec)?;
        let n = e.spec.sources.len();
        for m in snap.pending {
            if m.source >= n {
                return Err(ViewError::Snapshot(format!(
                    "pending member of source {} of {n}",
                    m.source
                )));
            }
            if !e.pending_ids.insert(m.id()) {
                return Err(ViewError::Snapshot(format!(
                    "member {:?} pending twice",
                    m.id()
                )));
            }
            e.pending
                .entry(m.key.clone())
                .or_insert_with(|| vec![VecDeque::new(); n])[m.source]
                .push_back(m);
        }
        e.used = snap.used.into_iter().collect();
        e.stats = snap.stats;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(k: u32) -> ViewSpec {
        ViewSpec::new("samples")
            .source("patterns", "patterns", "scan", k)
            .source("recons", "recons", "scan", 1)
    }

    fn member(source: usize, offset: u64, key: u8, time_us: i64) -> Member {
        Member {
            source,
            partition: 0,
            offset,
            key: format!("s{key}"),
            time_us,
        }
    }

    /// Members of two sources over a few keys: (source, offset, key).
    fn arrivals() -> impl Strategy<Value = Vec<Member>> {
        proptest::collection::vec((0usize..2, 0u8..5), 0..120).prop_map(|v| {
            let mut next = [0u64; 2];
            v.into_iter()
                .map(|(s, k)| {
                    next[s] += 1;
                    member(s, next[s], k, 0)
                })
                .collect()
        })
    }

    fn run(e: &mut JoinEngine, ms: &[Member]) -> Vec<ViewItem> {
        ms.iter()
            .flat_map(|m| e.offer(m.clone(), 0).unwrap())
            .collect()
    }

    proptest! {
        /// Every view item joins exactly K patterns and one reconstruction of
        /// one key; no member is in two items; as many items per key as the
        /// counts allow; whatever the arrival order and duplication.
        #[test]
        fn joins_are_exact_whatever_the_order(ms in arrivals(), k in 1u32..4, seed in any::<u64>(), dup in 0usize..30) {
            let mut order = ms.clone();
            // A deterministic shuffle and some duplicate deliveries.
            let mut x = seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for i in 0..dup.min(order.len()) {
                order.push(order[i * 7 % order.len()].clone());
            }
            let mut e = JoinEngine::new(spec(k)).unwrap();
            let out = run(&mut e, &order);
            let mut used = HashSet::new();
            let mut ids = HashSet::new();
            for v in &out {
                prop_assert!(ids.insert(v.id), "view id twice");
                prop_assert_eq!(v.members.iter().filter(|m| m.source == 0).count(), k as usize);
                prop_assert_eq!(v.members.iter().filter(|m| m.source == 1).count(), 1);
                prop_assert!(v.members.iter().all(|m| m.key == v.key));
                for m in &v.members {
                    prop_assert!(used.insert(m.id()), "member in two view items");
                }
            }
            for key in 0..5u8 {
                let name = format!("s{key}");
                let n = |s: usize| ms.iter().filter(|m| m.source == s && m.key == name).count();
                let want = (n(0) / k as usize).min(n(1));
                prop_assert_eq!(out.iter().filter(|v| v.key == name).count(), want);
            }
            prop_assert_eq!(e.stats().duplicates as usize, order.len() - ms.len());
            // A full replay of every source emits nothing new.
            prop_assert!(run(&mut e, &ms).is_empty());
        }

        /// A snapshot taken anywhere and restored gives the same items as an
        /// uninterrupted run.
        #[test]
        fn snapshot_restore_continues_exactly(ms in arrivals(), k in 1u32..3, cut in 0usize..120) {
            let cut = cut.min(ms.len());
            let mut whole = JoinEngine::new(spec(k)).unwrap();
            let all = run(&mut whole, &ms);
            let mut first = JoinEngine::new(spec(k)).unwrap();
            let mut out = run(&mut first, &ms[..cut]);
            let json = serde_json::to_string(&first.snapshot()).unwrap();
            drop(first);
            let snap: Snapshot = serde_json::from_str(&json).unwrap();
            let mut second = JoinEngine::restore(spec(k), snap).unwrap();
            // The sources replay from the start: nothing is emitted twice.
            out.extend(run(&mut second, &ms));
            prop_assert_eq!(out, all);
        }
    }

    #[test]
    fn windows_expire_and_invalidation_reports_dependants() {
        let mut e = JoinEngine::new(spec(1).window_ms(10)).unwrap();
        assert!(e.offer(member(0, 1, 1, 0), 0).unwrap().is_empty());
        // 20 ms later the pattern is too old for this reconstruction.
        assert!(e.offer(member(1, 1, 1, 20_000), 20_000).unwrap().is_empty());
        assert_eq!(e.stats().expired, 1);
        let v = e.offer(member(0, 2, 1, 21_000), 21_000).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(e.invalidate((0, 0, 2)).view_item, Some(v[0].id));
        assert_eq!(e.invalidate((0, 0, 99)), Invalidated::default());
        assert!(e.offer(member(0, 3, 2, 30_000), 30_000).unwrap().is_empty());
        assert!(e.invalidate((0, 0, 3)).pending_removed);
        assert_eq!(e.pending(), 0);
        assert_eq!(e.expire(1_000_000).len(), 0);
        assert!(e.offer(member(1, 5, 3, 40_000), 40_000).unwrap().is_empty());
        assert_eq!(e.expire(1_000_000).len(), 1);
    }

    #[test]
    fn any_of_emits_per_source_and_limits_refuse_clearly() {
        let mut e = JoinEngine::new(spec(2).mode(Mode::AnyOf)).unwrap();
        assert!(e.offer(member(0, 1, 1, 0), 0).unwrap().is_empty());
        assert_eq!(e.offer(member(0, 2, 1, 0), 0).unwrap().len(), 1);
        assert_eq!(e.offer(member(1, 1, 1, 0), 0).unwrap().len(), 1);
        let mut s = spec(2);
        s.limits.pending_members_max = 2;
        let mut e = JoinEngine::new(s).unwrap();
        e.offer(member(0, 1, 1, 0), 0).unwrap();
        e.offer(member(0, 2, 2, 0), 0).unwrap();
        let err = e.offer(member(0, 3, 3, 0), 0).unwrap_err().to_string();
        assert!(err.contains("pending_members_max"), "{err}");
        assert!(e.offer(member(7, 1, 1, 0), 0).is_err());
        let snap = e.snapshot();
        assert!(
            JoinEngine::restore(ViewSpec::new("other").source("a", "a", "k", 1), snap).is_err()
        );
    }

    #[test]
    fn specs_parse_and_name_their_faults() {
        let s = ViewSpec::from_toml(
            r#"
            name = "ptycho-samples"
            [[source]]
            name = "patterns"
            topic = "patterns"
            key = "scan"
            count = 4
            [[source]]
            name = "recons"
            topic = "recons"
            key = "scan"
            [join]
            mode = "all-of"
            window_ms = 60000
            "#,
        )
        .unwrap();
        assert_eq!(s.sources[0].count, 4);
        assert_eq!(s.sources[1].count, 1);
        assert_eq!(s.join.window_ms, Some(60000));
        for (bad, what) in [
            ("name = \"v\"", "at least one"),
            ("name = \"v\"\n[[source]]\nname=\"a\"\ntopic=\"t\"\nkey=\"k\"\ncount=0", "count must be"),
            ("name = \"v\"\n[[source]]\nname=\"a\"\ntopic=\"t\"\nkey=\"k\"\n[[source]]\nname=\"a\"\ntopic=\"u\"\nkey=\"k\"", "used twice"),
            ("name = \"v\"\nsurprise = 1", "surprise"),
        ] {
            let err = ViewSpec::from_toml(bad).unwrap_err().to_string();
            assert!(err.contains(what), "{bad:?}: {err}");
        }
    }
}
