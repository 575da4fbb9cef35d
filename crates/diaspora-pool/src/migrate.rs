//! Live migration of a task's state by pre-copy (the pure core and the wire
//! format; the fabric shell is [`crate::fabric::migrate_send`] /
//! [`crate::fabric::migrate_receive`]).
//!
//! A [`Migratable`] state is a sequence of chunks that knows which of them
//! changed since it was last asked. Migration copies every chunk while the
//! task keeps running (round 0), then, round after round, the chunks
//! dirtied meanwhile, until what is left is small enough — or stops
//! shrinking, or the round limit is reached ([`PreCopyPolicy`]) — and then
//! pauses the task for a short stop-and-copy of the last dirty chunks. The
//! target applies every round in order, so when the final round lands its
//! state equals the source's at the pause.
//!
//! Wire format of one round (one fabric item, limits checked on read):
//!
//! ```text
//! magic "DMIG" | version u8 = 1 | final u8 (0/1) | round u32 | total_chunks u32
//! | count u32 | count × (index u32, len u32) | the chunks' bytes, in order
//! ```
//! (integers little-endian).

use std::time::Duration;

/// A state that can be migrated chunk by chunk.
pub trait Migratable {
    /// How many chunks the state has (fixed during a migration).
    fn chunk_count(&self) -> usize;
    /// Chunk `i`'s bytes.
    fn chunk(&self, i: usize) -> &[u8];
    /// The chunks changed since the last call (each once), and forgets them.
    fn take_dirty(&mut self) -> Vec<usize>;
    /// Overwrites chunk `i` (on the target).
    fn apply_chunk(&mut self, i: usize, bytes: &[u8]) -> Result<(), MigrateError>;
}

/// A byte state in fixed-size pages with a dirty bit per page: the usual
/// [`Migratable`] for a task whose state is one large buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagedState {
    bytes: Vec<u8>,
    page: usize,
    dirty: Vec<bool>,
}

impl PagedState {
    /// `len` zero bytes in pages of `page` bytes (≥ 1).
    pub fn new(len: usize, page: usize) -> PagedState {
        let page = page.max(1);
        PagedState {
            bytes: vec![0; len],
            page,
            dirty: vec![false; len.div_ceil(page)],
        }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Writes `data` at `offset` (clipped to the state), marking pages dirty.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        if offset >= self.bytes.len() {
            return;
        }
        let end = (offset + data.len()).min(self.bytes.len());
        self.bytes[offset..end].copy_from_slice(&data[..end - offset]);
        for p in offset / self.page..=(end.saturating_sub(1)) / self.page {
            self.dirty[p] = true;
        }
    }

    /// A CRC32C of the whole state.
    pub fn checksum(&self) -> u32 {
        crc32c_of(&self.bytes)
    }
}

fn crc32c_of(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}

impl Migratable for PagedState {
    fn chunk_count(&self) -> usize {
        self.dirty.len()
    }

    fn chunk(&self, i: usize) -> &[u8] {
        let start = i * self.page;
        &self.bytes[start..(start + self.page).min(self.bytes.len())]
    }

    fn take_dirty(&mut self) -> Vec<usize> {
        let out: Vec<usize> = (0..self.dirty.len()).filter(|&i| self.dirty[i]).collect();
        self.dirty.iter_mut().for_each(|d| *d = false);
        out
    }

    fn apply_chunk(&mut self, i: usize, bytes: &[u8]) -> Result<(), MigrateError> {
        let start = i
            .checked_mul(self.page)
            .filter(|s| *s < self.bytes.len())
            .ok_or_else(|| MigrateError::Bad(format!("chunk {i} outside the state")))?;
        let end = (start + self.page).min(self.bytes.len());
        if bytes.len() != end - start {
            return Err(MigrateError::Bad(format!(
                "chunk {i} has {} bytes, expected {}",
                bytes.len(),
                end - start
            )));
        }
        self.bytes[start..end].copy_from_slice(bytes);
        Ok(())
    }
}

/// When pre-copy stops and the stop-and-copy begins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreCopyPolicy {
    /// Switch over once a round would move at most this many bytes.
    pub switch_bytes: usize,
    /// Most pre-copy rounds (round 0, the full copy, included).
    pub max_rounds: u32,
    /// Switch over when a round's dirty bytes are above this fraction of
    /// the previous round's (the task dirties as fast as we copy).
    pub min_shrink: f64,
}

impl Default for PreCopyPolicy {
    fn default() -> Self {
        PreCopyPolicy {
            switch_bytes: 256 << 10,
            max_rounds: 30,
            min_shrink: 0.9,
        }
    }
}

