//! The consumer's decisions: deliver each stream sequence number once and in
//! order per partition, hold items behind a gap (bounded), ask the producer
//! to replay a gap, and when the gap's deadline passes make substitutes
//! (`reconstructed(method)`) or report the items lost — never silently.
//! Sequence numbers the producer reduced away or shed are accounted as such.
//! Pure: sequence numbers and a clock in, events out; the shell holds the
//! item bodies.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::policy::{Policy, ReconstructMethod};

/// Substitutes are tracked for supersession at most this many per partition.
const SUBSTITUTED_TRACKED_MAX: usize = 65_536;

/// What the shell learned from an arriving item's QoS headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Stream sequence number.
    pub seq: u64,
    /// Sequence numbers just before `seq` the producer reduced away.
    pub reduced_before: u64,
    /// Sequence numbers just before `seq` the producer shed.
    pub shed_before: u64,
}

/// Why a substitute is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubstituteFor {
    /// The item went missing and its deadline passed.
    Missing,
    /// The producer reduced it away (`fill_reduced`).
    Reduced,
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Deliver the held item `seq` of `partition` (an original or reduced item).
    Deliver {
        /// Partition.
        partition: u32,
        /// Sequence number.
        seq: u64,
    },
    /// Make and deliver a substitute for `seq`, from the last delivered item
    /// (`prev`) and the next held one (`next`), where known.
    Substitute {
        /// Partition.
        partition: u32,
        /// The missing sequence number.
        seq: u64,
        /// Last delivered sequence number.
        prev: Option<u64>,
        /// Next held sequence number (the gap's far side).
        next: Option<u64>,
        /// Why.
        reason: SubstituteFor,
    },
    /// The original of a substitute arrived late: deliver it, marked `qos.supersedes`.
    Supersede {
        /// Partition.
        partition: u32,
        /// Sequence number.
        seq: u64,
    },
    /// Drop this arrival (a duplicate, or a late original with `supersede = false`).
    Drop {
        /// Partition.
        partition: u32,
        /// Sequence number.
        seq: u64,
        /// Why.
        why: DropReason,
    },
    /// Ask the producer to replay `from..=to`.
    RequestReplay {
        /// Partition.
        partition: u32,
        /// First.
        from: u64,
        /// Last (inclusive).
        to: u64,
    },
    /// Items given up: neither replayed nor reconstructed.
    Lost {
        /// Partition.
        partition: u32,
        /// First.
        from: u64,
        /// Last (inclusive).
        to: u64,
    },
}

/// Why an arrival is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropReason {
    /// Already delivered.
    Duplicate,
    /// A substitute was delivered and `supersede` is off.
    LateOriginal,
}

/// Counters of a consumer core.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConsumerCounters {
    /// Items delivered as they arrived (original or reduced).
    pub delivered: u64,
    /// Substitutes made for missing items.
    pub reconstructed_missing: u64,
    /// Substitutes made for reduced-away items.
    pub reconstructed_reduced: u64,
    /// Late originals delivered after their substitute.
    pub superseded: u64,
    /// Sequence numbers the producer reduced away (not filled).
    pub reduced_away: u64,
    /// Sequence numbers the producer shed.
    pub shed: u64,
    /// Sequence numbers given up as lost.
    pub lost: u64,
    /// Duplicate arrivals dropped.
    pub duplicates: u64,
    /// Late originals dropped.
    pub late_dropped: u64,
    /// Replay requests made.
    pub replay_requests: u64,
}

#[derive(Debug, Default)]
struct Part {
    /// Next sequence number to deliver; None until the first arrival (or a checkpoint).
    next: Option<u64>,
    held: BTreeMap<u64, Arrival>,
    gap_since: Option<u64>,
    requested_to: Option<u64>,
    last_delivered: Option<u64>,
    substituted: BTreeSet<u64>,
}

/// The consumer core. See the module docs.
#[derive(Debug)]
pub struct ConsumerCore {
    parts: BTreeMap<u32, Part>,
    deadline_us: u64,
    reorder_max: usize,
    method: ReconstructMethod,
    fill_reduced: bool,
    supersede: bool,
    counters: ConsumerCounters,
}

impl ConsumerCore {
    /// A core for `policy`.
    pub fn new(policy: &Policy) -> ConsumerCore {
        ConsumerCore {
            parts: BTreeMap::new(),
            deadline_us: policy.gap_deadline().as_micros() as u64,
            reorder_max: policy.reorder_items_max,
            method: policy.reconstruct.method,
            fill_reduced: policy.reconstruct.fill_reduced,
            supersede: policy.reconstruct.supersede,
            counters: ConsumerCounters::default(),
        }
    }

    /// Counters.
    pub fn counters(&self) -> &ConsumerCounters {
        &self.counters
    }

