//! The batch format: encoding ([`BatchBuilder`]), structural decoding
//! ([`decode_header`]), full validation ([`validate_batch`]) and record
//! extraction ([`records`]).
//!
//! All integers are little-endian. The layout is fixed because the wire
//! protocol ships these bytes unchanged from producer to segment file to
//! consumer:
//!
//! ```text
//! off size field
//! 0   8   base_offset u64      assigned by the log at append; NOT covered by the CRC
//! 8   4   batch_length u32     number of bytes after this field; total = 12 + batch_length
//! 12  4   crc32c u32           CRC32C of bytes [16, 12 + batch_length)
//! 16  1   magic u8 = 0xD5
//! 17  1   attributes u8        bits 0-1 compression: 0 none, 1 zstd; other bits 0
//! 18  2   reserved u16 = 0
//! 20  4   record_count u32     >= 1
//! 24  8   first_timestamp_us i64
//! 32  8   max_timestamp_us i64
//! 40  8   producer_id u64      0 = not idempotent
//! 48  8   base_sequence u64
//! 56  4   records_len u32      length of the uncompressed records section
//! 60  ..  records section: record_count x (u32 len, len bytes), maybe zstd-compressed
//! ```

use bytes::Bytes;
use thiserror::Error;

/// Size of the fixed batch header in bytes; the records section starts here.
pub const BATCH_HEADER_BYTES: usize = 60;

/// The magic byte at offset 16 of every batch (format version 1).
pub const BATCH_MAGIC: u8 = 0xD5;

/// Bytes before the `batch_length` field's coverage starts (base_offset + batch_length).
const LENGTH_PREFIX_BYTES: usize = 12;
/// First byte covered by the CRC.
const CRC_START: usize = 16;
/// Mask of the compression bits in `attributes`.
const COMPRESSION_MASK: u8 = 0b11;
/// Attribute value for zstd compression.
const ATTR_ZSTD: u8 = 1;
/// Bytes of the per-record length prefix.
const RECORD_LEN_BYTES: usize = 4;

/// How a batch's records section is compressed.
///
/// ```
/// use diaspora_log::{BatchBuilder, Compression};
/// let mut b = BatchBuilder::new(Compression::Zstd { level: 3 });
/// b.push(b"hello", 1);
/// let batch = b.finish();
/// assert!(batch.len() > diaspora_log::BATCH_HEADER_BYTES);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Records are stored as-is; reads return zero-copy slices.
    #[default]
    None,
    /// The records section is one zstd frame compressed at `level`.
    Zstd {
        /// zstd compression level (1..=22; 0 means zstd's default, 3).
        level: i32,
    },
}

/// Size limits applied when validating a batch. Every limit is inclusive.
///
/// ```
/// use diaspora_log::BatchLimits;
/// let limits = BatchLimits::default();
/// assert_eq!(limits.record_bytes_max, 64 * 1024 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Largest encoded batch (header included), and also the largest
    /// uncompressed records section, so a zstd batch cannot expand beyond it.
    pub batch_bytes_max: u32,
    /// Largest single record.
    pub record_bytes_max: u32,
    /// Most records in one batch.
    pub records_per_batch_max: u32,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            batch_bytes_max: 80 * 1024 * 1024,
            record_bytes_max: 64 * 1024 * 1024,
            records_per_batch_max: 1_000_000,
        }
    }
}

impl BatchLimits {
    /// The widest limits the format can express. Recovery scans use these so
    /// that lowering a configured limit never turns old, valid data into
    /// "corruption" that would be truncated away.
    ///
    /// ```
    /// let l = diaspora_log::BatchLimits::format_max();
    /// assert_eq!(l.batch_bytes_max, u32::MAX);
    /// ```
    pub const fn format_max() -> Self {
        Self {
            batch_bytes_max: u32::MAX,
            record_bytes_max: u32::MAX,
            records_per_batch_max: u32::MAX,
        }
    }
}

