//! Recovery scanning: find the longest prefix of a segment made of valid,
//! offset-contiguous batches.
//!
//! One checking function ([`check_header_at`] plus a CRC comparison) is
//! shared by the pure in-memory scan ([`scan_segment`], used by tests and
//! fuzzing) and the streaming scan over a file ([`scan_segment_file`], used
//! by [`crate::Log::open`]), which reads header by header with `pread` and
//! never holds more than one bounded chunk of the file in memory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::batch::{check_header_limits, decode_header, BatchHeader, BatchLimits};
use crate::BATCH_HEADER_BYTES;

/// Bytes covered by neither the CRC nor the header check: base_offset,
/// batch_length and the CRC field itself. The CRC starts here.
const CRC_START: u64 = 16;
/// Chunk size for streaming CRC computation.
const CRC_CHUNK_BYTES: usize = 1024 * 1024;

/// Where a valid batch lies in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLocation {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of the batch's last record.
    pub last_offset: u64,
    /// Byte position of the batch in the segment.
    pub position: u64,
    /// Encoded size of the batch.
    pub total_bytes: u64,
    /// Largest record timestamp in the batch.
    pub max_timestamp_us: i64,
    /// Idempotent producer id (0 = none).
    pub producer_id: u64,
    /// Sequence of the batch's first record.
    pub base_sequence: u64,
    /// Records in the batch.
    pub record_count: u32,
}

impl BatchLocation {
    fn from_header(h: &BatchHeader, position: u64) -> Self {
        Self {
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            position,
            total_bytes: h.total_bytes(),
            max_timestamp_us: h.max_timestamp_us,
            producer_id: h.producer_id,
            base_sequence: h.base_sequence,
            record_count: h.record_count,
        }
    }

    /// Sequence of the batch's last record.
    pub fn last_sequence(&self) -> u64 {
        self.base_sequence
            .saturating_add(u64::from(self.record_count).saturating_sub(1))
    }
}

/// Why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Every byte belongs to a valid batch.
    CleanEnd,
    /// The bytes from `at` are an incomplete batch (a torn write).
    TornTail {
        /// Position of the incomplete batch.
        at: u64,
    },
    /// The batch at `at` is damaged.
    Corrupt {
        /// Position of the damaged batch.
        at: u64,
        /// What check failed.
        reason: String,
    },
    /// The batch at `at` does not continue the offset sequence.
    OffsetGap {
        /// Position of the batch.
        at: u64,
        /// The base offset that would have been contiguous.
        expected: u64,
        /// The base offset found.
        found: u64,
    },
}

impl StopReason {
    /// True for [`StopReason::CleanEnd`].
    pub fn is_clean(&self) -> bool {
        matches!(self, StopReason::CleanEnd)
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::CleanEnd => write!(f, "clean end"),
            StopReason::TornTail { at } => write!(f, "torn tail at byte {at}"),
            StopReason::Corrupt { at, reason } => write!(f, "corrupt batch at byte {at}: {reason}"),
            StopReason::OffsetGap {
                at,
                expected,
                found,
            } => write!(
                f,
                "offset gap at byte {at}: expected base offset {expected}, found {found}"
            ),
        }
    }
}

/// The result of [`scan_segment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Length of the valid prefix; everything after it should be truncated.
    pub valid_len: u64,
    /// The valid batches, in order.
    pub batches: Vec<BatchLocation>,
    /// Why the scan stopped.
    pub stop: StopReason,
}

impl ScanOutcome {
    /// The offset after the last valid batch, or `expected_base_offset` if none.
    pub fn next_offset(&self, expected_base_offset: u64) -> u64 {
        self.batches
            .last()
            .map_or(expected_base_offset, |b| b.last_offset.saturating_add(1))
    }
}

/// Summary of a streaming scan (batches are passed to a callback instead of
/// being collected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSummary {
    /// Length of the valid prefix.
    pub valid_len: u64,
    /// Offset after the last valid batch (the expected base if none).
    pub next_offset: u64,
    /// Number of valid batches.
    pub batch_count: u64,
    /// Why the scan stopped.
    pub stop: StopReason,
}

/// Whether a streaming scan checks CRCs or only headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanMode {
    /// Read every byte and check every CRC (the active segment).
    Full,
    /// Read headers only and follow the length chain (sealed segments,
    /// whose CRCs are checked lazily on every read).
    HeadersOnly,
}