    /// Resumes `partition` at `next` (from a checkpoint).
    pub fn resume(&mut self, partition: u32, next: u64) {
        self.parts.entry(partition).or_default().next = Some(next);
    }

    /// The next sequence number `partition` will deliver.
    pub fn position(&self, partition: u32) -> Option<u64> {
        self.parts.get(&partition).and_then(|p| p.next)
    }

    /// Items held behind gaps, all partitions.
    pub fn held(&self) -> usize {
        self.parts.values().map(|p| p.held.len()).sum()
    }

    /// Whether any partition waits on a gap.
    pub fn gap_open(&self) -> bool {
        self.parts.values().any(|p| p.gap_since.is_some())
    }

    /// Whether the reorder buffer is full (the shell stops reading new data,
    /// but keeps reading replays).
    pub fn full(&self) -> bool {
        self.held() >= self.reorder_max
    }

    /// An item arrived.
    pub fn on_arrival(&mut self, partition: u32, a: Arrival, now_us: u64) -> Vec<Event> {
        let mut out = Vec::new();
        let p = self.parts.entry(partition).or_default();
        let next = *p.next.get_or_insert(a.seq);
        if a.seq < next || p.held.contains_key(&a.seq) {
            if p.substituted.remove(&a.seq) {
                if self.supersede {
                    self.counters.superseded += 1;
                    out.push(Event::Supersede {
                        partition,
                        seq: a.seq,
                    });
                } else {
                    self.counters.late_dropped += 1;
                    out.push(Event::Drop {
                        partition,
                        seq: a.seq,
                        why: DropReason::LateOriginal,
                    });
                }
            } else {
                self.counters.duplicates += 1;
                out.push(Event::Drop {
                    partition,
                    seq: a.seq,
                    why: DropReason::Duplicate,
                });
            }
            return out;
        }
        p.held.insert(a.seq, a);
        self.drain(partition, now_us, &mut out);
        out
    }

    /// The producer cannot replay `from..=to`: give that part of the gap up now.
    pub fn on_unavailable(
        &mut self,
        partition: u32,
        from: u64,
        to: u64,
        now_us: u64,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let Some(p) = self.parts.get_mut(&partition) else {
            return out;
        };
        let Some(next) = p.next else { return out };
        if from <= next && next <= to {
            let stop = to.min(p.held.keys().next().map_or(to, |h| h - 1));
            self.give_up(partition, stop, &mut out);
            self.drain(partition, now_us, &mut out);
        }
        out
    }

    /// Deadlines: a gap open longer than the deadline is filled or given up.
    pub fn tick(&mut self, now_us: u64) -> Vec<Event> {
        let mut out = Vec::new();
        let due: Vec<u32> = self
            .parts
            .iter()
            .filter(|(_, p)| {
                p.gap_since
                    .is_some_and(|t| now_us.saturating_sub(t) >= self.deadline_us)
            })
            .map(|(k, _)| *k)
            .collect();
        for partition in due {
            let p = &self.parts[&partition];
            let Some(first_held) = p.held.keys().next().copied() else {
                continue;
            };
            let a = p.held[&first_held];
            let skipped = a.reduced_before.saturating_add(a.shed_before);
            let first_skipped = first_held - skipped.min(first_held);
            if first_skipped == 0 {
                continue;
            }
            self.give_up(partition, first_skipped - 1, &mut out);
            self.drain(partition, now_us, &mut out);
        }
        out
    }

    /// Fills or gives up `next..=stop` of `partition`.
    fn give_up(&mut self, partition: u32, stop: u64, out: &mut Vec<Event>) {
        let p = self.parts.get_mut(&partition).expect("partition");
        let Some(next) = p.next else { return };
        if stop < next {
            return;
        }
        let far = p.held.keys().next().copied();
        let n = stop - next + 1;
        if self.method != ReconstructMethod::None && n <= self.reorder_max as u64 {
            for seq in next..=stop {
                out.push(Event::Substitute {
                    partition,
                    seq,
                    prev: p.last_delivered,
                    next: far,
                    reason: SubstituteFor::Missing,
                });
                remember(&mut p.substituted, seq);
            }
            self.counters.reconstructed_missing += n;
        } else {
            out.push(Event::Lost {
                partition,
                from: next,
                to: stop,
            });
            self.counters.lost += n;
        }
        p.next = Some(stop + 1);
        p.gap_since = None;
        p.requested_to = None;
    }

