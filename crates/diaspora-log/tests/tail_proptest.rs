//! The tail held in memory (`Log::hold_tail`) never changes what a read
//! returns: a log holding its tail and one reading only its files, given the
//! same appends, answer every read with the same bytes.

use std::sync::Arc;

use bytes::Bytes;
use diaspora_log::{BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, TailBudget};
use proptest::prelude::*;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 * 1024,
        index_interval_bytes: 512,
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    }
}

/// How a batch reaches the log.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `append(&[u8])`.
    Borrowed,
    /// `append_bytes` of a buffer nothing else shares.
    Unique,
    /// `append_bytes` of a buffer another handle still shares.
    Shared,
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        len: usize,
        mode: Mode,
        /// Idempotent producer id (0: none); a retry repeats its last batch.
        retry: bool,
    },
    Read {
        /// Where to start, as a fraction of the log's length.
        at: f64,
        max_bytes: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let mode = prop_oneof![Just(Mode::Borrowed), Just(Mode::Unique), Just(Mode::Shared)];
    prop_oneof![
        3 => (1usize..20, prop_oneof![4 => 0usize..400, 1 => 20_000usize..40_000], mode, any::<bool>())
            .prop_map(|(records, len, mode, retry)| Op::Append { records, len, mode, retry: retry && records < 5 }),
        2 => (0.0f64..=1.0, 1usize..300_000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
    ]
}

fn batch(seq: u64, records: usize, len: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None).with_producer(7, seq);
    for i in 0..records {
        let mut r = vec![(seq % 251) as u8; len];
        r[..8.min(len)].copy_from_slice(&(seq * 1000 + i as u64).to_le_bytes()[..8.min(len)]);
        b.push(&r, seq as i64);
    }
    b.finish().to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_held_tail_answers_every_read_as_the_files_do(
        ops in proptest::collection::vec(op(), 1..60),
        total in 1_000u64..400_000,
        per_log in 1_000u64..200_000,
    ) {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let budget = Arc::new(TailBudget::new(total, per_log));
        let (mut held, _) = Log::open(da.path(), config()).unwrap();
        held.hold_tail(budget.clone());
        let (plain, _) = Log::open(db.path(), config()).unwrap();
        let mut seq = 0u64;
        let mut last: Option<Vec<u8>> = None;
        for op in ops {
            match op {
                Op::Append { records, len, mode, retry } => {
                    let raw = match (&last, retry) {
                        (Some(prev), true) => prev.clone(),
                        _ => {
                            let b = batch(seq, records, len);
                            seq += records as u64;
                            b
                        }
                    };
                    let want = plain.append(&raw).unwrap();
                    let got = match mode {
                        Mode::Borrowed => held.append(&raw).unwrap(),
                        Mode::Unique => held.append_bytes(Bytes::from(raw.clone())).unwrap(),
                        Mode::Shared => {
                            let b = Bytes::from(raw.clone());
                            let keep = b.clone();
                            let got = held.append_bytes(b).unwrap();
                            prop_assert_eq!(&keep[..], &raw[..], "a shared buffer is never stamped in place");
                            got
                        }
                    };
                    prop_assert_eq!(got, want);
                    last = Some(raw);
                }
                Op::Read { at, max_bytes } => {
                    let next = plain.next_offset();
                    let from = ((next as f64) * at) as u64;
                    let want = plain.read(from, max_bytes).unwrap();
                    let got = held.read(from, max_bytes).unwrap();
                    prop_assert_eq!(got, want, "read({}, {})", from, max_bytes);
                }
            }
            prop_assert!(budget.used() <= total);
        }
        drop(held);
        prop_assert_eq!(budget.used(), 0, "a closed log gives its bytes back");
        // The files are the same too.
        let (reopened, _) = Log::open(da.path(), config()).unwrap();
        let next = plain.next_offset();
        prop_assert_eq!(reopened.next_offset(), next);
        if next > 0 {
            prop_assert_eq!(reopened.read(0, usize::MAX).unwrap(), plain.read(0, usize::MAX).unwrap());
        }
    }
}

#[test]
fn a_buffer_handed_over_is_stamped_in_place_and_read_back_without_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let budget = Arc::new(TailBudget::new(1 << 20, 1 << 20));
    let (mut log, _) = Log::open(dir.path(), config()).unwrap();
    log.hold_tail(budget.clone());
    log.append(&batch(0, 3, 100)).unwrap();
    let b = Bytes::from(batch(3, 2, 30_000));
    let ptr = b.as_ptr();
    let len = b.len();
    log.append_bytes(b).unwrap();
    let read = log.read(3, 1 << 20).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].as_ptr(), ptr, "the appended buffer itself");
    assert_eq!(&read[0][..8], &3u64.to_le_bytes(), "base offset stamped");
    assert_eq!(budget.used(), (len + read_len(&log, 0)) as u64);
    drop(read);
    drop(log);
    assert_eq!(budget.used(), 0);
}

fn read_len(log: &Log, offset: u64) -> usize {
    log.read(offset, 1).unwrap()[0].len()
}
