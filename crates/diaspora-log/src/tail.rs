//! The newest batches of a log, kept in memory so that a consumer reading at
//! the head is served without a `pread` (and without zeroing a buffer for it
//! or checking the CRCs a second time: a batch is checked once, on append).
//!
//! A [`TailBudget`] bounds the bytes held by every log that shares it (one
//! per node) and by each log alone. A log's tail is always a contiguous run
//! of batches ending at the newest append: a batch that cannot be held
//! empties the tail, so a read never skips a batch that only the file has.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// Bytes all logs sharing a budget may hold in memory, and each one alone.
#[derive(Debug)]
pub struct TailBudget {
    total: u64,
    per_log: u64,
    used: AtomicU64,
}

impl TailBudget {
    /// A budget of `total` bytes over all logs that share it, at most
    /// `per_log` of them in any one log.
    pub fn new(total: u64, per_log: u64) -> Self {
        Self {
            total,
            per_log: per_log.min(total),
            used: AtomicU64::new(0),
        }
    }

    /// Bytes held now by all logs sharing this budget.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    fn try_reserve(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&after| after <= self.total)
            })
            .is_ok()
    }

    fn release(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One batch held: its offsets and its bytes, base offset already stamped.
#[derive(Debug)]
struct Held {
    base_offset: u64,
    last_offset: u64,
    bytes: Bytes,
}

/// The newest batches of one log.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    batches: VecDeque<Held>,
    bytes: u64,
}

impl Tail {
    /// Holds the batch just appended at `base_offset..=last_offset`, evicting
    /// the oldest to stay within `budget`. A batch that does not fit even
    /// alone empties the tail instead (the tail must stay contiguous).
    pub(crate) fn push(
        &mut self,
        budget: &TailBudget,
        base_offset: u64,
        last_offset: u64,
        bytes: Bytes,
    ) {
        let n = bytes.len() as u64;
        if self
            .batches
            .back()
            .is_some_and(|b| b.last_offset.checked_add(1) != Some(base_offset))
        {
            self.clear(budget);
        }
        if n > budget.per_log {
            self.clear(budget);
            return;
        }
        while self.bytes + n > budget.per_log {
            self.pop_front(budget);
        }
        while !budget.try_reserve(n) {
            if !self.pop_front(budget) {
                // Other logs hold the whole budget: this one falls back to the file.
                return;
            }
        }
        self.bytes += n;
        self.batches.push_back(Held {
            base_offset,
            last_offset,
            bytes,
        });
    }

    /// Forgets every batch (a batch was appended that is not held here).
    pub(crate) fn clear(&mut self, budget: &TailBudget) {
        budget.release(self.bytes);
        self.bytes = 0;
        self.batches.clear();
    }

    fn pop_front(&mut self, budget: &TailBudget) -> bool {
        let Some(b) = self.batches.pop_front() else {
            return false;
        };
        let n = b.bytes.len() as u64;
        self.bytes -= n;
        budget.release(n);
        true
    }

    /// The batches from the one holding `from_offset` on, below
    /// `next_offset`, within `max_bytes` (the first batch always, like a read
    /// of the file), or `None` when `from_offset` is older than the tail.
    pub(crate) fn read(
        &self,
        from_offset: u64,
        next_offset: u64,
        max_bytes: u64,
    ) -> Option<Vec<Bytes>> {
        let front = self.batches.front()?;
        if from_offset < front.base_offset {
            return None;
        }
        let start = self
            .batches
            .partition_point(|b| b.last_offset < from_offset);
        let mut out = Vec::new();
        let mut budget = max_bytes;
        for b in self.batches.range(start..) {
            if b.base_offset >= next_offset {
                break;
            }
            let n = b.bytes.len() as u64;
            if !out.is_empty() && n > budget {
                break;
            }
            budget = budget.saturating_sub(n);
            out.push(b.bytes.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn reads_from_the_batch_holding_the_offset_within_the_byte_budget() {
        let budget = TailBudget::new(1000, 1000);
        let mut t = Tail::default();
        t.push(&budget, 0, 9, batch(100));
        t.push(&budget, 10, 19, batch(100));
        t.push(&budget, 20, 29, batch(100));
        assert_eq!(t.read(15, 30, 1000).unwrap().len(), 2);
        assert_eq!(t.read(0, 30, 150).unwrap().len(), 1);
        assert_eq!(
            t.read(0, 30, 10).unwrap().len(),
            1,
            "the first batch always"
        );
        assert_eq!(
            t.read(0, 20, 1000).unwrap().len(),
            2,
            "never past next_offset"
        );
        assert!(t.read(30, 30, 1000).unwrap().is_empty());
        assert_eq!(budget.used(), 300);
    }

    #[test]
    fn evicts_the_oldest_to_stay_within_the_log_s_share() {
        let budget = TailBudget::new(1000, 250);
        let mut t = Tail::default();
        for i in 0..5u64 {
            t.push(&budget, i * 10, i * 10 + 9, batch(100));
        }
        assert_eq!(budget.used(), 200);
        assert!(t.read(25, 50, 1000).is_none(), "evicted: read the file");
        assert_eq!(t.read(30, 50, 1000).unwrap().len(), 2);
    }

    #[test]
    fn a_batch_too_large_or_a_gap_empties_the_tail() {
        let budget = TailBudget::new(1000, 250);
        let mut t = Tail::default();
        t.push(&budget, 0, 0, batch(100));
        t.push(&budget, 1, 1, batch(300));
        assert!(t.read(0, 2, 1000).is_none());
        assert_eq!(budget.used(), 0);
        t.push(&budget, 2, 2, batch(100));
        t.push(&budget, 5, 5, batch(100));
        assert!(
            t.read(2, 6, 1000).is_none(),
            "3..=4 missing: the tail restarts at 5"
        );
        assert_eq!(t.read(5, 6, 1000).unwrap().len(), 1);
        assert_eq!(budget.used(), 100);
    }

    #[test]
    fn logs_sharing_a_budget_never_exceed_it() {
        let budget = TailBudget::new(300, 300);
        let (mut a, mut b) = (Tail::default(), Tail::default());
        for i in 0..3 {
            a.push(&budget, i, i, batch(100));
        }
        b.push(&budget, 0, 0, batch(100));
        assert_eq!(budget.used(), 300);
        assert!(
            b.read(0, 1, 1000).is_none(),
            "a holds the whole budget: b reads its file"
        );
        a.clear(&budget);
        b.push(&budget, 1, 1, batch(100));
        b.push(&budget, 2, 2, batch(100));
        assert_eq!(b.read(1, 3, 1000).unwrap().len(), 2);
        a.push(&budget, 3, 3, batch(100));
        a.push(&budget, 4, 4, batch(100));
        assert_eq!(
            budget.used(),
            300,
            "a evicted its own oldest: {}",
            budget.used()
        );
        assert!(a.read(3, 5, 1000).is_none());
        assert_eq!(a.read(4, 5, 1000).unwrap().len(), 1);
        b.clear(&budget);
        a.clear(&budget);
        assert_eq!(budget.used(), 0);
    }
}