impl PreCopyPolicy {
    /// After round `round` moved `prev` bytes, with `dirty` bytes dirty now:
    /// whether to stop the task and copy the rest.
    pub fn switch_over(&self, round: u32, prev: usize, dirty: usize) -> bool {
        dirty <= self.switch_bytes
            || round + 1 >= self.max_rounds
            || (round > 0 && dirty as f64 > self.min_shrink * prev as f64)
    }
}

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MigrationReport {
    /// Rounds, the stop-and-copy included.
    pub rounds: u32,
    /// Bytes of chunks moved in all rounds.
    pub bytes: u64,
    /// Bytes of the state.
    pub state_bytes: u64,
    /// Chunks moved per round.
    pub chunks_per_round: Vec<u32>,
    /// How long the task was paused (stop-and-copy until the target had
    /// applied the last round).
    #[serde(with = "ms")]
    pub pause: Duration,
    /// The whole migration.
    #[serde(with = "ms")]
    pub total: Duration,
}

mod ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<std::time::Duration, D::Error> {
        let ms = <f64 as serde::Deserialize>::deserialize(d)?;
        if !(ms.is_finite() && (0.0..1e15).contains(&ms)) {
            return Err(serde::de::Error::custom(format!(
                "{ms} is not a duration in ms"
            )));
        }
        Ok(std::time::Duration::from_secs_f64(ms / 1000.0))
    }
}

/// A migration failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A malformed round, or one that does not fit the state.
    #[error("migration: {0}")]
    Bad(String),
    /// Over a limit.
    #[error("migration: {0}")]
    Limit(String),
    /// The transport failed.
    #[error("migration: {0}")]
    Transport(String),
}

/// Largest encoded round, bytes.
pub const ROUND_MAX_BYTES: usize = 64 << 20;
/// Most chunks in one state.
pub const CHUNKS_MAX: u32 = 1 << 24;

/// One decoded round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// Round number (0 = the full copy).
    pub round: u32,
    /// The stop-and-copy round.
    pub last: bool,
    /// Chunks the state has.
    pub total_chunks: u32,
    /// (index, bytes).
    pub chunks: Vec<(u32, Vec<u8>)>,
}

/// Encodes round `round` with `chunks` of `state`; splits nothing (the
/// caller keeps a round under [`ROUND_MAX_BYTES`] with [`split_indices`]).
pub fn encode_round(state: &dyn Migratable, round: u32, last: bool, chunks: &[usize]) -> Vec<u8> {
    let data: usize = chunks.iter().map(|&i| state.chunk(i).len()).sum();
    let mut out = Vec::with_capacity(18 + 8 * chunks.len() + data);
    out.extend_from_slice(b"DMIG");
    out.push(1);
    out.push(u8::from(last));
    out.extend_from_slice(&round.to_le_bytes());
    out.extend_from_slice(&(state.chunk_count() as u32).to_le_bytes());
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for &i in chunks {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&(state.chunk(i).len() as u32).to_le_bytes());
    }
    for &i in chunks {
        out.extend_from_slice(state.chunk(i));
    }
    out
}

/// Splits `chunks` into groups whose encoded rounds stay under `max` bytes.
pub fn split_indices(state: &dyn Migratable, chunks: &[usize], max: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 18;
    for &i in chunks {
        let add = 8 + state.chunk(i).len();
        if size + add > max && !out.last().expect("one").is_empty() {
            out.push(Vec::new());
            size = 18;
        }
        out.last_mut().expect("one").push(i);
        size += add;
    }
    out
}

/// Decodes one round, checking every length against the limits.
pub fn decode_round(b: &[u8]) -> Result<Round, MigrateError> {
    let bad = |m: &str| MigrateError::Bad(m.to_string());
    if b.len() > ROUND_MAX_BYTES {
        return Err(MigrateError::Limit(format!(
            "round of {} bytes, over {ROUND_MAX_BYTES}",
            b.len()
        )));
    }
    if b.len() < 18 || &b[..4] != b"DMIG" {
        return Err(bad("not a migration round (no DMIG header)"));
    }
    if b[4] != 1 {
        return Err(MigrateError::Bad(format!("unknown round version {}", b[4])));
    }
    let last = match b[5] {
        0 => false,
        1 => true,
        x => return Err(MigrateError::Bad(format!("bad final flag {x}"))),
    };
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let round = u32_at(6);
    let total_chunks = u32_at(10);
    let count = u32_at(14);
    if total_chunks > CHUNKS_MAX || count > total_chunks {
        return Err(MigrateError::Bad(format!(
            "{count} chunks of {total_chunks} (at most {CHUNKS_MAX})"
        )));
    }
    let table_end = 18usize
        .checked_add(8 * count as usize)
        .filter(|e| *e <= b.len())
        .ok_or_else(|| bad("chunk table runs past the end"))?;
    let mut at = table_end;
    let mut chunks = Vec::with_capacity(count as usize);
    for k in 0..count as usize {
        let idx = u32_at(18 + 8 * k);
        let len = u32_at(22 + 8 * k) as usize;
        if idx >= total_chunks {
            return Err(MigrateError::Bad(format!(
                "chunk {idx} outside {total_chunks} chunks"
            )));
        }
        let end = at
            .checked_add(len)
            .filter(|e| *e <= b.len())
            .ok_or_else(|| bad("chunk data runs past the end"))?;
        chunks.push((idx, b[at..end].to_vec()));
        at = end;
    }
    if at != b.len() {
        return Err(MigrateError::Bad(format!(
            "{} bytes after the last chunk",
            b.len() - at
        )));
    }
    Ok(Round {
        round,
        last,
        total_chunks,
        chunks,
    })
}