    /// Delivers what is contiguous; opens (or extends) a gap otherwise.
    fn drain(&mut self, partition: u32, now_us: u64, out: &mut Vec<Event>) {
        loop {
            let p = self.parts.get_mut(&partition).expect("partition");
            let next = p.next.expect("set");
            let Some((&seq, &a)) = p.held.iter().next() else {
                p.gap_since = None;
                p.requested_to = None;
                return;
            };
            let skipped = a.reduced_before.saturating_add(a.shed_before);
            let first_skipped = seq - skipped.min(seq);
            if first_skipped > next {
                // A true gap next..first_skipped-1.
                let to = first_skipped - 1;
                if p.gap_since.is_none() {
                    p.gap_since = Some(now_us);
                }
                if p.requested_to.map_or(true, |r| r < to) {
                    let from = p.requested_to.map_or(next, |r| r + 1).max(next);
                    out.push(Event::RequestReplay {
                        partition,
                        from,
                        to,
                    });
                    self.counters.replay_requests += 1;
                    p.requested_to = Some(to);
                }
                if p.held.len() >= self.reorder_max {
                    // Bounded: resolve the gap now rather than hold more.
                    self.give_up(partition, to, out);
                    continue;
                }
                return;
            }
            p.held.remove(&seq);
            // Skipped sequence numbers not yet passed.
            let skip_from = first_skipped.max(next);
            if seq > skip_from {
                let reduced = a.reduced_before.min(seq - skip_from);
                let shed = (seq - skip_from) - reduced;
                self.counters.shed += shed;
                if self.fill_reduced && self.method != ReconstructMethod::None {
                    for s in skip_from + shed..seq {
                        out.push(Event::Substitute {
                            partition,
                            seq: s,
                            prev: p.last_delivered,
                            next: Some(seq),
                            reason: SubstituteFor::Reduced,
                        });
                    }
                    self.counters.reconstructed_reduced += reduced;
                } else {
                    self.counters.reduced_away += reduced;
                }
            }
            out.push(Event::Deliver { partition, seq });
            self.counters.delivered += 1;
            p.last_delivered = Some(seq);
            p.next = Some(seq + 1);
            p.gap_since = None;
            if p.requested_to.is_some_and(|r| r <= seq) {
                p.requested_to = None;
            }
        }
    }
}