/// The shared check of one batch header at `position`.
///
/// `header` holds up to [`BATCH_HEADER_BYTES`] bytes from `position`;
/// `remaining` is the number of segment bytes from `position` to the end;
/// `expected` is the base offset that keeps the sequence contiguous (`None`
/// when the previous batch ended at `u64::MAX`).
pub(crate) fn check_header_at(
    header: &[u8],
    position: u64,
    remaining: u64,
    expected: Option<u64>,
    limits: &BatchLimits,
) -> Result<BatchHeader, StopReason> {
    if remaining < BATCH_HEADER_BYTES as u64 || header.len() < BATCH_HEADER_BYTES {
        return Err(StopReason::TornTail { at: position });
    }
    let corrupt = |e: crate::BatchError| StopReason::Corrupt {
        at: position,
        reason: e.to_string(),
    };
    let h = decode_header(header).map_err(corrupt)?;
    check_header_limits(&h, limits).map_err(corrupt)?;
    if h.total_bytes() > remaining {
        return Err(StopReason::TornTail { at: position });
    }
    match expected {
        Some(e) if e == h.base_offset => Ok(h),
        _ => Err(StopReason::OffsetGap {
            at: position,
            expected: expected.unwrap_or(u64::MAX),
            found: h.base_offset,
        }),
    }
}

fn check_crc(h: &BatchHeader, computed: u32, position: u64) -> Result<(), StopReason> {
    if computed == h.crc {
        Ok(())
    } else {
        Err(StopReason::Corrupt {
            at: position,
            reason: crate::BatchError::CrcMismatch {
                stored: h.crc,
                computed,
            }
            .to_string(),
        })
    }
}

/// Where the scan loop gets its bytes from.
trait ScanSource {
    fn len(&self) -> u64;
    /// Fills `buf` from `position`; returns bytes read (short only at the end).
    fn read_header(&mut self, position: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// CRC32C of `[start, end)`.
    fn crc(&mut self, start: u64, end: u64) -> io::Result<u32>;
}

struct SliceSource<'a>(&'a [u8]);

impl ScanSource for SliceSource<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_header(&mut self, position: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = position as usize;
        let n = buf.len().min(self.0.len().saturating_sub(start));
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
    fn crc(&mut self, start: u64, end: u64) -> io::Result<u32> {
        Ok(crc32c::crc32c(&self.0[start as usize..end as usize]))
    }
}

struct FileSource<'a> {
    file: &'a File,
    len: u64,
    chunk: Vec<u8>,
}

impl ScanSource for FileSource<'_> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_header(&mut self, position: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(position)) as usize;
        self.file.read_exact_at(&mut buf[..n], position)?;
        Ok(n)
    }
    fn crc(&mut self, start: u64, end: u64) -> io::Result<u32> {
        if self.chunk.is_empty() {
            self.chunk = vec![0u8; CRC_CHUNK_BYTES];
        }
        let mut crc = 0u32;
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(self.chunk.len());
            self.file.read_exact_at(&mut self.chunk[..n], at)?;
            crc = crc32c::crc32c_append(crc, &self.chunk[..n]);
            at += n as u64;
        }
        Ok(crc)
    }
}

fn scan_with(
    source: &mut impl ScanSource,
    expected_base_offset: u64,
    limits: &BatchLimits,
    mode: ScanMode,
    mut on_batch: impl FnMut(&BatchLocation),
) -> io::Result<ScanSummary> {
    let len = source.len();
    let mut position = 0u64;
    let mut expected = Some(expected_base_offset);
    let mut batch_count = 0u64;
    let mut header = [0u8; BATCH_HEADER_BYTES];
    let stop = loop {
        let remaining = len - position;
        if remaining == 0 {
            break StopReason::CleanEnd;
        }
        let n = source.read_header(position, &mut header)?;
        let h = match check_header_at(&header[..n], position, remaining, expected, limits) {
            Ok(h) => h,
            Err(stop) => break stop,
        };
        let end = position + h.total_bytes();
        if mode == ScanMode::Full {
            let computed = source.crc(position + CRC_START, end)?;
            if let Err(stop) = check_crc(&h, computed, position) {
                break stop;
            }
        }
        on_batch(&BatchLocation::from_header(&h, position));
        batch_count += 1;
        expected = h.last_offset().checked_add(1);
        position = end;
    };
    Ok(ScanSummary {
        valid_len: position,
        next_offset: expected.unwrap_or(u64::MAX),
        batch_count,
        stop,
    })
}

/// Scans an in-memory segment and returns its longest valid prefix: batches
/// that pass the header checks, `limits`, the CRC, and whose base offsets
/// continue the sequence starting at `expected_base_offset`.
///
/// ```
/// use diaspora_log::{scan_segment, set_base_offset, BatchBuilder, BatchLimits, Compression, StopReason};
/// let mut seg = Vec::new();
/// for base in [10u64, 11] {
///     let mut b = BatchBuilder::new(Compression::None);
///     b.push(b"rec", 0);
///     let mut raw = b.finish().to_vec();
///     set_base_offset(&mut raw, base);
///     seg.extend_from_slice(&raw);
/// }
/// let full = seg.len() as u64;
/// seg.extend_from_slice(&[0xD5; 7]); // a torn write
/// let out = scan_segment(&seg, 10, &BatchLimits::default());
/// assert_eq!(out.valid_len, full);
/// assert_eq!(out.batches.len(), 2);
/// assert_eq!(out.stop, StopReason::TornTail { at: full });
/// ```
pub fn scan_segment(bytes: &[u8], expected_base_offset: u64, limits: &BatchLimits) -> ScanOutcome {
    let mut batches = Vec::new();
    let summary = scan_with(
        &mut SliceSource(bytes),
        expected_base_offset,
        limits,
        ScanMode::Full,
        |b| batches.push(*b),
    )
    .unwrap_or_else(|_| unreachable!("slice reads cannot fail"));
    ScanOutcome {
        valid_len: summary.valid_len,
        batches,
        stop: summary.stop,
    }
}

