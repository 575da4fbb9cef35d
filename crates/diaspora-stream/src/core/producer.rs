//! The producer's decisions: admit, place (memory or disk), dispatch in
//! order, retire on acknowledgement into the replay history, evict history
//! under pressure, and plan replays. Pure: sizes and a clock in, decisions
//! out. The shell owns the item bytes and the spill files and does what the
//! core says.
//!
//! Memory accounting, with `queue_cap = memory_bytes_max − in_flight_bytes_max`:
//! - items held in memory (pending, in flight, or acknowledged history)
//!   count against `queue_cap`;
//! - a spilled item being sent is read back into memory and counts against
//!   the in-flight reserve until it is acknowledged (then only its disk copy
//!   stays) or fails (its memory copy is dropped);
//!
//! so the memory tier never holds more than `memory_bytes_max`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::core::flow::{FlowController, FlowDecision, Signals};
use crate::policy::{FlowMode, Policy, Reduction};

/// Where an item's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The memory tier.
    Memory,
    /// The spill directory.
    Disk,
}

/// Why `send` must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// The latency estimate is past half the bound (mode `backpressure`).
    Congested,
    /// Memory and disk tiers are both full.
    Full,
}

/// History entries to move or drop so a new item fits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evictions {
    /// Acknowledged items to write to disk, then drop from memory.
    pub to_disk: Vec<u64>,
    /// Acknowledged items to forget (memory copy and/or disk record).
    pub dropped: Vec<u64>,
}

/// The core's answer to an item offered by the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Keep the item at `place` under `seq`; first apply `evictions`.
    /// `reduced_before` and `shed_before` count the sequence numbers just
    /// before `seq` that will never be sent; the item carries them.
    Accept {
        /// Stream sequence number.
        seq: u64,
        /// Where to keep it.
        place: Place,
        /// History to move or drop first.
        evictions: Evictions,
        /// Sequence numbers before `seq` reduced away.
        reduced_before: u64,
        /// Sequence numbers before `seq` shed.
        shed_before: u64,
    },
    /// Try again later (after acknowledgements or a tick).
    Wait(WaitReason),
    /// Dropped by the policy (`shed`): counted, never silent.
    Shed {
        /// The sequence number it had.
        seq: u64,
    },
    /// Reduced away by decimation: counted, accounted to the consumer.
    Decimated {
        /// The sequence number it had.
        seq: u64,
    },
}

/// An item too large for the in-flight reserve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item of {size} bytes exceeds buffer.in_flight_bytes_max {max}")]
pub struct TooLarge {
    /// Item size.
    pub size: u64,
    /// The limit.
    pub max: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    InFlight,
    Acked,
}

#[derive(Debug, Clone)]
struct Entry {
    size: u64,
    state: State,
    /// Counted in `mem_queue` (kept in memory as its home).
    in_mem: bool,
    /// Has a spill record.
    on_disk: bool,
    /// Read back from disk for sending: counted in `mem_loaded`.
    loaded: bool,
    admitted_us: u64,
    sent_us: u64,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// First acknowledgement: the item is now history. `release_memory`:
    /// drop the in-memory copy (a disk copy remains). `retired`: history
    /// that left the replay window (forget memory copy and disk record).
    Acked {
        /// Drop the item's memory copy.
        release_memory: bool,
        /// History entries to forget.
        retired: Vec<u64>,
    },
    /// Not in flight (a duplicate or late acknowledgement): ignore.
    Ignored,
}

/// How a replay request will be served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayPlan {
    /// Sequence numbers to resend from the history, with where they are.
    pub serve: Vec<(u64, Place)>,
    /// Ranges (inclusive) no longer held: the consumer must give them up.
    pub unavailable: Vec<(u64, u64)>,
}

/// Counters of a producer core.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProducerCounters {
    /// Items offered and given a sequence number.
    pub offered: u64,
    /// Items accepted for delivery.
    pub accepted: u64,
    /// Items acknowledged by the fabric.
    pub acked: u64,
    /// Items shed by the policy.
    pub shed: u64,
    /// Items reduced away (decimation, aggregation).
    pub reduced_away: u64,
    /// Items placed on disk at admission.
    pub spilled: u64,
    /// History items moved from memory to disk.
    pub history_to_disk: u64,
    /// History items forgotten before the replay window asked (memory pressure).
    pub history_evicted: u64,
    /// Dispatches that failed and were queued again.
    pub resent: u64,
    /// Items served to replay requests.
    pub replayed: u64,
    /// Times `send` was told to wait.
    pub waits: u64,
    /// Largest memory-tier use seen, bytes.
    pub memory_high_water: u64,
}