/// Why a batch was rejected. Messages name the value and, for limits, the
/// limit's name and setting.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// The buffer is shorter than the header or than the declared batch.
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the header says are needed.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// The buffer is longer than the declared batch.
    #[error("batch declares {declared} bytes but the buffer holds {actual}")]
    LengthMismatch {
        /// `12 + batch_length`.
        declared: u64,
        /// Buffer length.
        actual: u64,
    },
    /// `batch_length` is too small to hold the rest of the header.
    #[error("batch_length {batch_length} is smaller than the header remainder {minimum}")]
    BatchLengthTooSmall {
        /// Declared value.
        batch_length: u32,
        /// Smallest legal value.
        minimum: u32,
    },
    /// Wrong magic byte.
    #[error("bad magic byte {found:#04x}, expected {BATCH_MAGIC:#04x}")]
    BadMagic {
        /// The byte found at offset 16.
        found: u8,
    },
    /// Unknown compression or non-zero reserved attribute bits.
    #[error("bad attributes {attributes:#04x}: only compression 0 (none) or 1 (zstd) is defined")]
    BadAttributes {
        /// The attributes byte.
        attributes: u8,
    },
    /// The reserved field is not zero.
    #[error("reserved field is {found}, expected 0")]
    BadReserved {
        /// The reserved u16.
        found: u16,
    },
    /// `record_count` is zero.
    #[error("batch has record_count 0; a batch holds at least one record")]
    Empty,
    /// `base_offset + record_count - 1` does not fit in u64.
    #[error("base_offset {base_offset} + record_count {record_count} overflows u64")]
    OffsetOverflow {
        /// Declared base offset.
        base_offset: u64,
        /// Declared record count.
        record_count: u32,
    },
    /// `base_sequence + record_count - 1` does not fit in u64 (idempotent batches).
    #[error("base_sequence {base_sequence} + record_count {record_count} overflows u64")]
    SequenceOverflow {
        /// Declared base sequence.
        base_sequence: u64,
        /// Declared record count.
        record_count: u32,
    },
    /// An uncompressed batch whose records section length differs from `records_len`.
    #[error("uncompressed records section is {actual} bytes but records_len says {declared}")]
    RecordsLenMismatch {
        /// `records_len` from the header.
        declared: u32,
        /// Actual bytes (on disk or after decompression).
        actual: u64,
    },
    /// The stored CRC does not match the bytes.
    #[error("crc32c mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// The encoded batch is larger than `batch_bytes_max`.
    #[error("batch of {bytes} bytes exceeds batch_bytes_max {limit}")]
    BatchTooLarge {
        /// Encoded size.
        bytes: u64,
        /// The limit.
        limit: u32,
    },
    /// The uncompressed records section is larger than `batch_bytes_max`.
    #[error("uncompressed records section of {bytes} bytes exceeds batch_bytes_max {limit}")]
    RecordsTooLarge {
        /// `records_len`.
        bytes: u64,
        /// The limit.
        limit: u32,
    },
    /// Too many records.
    #[error("batch of {count} records exceeds records_per_batch_max {limit}")]
    TooManyRecords {
        /// `record_count`.
        count: u64,
        /// The limit.
        limit: u32,
    },
    /// One record is larger than `record_bytes_max`.
    #[error("record of {bytes} bytes exceeds record_bytes_max {limit}")]
    RecordTooLarge {
        /// Record length.
        bytes: u64,
        /// The limit.
        limit: u32,
    },
    /// The records section does not parse into exactly `record_count` records.
    #[error("records section malformed at record {index}: {reason}")]
    RecordsMalformed {
        /// Index of the record where parsing failed.
        index: u32,
        /// What was wrong.
        reason: &'static str,
    },
    /// zstd could not decompress the records section.
    #[error("zstd decompression failed: {reason}")]
    Decompress {
        /// zstd's message.
        reason: String,
    },
}

/// The decoded fixed header of a batch.
///
/// ```
/// use diaspora_log::{decode_header, BatchBuilder, Compression};
/// let mut b = BatchBuilder::new(Compression::None);
/// b.push(b"a", 10);
/// b.push(b"b", 20);
/// let batch = b.finish();
/// let h = decode_header(&batch).unwrap();
/// assert_eq!(h.record_count, 2);
/// assert_eq!(h.total_bytes(), batch.len() as u64);
/// assert_eq!(h.last_offset(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (assigned by the log).
    pub base_offset: u64,
    /// Bytes after the `batch_length` field.
    pub batch_length: u32,
    /// Stored CRC32C of bytes `[16, 12 + batch_length)`.
    pub crc: u32,
    /// Attribute bits (compression in bits 0-1).
    pub attributes: u8,
    /// Number of records, at least 1.
    pub record_count: u32,
    /// Timestamp of the first record, microseconds since the Unix epoch.
    pub first_timestamp_us: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp_us: i64,
    /// Idempotent producer id; 0 means not idempotent.
    pub producer_id: u64,
    /// Producer sequence number of the first record.
    pub base_sequence: u64,
    /// Length of the uncompressed records section.
    pub records_len: u32,
}

