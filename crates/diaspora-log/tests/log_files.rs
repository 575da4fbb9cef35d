//! File-level tests of `Log`: rolls, reopen, torn tails, corruption,
//! idempotency, retention, timestamps, ranges and limits.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use diaspora_log::{
    records, AppendOutcome, BatchBuilder, BatchError, BatchLimits, Compression, FsyncPolicy, Log,
    LogConfig, LogError, StopReason,
};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    }
}

/// A batch of `n` records; record i of the batch is `tag` repeated, with
/// timestamp `ts`.
fn batch(tag: u64, n: usize, len: usize, ts: i64) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..n {
        let mut r = vec![(tag % 251) as u8; len];
        r[..8.min(len)].copy_from_slice(&(tag * 1000 + i as u64).to_le_bytes()[..8.min(len)]);
        b.push(&r, ts);
    }
    b.finish()
}

fn idem(pid: u64, seq: u64, n: usize) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None).with_producer(pid, seq);
    for i in 0..n {
        b.push(format!("p{pid}s{}", seq + i as u64).as_bytes(), 0);
    }
    b.finish()
}

/// Reads every record from `from` to the end, checking contiguity.
fn read_all(log: &Log, from: u64) -> Vec<(u64, Bytes)> {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.next_offset() {
        let batches = log.read(next, 1000).unwrap();
        assert!(!batches.is_empty());
        for b in batches {
            for r in records(&b).unwrap() {
                if r.offset >= next {
                    assert_eq!(r.offset, next, "records must be contiguous");
                    out.push((r.offset, r.data));
                    next += 1;
                }
            }
        }
    }
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn append_and_read_across_rolls_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(report.segments, 1);
    let mut expected = Vec::new();
    for i in 0..100u64 {
        let b = batch(i, 1 + (i % 3) as usize, 100, i as i64);
        let out = log.append(&b).unwrap();
        let AppendOutcome::Appended {
            base_offset,
            last_offset,
        } = out
        else {
            panic!("{out:?}")
        };
        assert_eq!(base_offset, expected.len() as u64);
        for r in records(&b).unwrap() {
            expected.push(r.data);
        }
        assert_eq!(last_offset + 1, expected.len() as u64);
    }
    assert!(log.segment_count() > 5, "segments: {}", log.segment_count());
    let check = |log: &Log| {
        assert_eq!(log.next_offset(), expected.len() as u64);
        for from in [0, 1, 57, expected.len() as u64 - 1] {
            let got = read_all(log, from);
            assert_eq!(got.len(), expected.len() - from as usize);
            for (o, d) in got {
                assert_eq!(d, expected[o as usize], "offset {o}");
            }
        }
    };
    check(&log);
    let size = log.size_bytes();
    let segments = log.segment_count();
    drop(log);
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(report.next_offset, expected.len() as u64);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.stop, StopReason::CleanEnd);
    assert_eq!(
        report.indexes_rebuilt, 0,
        "sealed indexes were written at roll"
    );
    assert_eq!((log.size_bytes(), log.segment_count()), (size, segments));
    check(&log);
    // Appends continue at the right offset.
    let out = log.append(&batch(999, 2, 10, 0)).unwrap();
    assert_eq!(out.base_offset(), expected.len() as u64);
}

#[test]
fn read_respects_max_bytes_but_returns_at_least_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    for i in 0..10 {
        log.append(&batch(i, 1, 500, 0)).unwrap();
    }
    let one = log.read(3, 1).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(records(&one[0]).unwrap()[0].offset, 3);
    let few = log.read(0, 1200).unwrap();
    assert_eq!(few.len(), 2);
    assert!(log.read(10, 100).unwrap().is_empty());
}

#[test]
fn huge_batch_gets_its_own_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    log.append(&batch(1, 1, 100, 0)).unwrap();
    log.append(&batch(2, 1, 10_000, 0)).unwrap();
    log.append(&batch(3, 1, 100, 0)).unwrap();
    assert_eq!(log.segment_count(), 3);
    let got = log.read(1, 10).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(records(&got[0]).unwrap()[0].data.len(), 10_000);
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    for i in 0..5 {
        log.append(&batch(i, 2, 50, 0)).unwrap();
    }
    drop(log);
    let last = segment_files(dir.path()).pop().unwrap();
    let good_len = fs::metadata(&last).unwrap().len();
    // A torn write: the first half of a batch.
    let partial = batch(77, 3, 50, 0);
    let mut f = OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all(&partial[..partial.len() / 2]).unwrap();
    drop(f);

    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(report.truncated_bytes, partial.len() as u64 / 2);
    assert_eq!(report.stop, StopReason::TornTail { at: good_len });
    assert_eq!(fs::metadata(&last).unwrap().len(), good_len);
    assert_eq!(log.next_offset(), 10);
    assert_eq!(log.append(&batch(5, 1, 50, 0)).unwrap().base_offset(), 10);
    assert_eq!(read_all(&log, 0).len(), 11);
    drop(log);

    // Garbage (not a batch at all) is cut too.
    let last = segment_files(dir.path()).pop().unwrap();
    let good_len = fs::metadata(&last).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all(&[0xAB; 333]).unwrap();
    drop(f);
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(report.truncated_bytes, 333);
    assert!(matches!(report.stop, StopReason::Corrupt { at, .. } if at == good_len));
    assert_eq!(log.next_offset(), 11);
}

