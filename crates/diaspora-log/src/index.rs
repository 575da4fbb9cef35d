//! The sparse segment index: one entry every `index_interval_bytes` of
//! segment data, mapping a relative offset to a byte position and carrying
//! the largest timestamp of all batches *before* that position.
//!
//! On disk an index file is a plain array of 16-byte little-endian entries
//! `(relative_offset u32, position u32, max_timestamp_before_us i64)`. It is
//! derived data: it is rebuilt from a header scan whenever it is missing or
//! does not match the segment.

/// Bytes per index entry on disk.
pub const INDEX_ENTRY_BYTES: usize = 16;

/// One sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Base offset of the indexed batch minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the indexed batch in the segment.
    pub position: u32,
    /// Largest `max_timestamp_us` of all batches before `position`
    /// (`i64::MIN` if none), so timestamp lookups can skip them.
    pub max_timestamp_before_us: i64,
}

/// Decides where index entries go as batches are appended or scanned.
/// Deterministic in the batch positions, so a rebuilt index is byte-identical
/// to the one written while appending.
#[derive(Debug, Clone)]
pub(crate) struct IndexBuilder {
    interval_bytes: u64,
    last_indexed_position: u64,
    running_max_timestamp_us: i64,
}

impl IndexBuilder {
    pub(crate) fn new(interval_bytes: u32) -> Self {
        Self {
            interval_bytes: u64::from(interval_bytes),
            last_indexed_position: 0,
            running_max_timestamp_us: i64::MIN,
        }
    }

    /// Observes the batch at `position` and returns the entry to add, if any.
    /// Position 0 is implicitly indexed.
    pub(crate) fn observe(
        &mut self,
        relative_offset: u64,
        position: u64,
        max_timestamp_us: i64,
    ) -> Option<IndexEntry> {
        let before = self.running_max_timestamp_us;
        self.running_max_timestamp_us = before.max(max_timestamp_us);
        if position == 0 || position - self.last_indexed_position < self.interval_bytes {
            return None;
        }
        // Positions or offsets that do not fit are simply not indexed; lookups
        // then scan further from an earlier entry, which stays correct.
        let relative_offset = u32::try_from(relative_offset).ok()?;
        let position_u32 = u32::try_from(position).ok()?;
        self.last_indexed_position = position;
        Some(IndexEntry {
            relative_offset,
            position: position_u32,
            max_timestamp_before_us: before,
        })
    }
}

/// Serialises entries in the on-disk format.
pub(crate) fn encode(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * INDEX_ENTRY_BYTES);
    for e in entries {
        out.extend_from_slice(&e.relative_offset.to_le_bytes());
        out.extend_from_slice(&e.position.to_le_bytes());
        out.extend_from_slice(&e.max_timestamp_before_us.to_le_bytes());
    }
    out
}

/// Position of the last indexed batch whose relative offset is at most
/// `relative_offset`, with that batch's relative offset (0, 0 if none).
pub(crate) fn lookup_offset(entries: &[IndexEntry], relative_offset: u64) -> (u64, u64) {
    let i = entries.partition_point(|e| u64::from(e.relative_offset) <= relative_offset);
    match i.checked_sub(1).map(|i| entries[i]) {
        Some(e) => (u64::from(e.position), u64::from(e.relative_offset)),
        None => (0, 0),
    }
}

/// Position (and relative offset) from which to scan for the first batch
/// whose max timestamp is at least `timestamp_us`.
pub(crate) fn lookup_timestamp(entries: &[IndexEntry], timestamp_us: i64) -> (u64, u64) {
    let i = entries.partition_point(|e| e.max_timestamp_before_us < timestamp_us);
    match i.checked_sub(1).map(|i| entries[i]) {
        Some(e) => (u64::from(e.position), u64::from(e.relative_offset)),
        None => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_every_interval() {
        let mut b = IndexBuilder::new(100);
        let mut entries = Vec::new();
        // batches of 40 bytes, 2 records each, timestamps rising.
        for i in 0..10u64 {
            if let Some(e) = b.observe(i * 2, i * 40, i as i64 * 10) {
                entries.push(e);
            }
        }
        let positions: Vec<u32> = entries.iter().map(|e| e.position).collect();
        assert_eq!(positions, vec![120, 240, 360]);
        assert_eq!(entries[0].max_timestamp_before_us, 20);
        assert_eq!(encode(&entries).len(), 3 * INDEX_ENTRY_BYTES);
        assert_eq!(lookup_offset(&entries, 0), (0, 0));
        assert_eq!(lookup_offset(&entries, 7), (120, 6));
        assert_eq!(lookup_offset(&entries, 100), (360, 18));
        assert_eq!(lookup_timestamp(&entries, 20), (0, 0));
        assert_eq!(lookup_timestamp(&entries, 21), (120, 6));
        assert_eq!(lookup_timestamp(&entries, 1000), (360, 18));
    }

    #[test]
    fn zero_interval_indexes_every_batch() {
        let mut b = IndexBuilder::new(0);
        assert!(b.observe(0, 0, 0).is_none());
        assert!(b.observe(1, 10, 0).is_some());
        assert!(b.observe(2, 20, 0).is_some());
    }
}
