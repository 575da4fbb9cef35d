//! Bodies of the `cargo fuzz` targets in `fuzz/`, kept in the library so
//! ordinary tests run them over random inputs too.
//!
//! Each function panics only when an invariant of the crate is violated;
//! any input bytes whatsoever must be handled without panicking.

use bytes::Bytes;

use crate::{records, scan_segment, validate_batch, verify_batch, BatchLimits};

/// Limits small enough that the fuzzer explores the limit checks and never
/// allocates much for a forged `records_len`.
fn fuzz_limits() -> BatchLimits {
    BatchLimits {
        batch_bytes_max: 1 << 20,
        record_bytes_max: 1 << 19,
        records_per_batch_max: 10_000,
    }
}

/// `batch_decode`: [`validate_batch`] and [`crate::records`] on arbitrary
/// bytes. Checks that they agree and that decoded records are consistent.
///
/// ```
/// diaspora_log::fuzzing::batch_decode(&[0xD5; 80]);
/// ```
pub fn batch_decode(data: &[u8]) {
    let limits = fuzz_limits();
    let validated = validate_batch(data, &limits);
    let bytes = Bytes::copy_from_slice(data);
    let decoded = crate::records_with_limits(&bytes, &limits);
    match (&validated, &decoded) {
        (Ok(h), Ok(recs)) => {
            assert_eq!(recs.len(), h.record_count as usize);
            assert!(verify_batch(data).is_ok());
            for (i, r) in recs.iter().enumerate() {
                assert_eq!(r.offset, h.base_offset + i as u64);
                assert!(r.data.len() <= limits.record_bytes_max as usize);
            }
            let total: usize = recs.iter().map(|r| 4 + r.data.len()).sum();
            assert_eq!(total, h.records_len as usize);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("validate_batch {validated:?} disagrees with records {decoded:?}"),
    }
    // The default-limits entry point must not panic either.
    let _ = records(&bytes);
}

/// `segment_recovery`: [`scan_segment`] on arbitrary bytes, checking that
/// the valid prefix is within the input, batches are contiguous and tile the
/// prefix exactly, and that every accepted batch verifies on its own.
///
/// ```
/// diaspora_log::fuzzing::segment_recovery(&[1, 2, 3]);
/// ```
pub fn segment_recovery(data: &[u8]) {
    // Take the expected base offset from the input so gaps are explored too.
    let expected = data
        .get(..8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    for base in [expected, 0] {
        let out = scan_segment(data, base, &fuzz_limits());
        assert!(out.valid_len <= data.len() as u64);
        let mut position = 0u64;
        let mut next = Some(base);
        for b in &out.batches {
            assert_eq!(b.position, position, "batches must tile the prefix");
            assert_eq!(Some(b.base_offset), next, "batches must be contiguous");
            assert!(b.last_offset >= b.base_offset);
            let bytes = &data[b.position as usize..(b.position + b.total_bytes) as usize];
            assert!(verify_batch(bytes).is_ok());
            position += b.total_bytes;
            next = b.last_offset.checked_add(1);
        }
        assert_eq!(position, out.valid_len);
        assert_eq!(out.stop.is_clean(), out.valid_len == data.len() as u64);
    }
}