#[test]
fn cut_mid_batch_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    let mut ends = Vec::new();
    for i in 0..4 {
        log.append(&batch(i, 1, 100, 0)).unwrap();
        ends.push(log.size_bytes());
    }
    drop(log);
    let last = segment_files(dir.path()).pop().unwrap();
    let f = OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(ends[2] + 30).unwrap();
    drop(f);
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(report.truncated_bytes, 30);
    assert_eq!(log.next_offset(), 3);
    assert_eq!(log.append(&batch(9, 1, 10, 0)).unwrap().base_offset(), 3);
}

#[test]
fn corrupt_byte_in_active_segment_truncates_from_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes_max: 1 << 20,
        ..config()
    };
    let (log, _) = Log::open(dir.path(), cfg.clone()).unwrap();
    let mut positions = Vec::new();
    for i in 0..10 {
        positions.push(log.size_bytes());
        log.append(&batch(i, 3, 40, 0)).unwrap();
    }
    drop(log);
    let last = segment_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    bytes[positions[4] as usize + 70] ^= 0x10;
    fs::write(&last, &bytes).unwrap();

    let (log, report) = Log::open(dir.path(), cfg).unwrap();
    assert!(
        matches!(&report.stop, StopReason::Corrupt { at, reason } if *at == positions[4] && reason.contains("crc32c")),
        "{:?}",
        report.stop
    );
    assert_eq!(report.truncated_bytes, bytes.len() as u64 - positions[4]);
    assert_eq!(log.next_offset(), 12);
    assert_eq!(read_all(&log, 0).len(), 12);
}

#[test]
fn corruption_in_a_sealed_segment_is_an_error_on_read_never_data() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    for i in 0..40 {
        log.append(&batch(i, 1, 200, 0)).unwrap();
    }
    drop(log);
    let first = segment_files(dir.path()).remove(0);
    let mut bytes = fs::read(&first).unwrap();
    bytes[100] ^= 0x01; // inside the first batch's records
    fs::write(&first, &bytes).unwrap();
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(report.next_offset, 40, "sealed segments are checked lazily");
    let err = log.read(0, 10_000).unwrap_err();
    assert!(
        matches!(err, LogError::Corrupt { position: 0, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("00000000000000000000.log"),
        "{err}"
    );
    // Other batches stay readable.
    assert_eq!(records(&log.read(1, 10).unwrap()[0]).unwrap()[0].offset, 1);
}

#[test]
fn missing_or_wrong_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    for i in 0..60 {
        log.append(&batch(i, 1, 100, i as i64)).unwrap();
    }
    let n = log.segment_count();
    drop(log);
    let mut indexes: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .collect();
    indexes.sort();
    assert_eq!(indexes.len(), n - 1);
    let good = fs::read(&indexes[0]).unwrap();
    assert!(!good.is_empty());
    fs::remove_file(&indexes[0]).unwrap();
    fs::write(&indexes[1], [1, 2, 3]).unwrap();
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(report.indexes_rebuilt, 2);
    assert_eq!(fs::read(&indexes[0]).unwrap(), good);
    assert_eq!(read_all(&log, 0).len(), 60);
}

