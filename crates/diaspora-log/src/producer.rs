//! Idempotent producer state: the pure decision of whether a batch from an
//! idempotent producer is new, a retry of something already appended, or out
//! of order.

use std::collections::{HashMap, VecDeque};

/// How many recent batches per producer keep their offsets, so a retry of
/// any of them is answered with the original offsets.
pub const PRODUCER_BATCHES_RETAINED: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchIds {
    base_sequence: u64,
    last_sequence: u64,
    base_offset: u64,
    last_offset: u64,
}

#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    last_sequence: u64,
    last_offset: u64,
    recent: VecDeque<BatchIds>,
}

/// The verdict on an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Not seen before: append it.
    Append,
    /// Exactly a retained earlier batch: answer with its offsets.
    Duplicate { base_offset: u64, last_offset: u64 },
    /// Already covered, but the original batch is no longer retained.
    DuplicateUnknown { last_sequence: u64 },
    /// A gap or a partial overlap: `expected` is the next sequence.
    OutOfOrder { expected: u64 },
}

/// Per-producer sequence state for one log.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProducerTable {
    producers: HashMap<u64, ProducerEntry>,
}

impl ProducerTable {
    pub(crate) fn check(
        &self,
        producer_id: u64,
        base_sequence: u64,
        last_sequence: u64,
    ) -> SequenceCheck {
        let Some(p) = self.producers.get(&producer_id) else {
            return SequenceCheck::Append;
        };
        let expected = p.last_sequence.saturating_add(1);
        if base_sequence == expected && p.last_sequence != u64::MAX {
            return SequenceCheck::Append;
        }
        if last_sequence <= p.last_sequence {
            return match p
                .recent
                .iter()
                .find(|b| b.base_sequence == base_sequence && b.last_sequence == last_sequence)
            {
                Some(b) => SequenceCheck::Duplicate {
                    base_offset: b.base_offset,
                    last_offset: b.last_offset,
                },
                None => SequenceCheck::DuplicateUnknown {
                    last_sequence: p.last_sequence,
                },
            };
        }
        SequenceCheck::OutOfOrder { expected }
    }

    /// Records an appended (or recovered) batch.
    pub(crate) fn record(
        &mut self,
        producer_id: u64,
        base_sequence: u64,
        last_sequence: u64,
        base_offset: u64,
        last_offset: u64,
    ) {
        let p = self.producers.entry(producer_id).or_default();
        p.last_sequence = last_sequence;
        p.last_offset = last_offset;
        if p.recent.len() == PRODUCER_BATCHES_RETAINED {
            p.recent.pop_front();
        }
        p.recent.push_back(BatchIds {
            base_sequence,
            last_sequence,
            base_offset,
            last_offset,
        });
    }

    /// `(last_sequence, last_offset)` of a producer.
    pub(crate) fn get(&self, producer_id: u64) -> Option<(u64, u64)> {
        self.producers
            .get(&producer_id)
            .map(|p| (p.last_sequence, p.last_offset))
    }

    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_rules() {
        let mut t = ProducerTable::default();
        assert_eq!(
            t.check(1, 50, 59),
            SequenceCheck::Append,
            "new producer starts anywhere"
        );
        t.record(1, 50, 59, 0, 9);
        assert_eq!(t.check(1, 60, 60), SequenceCheck::Append);
        assert_eq!(
            t.check(1, 50, 59),
            SequenceCheck::Duplicate {
                base_offset: 0,
                last_offset: 9
            }
        );
        assert_eq!(
            t.check(1, 55, 59),
            SequenceCheck::DuplicateUnknown { last_sequence: 59 }
        );
        assert_eq!(
            t.check(1, 61, 61),
            SequenceCheck::OutOfOrder { expected: 60 }
        );
        assert_eq!(
            t.check(1, 58, 62),
            SequenceCheck::OutOfOrder { expected: 60 }
        );
        assert_eq!(t.get(1), Some((59, 9)));
    }

    #[test]
    fn only_recent_batches_keep_offsets() {
        let mut t = ProducerTable::default();
        for i in 0..20u64 {
            t.record(3, i, i, 100 + i, 100 + i);
        }
        assert_eq!(
            t.check(3, 19, 19),
            SequenceCheck::Duplicate {
                base_offset: 119,
                last_offset: 119
            }
        );
        assert_eq!(
            t.check(3, 12, 12),
            SequenceCheck::Duplicate {
                base_offset: 112,
                last_offset: 112
            }
        );
        assert_eq!(
            t.check(3, 11, 11),
            SequenceCheck::DuplicateUnknown { last_sequence: 19 }
        );
        assert_eq!(t.len(), 1);
    }
}
