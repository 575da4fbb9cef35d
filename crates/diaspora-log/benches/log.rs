//! Micro-benchmarks of the log: batch encode+validate (records/s), append
//! throughput under the `never` and `interval` fsync policies for 1 KiB and
//! 1 MiB records, and read throughput.
//!
//! Run with `cargo bench -p diaspora-log`. The encode benchmark's baseline is
//! a plain `memcpy` of the same bytes, measured in the same run.

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diaspora_log::{
    records, validate_batch, BatchBuilder, BatchLimits, Compression, FsyncPolicy, Log, LogConfig,
};

const RECORDS_PER_BATCH: usize = 1000;

fn encode(c: &mut Criterion) {
    let record = [0x5Au8; 128];
    let mut g = c.benchmark_group("batch_128B_x1000");
    g.measurement_time(Duration::from_secs(3)).sample_size(10);
    g.throughput(Throughput::Elements(RECORDS_PER_BATCH as u64));
    g.bench_function("baseline_memcpy", |b| {
        b.iter(|| {
            let mut v = Vec::with_capacity(RECORDS_PER_BATCH * 132 + 60);
            for _ in 0..RECORDS_PER_BATCH {
                v.extend_from_slice(&(record.len() as u32).to_le_bytes());
                v.extend_from_slice(&record);
            }
            v
        })
    });
    for (name, compression) in [
        ("encode_validate_none", Compression::None),
        ("encode_validate_zstd1", Compression::Zstd { level: 1 }),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut builder = BatchBuilder::with_capacity(compression, RECORDS_PER_BATCH * 132);
                for i in 0..RECORDS_PER_BATCH {
                    builder.push(&record, i as i64);
                }
                let batch = builder.finish();
                validate_batch(&batch, &BatchLimits::default()).unwrap();
                batch
            })
        });
    }
    let mut builder = BatchBuilder::new(Compression::None);
    for i in 0..RECORDS_PER_BATCH {
        builder.push(&record, i as i64);
    }
    let batch = builder.finish();
    g.bench_function("decode_records_none", |b| {
        b.iter(|| records(&batch).unwrap())
    });
    g.finish();
}

fn batch_of(record_bytes: usize, count: usize) -> Bytes {
    let record = vec![0xA5u8; record_bytes];
    let mut b = BatchBuilder::with_capacity(Compression::None, count * (record_bytes + 4));
    for i in 0..count {
        b.push(&record, i as i64);
    }
    b.finish()
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.measurement_time(Duration::from_secs(3)).sample_size(10);
    for (label, record_bytes, per_batch) in [("1KiB_x64", 1024, 64), ("1MiB_x1", 1 << 20, 1)] {
        let batch = batch_of(record_bytes, per_batch);
        g.throughput(Throughput::Bytes(batch.len() as u64));
        for fsync in [
            FsyncPolicy::Never,
            FsyncPolicy::Interval(Duration::from_millis(100)),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                fsync,
                segment_bytes_max: 64 * 1024 * 1024,
                // Bounded disk use: retention runs inside the loop.
                retention_bytes_max: Some(256 * 1024 * 1024),
                ..LogConfig::default()
            };
            let (log, _) = Log::open(dir.path(), config).unwrap();
            let mut appended_bytes = 0u64;
            g.bench_function(format!("{label}/{fsync}"), |b| {
                b.iter(|| {
                    let outcome = log.append(&batch).unwrap();
                    appended_bytes += batch.len() as u64;
                    if appended_bytes >= 64 * 1024 * 1024 {
                        appended_bytes = 0;
                        log.apply_retention(0).unwrap();
                    }
                    outcome
                });
            });
        }
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    g.measurement_time(Duration::from_secs(3)).sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        segment_bytes_max: 64 * 1024 * 1024,
        ..LogConfig::default()
    };
    let (log, _) = Log::open(dir.path(), config).unwrap();
    let batch = batch_of(1024, 64);
    while log.size_bytes() < 128 * 1024 * 1024 {
        log.append(&batch).unwrap();
    }
    let next = log.next_offset();
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("1MiB_reads_1KiB_records", |b| {
        let mut from = 0;
        b.iter(|| {
            if from >= next {
                from = 0;
            }
            let got = log.read(from, 1 << 20).unwrap();
            from += got.len() as u64 * 64;
            got
        })
    });
    g.finish();
}

criterion_group!(benches, encode, append, read);
criterion_main!(benches);