impl BatchHeader {
    /// Total encoded size: `12 + batch_length`.
    pub fn total_bytes(&self) -> u64 {
        LENGTH_PREFIX_BYTES as u64 + u64::from(self.batch_length)
    }

    /// Offset of the last record (saturating; [`decode_header`] rejects overflow).
    pub fn last_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.record_count).saturating_sub(1))
    }

    /// Sequence number of the last record (saturating; validation rejects overflow).
    pub fn last_sequence(&self) -> u64 {
        self.base_sequence
            .saturating_add(u64::from(self.record_count).saturating_sub(1))
    }

    /// The compression used by the records section.
    pub fn is_compressed(&self) -> bool {
        self.attributes & COMPRESSION_MASK == ATTR_ZSTD
    }
}

#[inline]
fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(a)
}

#[inline]
fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes and structurally checks the 60-byte header at the start of `buf`.
///
/// Checks: at least [`BATCH_HEADER_BYTES`] present, `batch_length` covers the
/// header, magic, attributes, reserved, `record_count >= 1`, no offset
/// overflow, and for uncompressed batches `records_len` equals the section
/// length. It does not check the CRC, the buffer's total length or limits;
/// see [`validate_batch`].
///
/// ```
/// use diaspora_log::{decode_header, BatchError};
/// assert!(matches!(decode_header(&[0u8; 10]), Err(BatchError::Truncated { .. })));
/// ```
pub fn decode_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated {
            needed: BATCH_HEADER_BYTES as u64,
            available: buf.len() as u64,
        });
    }
    let h = BatchHeader {
        base_offset: u64_at(buf, 0),
        batch_length: u32_at(buf, 8),
        crc: u32_at(buf, 12),
        attributes: buf[17],
        record_count: u32_at(buf, 20),
        first_timestamp_us: u64_at(buf, 24) as i64,
        max_timestamp_us: u64_at(buf, 32) as i64,
        producer_id: u64_at(buf, 40),
        base_sequence: u64_at(buf, 48),
        records_len: u32_at(buf, 56),
    };
    let minimum = (BATCH_HEADER_BYTES - LENGTH_PREFIX_BYTES) as u32;
    if h.batch_length < minimum {
        return Err(BatchError::BatchLengthTooSmall {
            batch_length: h.batch_length,
            minimum,
        });
    }
    if buf[16] != BATCH_MAGIC {
        return Err(BatchError::BadMagic { found: buf[16] });
    }
    if h.attributes & !COMPRESSION_MASK != 0 || h.attributes & COMPRESSION_MASK > ATTR_ZSTD {
        return Err(BatchError::BadAttributes {
            attributes: h.attributes,
        });
    }
    let reserved = u16::from_le_bytes([buf[18], buf[19]]);
    if reserved != 0 {
        return Err(BatchError::BadReserved { found: reserved });
    }
    if h.record_count == 0 {
        return Err(BatchError::Empty);
    }
    if h.base_offset
        .checked_add(u64::from(h.record_count) - 1)
        .is_none()
    {
        return Err(BatchError::OffsetOverflow {
            base_offset: h.base_offset,
            record_count: h.record_count,
        });
    }
    let section = h.batch_length - minimum;
    if !h.is_compressed() && section != h.records_len {
        return Err(BatchError::RecordsLenMismatch {
            declared: h.records_len,
            actual: u64::from(section),
        });
    }
    Ok(h)
}

/// Checks a decoded header against `limits` (no data access).
pub(crate) fn check_header_limits(h: &BatchHeader, limits: &BatchLimits) -> Result<(), BatchError> {
    if h.total_bytes() > u64::from(limits.batch_bytes_max) {
        return Err(BatchError::BatchTooLarge {
            bytes: h.total_bytes(),
            limit: limits.batch_bytes_max,
        });
    }
    if h.records_len > limits.batch_bytes_max {
        return Err(BatchError::RecordsTooLarge {
            bytes: u64::from(h.records_len),
            limit: limits.batch_bytes_max,
        });
    }
    if h.record_count > limits.records_per_batch_max {
        return Err(BatchError::TooManyRecords {
            count: u64::from(h.record_count),
            limit: limits.records_per_batch_max,
        });
    }
    // Every record needs at least its 4-byte length prefix.
    if u64::from(h.record_count) * RECORD_LEN_BYTES as u64 > u64::from(h.records_len) {
        return Err(BatchError::RecordsMalformed {
            index: 0,
            reason: "records_len too small for record_count length prefixes",
        });
    }
    if h.producer_id != 0
        && h.base_sequence
            .checked_add(u64::from(h.record_count) - 1)
            .is_none()
    {
        return Err(BatchError::SequenceOverflow {
            base_sequence: h.base_sequence,
            record_count: h.record_count,
        });
    }
    Ok(())
}