/// The streaming form of [`scan_segment`] over the first `file_len` bytes of
/// `file`: reads headers with `pread` (and, in [`ScanMode::Full`], the bodies
/// in bounded chunks for the CRC), calling `on_batch` for each valid batch.
///
/// ```
/// use diaspora_log::{scan_segment_file, BatchBuilder, BatchLimits, Compression, ScanMode};
/// use std::io::Write;
/// let mut b = BatchBuilder::new(Compression::None);
/// b.push(b"rec", 0);
/// let mut f = tempfile::tempfile().unwrap();
/// f.write_all(&b.finish()).unwrap();
/// let len = f.metadata().unwrap().len();
/// let mut n = 0;
/// let s = scan_segment_file(&f, len, 0, &BatchLimits::default(), ScanMode::Full, |_| n += 1).unwrap();
/// assert_eq!((s.valid_len, s.next_offset, n), (len, 1, 1));
/// ```
pub fn scan_segment_file(
    file: &File,
    file_len: u64,
    expected_base_offset: u64,
    limits: &BatchLimits,
    mode: ScanMode,
    on_batch: impl FnMut(&BatchLocation),
) -> io::Result<ScanSummary> {
    let mut source = FileSource {
        file,
        len: file_len,
        chunk: Vec::new(),
    };
    scan_with(&mut source, expected_base_offset, limits, mode, on_batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{set_base_offset, BatchBuilder, Compression};
    use std::io::Write;

    fn segment(base: u64, n: usize) -> Vec<u8> {
        let mut seg = Vec::new();
        let mut next = base;
        for i in 0..n {
            let mut b = BatchBuilder::new(Compression::None);
            for j in 0..=i {
                b.push(&vec![j as u8; 10 + i], (i * 100 + j) as i64);
            }
            let mut raw = b.finish().to_vec();
            set_base_offset(&mut raw, next);
            next += (i + 1) as u64;
            seg.extend_from_slice(&raw);
        }
        seg
    }

    #[test]
    fn empty_is_clean() {
        let out = scan_segment(&[], 5, &BatchLimits::default());
        assert_eq!(out.stop, StopReason::CleanEnd);
        assert_eq!(out.next_offset(5), 5);
    }

    #[test]
    fn wrong_first_offset_is_gap() {
        let seg = segment(0, 2);
        let out = scan_segment(&seg, 1, &BatchLimits::default());
        assert_eq!(
            out.stop,
            StopReason::OffsetGap {
                at: 0,
                expected: 1,
                found: 0
            }
        );
        assert_eq!(out.valid_len, 0);
    }

    #[test]
    fn file_scan_matches_slice_scan() {
        let mut seg = segment(7, 5);
        seg.truncate(seg.len() - 3);
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&seg).unwrap();
        let slice = scan_segment(&seg, 7, &BatchLimits::default());
        for mode in [ScanMode::Full, ScanMode::HeadersOnly] {
            let mut seen = Vec::new();
            let s = scan_segment_file(
                &f,
                seg.len() as u64,
                7,
                &BatchLimits::default(),
                mode,
                |b| seen.push(*b),
            )
            .unwrap();
            assert_eq!(s.valid_len, slice.valid_len);
            assert_eq!(s.stop, slice.stop);
            assert_eq!(seen, slice.batches);
            assert_eq!(s.next_offset, slice.next_offset(7));
        }
    }

    #[test]
    fn headers_only_skips_crc() {
        let mut seg = segment(0, 3);
        let last = seg.len() - 1;
        seg[last] ^= 0xFF;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&seg).unwrap();
        let len = seg.len() as u64;
        let l = BatchLimits::default();
        let h = scan_segment_file(&f, len, 0, &l, ScanMode::HeadersOnly, |_| {}).unwrap();
        assert_eq!(h.stop, StopReason::CleanEnd);
        let full = scan_segment_file(&f, len, 0, &l, ScanMode::Full, |_| {}).unwrap();
        assert!(matches!(full.stop, StopReason::Corrupt { .. }));
        assert_eq!(full.batch_count, 2);
    }
}