/// The producer core. See the module docs.
#[derive(Debug)]
pub struct ProducerCore {
    queue_cap: u64,
    flight_max: u64,
    spill: bool,
    window_items: u64,
    window_bytes: u64,
    mode: FlowMode,
    decimate: Vec<u32>,
    entries: BTreeMap<u64, Entry>,
    pending: BTreeSet<u64>,
    /// In flight, oldest dispatch first: `(sent_us, seq)`.
    in_flight: BTreeSet<(u64, u64)>,
    history: VecDeque<u64>,
    history_bytes: u64,
    mem_queue: u64,
    mem_loaded: u64,
    flight_bytes: u64,
    pending_bytes: u64,
    next_seq: u64,
    reduced_before: u64,
    shed_before: u64,
    decimate_counter: u64,
    ack_latency_us: f64,
    last_ack_us: u64,
    acked_through: Option<u64>,
    outage_us: u64,
    flow: FlowController,
    counters: ProducerCounters,
}

impl ProducerCore {
    /// A core for `policy`; `spill` says whether a disk tier exists.
    pub fn new(policy: &Policy) -> ProducerCore {
        let b = &policy.buffer;
        ProducerCore {
            queue_cap: b.memory_bytes_max - b.in_flight_bytes_max,
            flight_max: b.in_flight_bytes_max,
            spill: b.spill_dir.is_some(),
            window_items: policy.replay.window_items,
            window_bytes: policy.replay.window_bytes,
            mode: policy.flow.mode,
            decimate: policy
                .reduce
                .iter()
                .map(|r| match r {
                    Reduction::Decimate { every } => *every,
                    _ => 1,
                })
                .collect(),
            entries: BTreeMap::new(),
            pending: BTreeSet::new(),
            in_flight: BTreeSet::new(),
            history: VecDeque::new(),
            history_bytes: 0,
            mem_queue: 0,
            mem_loaded: 0,
            flight_bytes: 0,
            pending_bytes: 0,
            next_seq: 0,
            reduced_before: 0,
            shed_before: 0,
            decimate_counter: 0,
            ack_latency_us: 0.0,
            last_ack_us: 0,
            acked_through: None,
            outage_us: policy.flow.outage_after_ms * 1000,
            flow: FlowController::new(policy),
            counters: ProducerCounters::default(),
        }
    }

    /// Starts numbering at `seq` (a restarted producer continues its stream).
    pub fn start_at(&mut self, seq: u64) {
        assert!(self.entries.is_empty(), "start_at before any item");
        self.next_seq = seq;
    }

    /// The next sequence number to be given.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Counters.
    pub fn counters(&self) -> &ProducerCounters {
        &self.counters
    }

    /// Memory-tier bytes in use now.
    pub fn memory_used(&self) -> u64 {
        self.mem_queue + self.mem_loaded
    }

    /// Items not yet acknowledged (pending or in flight).
    pub fn unacked(&self) -> usize {
        self.entries.len() - self.history.len()
    }

    /// Items waiting to be dispatched.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Bytes in flight.
    pub fn in_flight_bytes(&self) -> u64 {
        self.flight_bytes
    }

    /// Acknowledged items retained for replay.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// The flow controller's current state.
    pub fn flow(&self) -> &FlowController {
        &self.flow
    }

    /// Passes an advice to the flow controller ([`FlowController::advise`]).
    pub fn advise(&mut self, level: usize, until_us: u64) -> bool {
        self.flow.advise(level, until_us)
    }

    /// Reductions engaged now (a prefix of the chain), as chain indices.
    pub fn active_stages(&self) -> usize {
        self.flow.level()
    }

    /// Age of the oldest item not yet dispatched, µs.
    pub fn oldest_pending_age_us(&self, now_us: u64) -> u64 {
        self.pending
            .first()
            .map(|s| now_us.saturating_sub(self.entries[s].admitted_us))
            .unwrap_or(0)
    }

    /// The latency an item admitted now should expect, µs: the queue ahead
    /// of it, the recent acknowledgement latency, and the consumer's backlog
    /// (acknowledged items it has not read, at its reported rate).
    pub fn latency_estimate_us(&self, now_us: u64) -> u64 {
        self.queue_wait_us(now_us) + self.ack_latency_us as u64 + self.consumer_backlog_us(now_us)
    }

    /// How long an item admitted now waits before it is sent, µs: the
    /// pending bytes at the measured acknowledgement rate, or the oldest
    /// pending item's age if that is longer. Before any rate is measured, a
    /// queue of more than one in-flight window is taken as too long.
    pub fn queue_wait_us(&self, now_us: u64) -> u64 {
        let age = self.oldest_pending_age_us(now_us);
        let rate = self.flow.ack_bytes_rate();
        if rate <= 0.0 {
            // Nothing measured yet (the first half second): a queue longer
            // than one in-flight window counts as past the engage threshold,
            // so a producer that starts with a burst does not queue its
            // whole memory tier before it knows how fast the path is.
            if self.pending_bytes > self.flight_max {
                return age.max(self.flow.engage_us() + 1);
            }
            return age;
        }
        age.max((self.pending_bytes as f64 / rate * 1e6) as u64)
    }