/// Computes the CRC32C the header of `buf` should carry (bytes `[16, len)`).
fn compute_crc(buf: &[u8]) -> u32 {
    crc32c::crc32c(&buf[CRC_START..])
}

/// A copy of an intact batch with a new producer id and base sequence (and
/// its CRC recomputed) — for a producer that must re-send batches the node
/// refused under an abandoned producer id.
///
/// ```
/// use diaspora_log::{restamp_producer, verify_batch, BatchBuilder, Compression};
/// let mut b = BatchBuilder::new(Compression::None).with_producer(1, 10);
/// b.push(b"x", 0);
/// let again = restamp_producer(&b.finish(), 2, 0).unwrap();
/// let h = verify_batch(&again).unwrap();
/// assert_eq!((h.producer_id, h.base_sequence), (2, 0));
/// ```
pub fn restamp_producer(
    batch: &[u8],
    producer_id: u64,
    base_sequence: u64,
) -> Result<Bytes, BatchError> {
    let h = verify_batch(batch)?;
    if base_sequence
        .checked_add(u64::from(h.record_count) - 1)
        .is_none()
    {
        return Err(BatchError::SequenceOverflow {
            base_sequence,
            record_count: h.record_count,
        });
    }
    let mut v = batch.to_vec();
    v[40..48].copy_from_slice(&producer_id.to_le_bytes());
    v[48..56].copy_from_slice(&base_sequence.to_le_bytes());
    let crc = compute_crc(&v);
    v[12..16].copy_from_slice(&crc.to_le_bytes());
    Ok(Bytes::from(v))
}

/// Checks the integrity of one whole batch: header structure, exact length
/// and CRC. It does not walk the records or apply limits. This is what the
/// log runs on every batch it serves, so a corrupt record is never returned.
///
/// ```
/// use diaspora_log::{verify_batch, BatchBuilder, Compression};
/// let mut b = BatchBuilder::new(Compression::None);
/// b.push(b"x", 0);
/// let mut batch = b.finish().to_vec();
/// assert!(verify_batch(&batch).is_ok());
/// batch[60] ^= 1;
/// assert!(verify_batch(&batch).is_err());
/// ```
pub fn verify_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = decode_header(buf)?;
    let total = h.total_bytes();
    if (buf.len() as u64) < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: buf.len() as u64,
        });
    }
    if buf.len() as u64 > total {
        return Err(BatchError::LengthMismatch {
            declared: total,
            actual: buf.len() as u64,
        });
    }
    let computed = compute_crc(buf);
    if computed != h.crc {
        return Err(BatchError::CrcMismatch {
            stored: h.crc,
            computed,
        });
    }
    Ok(h)
}

/// Fully validates one batch: [`verify_batch`] plus `limits` and a walk of
/// the records section (decompressing zstd into at most `records_len` bytes)
/// that must account exactly for `record_count` records and `records_len`
/// bytes. A batch that passes can always be decoded by [`records`].
///
/// ```
/// use diaspora_log::{validate_batch, BatchBuilder, BatchLimits, Compression};
/// let mut b = BatchBuilder::new(Compression::None);
/// b.push(&[0u8; 100], 0);
/// let batch = b.finish();
/// let tight = BatchLimits { record_bytes_max: 10, ..BatchLimits::default() };
/// let err = validate_batch(&batch, &tight).unwrap_err();
/// assert_eq!(err.to_string(), "record of 100 bytes exceeds record_bytes_max 10");
/// ```
pub fn validate_batch(buf: &[u8], limits: &BatchLimits) -> Result<BatchHeader, BatchError> {
    let h = decode_header(buf)?;
    // Limits before the CRC so an oversized buffer is rejected cheaply.
    check_header_limits(&h, limits)?;
    let h = verify_batch(buf)?;
    walk_records(buf, &h, limits, |_, _| {})?;
    Ok(h)
}

