//! Property tests for the batch codec.

use bytes::Bytes;
use diaspora_log::{
    decode_header, records, records_with_limits, set_base_offset, validate_batch, BatchBuilder,
    BatchLimits, Compression,
};
use proptest::prelude::*;

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        (1i32..=5).prop_map(|level| Compression::Zstd { level })
    ]
}

fn record() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 0..64),
        // compressible
        (any::<u8>(), 0usize..2000).prop_map(|(b, n)| vec![b; n]),
    ]
}

/// (compression, records with timestamps, producer id, base sequence, base offset)
type BatchInput = (Compression, Vec<(Vec<u8>, i64)>, u64, u64, u64);

fn batch_input() -> impl Strategy<Value = BatchInput> {
    (
        compression(),
        proptest::collection::vec((record(), any::<i64>()), 1..40),
        any::<u64>(),
        0u64..u64::MAX / 2,
        0u64..u64::MAX / 2,
    )
}

fn encode(c: Compression, recs: &[(Vec<u8>, i64)], pid: u64, seq: u64, base: u64) -> Vec<u8> {
    let mut b = BatchBuilder::new(c).with_producer(pid, seq);
    for (r, ts) in recs {
        b.push(r, *ts);
    }
    let mut raw = b.finish().to_vec();
    set_base_offset(&mut raw, base);
    raw
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn roundtrip((c, recs, pid, seq, base) in batch_input()) {
        let raw = encode(c, &recs, pid, seq, base);
        let h = validate_batch(&raw, &BatchLimits::default()).unwrap();
        prop_assert_eq!(h.record_count as usize, recs.len());
        prop_assert_eq!(h.base_offset, base);
        prop_assert_eq!(h.producer_id, pid);
        prop_assert_eq!(h.base_sequence, seq);
        prop_assert_eq!(h.first_timestamp_us, recs[0].1);
        prop_assert_eq!(h.max_timestamp_us, recs.iter().map(|r| r.1).max().unwrap());
        prop_assert_eq!(h.total_bytes(), raw.len() as u64);
        let decoded = records(&Bytes::from(raw)).unwrap();
        prop_assert_eq!(decoded.len(), recs.len());
        for (i, (d, (r, _))) in decoded.iter().zip(&recs).enumerate() {
            prop_assert_eq!(d.offset, base + i as u64);
            prop_assert_eq!(&d.data[..], &r[..]);
            prop_assert_eq!(d.timestamp_us, recs[0].1);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_header(&data);
        let _ = validate_batch(&data, &BatchLimits::default());
        let _ = records(&Bytes::from(data));
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header_never_panic(
        (c, recs, pid, seq, base) in batch_input(),
        tail in proptest::collection::vec(any::<u8>(), 0..200),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut raw = encode(c, &recs, pid, seq, base);
        let keep = 60 + cut.index(raw.len() - 59);
        raw.truncate(keep);
        raw.extend_from_slice(&tail);
        let _ = validate_batch(&raw, &BatchLimits::default());
        let _ = records(&Bytes::from(raw));
    }

    /// Any corruption is detected, or the records are identical.
    #[test]
    fn corruption_is_detected_or_harmless(
        (c, recs, pid, seq, base) in batch_input(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let raw = encode(c, &recs, pid, seq, base);
        let mut bad = raw.clone();
        for (i, x) in &flips {
            let at = i.index(bad.len());
            bad[at] ^= x;
        }
        let original = records(&Bytes::from(raw.clone())).unwrap();
        if let Ok(got) = records(&Bytes::from(bad.clone())) {
            // Only the offset field is outside the CRC: offsets may shift,
            // data must not.
            prop_assert_eq!(got.len(), original.len());
            for (g, o) in got.iter().zip(&original) {
                prop_assert_eq!(&g.data, &o.data);
            }
            let changed: Vec<usize> = (0..bad.len()).filter(|&i| bad[i] != raw[i]).collect();
            prop_assert!(changed.iter().all(|&i| i < 8), "undetected change at {:?}", changed);
        }
    }

    #[test]
    fn limits_are_enforced(
        (c, recs, pid, seq, base) in batch_input(),
        record_max in 0u32..3000,
        count_max in 1u32..40,
    ) {
        let raw = encode(c, &recs, pid, seq, base);
        let limits = BatchLimits { record_bytes_max: record_max, records_per_batch_max: count_max, ..BatchLimits::default() };
        let ok = recs.iter().all(|(r, _)| r.len() as u32 <= record_max) && recs.len() as u32 <= count_max;
        prop_assert_eq!(validate_batch(&raw, &limits).is_ok(), ok);
        prop_assert_eq!(records_with_limits(&Bytes::from(raw), &limits).is_ok(), ok);
    }
}