#[test]
fn idempotent_duplicates_are_detected_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    let a = idem(7, 100, 3);
    let b = idem(7, 103, 2);
    assert_eq!(
        log.append(&a).unwrap(),
        AppendOutcome::Appended {
            base_offset: 0,
            last_offset: 2
        }
    );
    log.append(&batch(0, 1, 10, 0)).unwrap();
    assert_eq!(log.append(&b).unwrap().base_offset(), 4);
    assert_eq!(
        log.append(&a).unwrap(),
        AppendOutcome::Duplicate {
            base_offset: 0,
            last_offset: 2
        }
    );
    let err = log.append(&idem(7, 110, 1)).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::OutOfOrderSequence {
                producer_id: 7,
                expected: 105,
                got: 110
            }
        ),
        "{err}"
    );
    assert_eq!(log.producer_state(7), Some((104, 5)));
    assert_eq!(log.producer_state(8), None);
    drop(log);

    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(report.producers, 1);
    assert_eq!(log.producer_state(7), Some((104, 5)));
    assert_eq!(
        log.append(&b).unwrap(),
        AppendOutcome::Duplicate {
            base_offset: 4,
            last_offset: 5
        }
    );
    assert_eq!(log.next_offset(), 6);
    // Long-ago duplicates no longer have offsets but are still refused.
    for s in 0..10 {
        log.append(&idem(7, 105 + s, 1)).unwrap();
    }
    let err = log.append(&a).unwrap_err();
    assert!(
        matches!(err, LogError::DuplicateSequence { producer_id: 7, .. }),
        "{err}"
    );
    // A new producer may start anywhere.
    assert!(log.append(&idem(8, 5_000, 1)).is_ok());
}

#[test]
fn retention_by_bytes_deletes_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes_max: Some(10_000),
        ..config()
    };
    let (log, _) = Log::open(dir.path(), cfg.clone()).unwrap();
    for i in 0..100 {
        log.append(&batch(i, 1, 300, 0)).unwrap();
    }
    let before = log.segment_count();
    let report = log.apply_retention(0).unwrap();
    assert!(!report.segments_deleted.is_empty());
    assert!(log.size_bytes() <= 10_000, "{}", log.size_bytes());
    assert_eq!(log.segment_count(), before - report.segments_deleted.len());
    assert_eq!(report.start_offset, log.start_offset());
    assert!(log.start_offset() > 0);
    assert_eq!(segment_files(dir.path()).len(), log.segment_count());
    let err = log.read(0, 100).unwrap_err();
    assert!(
        matches!(err, LogError::OffsetOutOfRange { requested: 0, start, next: 100 } if start == log.start_offset()),
        "{err}"
    );
    assert_eq!(
        read_all(&log, log.start_offset()).len() as u64,
        100 - log.start_offset()
    );
    // Reopen sees the same range.
    let start = log.start_offset();
    drop(log);
    let (log, report) = Log::open(dir.path(), cfg).unwrap();
    assert_eq!((report.start_offset, report.next_offset), (start, 100));
    assert_eq!(log.start_offset(), start);
}

#[test]
fn retention_by_age_never_deletes_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_age: Some(Duration::from_secs(60)),
        ..config()
    };
    let (log, _) = Log::open(dir.path(), cfg).unwrap();
    let minute_us = 60_000_000i64;
    // Old data in the first segments, new data at the end.
    for i in 0..30 {
        log.append(&batch(i, 1, 300, i as i64 * 1000)).unwrap();
    }
    let old_segments = log.segment_count() - 1;
    for i in 30..40 {
        log.append(&batch(i, 1, 300, 10 * minute_us + i as i64))
            .unwrap();
    }
    let now = 10 * minute_us + 100;
    let report = log.apply_retention(now).unwrap();
    assert!(report.segments_deleted.len() >= old_segments);
    assert!(log.start_offset() <= 30);
    // Everything is old: all but the active segment go.
    let report = log.apply_retention(1000 * minute_us).unwrap();
    let _ = report;
    assert_eq!(log.segment_count(), 1);
    assert!(log.next_offset() == 40);
    assert!(log.read(log.start_offset(), 10).is_ok());
}

#[test]
fn offset_for_timestamp_finds_first_batch_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    for i in 0..50i64 {
        // batch i holds offsets 2i, 2i+1 with timestamp 100*i
        log.append(&batch(i as u64, 2, 100, 100 * i)).unwrap();
    }
    assert!(log.segment_count() > 2);
    assert_eq!(log.offset_for_timestamp(i64::MIN).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(1).unwrap(), Some(2));
    assert_eq!(log.offset_for_timestamp(2500).unwrap(), Some(50));
    assert_eq!(log.offset_for_timestamp(2501).unwrap(), Some(52));
    assert_eq!(log.offset_for_timestamp(4900).unwrap(), Some(98));
    assert_eq!(log.offset_for_timestamp(4901).unwrap(), None);
}

#[test]
fn out_of_range_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    assert!(log.read(0, 100).unwrap().is_empty());
    log.append(&batch(0, 5, 10, 0)).unwrap();
    let err = log.read(6, 100).unwrap_err();
    assert_eq!(
        err.to_string(),
        "offset 6 is out of range: the log holds offsets [0, 5)"
    );
    assert!(log.read(5, 100).unwrap().is_empty());
    // Reading from the middle of a batch returns the containing batch.
    let got = log.read(3, 100).unwrap();
    assert_eq!(records(&got[0]).unwrap()[0].offset, 0);
}