/// Walks the (decompressed) records section, calling `each(start, end)` with
/// the byte range of each record inside the section. Returns the
/// decompressed section for zstd batches.
fn walk_records(
    buf: &[u8],
    h: &BatchHeader,
    limits: &BatchLimits,
    each: impl FnMut(usize, usize),
) -> Result<Option<Vec<u8>>, BatchError> {
    let raw = &buf[BATCH_HEADER_BYTES..];
    if h.is_compressed() {
        let section = decompress(raw, h.records_len as usize)?;
        walk_section(&section, h, limits, each)?;
        Ok(Some(section))
    } else {
        walk_section(raw, h, limits, each)?;
        Ok(None)
    }
}

/// Decompresses a zstd frame into exactly `records_len` bytes. The output
/// buffer is allocated once with capacity `records_len` (already bounded by
/// `batch_bytes_max`), so a decompression bomb cannot grow it.
fn decompress(raw: &[u8], records_len: usize) -> Result<Vec<u8>, BatchError> {
    let out = zstd::bulk::decompress(raw, records_len).map_err(|e| BatchError::Decompress {
        reason: e.to_string(),
    })?;
    if out.len() != records_len {
        return Err(BatchError::RecordsLenMismatch {
            declared: records_len as u32,
            actual: out.len() as u64,
        });
    }
    Ok(out)
}

fn walk_section(
    section: &[u8],
    h: &BatchHeader,
    limits: &BatchLimits,
    mut each: impl FnMut(usize, usize),
) -> Result<(), BatchError> {
    let mut pos = 0usize;
    for index in 0..h.record_count {
        let Some(len_bytes) = section.get(pos..pos + RECORD_LEN_BYTES) else {
            return Err(BatchError::RecordsMalformed {
                index,
                reason: "length prefix runs past the records section",
            });
        };
        let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        if len > limits.record_bytes_max {
            return Err(BatchError::RecordTooLarge {
                bytes: u64::from(len),
                limit: limits.record_bytes_max,
            });
        }
        let start = pos + RECORD_LEN_BYTES;
        let end = start
            .checked_add(len as usize)
            .filter(|&e| e <= section.len())
            .ok_or(BatchError::RecordsMalformed {
                index,
                reason: "record runs past the records section",
            })?;
        each(start, end);
        pos = end;
    }
    if pos != section.len() {
        return Err(BatchError::RecordsMalformed {
            index: h.record_count,
            reason: "bytes left over after the last record",
        });
    }
    Ok(())
}

/// One record decoded from a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's offset: the batch's `base_offset` plus its index.
    pub offset: u64,
    /// The format stores timestamps per batch only: every record reports
    /// the batch's `first_timestamp_us`.
    pub timestamp_us: i64,
    /// The record's bytes. For uncompressed batches this is a zero-copy slice
    /// of the batch; for zstd batches a slice of one decompressed buffer.
    pub data: Bytes,
}

/// Validates `batch` with [`BatchLimits::default`] and returns its records.
///
/// ```
/// use diaspora_log::{records, set_base_offset, BatchBuilder, Compression};
/// let mut b = BatchBuilder::new(Compression::None);
/// b.push(b"one", 5);
/// b.push(b"", 6);
/// let mut raw = b.finish().to_vec();
/// set_base_offset(&mut raw, 100);
/// let recs = records(&bytes::Bytes::from(raw)).unwrap();
/// assert_eq!(recs.len(), 2);
/// assert_eq!((recs[0].offset, &recs[0].data[..]), (100, &b"one"[..]));
/// assert_eq!((recs[1].offset, recs[1].data.len()), (101, 0));
/// ```
pub fn records(batch: &Bytes) -> Result<Vec<Record>, BatchError> {
    records_with_limits(batch, &BatchLimits::default())
}

/// Like [`records`] with explicit limits.
///
/// ```
/// use diaspora_log::{records_with_limits, BatchBuilder, BatchLimits, Compression};
/// let mut b = BatchBuilder::new(Compression::Zstd { level: 1 });
/// b.push(&[7u8; 1000], 0);
/// let recs = records_with_limits(&b.finish(), &BatchLimits::default()).unwrap();
/// assert_eq!(recs[0].data.len(), 1000);
/// ```
pub fn records_with_limits(batch: &Bytes, limits: &BatchLimits) -> Result<Vec<Record>, BatchError> {
    let h = decode_header(batch)?;
    check_header_limits(&h, limits)?;
    let h = verify_batch(batch)?;
    let mut ranges = Vec::with_capacity(h.record_count as usize);
    let section = walk_records(batch, &h, limits, |s, e| ranges.push((s, e)))?;
    let (source, shift) = match section {
        Some(decompressed) => (Bytes::from(decompressed), 0),
        None => (batch.clone(), BATCH_HEADER_BYTES),
    };
    Ok(ranges
        .into_iter()
        .enumerate()
        .map(|(i, (s, e))| Record {
            offset: h.base_offset + i as u64,
            timestamp_us: h.first_timestamp_us,
            data: source.slice(s + shift..e + shift),
        })
        .collect())
}