/// Applies a decoded round to the target state.
pub fn apply_round(target: &mut dyn Migratable, r: &Round) -> Result<(), MigrateError> {
    if r.total_chunks as usize != target.chunk_count() {
        return Err(MigrateError::Bad(format!(
            "round for {} chunks, target has {}",
            r.total_chunks,
            target.chunk_count()
        )));
    }
    for (i, bytes) in &r.chunks {
        target.apply_chunk(*i as usize, bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rounds_round_trip_and_rebuild_the_state() {
        let mut a = PagedState::new(10_000, 1024);
        a.write(0, &[1; 3000]);
        a.write(9_990, &[9; 100]); // clipped at the end
        let all: Vec<usize> = (0..a.chunk_count()).collect();
        a.take_dirty();
        let mut b = PagedState::new(10_000, 1024);
        let r0 = decode_round(&encode_round(&a, 0, false, &all)).unwrap();
        apply_round(&mut b, &r0).unwrap();
        a.write(5_000, b"changed");
        let dirty = a.take_dirty();
        assert_eq!(dirty, [4]);
        let r1 = decode_round(&encode_round(&a, 1, true, &dirty)).unwrap();
        assert!(r1.last);
        apply_round(&mut b, &r1).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.checksum(), b.checksum());
    }

    #[test]
    fn the_policy_switches_when_small_stuck_or_late() {
        let p = PreCopyPolicy {
            switch_bytes: 100,
            max_rounds: 5,
            min_shrink: 0.9,
        };
        assert!(!p.switch_over(0, 10_000, 5_000));
        assert!(p.switch_over(1, 5_000, 80), "small enough");
        assert!(p.switch_over(1, 5_000, 4_800), "not shrinking");
        assert!(p.switch_over(4, 5_000, 1_000), "round limit");
    }

    #[test]
    fn bad_rounds_are_refused_by_name() {
        let a = PagedState::new(4096, 1024);
        let good = encode_round(&a, 0, false, &[0, 1]);
        assert!(decode_round(b"nope")
            .unwrap_err()
            .to_string()
            .contains("DMIG"));
        let mut v = good.clone();
        v[4] = 2;
        assert!(decode_round(&v)
            .unwrap_err()
            .to_string()
            .contains("version 2"));
        let mut v = good.clone();
        v.push(0);
        assert!(decode_round(&v)
            .unwrap_err()
            .to_string()
            .contains("after the last chunk"));
        let mut v = good.clone();
        v.truncate(good.len() - 1);
        assert!(decode_round(&v)
            .unwrap_err()
            .to_string()
            .contains("past the end"));
        let mut b = PagedState::new(8192, 1024);
        let r = decode_round(&good).unwrap();
        assert!(apply_round(&mut b, &r)
            .unwrap_err()
            .to_string()
            .contains("target has 8"));
    }

    #[test]
    fn rounds_split_under_the_limit() {
        let a = PagedState::new(100 * 1024, 1024);
        let all: Vec<usize> = (0..100).collect();
        let groups = split_indices(&a, &all, 10 * 1032 + 18);
        assert_eq!(groups.len(), 10);
        assert!(groups
            .iter()
            .all(|g| encode_round(&a, 0, false, g).len() <= 10 * 1032 + 18));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(b in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_round(&b);
            let mut v = b"DMIG\x01\x00".to_vec();
            v.extend_from_slice(&b);
            let _ = decode_round(&v);
        }

        /// Any sequence of writes, migrated in rounds with writes between
        /// them, leaves the target equal to the source.
        #[test]
        fn pre_copy_converges_to_the_source(
            writes in prop::collection::vec(prop::collection::vec((0usize..5000, prop::collection::vec(any::<u8>(), 1..300)), 0..10), 1..6),
            page in 1usize..700,
        ) {
            let mut src = PagedState::new(5000, page);
            let mut dst = PagedState::new(5000, page);
            let mut pending: Vec<usize> = (0..src.chunk_count()).collect();
            src.take_dirty();
            for (round, ws) in writes.iter().enumerate() {
                let r = decode_round(&encode_round(&src, round as u32, false, &pending)).unwrap();
                apply_round(&mut dst, &r).unwrap();
                for (o, d) in ws {
                    src.write(*o, d);
                }
                pending = src.take_dirty();
            }
            let r = decode_round(&encode_round(&src, 99, true, &pending)).unwrap();
            apply_round(&mut dst, &r).unwrap();
            prop_assert_eq!(src.bytes(), dst.bytes());
        }
    }
}
