//! Exhaustive truncation and single-byte-corruption tests of the pure
//! recovery core, `scan_segment`.

use bytes::Bytes;
use diaspora_log::{
    records, scan_segment, set_base_offset, BatchBuilder, BatchLimits, Compression, Record,
    StopReason,
};

const BASE: u64 = 1000;

struct Written {
    segment: Vec<u8>,
    /// (position, end, records) per batch.
    batches: Vec<(u64, u64, Vec<Record>)>,
}

/// A small segment of several batches: uncompressed, zstd, idempotent,
/// empty records, varied sizes.
fn written() -> Written {
    let mut segment = Vec::new();
    let mut batches = Vec::new();
    let mut next = BASE;
    let specs: [(Compression, &[&[u8]], u64); 5] = [
        (Compression::None, &[b"alpha", b"", b"gamma"], 0),
        (
            Compression::Zstd { level: 1 },
            &[&[7u8; 200], &[8u8; 100]],
            0,
        ),
        (Compression::None, &[b"x"], 42),
        (Compression::None, &[b"", b""], 42),
        (Compression::Zstd { level: 3 }, &[&[1u8; 64], b"tail"], 0),
    ];
    for (i, (compression, recs, producer)) in specs.iter().enumerate() {
        let mut b = BatchBuilder::new(*compression).with_producer(*producer, i as u64 * 10);
        for (j, r) in recs.iter().enumerate() {
            b.push(r, (i * 100 + j) as i64);
        }
        let mut raw = b.finish().to_vec();
        set_base_offset(&mut raw, next);
        let decoded = records(&Bytes::from(raw.clone())).unwrap();
        let position = segment.len() as u64;
        segment.extend_from_slice(&raw);
        batches.push((position, segment.len() as u64, decoded));
        next += recs.len() as u64;
    }
    assert!(
        specs[1..].iter().any(|s| s.0 != Compression::None),
        "fixture must include compression"
    );
    Written { segment, batches }
}

#[test]
fn every_truncation_keeps_exactly_the_complete_batches() {
    let w = written();
    let limits = BatchLimits::default();
    for cut in 0..=w.segment.len() {
        let out = scan_segment(&w.segment[..cut], BASE, &limits);
        let complete: Vec<_> = w.batches.iter().filter(|b| b.1 <= cut as u64).collect();
        let expected_len = complete.last().map_or(0, |b| b.1);
        assert_eq!(out.valid_len, expected_len, "cut {cut}");
        assert!(out.valid_len <= cut as u64);
        assert_eq!(out.batches.len(), complete.len(), "cut {cut}");
        for (loc, b) in out.batches.iter().zip(&complete) {
            assert_eq!(loc.position, b.0);
            assert_eq!(loc.position + loc.total_bytes, b.1);
            assert_eq!(loc.base_offset, b.2[0].offset);
        }
        if expected_len == cut as u64 {
            assert_eq!(out.stop, StopReason::CleanEnd, "cut {cut}");
        } else {
            assert_eq!(
                out.stop,
                StopReason::TornTail { at: expected_len },
                "cut {cut}"
            );
        }
    }
}

#[test]
fn every_single_byte_corruption_stops_before_the_damaged_batch() {
    let w = written();
    let limits = BatchLimits::default();
    for flip in [0xFFu8, 0x01, 0x80] {
        for at in 0..w.segment.len() {
            let mut seg = w.segment.clone();
            seg[at] ^= flip;
            let out = scan_segment(&seg, BASE, &limits);
            // Every byte of a batch is base_offset, batch_length, the CRC or
            // CRC-covered, so the damaged batch and all after it are dropped.
            let damaged = w
                .batches
                .iter()
                .position(|b| (at as u64) < b.1)
                .expect("byte inside some batch");
            assert_eq!(
                out.batches.len(),
                damaged,
                "flip {flip:#x} at byte {at} (batch {damaged}): {:?}",
                out.stop
            );
            assert_eq!(out.valid_len, w.batches[damaged].0, "flip at byte {at}");
            assert!(!out.stop.is_clean(), "flip at byte {at}");
            // Whatever was accepted decodes to exactly what was written.
            let bytes = Bytes::from(seg);
            for (loc, b) in out.batches.iter().zip(&w.batches) {
                let raw =
                    bytes.slice(loc.position as usize..(loc.position + loc.total_bytes) as usize);
                assert_eq!(records(&raw).unwrap(), b.2, "flip at byte {at}");
            }
        }
    }
}

#[test]
fn every_corruption_of_the_offset_field_is_an_offset_gap() {
    let w = written();
    for (i, b) in w.batches.iter().enumerate() {
        for byte in 0..8 {
            let mut seg = w.segment.clone();
            seg[b.0 as usize + byte] ^= 0x01;
            let out = scan_segment(&seg, BASE, &BatchLimits::default());
            assert_eq!(out.batches.len(), i);
            assert!(
                matches!(out.stop, StopReason::OffsetGap { at, .. } if at == b.0),
                "batch {i} byte {byte}: {:?}",
                out.stop
            );
        }
    }
}

#[test]
fn garbage_appended_after_clean_batches_is_cut() {
    let w = written();
    let mut seg = w.segment.clone();
    seg.extend_from_slice(&[0u8; 100]);
    let out = scan_segment(&seg, BASE, &BatchLimits::default());
    assert_eq!(out.valid_len, w.segment.len() as u64);
    assert_eq!(out.batches.len(), w.batches.len());
    assert!(matches!(out.stop, StopReason::Corrupt { .. }));
}