fn remember(set: &mut BTreeSet<u64>, seq: u64) {
    set.insert(seq);
    while set.len() > SUBSTITUTED_TRACKED_MAX {
        set.pop_first();
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arr(seq: u64) -> Arrival {
        Arrival {
            seq,
            reduced_before: 0,
            shed_before: 0,
        }
    }

    fn core(method: ReconstructMethod) -> ConsumerCore {
        let mut p = Policy::default();
        p.reconstruct.method = method;
        p.reconstruct.deadline_ms = 100;
        p.reorder_items_max = 50;
        ConsumerCore::new(&p)
    }

    fn delivered(ev: &[Event]) -> Vec<u64> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Deliver { seq, .. } | Event::Substitute { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn in_order_duplicates_dropped() {
        let mut c = core(ReconstructMethod::None);
        assert_eq!(delivered(&c.on_arrival(0, arr(5), 0)), vec![5]);
        assert_eq!(delivered(&c.on_arrival(0, arr(6), 0)), vec![6]);
        assert!(matches!(
            c.on_arrival(0, arr(6), 0)[..],
            [Event::Drop {
                why: DropReason::Duplicate,
                ..
            }]
        ));
    }

    #[test]
    fn gap_requests_replay_and_fills_in_order() {
        let mut c = core(ReconstructMethod::None);
        c.resume(0, 0);
        let ev = c.on_arrival(0, arr(3), 0);
        assert_eq!(
            ev,
            vec![Event::RequestReplay {
                partition: 0,
                from: 0,
                to: 2
            }]
        );
        assert!(c.gap_open());
        assert_eq!(delivered(&c.on_arrival(0, arr(1), 10)), Vec::<u64>::new());
        assert_eq!(delivered(&c.on_arrival(0, arr(0), 10)), vec![0, 1]);
        assert_eq!(delivered(&c.on_arrival(0, arr(2), 10)), vec![2, 3]);
        assert!(!c.gap_open());
    }

    #[test]
    fn deadline_gives_up_or_reconstructs_and_late_original_supersedes() {
        let mut c = core(ReconstructMethod::None);
        c.resume(0, 0);
        c.on_arrival(0, arr(0), 0);
        c.on_arrival(0, arr(4), 0);
        assert!(c.tick(50_000).is_empty());
        let ev = c.tick(100_000);
        assert_eq!(
            ev,
            vec![
                Event::Lost {
                    partition: 0,
                    from: 1,
                    to: 3
                },
                Event::Deliver {
                    partition: 0,
                    seq: 4
                }
            ]
        );
        assert_eq!(c.counters().lost, 3);

        let mut c = core(ReconstructMethod::Linear);
        c.on_arrival(0, arr(0), 0);
        c.on_arrival(0, arr(3), 0);
        let ev = c.tick(100_000);
        assert_eq!(delivered(&ev), vec![1, 2, 3]);
        assert!(matches!(
            ev[0],
            Event::Substitute {
                prev: Some(0),
                next: Some(3),
                reason: SubstituteFor::Missing,
                ..
            }
        ));
        assert_eq!(
            c.on_arrival(0, arr(2), 200_000),
            vec![Event::Supersede {
                partition: 0,
                seq: 2
            }]
        );
        // Only once.
        assert!(matches!(
            c.on_arrival(0, arr(2), 200_000)[..],
            [Event::Drop {
                why: DropReason::Duplicate,
                ..
            }]
        ));
    }

    #[test]
    fn reduced_and_shed_are_accounted_not_lost() {
        let mut c = core(ReconstructMethod::None);
        c.resume(0, 0);
        c.on_arrival(0, arr(0), 0);
        let ev = c.on_arrival(
            0,
            Arrival {
                seq: 4,
                reduced_before: 2,
                shed_before: 1,
            },
            0,
        );
        assert_eq!(delivered(&ev), vec![4]);
        assert_eq!(
            (
                c.counters().reduced_away,
                c.counters().shed,
                c.counters().lost
            ),
            (2, 1, 0)
        );

        let mut p = Policy::default();
        p.reconstruct.method = ReconstructMethod::HoldLast;
        p.reconstruct.fill_reduced = true;
        let mut c = ConsumerCore::new(&p);
        c.on_arrival(0, arr(0), 0);
        let ev = c.on_arrival(
            0,
            Arrival {
                seq: 3,
                reduced_before: 2,
                shed_before: 0,
            },
            0,
        );
        assert_eq!(delivered(&ev), vec![1, 2, 3]);
        assert_eq!(c.counters().reconstructed_reduced, 2);
    }

    #[test]
    fn unavailable_replay_resolves_at_once_and_reorder_is_bounded() {
        let mut c = core(ReconstructMethod::None);
        c.resume(0, 0);
        c.on_arrival(0, arr(10), 0);
        let ev = c.on_unavailable(0, 0, 9, 1);
        assert_eq!(delivered(&ev), vec![10]);
        assert_eq!(c.counters().lost, 10);

        let mut c = core(ReconstructMethod::None);
        c.resume(0, 0);
        let mut got = Vec::new();
        for s in 1..=60 {
            got.extend(delivered(&c.on_arrival(0, arr(s), 0)));
        }
        assert!(c.held() < 50);
        assert_eq!(got, (1..=60).collect::<Vec<_>>());
        assert_eq!(c.counters().lost, 1);
    }

    proptest! {
        /// Whatever the arrival order, duplication and timing: every sequence
        /// number up to the highest arrived is accounted exactly once
        /// (delivered, substituted, lost, reduced or shed), deliveries are in
        /// order, and every substitute is an event of its own (marked by the shell).
        #[test]
        fn each_seq_once_in_order(
            arrivals in proptest::collection::vec((0u64..80, 0u64..3, any::<bool>()), 1..200),
            method in prop_oneof![Just(ReconstructMethod::None), Just(ReconstructMethod::HoldLast)],
        ) {
            let mut c = core(method);
            c.resume(0, 0);
            let mut seen = Vec::new();
            let mut lost = 0;
            let mut t = 0;
            let mut max_seq = 0;
            let mut skipped_total = BTreeSet::new();
            for (seq, skip, tick) in arrivals {
                t += 30_000;
                let skip = skip.min(seq);
                let a = Arrival { seq, reduced_before: skip, shed_before: 0 };
                // The same seq always arrives with the same marks (the producer stamped it once).
                if skipped_total.iter().any(|(s, _)| *s == seq) { continue; }
                skipped_total.insert((seq, skip));
                max_seq = max_seq.max(seq);
                let mut ev = c.on_arrival(0, a, t);
                if tick { ev.extend(c.tick(t + 200_000)); t += 200_000; }
                for e in ev {
                    match e {
                        Event::Deliver { seq, .. } | Event::Substitute { seq, .. } => seen.push(seq),
                        Event::Lost { from, to, .. } => lost += to - from + 1,
                        _ => {}
                    }
                }
            }
            // Flush: let every gap expire (each resolution may open the next gap).
            for i in 1..=200u64 {
                for e in c.tick(t + i * 1_000_000) {
                    match e {
                        Event::Deliver { seq, .. } | Event::Substitute { seq, .. } => seen.push(seq),
                        Event::Lost { from, to, .. } => lost += to - from + 1,
                        _ => {}
                    }
                }
            }
            prop_assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {:?}", seen);
            let k = c.counters();
            let accounted = seen.len() as u64 + lost + k.reduced_away + k.shed;
            let next = c.position(0).unwrap();
            prop_assert_eq!(accounted, next, "every seq below next accounted once");
            prop_assert!(next <= max_seq + 1);
            prop_assert_eq!(c.held(), 0);
        }
    }
}