/// Writes `base_offset` into the first 8 bytes of a batch. The field is not
/// covered by the CRC, so this is how the log stamps offsets without
/// re-checksumming. Buffers shorter than 8 bytes are left unchanged.
///
/// ```
/// use diaspora_log::{decode_header, set_base_offset, BatchBuilder, Compression};
/// let mut b = BatchBuilder::new(Compression::None);
/// b.push(b"r", 0);
/// let mut raw = b.finish().to_vec();
/// set_base_offset(&mut raw, 42);
/// assert_eq!(decode_header(&raw).unwrap().base_offset, 42);
/// ```
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    if let Some(field) = batch.get_mut(0..8) {
        field.copy_from_slice(&base_offset.to_le_bytes());
    }
}

/// Encodes records into one batch in a single preallocated buffer.
///
/// ```
/// use diaspora_log::{validate_batch, BatchBuilder, BatchLimits, Compression};
/// let mut b = BatchBuilder::with_capacity(Compression::None, 4096).with_producer(7, 0);
/// for i in 0..10u8 {
///     b.push(&[i; 128], 1_000 + i64::from(i));
/// }
/// assert_eq!(b.len(), 10);
/// let batch = b.finish();
/// let h = validate_batch(&batch, &BatchLimits::default()).unwrap();
/// assert_eq!((h.producer_id, h.base_sequence, h.max_timestamp_us), (7, 0, 1_009));
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    compression: Compression,
    /// Header placeholder followed by the uncompressed records section.
    buf: Vec<u8>,
    record_count: u32,
    first_timestamp_us: i64,
    max_timestamp_us: i64,
    producer_id: u64,
    base_sequence: u64,
}

/// Why [`BatchBuilder::try_push`] refused a record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BuildError {
    /// The record cannot be represented (length prefix is u32).
    #[error("record of {bytes} bytes exceeds the format's record_bytes_max {limit}")]
    RecordTooLarge {
        /// Record length.
        bytes: u64,
        /// The format limit.
        limit: u64,
    },
    /// The batch would exceed what `batch_length` (u32) can describe, or
    /// `record_count` would overflow.
    #[error(
        "batch of {bytes} bytes / {records} records exceeds the format's batch_bytes_max {limit}"
    )]
    BatchFull {
        /// Batch size the push would produce.
        bytes: u64,
        /// Record count the push would produce.
        records: u64,
        /// The format limit in bytes.
        limit: u64,
    },
}

impl BatchBuilder {
    /// A builder with a small default capacity.
    pub fn new(compression: Compression) -> Self {
        Self::with_capacity(compression, 4096)
    }

    /// A builder whose buffer is preallocated for `bytes` of records.
    pub fn with_capacity(compression: Compression, bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(BATCH_HEADER_BYTES + bytes);
        buf.resize(BATCH_HEADER_BYTES, 0);
        Self {
            compression,
            buf,
            record_count: 0,
            first_timestamp_us: 0,
            max_timestamp_us: i64::MIN,
            producer_id: 0,
            base_sequence: 0,
        }
    }

    /// Marks the batch as coming from idempotent producer `producer_id`
    /// whose first record has sequence `base_sequence`.
    pub fn with_producer(mut self, producer_id: u64, base_sequence: u64) -> Self {
        self.producer_id = producer_id;
        self.base_sequence = base_sequence;
        self
    }

    /// Appends one record.
    ///
    /// # Panics
    /// If the record or batch cannot be represented by the format (a record
    /// over 4 GiB, or a batch over ~4 GiB / u32::MAX records). Use
    /// [`BatchBuilder::try_push`] to handle that as an error.
    pub fn push(&mut self, record: &[u8], timestamp_us: i64) {
        self.push_parts(&[record], timestamp_us);
    }

    /// [`BatchBuilder::try_push_parts`] that panics on a record over 4 GiB
    /// (callers bound records far below that).
    pub fn push_parts(&mut self, parts: &[&[u8]], timestamp_us: i64) {
        if let Err(e) = self.try_push_parts(parts, timestamp_us) {
            panic!("BatchBuilder::push: {e}");
        }
    }

