//! # diaspora-log — a segmented, checksummed, crash-safe append-only log
//!
//! This crate stores the records of one partition of the diaspora event
//! fabric on local disk. It is the durability layer under the broker node.
//!
//! ## Model
//!
//! * **Batches.** Producers group records into *batches* ([`BatchBuilder`]).
//!   A batch is the unit of everything: it is checksummed (CRC32C over all
//!   bytes but the offset and length prefix), optionally zstd-compressed,
//!   appended atomically, indexed, read and replicated as raw bytes. The exact
//!   layout is in the [`batch`] module docs; the wire protocol ships the same
//!   bytes. Records are opaque byte strings.
//! * **Offsets.** The log assigns each record a dense 64-bit offset. A batch
//!   carries only its base offset, stamped into its first 8 bytes at append
//!   ([`set_base_offset`]); that field is not covered by the CRC so stamping
//!   costs no re-checksum.
//! * **Segments.** The log is a directory of segment files named
//!   `{base_offset:020}.log`. Appends go to the last (*active*) segment; when
//!   it would exceed `segment_bytes_max` a new one starts and the old one is
//!   *sealed*.
//! * **Sparse index.** Each segment has an in-memory index with one entry
//!   every `index_interval_bytes` (relative offset, byte position, max
//!   timestamp before it). Sealed segments' indexes are written to
//!   `{base_offset:020}.index` and fsynced when the segment rolls. Indexes are
//!   derived data: a missing or inconsistent one is rebuilt at open.
//! * **Recovery.** [`Log::open`] keeps the longest valid prefix of the log.
//!   The active segment is scanned batch by batch (header checks, CRC, offset
//!   contiguity — [`scan_segment`] is the pure core) and its torn or corrupt
//!   tail is truncated and synced; sealed segments are followed header by
//!   header. Reads CRC-check every batch they return, so a corrupt record is
//!   an error, never data.
//! * **Fsync.** [`FsyncPolicy`] `always` (durable before `append` returns),
//!   `interval` (at most one interval of acknowledged data at risk; call
//!   [`Log::sync_if_due`] from a ticker) or `never`. Reads never wait for an
//!   fsync: they use `pread` on shared handles and take no writer lock.
//! * **Retention.** [`Log::apply_retention`] deletes whole oldest sealed
//!   segments by total size and by age; the active segment is never deleted.
//! * **Idempotent producers.** A batch with a `producer_id` carries the
//!   sequence number of its first record. The log keeps, per producer, the
//!   last sequence and the offsets of its last few batches, so a retried
//!   batch is answered with its original offsets instead of being written
//!   twice. This state is rebuilt from batch headers at open.
//!
//! ## What it does not do
//!
//! No networking, no replication, no topics or partitions (one `Log` is one
//! partition), no interpretation of record bytes, no per-record timestamps or
//! keys, and no compaction. Those belong to the fabric above.
//!
//! ```
//! use diaspora_log::{records, BatchBuilder, Compression, FsyncPolicy, Log, LogConfig};
//! let dir = tempfile::tempdir().unwrap();
//! let config = LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() };
//! let (log, _report) = Log::open(dir.path(), config).unwrap();
//! let mut batch = BatchBuilder::new(Compression::Zstd { level: 3 });
//! for i in 0..100u32 {
//!     batch.push(&i.to_le_bytes(), 1_700_000_000_000_000);
//! }
//! log.append(&batch.finish()).unwrap();
//! let raw = log.read(42, 1 << 20).unwrap();
//! let recs = records(&raw[0]).unwrap();
//! assert_eq!(recs[42].offset, 42);
//! assert_eq!(&recs[42].data[..], &42u32.to_le_bytes());
//! ```

#![warn(missing_docs)]

pub mod batch;
mod config;
mod error;
pub mod fuzzing;
mod index;
mod log;
mod producer;
mod scan;
mod tail;

pub use batch::{
    decode_header, records, records_with_limits, restamp_producer, set_base_offset, validate_batch,
    verify_batch, BatchBuilder, BatchError, BatchHeader, BatchLimits, BuildError, Compression,
    Record, BATCH_HEADER_BYTES, BATCH_MAGIC,
};
pub use config::{
    ConfigError, FsyncPolicy, LogConfig, ParseFsyncPolicyError, FSYNC_INTERVAL_DEFAULT,
    SEGMENT_BYTES_LIMIT, SEGMENT_BYTES_MIN,
};
pub use error::LogError;
pub use index::{IndexEntry, INDEX_ENTRY_BYTES};
pub use log::{AppendOutcome, Log, RecoveryReport, RetentionReport};
pub use producer::PRODUCER_BATCHES_RETAINED;
pub use scan::{
    scan_segment, scan_segment_file, BatchLocation, ScanMode, ScanOutcome, ScanSummary, StopReason,
};
pub use tail::TailBudget;

#[cfg(test)]
mod tests {
    #[test]
    fn log_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::Log>();
    }
}
