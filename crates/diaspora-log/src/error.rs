//! The log's error type.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::batch::BatchError;
use crate::config::ConfigError;

/// Errors from [`crate::Log`]. Messages name the file, the value and the limit.
#[derive(Debug, Error)]
pub enum LogError {
    /// An I/O call failed on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The appended batch is invalid or over a limit.
    #[error("invalid batch: {0}")]
    Batch(#[from] BatchError),
    /// The configuration is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The requested offset is not in `[start, next]`.
    #[error("offset {requested} is out of range: the log holds offsets [{start}, {next})")]
    OffsetOutOfRange {
        /// Requested offset.
        requested: u64,
        /// First offset held.
        start: u64,
        /// Next offset to be assigned.
        next: u64,
    },
    /// An idempotent producer skipped or overlapped sequence numbers.
    #[error("producer {producer_id} sent base sequence {got}, expected {expected}")]
    OutOfOrderSequence {
        /// Producer id.
        producer_id: u64,
        /// The next sequence the log expects.
        expected: u64,
        /// The base sequence received.
        got: u64,
    },
    /// A retry of a batch that was appended long ago; its offsets are no
    /// longer retained, but it must not be appended again.
    #[error(
        "producer {producer_id} batch at base sequence {base_sequence} was already appended \
         (last sequence {last_sequence}); its offsets are no longer retained"
    )]
    DuplicateSequence {
        /// Producer id.
        producer_id: u64,
        /// The duplicate batch's base sequence.
        base_sequence: u64,
        /// The producer's last appended sequence.
        last_sequence: u64,
    },
    /// Stored data failed a check when read.
    #[error("corrupt data in {} at byte {position}: {reason}", path.display())]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Byte position of the bad batch.
        position: u64,
        /// The failed check.
        reason: String,
    },
    /// An earlier fsync failed, so what is on disk is unknown; the log
    /// refuses appends until it is reopened (and recovered).
    #[error("log at {} refuses appends after a failed fsync: {reason}", path.display())]
    Failed {
        /// Log directory.
        path: PathBuf,
        /// The original error.
        reason: String,
    },
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, source }
    }
}