    /// Appends one record, or explains why the format cannot hold it.
    pub fn try_push(&mut self, record: &[u8], timestamp_us: i64) -> Result<(), BuildError> {
        self.try_push_parts(&[record], timestamp_us)
    }

    /// Appends one record made of the concatenation of `parts` — so a caller
    /// with a small encoded header and a large payload copies each once,
    /// straight into the batch.
    ///
    /// ```
    /// use diaspora_log::{BatchBuilder, Compression, records};
    /// let mut b = BatchBuilder::new(Compression::None);
    /// b.try_push_parts(&[b"head-", b"payload"], 1).unwrap();
    /// let batch = b.finish();
    /// assert_eq!(&records(&batch).unwrap()[0].data[..], b"head-payload");
    /// ```
    pub fn try_push_parts(&mut self, parts: &[&[u8]], timestamp_us: i64) -> Result<(), BuildError> {
        let record_len: usize = parts.iter().map(|p| p.len()).sum();
        let format_max = u64::from(u32::MAX);
        if record_len as u64 > format_max {
            return Err(BuildError::RecordTooLarge {
                bytes: record_len as u64,
                limit: format_max,
            });
        }
        let new_len = (self.buf.len() + RECORD_LEN_BYTES + record_len) as u64;
        // batch_length = total - 12 must fit in u32.
        if new_len - LENGTH_PREFIX_BYTES as u64 > format_max || self.record_count == u32::MAX {
            return Err(BuildError::BatchFull {
                bytes: new_len,
                records: u64::from(self.record_count) + 1,
                limit: format_max,
            });
        }
        if self.record_count == 0 {
            self.first_timestamp_us = timestamp_us;
        }
        self.max_timestamp_us = self.max_timestamp_us.max(timestamp_us);
        self.buf.reserve(RECORD_LEN_BYTES + record_len);
        self.buf
            .extend_from_slice(&(record_len as u32).to_le_bytes());
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.record_count += 1;
        Ok(())
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> usize {
        self.record_count as usize
    }

    /// True when no record has been pushed.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Encoded size if finished uncompressed (an upper bound for zstd,
    /// which falls back to no compression when it does not help).
    pub fn encoded_bytes_estimate(&self) -> usize {
        self.buf.len()
    }

    /// Finishes the batch with `base_offset` 0 (the log assigns offsets).
    ///
    /// A builder with no records yields a batch with `record_count` 0, which
    /// [`validate_batch`] rejects; check [`BatchBuilder::is_empty`] first.
    /// With [`Compression::Zstd`], if compression does not make the records
    /// section smaller the batch is stored uncompressed.
    pub fn finish(self) -> Bytes {
        let Self {
            compression,
            mut buf,
            record_count,
            first_timestamp_us,
            max_timestamp_us,
            producer_id,
            base_sequence,
        } = self;
        let records_len = (buf.len() - BATCH_HEADER_BYTES) as u32;
        let mut attributes = 0u8;
        if let Compression::Zstd { level } = compression {
            if let Ok(compressed) = zstd::bulk::compress(&buf[BATCH_HEADER_BYTES..], level) {
                if compressed.len() < records_len as usize {
                    buf.truncate(BATCH_HEADER_BYTES);
                    buf.extend_from_slice(&compressed);
                    attributes = ATTR_ZSTD;
                }
            }
        }
        let max_timestamp_us = if record_count == 0 {
            first_timestamp_us
        } else {
            max_timestamp_us
        };
        let batch_length = (buf.len() - LENGTH_PREFIX_BYTES) as u32;
        let h = &mut buf[..BATCH_HEADER_BYTES];
        h[0..8].copy_from_slice(&0u64.to_le_bytes());
        h[8..12].copy_from_slice(&batch_length.to_le_bytes());
        h[16] = BATCH_MAGIC;
        h[17] = attributes;
        h[18..20].copy_from_slice(&0u16.to_le_bytes());
        h[20..24].copy_from_slice(&record_count.to_le_bytes());
        h[24..32].copy_from_slice(&first_timestamp_us.to_le_bytes());
        h[32..40].copy_from_slice(&max_timestamp_us.to_le_bytes());
        h[40..48].copy_from_slice(&producer_id.to_le_bytes());
        h[48..56].copy_from_slice(&base_sequence.to_le_bytes());
        h[56..60].copy_from_slice(&records_len.to_le_bytes());
        let crc = compute_crc(&buf);
        buf[12..16].copy_from_slice(&crc.to_le_bytes());
        Bytes::from(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(compression: Compression, recs: &[&[u8]]) -> Bytes {
        let mut b = BatchBuilder::new(compression);
        for (i, r) in recs.iter().enumerate() {
            b.push(r, i as i64 * 10);
        }
        b.finish()
    }

    #[test]
    fn roundtrip_none_is_zero_copy() {
        let batch = build(Compression::None, &[b"abc", b"", b"defg"]);
        let recs = records(&batch).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(&recs[2].data[..], b"defg");
        let base = batch.as_ptr() as usize;
        let p = recs[0].data.as_ptr() as usize;
        assert!(
            p >= base && p < base + batch.len(),
            "data must alias the batch"
        );
    }

    #[test]
    fn zstd_compresses_and_roundtrips() {
        let rec = vec![9u8; 10_000];
        let batch = build(Compression::Zstd { level: 3 }, &[&rec, &rec]);
        let h = decode_header(&batch).unwrap();
        assert!(h.is_compressed());
        assert!(batch.len() < 2_000);
        let recs = records(&batch).unwrap();
        assert_eq!(recs[1].data, rec);
    }

    #[test]
    fn zstd_falls_back_when_not_smaller() {
        let batch = build(Compression::Zstd { level: 3 }, &[b"x"]);
        assert!(!decode_header(&batch).unwrap().is_compressed());
    }

    #[test]
    fn header_fields() {
        let mut b = BatchBuilder::new(Compression::None).with_producer(5, 100);
        b.push(b"a", 30);
        b.push(b"b", 10);
        b.push(b"c", 50);
        let h = validate_batch(&b.finish(), &BatchLimits::default()).unwrap();
        assert_eq!(h.first_timestamp_us, 30);
        assert_eq!(h.max_timestamp_us, 50);
        assert_eq!(h.last_sequence(), 102);
        assert_eq!(h.records_len, 3 * 5);
    }

    #[test]
    fn limits_name_limit_and_value() {
        let batch = build(Compression::None, &[&[0u8; 50], &[0u8; 50]]);
        let l = BatchLimits {
            records_per_batch_max: 1,
            ..BatchLimits::default()
        };
        assert_eq!(
            validate_batch(&batch, &l).unwrap_err().to_string(),
            "batch of 2 records exceeds records_per_batch_max 1"
        );
        let l = BatchLimits {
            batch_bytes_max: 100,
            ..BatchLimits::default()
        };
        assert_eq!(
            validate_batch(&batch, &l).unwrap_err().to_string(),
            format!("batch of {} bytes exceeds batch_bytes_max 100", batch.len())
        );
    }

    #[test]
    fn zstd_bomb_is_bounded_by_records_len() {
        // A valid zstd batch whose header under-declares records_len.
        let rec = vec![1u8; 100_000];
        let batch = build(Compression::Zstd { level: 1 }, &[&rec]);
        let mut raw = batch.to_vec();
        raw[56..60].copy_from_slice(&1000u32.to_le_bytes());
        let crc = compute_crc(&raw);
        raw[12..16].copy_from_slice(&crc.to_le_bytes());
        let err = validate_batch(&raw, &BatchLimits::default()).unwrap_err();
        assert!(matches!(err, BatchError::Decompress { .. }), "{err}");
    }

    #[test]
    fn trailing_and_short_buffers_are_rejected() {
        let batch = build(Compression::None, &[b"abc"]);
        let mut long = batch.to_vec();
        long.push(0);
        assert!(matches!(
            verify_batch(&long),
            Err(BatchError::LengthMismatch { .. })
        ));
        assert!(matches!(
            verify_batch(&batch[..batch.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn empty_builder_is_invalid() {
        let batch = BatchBuilder::new(Compression::None).finish();
        assert_eq!(
            validate_batch(&batch, &BatchLimits::default()),
            Err(BatchError::Empty)
        );
    }

    #[test]
    fn crc_protects_records_len_mismatch_even_if_recomputed() {
        // records section claims one more record than present.
        let batch = build(Compression::None, &[b"abc"]);
        let mut raw = batch.to_vec();
        raw[20..24].copy_from_slice(&2u32.to_le_bytes());
        let crc = compute_crc(&raw);
        raw[12..16].copy_from_slice(&crc.to_le_bytes());
        assert!(validate_batch(&raw, &BatchLimits::default()).is_err());
        assert!(records(&Bytes::from(raw)).is_err());
    }
}