    /// How long the consumer needs for the acknowledged items it has not
    /// read yet, µs (0 without a fresh report or when it has caught up; a
    /// stalled consumer with a backlog counts as the whole latency bound).
    pub fn consumer_backlog_us(&self, now_us: u64) -> u64 {
        let (Some(sig), Some(acked)) = (self.flow.fresh_consumer(now_us), self.acked_through)
        else {
            return 0;
        };
        if sig.next_seq > acked {
            return 0;
        }
        let lag = (acked + 1 - sig.next_seq) as f64;
        if sig.rate_hz < 1e-3 {
            return 2 * self.flow.engage_us();
        }
        (lag / sig.rate_hz * 1e6) as u64
    }

    fn congested_now(&self, now_us: u64) -> bool {
        self.latency_estimate_us(now_us) > self.flow.engage_us()
    }

    /// The path is down: items are in flight and nothing has been
    /// acknowledged for `flow.outage_after_ms` (since the later of the last
    /// acknowledgement and the oldest dispatch still in flight).
    pub fn in_outage(&self, now_us: u64) -> bool {
        if self.flight_bytes == 0 {
            return false;
        }
        let oldest_sent = self.in_flight.first().map_or(now_us, |f| f.0);
        now_us.saturating_sub(self.last_ack_us.max(oldest_sent)) >= self.outage_us
    }

    /// The decimation factor engaged now (1: none).
    pub fn decimation(&self) -> u64 {
        self.decimate[..self.flow.level().min(self.decimate.len())]
            .iter()
            .map(|&k| u64::from(k))
            .product()
    }