#[test]
fn limits_errors_name_limit_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        limits: BatchLimits {
            batch_bytes_max: 2000,
            record_bytes_max: 500,
            records_per_batch_max: 4,
        },
        ..config()
    };
    let (log, _) = Log::open(dir.path(), cfg).unwrap();
    let err = log.append(&batch(0, 1, 600, 0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid batch: record of 600 bytes exceeds record_bytes_max 500"
    );
    let err = log.append(&batch(0, 5, 10, 0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid batch: batch of 5 records exceeds records_per_batch_max 4"
    );
    let big = batch(0, 4, 490, 0);
    let err = log.append(&big).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "invalid batch: batch of {} bytes exceeds batch_bytes_max 2000",
            big.len()
        )
    );
    let mut corrupt = batch(0, 1, 10, 0).to_vec();
    corrupt[70] ^= 1;
    assert!(matches!(
        log.append(&corrupt),
        Err(LogError::Batch(BatchError::CrcMismatch { .. }))
    ));
    assert_eq!(log.next_offset(), 0);
    let bad = LogConfig {
        segment_bytes_max: 5,
        ..config()
    };
    let err = Log::open(dir.path(), bad).unwrap_err();
    assert!(err.to_string().contains("segment_bytes_max 5"), "{err}");
}

#[test]
fn fsync_policies_and_concurrent_readers() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_millis(1)),
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { fsync, ..config() };
        let (log, _) = Log::open(dir.path(), cfg).unwrap();
        let log = std::sync::Arc::new(log);
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while seen < 200 {
                    if seen < log.next_offset() {
                        for b in log.read(seen, 4096).unwrap() {
                            for r in records(&b).unwrap() {
                                if r.offset == seen {
                                    seen += 1;
                                }
                            }
                        }
                    } else {
                        std::thread::yield_now();
                    }
                }
            })
        };
        for i in 0..100 {
            log.append(&batch(i, 2, 64, 0)).unwrap();
            if i % 10 == 0 {
                log.sync_if_due().unwrap();
            }
        }
        log.sync().unwrap();
        reader.join().unwrap();
        assert_eq!(log.next_offset(), 200);
    }
}

#[test]
fn broken_sealed_segment_keeps_the_valid_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config()).unwrap();
    for i in 0..120 {
        log.append(&batch(i, 1, 100, 0)).unwrap();
    }
    drop(log);
    let files = segment_files(dir.path());
    assert!(files.len() >= 4);
    // Lose the tail of the second segment, as a crash under `never` could.
    let len = fs::metadata(&files[1]).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&files[1])
        .unwrap()
        .set_len(len - 50)
        .unwrap();
    let (log, report) = Log::open(dir.path(), config()).unwrap();
    assert_eq!(report.segments, 2);
    assert_eq!(report.segments_removed.len(), files.len() - 2);
    assert!(report.truncated_bytes > 0);
    assert_eq!(segment_files(dir.path()).len(), 2);
    let n = log.next_offset();
    assert_eq!(read_all(&log, 0).len() as u64, n);
    assert_eq!(log.append(&batch(1, 1, 10, 0)).unwrap().base_offset(), n);
}

#[test]
fn delete_removes_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    let (log, _) = Log::open(&path, config()).unwrap();
    log.append(&batch(0, 1, 10, 0)).unwrap();
    log.delete().unwrap();
    assert!(!path.exists());
}

#[test]
fn write_behind_under_interval_fsync_keeps_every_byte_across_rolls_and_reopen() {
    // 300 KiB batches into 1 MiB segments: writeback is started every few
    // batches and the range is reset at each roll.
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes_max: 1 << 20,
        fsync: FsyncPolicy::Interval(Duration::from_millis(100)),
        ..LogConfig::default()
    };
    let batches: Vec<Bytes> = (0..20).map(|t| batch(t, 3, 100 << 10, 0)).collect();
    {
        let (log, _) = Log::open(dir.path(), cfg.clone()).unwrap();
        for b in &batches {
            log.append(b).unwrap();
        }
        assert!(log.segment_count() > 4, "the batches span several segments");
        log.sync().unwrap();
        assert_eq!(read_all(&log, 0).len(), 60);
    }
    let (log, report) = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    let got = read_all(&log, 0);
    assert_eq!(got.len(), 60);
    for (i, (offset, value)) in got.iter().enumerate() {
        assert_eq!(*offset, i as u64);
        let tag = i as u64 / 3;
        let mut want = vec![(tag % 251) as u8; 100 << 10];
        want[..8].copy_from_slice(&(tag * 1000 + i as u64 % 3).to_le_bytes());
        assert_eq!(value.as_ref(), want.as_slice(), "record {i}");
    }
}