    fn note_memory(&mut self) {
        self.counters.memory_high_water = self.counters.memory_high_water.max(self.memory_used());
    }

    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        self.counters.offered += 1;
        s
    }

    /// Offers an item of `size` bytes. `spill_free` is the room left in the
    /// disk tier (0 without one); a spill record costs `size + spill_overhead`.
    pub fn admit(
        &mut self,
        size: u64,
        spill_free: u64,
        spill_overhead: u64,
        now_us: u64,
    ) -> Result<Admission, TooLarge> {
        if size > self.flight_max {
            return Err(TooLarge {
                size,
                max: self.flight_max,
            });
        }
        // Flow policy first — unless the path is down: then buffering up to
        // the caps is the point, and only the caps decide.
        let outage = self.in_outage(now_us);
        let congested = !outage && (self.congested_now(now_us) || self.flow.congested());
        match self.mode {
            _ if outage => {}
            FlowMode::Backpressure if self.congested_now(now_us) => {
                self.counters.waits += 1;
                return Ok(Admission::Wait(WaitReason::Congested));
            }
            FlowMode::Shed if congested => {
                let seq = self.take_seq();
                self.shed_before += 1;
                self.counters.shed += 1;
                return Ok(Admission::Shed { seq });
            }
            FlowMode::Reduce => {
                let factor = self.decimation();
                if factor > 1 {
                    self.decimate_counter += 1;
                    if self.decimate_counter % factor != 0 {
                        let seq = self.take_seq();
                        self.reduced_before += 1;
                        self.counters.reduced_away += 1;
                        return Ok(Admission::Decimated { seq });
                    }
                } else {
                    self.decimate_counter = 0;
                }
            }
            _ => {}
        }
        // Room: memory (moving history to disk), else the item to disk, else
        // memory by forgetting history; else full. Nothing changes unless
        // the item is accepted.
        let mut ev = Evictions::default();
        let disk_free = if self.spill { spill_free } else { 0 };
        let need = (self.mem_queue + size).saturating_sub(self.queue_cap);
        let candidates: Vec<(u64, u64)> = if need > 0 {
            self.history
                .iter()
                .filter(|s| self.entries[s].in_mem)
                .map(|s| (*s, self.entries[s].size))
                .collect()
        } else {
            Vec::new()
        };
        let mut to_disk = Vec::new();
        let (mut freed, mut budget) = (0u64, disk_free);
        for &(s, sz) in &candidates {
            if freed >= need || sz + spill_overhead > budget {
                break;
            }
            budget -= sz + spill_overhead;
            freed += sz;
            to_disk.push(s);
        }
        let reclaimable: u64 = candidates.iter().map(|c| c.1).sum();
        let place = if freed >= need {
            Some(Place::Memory)
        } else if size + spill_overhead <= disk_free {
            to_disk.clear();
            Some(Place::Disk)
        } else if reclaimable >= need {
            Some(Place::Memory)
        } else {
            None
        };
        let Some(place) = place else {
            if self.mode == FlowMode::Shed {
                let seq = self.take_seq();
                self.shed_before += 1;
                self.counters.shed += 1;
                return Ok(Admission::Shed { seq });
            }
            self.counters.waits += 1;
            return Ok(Admission::Wait(WaitReason::Full));
        };
        if place == Place::Memory && need > 0 {
            let mut freed = 0;
            for &(s, sz) in &candidates {
                if freed >= need {
                    break;
                }
                freed += sz;
                if to_disk.contains(&s) {
                    let e = self.entries.get_mut(&s).expect("history entry");
                    e.in_mem = false;
                    e.on_disk = true;
                    self.mem_queue -= sz;
                    ev.to_disk.push(s);
                    self.counters.history_to_disk += 1;
                } else {
                    self.forget(s);
                    ev.dropped.push(s);
                    self.counters.history_evicted += 1;
                }
            }
        }
        let seq = self.take_seq();
        let entry = Entry {
            size,
            state: State::Pending,
            in_mem: place == Place::Memory,
            on_disk: place == Place::Disk,
            loaded: false,
            admitted_us: now_us,
            sent_us: 0,
        };
        if entry.in_mem {
            self.mem_queue += size;
        } else {
            self.counters.spilled += 1;
        }
        self.entries.insert(seq, entry);
        self.pending.insert(seq);
        self.pending_bytes += size;
        self.counters.accepted += 1;
        self.note_memory();
        Ok(Admission::Accept {
            seq,
            place,
            evictions: ev,
            reduced_before: std::mem::take(&mut self.reduced_before),
            shed_before: std::mem::take(&mut self.shed_before),
        })
    }

    /// Marks `n` sequence numbers as reduced away (an aggregate replaced
    /// them); the next accepted item accounts for them.
    pub fn reduce_away(&mut self, n: u64) -> std::ops::Range<u64> {
        let from = self.next_seq;
        self.next_seq += n;
        self.counters.offered += n;
        self.reduced_before += n;
        self.counters.reduced_away += n;
        from..self.next_seq
    }

    fn forget(&mut self, seq: u64) {
        if let Some(e) = self.entries.remove(&seq) {
            if e.in_mem {
                self.mem_queue -= e.size;
            }
            if e.state == State::Acked {
                self.history_bytes -= e.size;
                if let Some(i) = self.history.iter().position(|s| *s == seq) {
                    self.history.remove(i);
                }
            }
        }
    }

    /// The next item to send, in sequence order, if the in-flight window has
    /// room; `Place::Disk` means read it back from the spill tier first.
    pub fn dispatch(&mut self, now_us: u64) -> Option<(u64, Place)> {
        let seq = *self.pending.first()?;
        let e = self.entries.get_mut(&seq).expect("pending entry");
        if self.flight_bytes > 0 && self.flight_bytes + e.size > self.flight_max {
            return None;
        }
        self.pending.remove(&seq);
        self.pending_bytes -= e.size;
        e.state = State::InFlight;
        e.sent_us = now_us;
        self.in_flight.insert((now_us, seq));
        self.flight_bytes += e.size;
        let place = if e.in_mem {
            Place::Memory
        } else {
            e.loaded = true;
            self.mem_loaded += e.size;
            Place::Disk
        };
        self.note_memory();
        Some((seq, place))
    }

    /// The fabric acknowledged `seq`.
    pub fn on_ack(&mut self, seq: u64, now_us: u64) -> AckOutcome {
        let Some(e) = self.entries.get_mut(&seq) else {
            return AckOutcome::Ignored;
        };
        if e.state != State::InFlight {
            return AckOutcome::Ignored;
        }
        e.state = State::Acked;
        self.in_flight.remove(&(e.sent_us, seq));
        let lat = now_us.saturating_sub(e.sent_us) as f64;
        self.ack_latency_us = if self.counters.acked == 0 {
            lat
        } else {
            0.9 * self.ack_latency_us + 0.1 * lat
        };
        self.flight_bytes -= e.size;
        let release_memory = e.loaded;
        if e.loaded {
            e.loaded = false;
            self.mem_loaded -= e.size;
        }
        let size = e.size;
        self.counters.acked += 1;
        self.last_ack_us = now_us;
        self.acked_through = Some(self.acked_through.map_or(seq, |a| a.max(seq)));
        self.flow.on_acked(now_us, size);
        // History in sequence order (acknowledgements of one partition come in order;
        // a retried dispatch may be acknowledged late).
        let pos = self.history.partition_point(|s| *s < seq);
        self.history.insert(pos, seq);
        self.history_bytes += size;
        let mut retired = Vec::new();
        while self.history.len() as u64 > self.window_items
            || self.history_bytes > self.window_bytes
        {
            let old = self.history[0];
            self.forget(old);
            retired.push(old);
        }
        AckOutcome::Acked {
            release_memory,
            retired,
        }
    }

    /// Sending `seq` failed for good; it goes back to the queue (in order).
    pub fn on_failed(&mut self, seq: u64) -> bool {
        let Some(e) = self.entries.get_mut(&seq) else {
            return false;
        };
        if e.state != State::InFlight {
            return false;
        }
        e.state = State::Pending;
        self.in_flight.remove(&(e.sent_us, seq));
        self.flight_bytes -= e.size;
        if e.loaded {
            e.loaded = false;
            self.mem_loaded -= e.size;
        }
        self.pending.insert(seq);
        self.pending_bytes += e.size;
        self.counters.resent += 1;
        true
    }

    /// Plans a replay of `from..=to` (capped at the replay window) from history.
    pub fn replay(&mut self, from: u64, to: u64) -> ReplayPlan {
        let mut plan = ReplayPlan::default();
        let to = to.min(self.next_seq.saturating_sub(1));
        if from > to {
            return plan;
        }
        let mut gap_start: Option<u64> = None;
        let cap = self.window_items.max(1);
        for s in from..=to {
            let held = self
                .entries
                .get(&s)
                .filter(|e| e.state == State::Acked && (plan.serve.len() as u64) < cap);
            match held {
                Some(e) => {
                    if let Some(g) = gap_start.take() {
                        plan.unavailable.push((g, s - 1));
                    }
                    plan.serve
                        .push((s, if e.in_mem { Place::Memory } else { Place::Disk }));
                }
                // Pending or in flight: it is coming anyway.
                None if self.entries.contains_key(&s) => {
                    if let Some(g) = gap_start.take() {
                        plan.unavailable.push((g, s - 1));
                    }
                }
                None => {
                    gap_start.get_or_insert(s);
                }
            }
            if s - from > 10 * cap {
                break;
            }
        }
        if let Some(g) = gap_start {
            plan.unavailable.push((g, to));
        }
        self.counters.replayed += plan.serve.len() as u64;
        plan
    }

    /// Feeds the flow controller (call every `flow.check_interval_ms`).
    pub fn tick(&mut self, signals_from_consumer: Option<Signals>, now_us: u64) -> FlowDecision {
        self.flow.record(signals_from_consumer, now_us);
        if self.in_outage(now_us) {
            return self.flow.hold();
        }
        let estimate = self.latency_estimate_us(now_us);
        self.flow.observe(estimate, now_us)
    }

    /// Checks the accounting invariants (used by tests; cheap enough for debug builds).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mem: u64 = self
            .entries
            .values()
            .filter(|e| e.in_mem)
            .map(|e| e.size)
            .sum();
        let loaded: u64 = self
            .entries
            .values()
            .filter(|e| e.loaded)
            .map(|e| e.size)
            .sum();
        let flight: u64 = self
            .entries
            .values()
            .filter(|e| e.state == State::InFlight)
            .map(|e| e.size)
            .sum();
        let pending: u64 = self.pending.iter().map(|s| self.entries[s].size).sum();
        if pending != self.pending_bytes {
            return Err(format!("pending bytes {pending} != {}", self.pending_bytes));
        }
        let flying = self
            .entries
            .values()
            .filter(|e| e.state == State::InFlight)
            .count();
        if flying != self.in_flight.len() {
            return Err(format!(
                "{flying} in flight, {} tracked",
                self.in_flight.len()
            ));
        }
        if mem != self.mem_queue || loaded != self.mem_loaded || flight != self.flight_bytes {
            return Err(format!(
                "accounting: mem {mem}/{} loaded {loaded}/{} flight {flight}/{}",
                self.mem_queue, self.mem_loaded, self.flight_bytes
            ));
        }
        if self.mem_queue > self.queue_cap {
            return Err(format!(
                "memory queue {} > cap {}",
                self.mem_queue, self.queue_cap
            ));
        }
        if self.mem_loaded > self.flight_max {
            return Err(format!(
                "loaded {} > reserve {}",
                self.mem_loaded, self.flight_max
            ));
        }
        for e in self.entries.values() {
            if !e.in_mem && !e.on_disk {
                return Err("an entry is nowhere".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(mem: u64, flight: u64, spill: bool, mode: FlowMode) -> Policy {
        let mut p = Policy::default();
        p.buffer.memory_bytes_max = mem;
        p.buffer.in_flight_bytes_max = flight;
        p.buffer.spill_dir = spill.then(|| "/nonexistent".into());
        p.flow.mode = mode;
        p.latency_bound_ms = 1_000_000;
        p.replay.window_items = 1_000;
        p.replay.window_bytes = u64::MAX;
        p
    }

    /// Tiers only: `reduce` with an empty chain never waits for congestion.
    fn tiers(mem: u64, flight: u64, spill: bool) -> Policy {
        policy(mem, flight, spill, FlowMode::Reduce)
    }

    fn accept(a: Admission) -> (u64, Place) {
        match a {
            Admission::Accept { seq, place, .. } => (seq, place),
            other => panic!("expected Accept, got {other:?}"),
        }
    }

    #[test]
    fn memory_then_disk_then_wait() {
        let mut c = ProducerCore::new(&tiers(4 << 20, 1 << 20, true));
        // queue cap 3 MiB: three 1 MiB items in memory.
        for i in 0..3 {
            assert_eq!(
                accept(c.admit(1 << 20, 0, 0, 0).unwrap()),
                (i, Place::Memory)
            );
        }
        // Disk room for one more.
        assert_eq!(
            accept(c.admit(1 << 20, 1 << 20, 0, 0).unwrap()),
            (3, Place::Disk)
        );
        assert_eq!(
            c.admit(1 << 20, 0, 0, 0).unwrap(),
            Admission::Wait(WaitReason::Full)
        );
        c.check_invariants().unwrap();
        // Dispatch in order; the disk one is read back into the reserve.
        assert_eq!(c.dispatch(1), Some((0, Place::Memory)));
        assert_eq!(c.dispatch(1), None, "window of 1 MiB is full");
        assert!(matches!(
            c.on_ack(0, 5),
            AckOutcome::Acked {
                release_memory: false,
                ..
            }
        ));
        assert_eq!(c.on_ack(0, 5), AckOutcome::Ignored);
        for s in 1..3 {
            assert_eq!(c.dispatch(6), Some((s, Place::Memory)));
            c.on_ack(s, 7);
        }
        assert_eq!(c.dispatch(8), Some((3, Place::Disk)));
        assert_eq!(c.memory_used(), 4 << 20);
        assert!(matches!(
            c.on_ack(3, 9),
            AckOutcome::Acked {
                release_memory: true,
                ..
            }
        ));
        c.check_invariants().unwrap();
        // Memory is full of history now: a new item moves the oldest to disk.
        match c.admit(1 << 20, 8 << 20, 0, 10).unwrap() {
            Admission::Accept {
                seq: 4,
                place: Place::Memory,
                evictions,
                ..
            } => assert_eq!(evictions.to_disk, vec![0]),
            other => panic!("{other:?}"),
        }
        // Without disk room, history is forgotten instead.
        match c.admit(1 << 20, 0, 0, 10).unwrap() {
            Admission::Accept {
                seq: 5, evictions, ..
            } => assert_eq!(evictions.dropped, vec![1]),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.counters().history_evicted, 1);
        c.check_invariants().unwrap();
    }

    #[test]
    fn an_outage_suspends_flow_control_but_not_the_caps() {
        let mut p = policy(4 << 20, 1 << 20, true, FlowMode::Backpressure);
        p.latency_bound_ms = 1000;
        let mut c = ProducerCore::new(&p);
        accept(c.admit(1000, 0, 0, 0).unwrap());
        c.dispatch(0);
        // 0.6 s later: congested (pending age ≥ bound/2 would block), not yet an outage.
        accept(c.admit(1000, 0, 0, 0).unwrap());
        assert_eq!(
            c.admit(1000, 0, 0, 600_000).unwrap(),
            Admission::Wait(WaitReason::Congested)
        );
        // 2 s without an acknowledgement: an outage; keep accepting up to the caps.
        assert!(c.in_outage(2_000_000));
        let mut full = false;
        for _ in 0..10_000 {
            let free = (1u64 << 20) - c.counters().spilled * 1020;
            match c.admit(1000, free, 20, 2_000_000).unwrap() {
                Admission::Accept { .. } => {}
                Admission::Wait(WaitReason::Full) => {
                    full = true;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(full, "the caps end the buffering");
        assert!(c.memory_used() <= 4 << 20);
        assert!(c.counters().spilled > 0);
        c.on_ack(0, 2_100_000);
        assert!(!c.in_outage(2_100_000));
    }

    #[test]
    fn a_consumer_backlog_is_congestion_and_a_caught_up_consumer_is_not() {
        let mut p = policy(64 << 20, 1 << 20, false, FlowMode::Backpressure);
        p.latency_bound_ms = 1000;
        let mut c = ProducerCore::new(&p);
        for t in 0..100 {
            accept(c.admit(100, 0, 0, t).unwrap());
            c.dispatch(t);
            c.on_ack(t, t);
        }
        // The consumer has read 50 of 100 at 10 items/s: 5 s behind.
        let behind = Signals {
            latency_us: 0,
            next_seq: 50,
            rate_hz: 10.0,
        };
        c.tick(Some(behind), 1_000);
        assert_eq!(c.consumer_backlog_us(1_000), 5_000_000);
        assert_eq!(
            c.admit(100, 0, 0, 1_000).unwrap(),
            Admission::Wait(WaitReason::Congested)
        );
        // Caught up: its old latency figure does not matter.
        let caught_up = Signals {
            latency_us: 9_000_000,
            next_seq: 100,
            rate_hz: 10.0,
        };
        c.tick(Some(caught_up), 2_000);
        assert_eq!(c.consumer_backlog_us(2_000), 0);
        accept(c.admit(100, 0, 0, 2_000).unwrap());
        // A report goes stale.
        c.tick(Some(behind), 3_000);
        assert_eq!(c.consumer_backlog_us(10_000_000), 0);
    }

    #[test]
    fn a_burst_is_judged_by_the_bytes_queued_not_the_oldest_age() {
        let mut p = policy(64 << 20, 1 << 20, false, FlowMode::Backpressure);
        p.latency_bound_ms = 1000;
        let mut c = ProducerCore::new(&p);
        // Measure: 100 KB acknowledged per 0.5 s = 200 KB/s.
        let mut t = 0;
        for _ in 0..3 {
            for _ in 0..10 {
                accept(c.admit(10_000, 0, 0, t).unwrap());
                let (s, _) = c.dispatch(t).unwrap();
                c.on_ack(s, t + 1);
            }
            t += 500_000;
        }
        let rate = c.flow().ack_bytes_rate();
        assert!((150_000.0..=250_000.0).contains(&rate), "{rate}");
        // A burst all admitted at once: its items are young, but ~100 KB
        // queued at ~200 KB/s is a 0.5 s wait — the bound's half: stop there
        // (judged by age alone, all 6000 that fit in memory would pass).
        let mut admitted = 0;
        while let Admission::Accept { .. } = c.admit(10_000, 0, 0, t).unwrap() {
            admitted += 1;
            assert!(admitted < 100, "a burst must not be admitted without limit");
        }
        assert!((5..=20).contains(&admitted), "{admitted}");
        assert!(c.queue_wait_us(t) > 500_000);
    }

    #[test]
    fn before_any_rate_is_measured_a_burst_stops_at_one_window() {
        let mut p = policy(64 << 20, 1 << 20, false, FlowMode::Backpressure);
        p.latency_bound_ms = 1000;
        let mut c = ProducerCore::new(&p);
        let mut n = 0;
        while let Admission::Accept { .. } = c.admit(100_000, 0, 0, 0).unwrap() {
            n += 1;
        }
        // 1 MiB of 100 kB items, then wait (the memory tier could take 600).
        assert_eq!(n, 11);
    }

    #[test]
    fn failed_dispatch_goes_back_in_order() {
        let mut c = ProducerCore::new(&tiers(8 << 20, 2 << 20, false));
        for _ in 0..3 {
            accept(c.admit(1000, 0, 0, 0).unwrap());
        }
        assert_eq!(c.dispatch(0).unwrap().0, 0);
        assert_eq!(c.dispatch(0).unwrap().0, 1);
        assert!(c.on_failed(0));
        assert!(!c.on_failed(0));
        assert_eq!(c.dispatch(0).unwrap().0, 0, "the failed item goes first");
        assert_eq!(c.dispatch(0).unwrap().0, 2);
        c.check_invariants().unwrap();
    }

    #[test]
    fn too_large_is_an_error_naming_the_limit() {
        let mut c = ProducerCore::new(&policy(4 << 20, 1 << 20, false, FlowMode::Backpressure));
        let e = c.admit(2 << 20, 0, 0, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "item of 2097152 bytes exceeds buffer.in_flight_bytes_max 1048576"
        );
    }

    #[test]
    fn shed_when_full_is_counted_and_marked_on_the_next_item() {
        let mut c = ProducerCore::new(&policy(2 << 20, 1 << 20, false, FlowMode::Shed));
        accept(c.admit(1 << 20, 0, 0, 0).unwrap());
        assert_eq!(
            c.admit(1 << 20, 0, 0, 0).unwrap(),
            Admission::Shed { seq: 1 }
        );
        assert_eq!(c.dispatch(0).unwrap().0, 0);
        c.on_ack(0, 1);
        // History may be dropped for new data.
        match c.admit(1 << 20, 0, 0, 2).unwrap() {
            Admission::Accept {
                seq: 2,
                shed_before: 1,
                reduced_before: 0,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(c.counters().shed, 1);
    }

    #[test]
    fn replay_serves_history_and_names_what_is_gone() {
        let mut p = tiers(64 << 20, 1 << 20, false);
        p.replay.window_items = 5;
        let mut c = ProducerCore::new(&p);
        for t in 0..10 {
            accept(c.admit(100, 0, 0, t).unwrap());
            c.dispatch(t);
            c.on_ack(t, t);
        }
        assert_eq!(c.history_len(), 5);
        let plan = c.replay(2, 12);
        assert_eq!(plan.unavailable, vec![(2, 4)]);
        assert_eq!(
            plan.serve.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![5, 6, 7, 8, 9]
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Admit(u64),
        Dispatch,
        Ack(usize),
        Fail(usize),
        Replay(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u64..300_000).prop_map(Op::Admit),
            3 => Just(Op::Dispatch),
            3 => (0usize..8).prop_map(Op::Ack),
            1 => (0usize..8).prop_map(Op::Fail),
            1 => (0u64..100, 0u64..20).prop_map(|(a, n)| Op::Replay(a, a + n)),
        ]
    }

    proptest! {
        /// Caps hold; dispatch is in sequence order except for resends;
        /// nothing accepted is ever dropped before its acknowledgement; an
        /// item acknowledged and still in the window is served by replay.
        #[test]
        fn caps_order_and_no_loss(
            ops in proptest::collection::vec(op(), 1..300),
            spill in any::<bool>(),
            mode in prop_oneof![Just(FlowMode::Backpressure), Just(FlowMode::Shed)],
        ) {
            let p = policy(2 << 20, 512 << 10, spill, mode);
            let mut c = ProducerCore::new(&p);
            let spill_cap: u64 = 3 << 20;
            let mut disk: BTreeMap<u64, u64> = BTreeMap::new();
            let mut accepted = BTreeSet::new();
            let mut sizes: BTreeMap<u64, u64> = BTreeMap::new();
            let mut flight: Vec<u64> = Vec::new();
            let mut acked = BTreeSet::new();
            let mut forgotten = BTreeSet::new();
            let mut last_dispatched: Option<u64> = None;
            let mut now = 0;
            for op in ops {
                now += 10;
                match op {
                    Op::Admit(size) => {
                        let used: u64 = disk.values().sum();
                        let free = if spill { spill_cap - used } else { 0 };
                        match c.admit(size, free, 20, now).unwrap() {
                            Admission::Accept { seq, place, evictions, .. } => {
                                for v in evictions.to_disk {
                                    prop_assert!(acked.contains(&v), "only history is evicted");
                                    disk.insert(v, sizes[&v] + 20);
                                }
                                for v in evictions.dropped {
                                    prop_assert!(acked.contains(&v), "only history is dropped");
                                    forgotten.insert(v);
                                    disk.remove(&v);
                                }
                                if place == Place::Disk {
                                    disk.insert(seq, size + 20);
                                }
                                accepted.insert(seq);
                                sizes.insert(seq, size);
                            }
                            Admission::Wait(_) | Admission::Shed { .. } | Admission::Decimated { .. } => {}
                        }
                    }
                    Op::Dispatch => {
                        if let Some((s, _)) = c.dispatch(now) {
                            prop_assert!(accepted.contains(&s) && !acked.contains(&s));
                            if let Some(l) = last_dispatched {
                                // In order, unless an earlier one failed and is resent.
                                prop_assert!(s > l || c.counters().resent > 0);
                            }
                            last_dispatched = Some(s);
                            flight.push(s);
                        }
                    }
                    Op::Ack(i) if !flight.is_empty() => {
                        let s = flight.remove(i % flight.len());
                        if let AckOutcome::Acked { retired, .. } = c.on_ack(s, now) {
                            acked.insert(s);
                            for r in retired {
                                forgotten.insert(r);
                                disk.remove(&r);
                            }
                        }
                    }
                    Op::Fail(i) if !flight.is_empty() => {
                        let s = flight.remove(i % flight.len());
                        prop_assert!(c.on_failed(s));
                    }
                    Op::Replay(a, b) => {
                        let plan = c.replay(a, b);
                        for (s, _) in plan.serve {
                            prop_assert!(acked.contains(&s) && !forgotten.contains(&s));
                        }
                    }
                    _ => {}
                }
                c.check_invariants().map_err(TestCaseError::fail)?;
                prop_assert!(c.memory_used() <= 2 << 20);
                prop_assert!(disk.values().sum::<u64>() <= spill_cap);
                // No accepted item is lost: each is unacked (held) or acked.
                for s in &accepted {
                    prop_assert!(acked.contains(s) || c.entries.contains_key(s), "item {} lost before ack", s);
                    prop_assert!(!(acked.contains(s) && forgotten.contains(s) && c.entries.contains_key(s)));
                }
            }
        }
    }
}
