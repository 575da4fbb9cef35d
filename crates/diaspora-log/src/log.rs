//! The on-disk log: a directory of segments, appends under one short writer
//! lock, lock-free `pread` reads, recovery at open, retention.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};

use crate::batch::{decode_header, set_base_offset, validate_batch, verify_batch, BatchLimits};
use crate::config::{FsyncPolicy, LogConfig};
use crate::error::LogError;
use crate::index::{self, IndexBuilder, IndexEntry};
use crate::producer::{ProducerTable, SequenceCheck};
use crate::scan::{scan_segment_file, BatchLocation, ScanMode, StopReason};
use crate::tail::{Tail, TailBudget};
use crate::BATCH_HEADER_BYTES;

/// Most segments one [`Log::read`] call visits; callers loop for more.
const READ_SEGMENTS_MAX: usize = 16;
/// Batches above this size are written without being copied into the write buffer.
const ZERO_COPY_WRITE_MIN_BYTES: usize = 64 << 10;
/// The append buffer is shrunk back to this after a larger batch.
const WRITE_BUFFER_RETAINED_BYTES: usize = 8 * 1024 * 1024;
/// Write-behind under [`FsyncPolicy::Interval`]: once this many bytes have
/// been appended since writeback was last started, the log asks the kernel
/// to start writing them out (`sync_file_range(SYNC_FILE_RANGE_WRITE)` on
/// Linux; nothing elsewhere). The interval fsync then finds little dirty data,
/// so it does not hold the disk (and ext4's journal) for a whole interval's
/// worth of bytes while appends and reads wait behind it.
const WRITE_BEHIND_BYTES: u64 = 1 << 20;

/// What [`Log::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The batch was written at these offsets.
    Appended {
        /// Offset of the first record.
        base_offset: u64,
        /// Offset of the last record.
        last_offset: u64,
    },
    /// The batch is a retry of one already written at these offsets; nothing
    /// was written.
    Duplicate {
        /// Offset of the first record of the original batch.
        base_offset: u64,
        /// Offset of the last record of the original batch.
        last_offset: u64,
    },
}

impl AppendOutcome {
    /// Offset of the first record (original offsets for a duplicate).
    pub fn base_offset(&self) -> u64 {
        match *self {
            AppendOutcome::Appended { base_offset, .. }
            | AppendOutcome::Duplicate { base_offset, .. } => base_offset,
        }
    }

    /// Offset of the last record (original offsets for a duplicate).
    pub fn last_offset(&self) -> u64 {
        match *self {
            AppendOutcome::Appended { last_offset, .. }
            | AppendOutcome::Duplicate { last_offset, .. } => last_offset,
        }
    }
}

/// What [`Log::open`] found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in the log after recovery.
    pub segments: usize,
    /// First offset held.
    pub start_offset: u64,
    /// Next offset to be assigned.
    pub next_offset: u64,
    /// Bytes cut from the end of the last segment (torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Why the scan of the last segment stopped.
    pub stop: StopReason,
    /// Sealed segments whose index file was missing or wrong and was rewritten.
    pub indexes_rebuilt: usize,
    /// Base offsets of segments deleted because an earlier segment was
    /// broken (the log keeps its longest valid, contiguous prefix).
    pub segments_removed: Vec<u64>,
    /// Idempotent producers known after recovery.
    pub producers: usize,
}

/// What [`Log::apply_retention`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Base offsets of the deleted segments.
    pub segments_deleted: Vec<u64>,
    /// Bytes freed.
    pub bytes_deleted: u64,
    /// First offset held afterwards.
    pub start_offset: u64,
}

/// One segment: a `.log` file plus its in-memory sparse index. Readers see
/// only `size_bytes` committed bytes; the writer publishes with `Release`.
#[derive(Debug)]
struct Segment {
    base_offset: u64,
    log_path: PathBuf,
    index_path: PathBuf,
    file: File,
    size_bytes: AtomicU64,
    max_timestamp_us: AtomicI64,
    index: RwLock<Vec<IndexEntry>>,
}

impl Segment {
    fn size(&self) -> u64 {
        self.size_bytes.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
struct Writer {
    active: Arc<Segment>,
    index_builder: IndexBuilder,
    producers: ProducerTable,
    buf: Vec<u8>,
    /// Position in the active segment up to which writeback was started.
    writeback_from: u64,
    last_sync: Instant,
    dirty: bool,
    failed: Option<String>,
}

/// A segmented, checksummed, crash-safe append-only log in one directory.
///
/// `Log` is `Send + Sync`: share it with an `Arc`. Appends serialise on a
/// short writer lock; reads use `pread` on shared file handles and never wait
/// for an fsync.
///
/// ```
/// use diaspora_log::{BatchBuilder, Compression, FsyncPolicy, Log, LogConfig};
/// let dir = tempfile::tempdir().unwrap();
/// let config = LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() };
/// let (log, report) = Log::open(dir.path(), config.clone()).unwrap();
/// assert_eq!(report.next_offset, 0);
/// let mut b = BatchBuilder::new(Compression::None);
/// b.push(b"hello", 1);
/// b.push(b"world", 2);
/// let out = log.append(&b.finish()).unwrap();
/// assert_eq!((out.base_offset(), out.last_offset()), (0, 1));
/// let batches = log.read(1, 1 << 20).unwrap();
/// let recs = diaspora_log::records(&batches[0]).unwrap();
/// assert_eq!(&recs[1].data[..], b"world");
/// drop(log);
/// let (log, _) = Log::open(dir.path(), config).unwrap();
/// assert_eq!(log.next_offset(), 2);
/// ```
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    segments: RwLock<Vec<Arc<Segment>>>,
    next_offset: AtomicU64,
    writer: Mutex<Writer>,
    /// Serialises `sync`: a caller returns only once every append before its
    /// call is on stable storage, even while another caller's fsync runs.
    sync_lock: Mutex<()>,
    /// The newest batches in memory, when [`Log::hold_tail`] gave a budget.
    tail: Mutex<Tail>,
    tail_budget: Option<Arc<TailBudget>>,
}

fn log_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

fn index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

/// Parses `{base_offset:020}.{ext}` file names.
fn parse_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Asks the kernel to start writing `len` bytes at `from` back to the disk
/// without waiting for it: a hint, so a failure is only logged (the next
/// fsync reports real I/O errors).
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a valid open file descriptor; the call reads no user memory.
    let rc =
        unsafe { libc::sync_file_range(file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "sync_file_range");
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _from: u64, _len: u64) {}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LogError::io(dir))
}

fn open_segment_file(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(LogError::io(path))
}

/// Writes an index file and makes it durable.
fn write_index_file(path: &Path, entries: &[IndexEntry], sync: bool) -> Result<(), LogError> {
    let bytes = index::encode(entries);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, &bytes).map_err(LogError::io(&tmp))?;
    if sync {
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(LogError::io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(LogError::io(path))
}

/// Scan result of one segment file at open.
struct Scanned {
    summary: crate::scan::ScanSummary,
    batches: Vec<BatchLocation>,
    file_len: u64,
}

fn scan_file(
    file: &File,
    path: &Path,
    base_offset: u64,
    mode: ScanMode,
) -> Result<Scanned, LogError> {
    let file_len = file.metadata().map_err(LogError::io(path))?.len();
    let mut batches = Vec::new();
    let summary = scan_segment_file(
        file,
        file_len,
        base_offset,
        &BatchLimits::format_max(),
        mode,
        |b| batches.push(*b),
    )
    .map_err(LogError::io(path))?;
    Ok(Scanned {
        summary,
        batches,
        file_len,
    })
}

/// Builds a segment's in-memory state from its scanned batches and feeds
/// idempotent batches into the producer table.
fn build_segment(
    dir: &Path,
    base_offset: u64,
    file: File,
    scanned: &Scanned,
    interval_bytes: u32,
    producers: &mut ProducerTable,
) -> (Segment, IndexBuilder) {
    let mut builder = IndexBuilder::new(interval_bytes);
    let mut entries = Vec::new();
    let mut max_timestamp_us = i64::MIN;
    for b in &scanned.batches {
        if let Some(e) =
            builder.observe(b.base_offset - base_offset, b.position, b.max_timestamp_us)
        {
            entries.push(e);
        }
        max_timestamp_us = max_timestamp_us.max(b.max_timestamp_us);
        if b.producer_id != 0 {
            producers.record(
                b.producer_id,
                b.base_sequence,
                b.last_sequence(),
                b.base_offset,
                b.last_offset,
            );
        }
    }
    let segment = Segment {
        base_offset,
        log_path: log_path(dir, base_offset),
        index_path: index_path(dir, base_offset),
        file,
        size_bytes: AtomicU64::new(scanned.summary.valid_len),
        max_timestamp_us: AtomicI64::new(max_timestamp_us),
        index: RwLock::new(entries),
    };
    (segment, builder)
}

impl Log {
    /// Opens (creating if needed) the log in `dir` and recovers it.
    ///
    /// Recovery keeps the longest valid, offset-contiguous prefix of the log:
    /// sealed segments are checked header by header (their CRCs are checked
    /// on every read), the last segment is fully CRC-checked and its torn or
    /// corrupt tail is truncated and synced. Index files of sealed segments
    /// that are missing or wrong are rewritten. Idempotent producer state is
    /// rebuilt from the batch headers.
    pub fn open(dir: &Path, config: LogConfig) -> Result<(Log, RecoveryReport), LogError> {
        config.validate()?;
        fs::create_dir_all(dir).map_err(LogError::io(dir))?;
        let mut bases = Vec::new();
        let mut index_bases = Vec::new();
        for entry in fs::read_dir(dir).map_err(LogError::io(dir))? {
            let entry = entry.map_err(LogError::io(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(base) = parse_name(name, "log") {
                bases.push(base);
            } else if let Some(base) = parse_name(name, "index") {
                index_bases.push(base);
            } else if name.ends_with(".index.tmp") {
                let p = entry.path();
                fs::remove_file(&p).map_err(LogError::io(&p))?;
            }
        }
        bases.sort_unstable();
        for base in &index_bases {
            if bases.binary_search(base).is_err() {
                let p = index_path(dir, *base);
                fs::remove_file(&p).map_err(LogError::io(&p))?;
            }
        }
        if bases.is_empty() {
            let p = log_path(dir, 0);
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&p)
                .map_err(LogError::io(&p))?;
            sync_dir(dir)?;
            bases.push(0);
        }

        let mut producers = ProducerTable::default();
        let mut segments: Vec<Arc<Segment>> = Vec::new();
        let mut indexes_rebuilt = 0;
        let mut segments_removed = Vec::new();
        let mut i = 0;
        let (active, active_builder, truncated_bytes, stop, next_offset) = loop {
            let base = bases[i];
            let path = log_path(dir, base);
            let file = open_segment_file(&path)?;
            if i + 1 < bases.len() {
                let scanned = scan_file(&file, &path, base, ScanMode::HeadersOnly)?;
                if scanned.summary.stop.is_clean() && scanned.summary.next_offset == bases[i + 1] {
                    let (segment, _) = build_segment(
                        dir,
                        base,
                        file,
                        &scanned,
                        config.index_interval_bytes,
                        &mut producers,
                    );
                    let expected = index::encode(&segment.index.read());
                    if fs::read(&segment.index_path).ok().as_deref() != Some(&expected[..]) {
                        write_index_file(&segment.index_path, &segment.index.read(), true)?;
                        indexes_rebuilt += 1;
                    }
                    segments.push(Arc::new(segment));
                    i += 1;
                    continue;
                }
                tracing::warn!(
                    segment = %path.display(),
                    stop = %scanned.summary.stop,
                    next_offset = scanned.summary.next_offset,
                    next_segment = bases[i + 1],
                    "sealed segment is broken; keeping the log prefix up to it"
                );
                for &later in &bases[i + 1..] {
                    for p in [log_path(dir, later), index_path(dir, later)] {
                        match fs::remove_file(&p) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(LogError::Io { path: p, source: e }),
                        }
                    }
                    segments_removed.push(later);
                }
            }
            // The last segment: full CRC scan, truncate what does not pass.
            let scanned = scan_file(&file, &path, base, ScanMode::Full)?;
            let truncated = scanned.file_len - scanned.summary.valid_len;
            if truncated > 0 {
                tracing::warn!(
                    segment = %path.display(),
                    stop = %scanned.summary.stop,
                    truncated_bytes = truncated,
                    "truncating the tail of the last segment"
                );
                file.set_len(scanned.summary.valid_len)
                    .and_then(|()| file.sync_all())
                    .map_err(LogError::io(&path))?;
            }
            let (segment, builder) = build_segment(
                dir,
                base,
                file,
                &scanned,
                config.index_interval_bytes,
                &mut producers,
            );
            break (
                Arc::new(segment),
                builder,
                truncated,
                scanned.summary.stop,
                scanned.summary.next_offset,
            );
        };
        if !segments_removed.is_empty() {
            sync_dir(dir)?;
        }
        segments.push(active.clone());
        let report = RecoveryReport {
            segments: segments.len(),
            start_offset: segments[0].base_offset,
            next_offset,
            truncated_bytes,
            stop,
            indexes_rebuilt,
            segments_removed,
            producers: producers.len(),
        };
        let log = Log {
            dir: dir.to_path_buf(),
            config,
            segments: RwLock::new(segments),
            next_offset: AtomicU64::new(next_offset),
            writer: Mutex::new(Writer {
                active,
                index_builder: active_builder,
                producers,
                buf: Vec::new(),
                writeback_from: 0,
                last_sync: Instant::now(),
                dirty: false,
                failed: None,
            }),
            sync_lock: Mutex::new(()),
            tail: Mutex::new(Tail::default()),
            tail_budget: None,
        };
        Ok((log, report))
    }
}

impl Log {
    /// Appends one batch built by [`crate::BatchBuilder`] (its base offset is
    /// ignored and replaced by the next offset).
    ///
    /// The batch is validated against the configured limits first. Batches
    /// from idempotent producers (`producer_id != 0`) are checked against the
    /// producer's last sequence: an exact retry of one of its last
    /// [`crate::PRODUCER_BATCHES_RETAINED`] batches returns
    /// [`AppendOutcome::Duplicate`] with the original offsets; an older retry
    /// is [`LogError::DuplicateSequence`]; a gap or partial overlap is
    /// [`LogError::OutOfOrderSequence`]. An unknown producer may start at any
    /// sequence. With [`FsyncPolicy::Always`] the data is durable on return.
    ///
    /// ```
    /// use diaspora_log::{AppendOutcome, BatchBuilder, Compression, FsyncPolicy, Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cfg = LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() };
    /// let (log, _) = Log::open(dir.path(), cfg).unwrap();
    /// let mut b = BatchBuilder::new(Compression::None).with_producer(9, 0);
    /// b.push(b"x", 0);
    /// let batch = b.finish();
    /// assert_eq!(log.append(&batch).unwrap(), AppendOutcome::Appended { base_offset: 0, last_offset: 0 });
    /// assert_eq!(log.append(&batch).unwrap(), AppendOutcome::Duplicate { base_offset: 0, last_offset: 0 });
    /// ```
    pub fn append(&self, batch: &[u8]) -> Result<AppendOutcome, LogError> {
        self.append_inner(Input::Borrowed(batch))
    }

    /// [`Log::append`] for a batch the caller hands over. When nothing else
    /// shares its buffer (a frame just read off the network), the base offset
    /// is stamped in place and, with [`Log::hold_tail`], the same bytes serve
    /// readers at the head: no copy on the way in or out.
    pub fn append_bytes(&self, batch: Bytes) -> Result<AppendOutcome, LogError> {
        self.append_inner(Input::Owned(batch))
    }

    /// Keeps the newest batches in memory within `budget` (shared by the
    /// logs of a node), so that a reader at the head is served without
    /// reading the file.
    pub fn hold_tail(&mut self, budget: Arc<TailBudget>) {
        self.tail_budget = Some(budget);
    }

    fn append_inner(&self, input: Input<'_>) -> Result<AppendOutcome, LogError> {
        let h = validate_batch(input.as_slice(), &self.config.limits)?;
        let mut guard = self.writer.lock();
        let w = &mut *guard;
        if let Some(reason) = &w.failed {
            return Err(LogError::Failed {
                path: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        if h.producer_id != 0 {
            match w
                .producers
                .check(h.producer_id, h.base_sequence, h.last_sequence())
            {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate {
                    base_offset,
                    last_offset,
                } => {
                    return Ok(AppendOutcome::Duplicate {
                        base_offset,
                        last_offset,
                    })
                }
                SequenceCheck::DuplicateUnknown { last_sequence } => {
                    return Err(LogError::DuplicateSequence {
                        producer_id: h.producer_id,
                        base_sequence: h.base_sequence,
                        last_sequence,
                    })
                }
                SequenceCheck::OutOfOrder { expected } => {
                    return Err(LogError::OutOfOrderSequence {
                        producer_id: h.producer_id,
                        expected,
                        got: h.base_sequence,
                    })
                }
            }
        }
        let base_offset = self.next_offset.load(Ordering::Relaxed);
        let last_offset = base_offset
            .checked_add(u64::from(h.record_count) - 1)
            .ok_or(crate::BatchError::OffsetOverflow {
                base_offset,
                record_count: h.record_count,
            })?;
        let total = input.as_slice().len() as u64;
        let size = w.active.size();
        let relative_last = last_offset - w.active.base_offset;
        if size > 0
            && (size + total > self.config.segment_bytes_max || relative_last > u64::from(u32::MAX))
        {
            self.roll(w, base_offset)?;
        }
        let active = w.active.clone();
        let position = active.size();
        // Written at the committed size: a failed or torn write is simply
        // overwritten by the next append (or truncated by recovery).
        let (owned, shared, borrowed) = match input {
            Input::Owned(b) => match b.try_into_mut() {
                Ok(own) => (Some(own), None, None),
                Err(b) => (None, Some(b), None),
            },
            Input::Borrowed(b) => (None, None, Some(b)),
        };
        let batch: &[u8] = match (&shared, borrowed) {
            (Some(b), _) => b,
            (None, Some(b)) => b,
            (None, None) => &[],
        };
        // A buffer of our own: the caller's when nothing else shares it, or,
        // when the tail is held, a copy of a small batch (which is copied to
        // be stamped anyway). It is stamped, written and held as it is.
        let own = owned.or_else(|| {
            (self.tail_budget.is_some() && batch.len() <= ZERO_COPY_WRITE_MIN_BYTES)
                .then(|| BytesMut::from(batch))
        });
        let held = if let Some(mut own) = own {
            set_base_offset(&mut own, base_offset);
            let own = own.freeze();
            active
                .file
                .write_all_at(&own, position)
                .map_err(LogError::io(&active.log_path))?;
            Some(own)
        } else if batch.len() > ZERO_COPY_WRITE_MIN_BYTES {
            // Large batches are not copied: the stamped 8-byte base offset, then
            // the caller's bytes as they are.
            let mut head = [0u8; 8];
            set_base_offset(&mut head, base_offset);
            active
                .file
                .write_all_at(&head, position)
                .and_then(|()| active.file.write_all_at(&batch[8..], position + 8))
                .map_err(LogError::io(&active.log_path))?;
            None
        } else {
            w.buf.clear();
            w.buf.extend_from_slice(batch);
            set_base_offset(&mut w.buf, base_offset);
            active
                .file
                .write_all_at(&w.buf, position)
                .map_err(LogError::io(&active.log_path))?;
            if w.buf.capacity() > WRITE_BUFFER_RETAINED_BYTES {
                w.buf = Vec::new();
            }
            None
        };
        if let Some(budget) = &self.tail_budget {
            // Under the writer lock, so the tail sees appends in order.
            let mut tail = self.tail.lock();
            match held {
                Some(bytes) => tail.push(budget, base_offset, last_offset, bytes),
                None => tail.clear(budget),
            }
        }
        if let Some(e) = w.index_builder.observe(
            base_offset - active.base_offset,
            position,
            h.max_timestamp_us,
        ) {
            active.index.write().push(e);
        }
        active
            .max_timestamp_us
            .fetch_max(h.max_timestamp_us, Ordering::AcqRel);
        active.size_bytes.store(position + total, Ordering::Release);
        self.next_offset
            .store(last_offset.saturating_add(1), Ordering::Release);
        if h.producer_id != 0 {
            w.producers.record(
                h.producer_id,
                h.base_sequence,
                h.last_sequence(),
                base_offset,
                last_offset,
            );
        }
        w.dirty = true;
        let end = position + total;
        let write_behind = (matches!(self.config.fsync, FsyncPolicy::Interval(_))
            && end.saturating_sub(w.writeback_from) >= WRITE_BEHIND_BYTES)
            .then(|| {
                let from = std::mem::replace(&mut w.writeback_from, end);
                (active.clone(), from, end - from)
            });
        match self.config.fsync {
            FsyncPolicy::Always => self.sync_locked(w)?,
            // The owner's ticker calls `sync_if_due` (outside the writer lock);
            // this is only a backstop for a log nobody ticks, and it too syncs
            // after releasing the lock so other appends and reads go on.
            FsyncPolicy::Interval(d) if w.last_sync.elapsed() >= d * 2 => {
                drop(guard);
                self.sync()?;
            }
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => drop(guard),
        }
        if let Some((segment, from, len)) = write_behind {
            start_writeback(&segment.file, from, len);
        }
        Ok(AppendOutcome::Appended {
            base_offset,
            last_offset,
        })
    }

    /// Syncs the active segment while holding the writer lock.
    fn sync_locked(&self, w: &mut Writer) -> Result<(), LogError> {
        w.dirty = false;
        w.last_sync = Instant::now();
        if let Err(e) = w.active.file.sync_data() {
            w.failed = Some(e.to_string());
            return Err(LogError::Io {
                path: w.active.log_path.clone(),
                source: e,
            });
        }
        Ok(())
    }

    /// Seals the active segment (index file written, data synced unless the
    /// policy is `never`) and starts a new one at `base_offset`.
    fn roll(&self, w: &mut Writer, base_offset: u64) -> Result<(), LogError> {
        let sync = self.config.fsync != FsyncPolicy::Never;
        let old = w.active.clone();
        write_index_file(&old.index_path, &old.index.read(), sync)?;
        if sync {
            self.sync_locked(w)?;
        }
        let path = log_path(&self.dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(LogError::io(&path))?;
        if sync {
            sync_dir(&self.dir)?;
        }
        let segment = Arc::new(Segment {
            base_offset,
            log_path: path,
            index_path: index_path(&self.dir, base_offset),
            file,
            size_bytes: AtomicU64::new(0),
            max_timestamp_us: AtomicI64::new(i64::MIN),
            index: RwLock::new(Vec::new()),
        });
        self.segments.write().push(segment.clone());
        w.active = segment;
        w.index_builder = IndexBuilder::new(self.config.index_interval_bytes);
        w.writeback_from = 0;
        Ok(())
    }

    /// Forces everything appended so far to stable storage, whatever the
    /// policy. The fsync runs outside the writer lock, so appends and reads
    /// continue meanwhile.
    pub fn sync(&self) -> Result<(), LogError> {
        let _one_at_a_time = self.sync_lock.lock();
        let active = {
            let mut w = self.writer.lock();
            if let Some(reason) = &w.failed {
                return Err(LogError::Failed {
                    path: self.dir.clone(),
                    reason: reason.clone(),
                });
            }
            if !w.dirty {
                return Ok(());
            }
            w.dirty = false;
            w.last_sync = Instant::now();
            w.active.clone()
        };
        if let Err(e) = active.file.sync_data() {
            self.writer.lock().failed = Some(e.to_string());
            return Err(LogError::Io {
                path: active.log_path.clone(),
                source: e,
            });
        }
        Ok(())
    }

    /// Under [`FsyncPolicy::Interval`], syncs if the interval has passed since
    /// the last sync and there is unsynced data; otherwise does nothing. Call
    /// it from a ticker so a quiet log still becomes durable.
    pub fn sync_if_due(&self) -> Result<(), LogError> {
        if let FsyncPolicy::Interval(d) = self.config.fsync {
            let due = {
                let w = self.writer.lock();
                w.dirty && w.last_sync.elapsed() >= d
            };
            if due {
                return self.sync();
            }
        }
        Ok(())
    }

    /// Reads whole raw batches starting with the one that contains
    /// `from_offset`, up to about `max_bytes` (at least one batch, however
    /// large), crossing segment boundaries. Every batch read from a file is
    /// CRC-checked on the way out; a damaged one is a [`LogError::Corrupt`]
    /// error, never data. Batches still in the tail held in memory
    /// ([`Log::hold_tail`]) are returned from there: they were checked on
    /// append and have not touched the disk since.
    ///
    /// `from_offset == next_offset()` returns an empty vector; offsets below
    /// `start_offset()` or above `next_offset()` are
    /// [`LogError::OffsetOutOfRange`].
    pub fn read(&self, from_offset: u64, max_bytes: usize) -> Result<Vec<Bytes>, LogError> {
        let next = self.next_offset.load(Ordering::Acquire);
        let segments: Vec<Arc<Segment>> = {
            let all = self.segments.read();
            let start = all.first().map_or(next, |s| s.base_offset);
            if from_offset < start || from_offset > next {
                return Err(LogError::OffsetOutOfRange {
                    requested: from_offset,
                    start,
                    next,
                });
            }
            if from_offset == next {
                return Ok(Vec::new());
            }
            if self.tail_budget.is_some() {
                if let Some(batches) = self.tail.lock().read(from_offset, next, max_bytes as u64) {
                    return Ok(batches);
                }
            }
            let i = all
                .partition_point(|s| s.base_offset <= from_offset)
                .saturating_sub(1);
            all[i..all.len().min(i + READ_SEGMENTS_MAX)].to_vec()
        };
        let mut out = Vec::new();
        let mut budget = max_bytes as u64;
        let mut from = Some(from_offset);
        for segment in &segments {
            let more = read_segment(segment, from.take(), next, &mut budget, &mut out)?;
            if !more {
                break;
            }
        }
        Ok(out)
    }

    /// Offset of the first batch whose max timestamp is at least
    /// `timestamp_us`, or `None` if every batch is older.
    pub fn offset_for_timestamp(&self, timestamp_us: i64) -> Result<Option<u64>, LogError> {
        let segments: Vec<Arc<Segment>> = self.segments.read().clone();
        for segment in segments {
            if segment.max_timestamp_us.load(Ordering::Acquire) < timestamp_us {
                continue;
            }
            let (position, relative) = index::lookup_timestamp(&segment.index.read(), timestamp_us);
            let size = segment.size();
            let mut position = position;
            let mut expected = segment.base_offset + relative;
            while position < size {
                let h = read_header(&segment, position, size, expected)?;
                if h.max_timestamp_us >= timestamp_us {
                    return Ok(Some(h.base_offset));
                }
                position += h.total_bytes();
                expected = h.last_offset().saturating_add(1);
            }
        }
        Ok(None)
    }

    /// First offset held.
    pub fn start_offset(&self) -> u64 {
        self.segments
            .read()
            .first()
            .map_or_else(|| self.next_offset(), |s| s.base_offset)
    }

    /// Offset the next appended record will get.
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Total committed bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.read().iter().map(|s| s.size()).sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// `(last_sequence, last_offset)` of an idempotent producer, if known.
    pub fn producer_state(&self, producer_id: u64) -> Option<(u64, u64)> {
        self.writer.lock().producers.get(producer_id)
    }

    /// Deletes whole oldest sealed segments while the log is larger than
    /// `retention_bytes_max`, or while the oldest segment's newest record is
    /// older than `now_us - retention_age`. The active segment is never
    /// deleted. Readers holding an older segment finish from the open handle.
    pub fn apply_retention(&self, now_us: i64) -> Result<RetentionReport, LogError> {
        let cutoff_us = self
            .config
            .retention_age
            .map(|age| now_us.saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX)));
        let victims: Vec<Arc<Segment>> = {
            let _w = self.writer.lock();
            let mut all = self.segments.write();
            let mut total: u64 = all.iter().map(|s| s.size()).sum();
            let mut count = 0;
            while count + 1 < all.len() {
                let oldest = &all[count];
                let by_bytes = self.config.retention_bytes_max.is_some_and(|m| total > m);
                let by_age =
                    cutoff_us.is_some_and(|c| oldest.max_timestamp_us.load(Ordering::Acquire) < c);
                if !(by_bytes || by_age) {
                    break;
                }
                total -= oldest.size();
                count += 1;
            }
            all.drain(..count).collect()
        };
        let mut report = RetentionReport {
            start_offset: self.start_offset(),
            ..RetentionReport::default()
        };
        for segment in victims {
            fs::remove_file(&segment.log_path).map_err(LogError::io(&segment.log_path))?;
            match fs::remove_file(&segment.index_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(LogError::Io {
                        path: segment.index_path.clone(),
                        source: e,
                    })
                }
            }
            report.segments_deleted.push(segment.base_offset);
            report.bytes_deleted += segment.size();
        }
        if !report.segments_deleted.is_empty() && self.config.fsync != FsyncPolicy::Never {
            sync_dir(&self.dir)?;
        }
        Ok(report)
    }

    /// Closes the log and deletes its directory with every file in it.
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        self.writer.lock().dirty = false;
        drop(self);
        fs::remove_dir_all(&dir).map_err(LogError::io(&dir))
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Some(budget) = &self.tail_budget {
            self.tail.get_mut().clear(budget);
        }
        // Best effort: a clean shutdown should not lose an interval's data.
        let w = self.writer.get_mut();
        if w.dirty && w.failed.is_none() && self.config.fsync != FsyncPolicy::Never {
            if let Err(e) = w.active.file.sync_data() {
                tracing::warn!(path = %w.active.log_path.display(), error = %e, "fsync at close failed");
            }
        }
    }
}

/// A batch to append: borrowed (copied where it must be stamped) or handed
/// over (stamped in place when nothing else shares it).
enum Input<'a> {
    Borrowed(&'a [u8]),
    Owned(Bytes),
}

impl Input<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Input::Borrowed(b) => b,
            Input::Owned(b) => b,
        }
    }
}

/// Reads `len` bytes at `position` into a new buffer. On Linux the buffer is
/// not zeroed first (a fetch of a few MiB would otherwise write every byte
/// twice): `pread` fills it and only what it reported is exposed.
fn read_fresh(file: &File, len: usize, position: u64) -> std::io::Result<BytesMut> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut buf = BytesMut::with_capacity(len);
        while buf.len() < len {
            let done = buf.len();
            let at = libc::off_t::try_from(position + done as u64).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "file position past off_t")
            })?;
            let spare = buf.spare_capacity_mut();
            // SAFETY: `spare` has room for at least `len - done` bytes and
            // pread writes at most that many into it.
            let n =
                unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), len - done, at) };
            match n {
                n if n > 0 => {
                    // SAFETY: pread initialised the next `n` bytes (n ≤ len - done).
                    unsafe { buf.set_len(done + n as usize) }
                }
                0 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("file ended {} bytes into a read of {len}", done),
                    ))
                }
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(buf)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut buf = BytesMut::zeroed(len);
        file.read_exact_at(&mut buf, position)?;
        Ok(buf)
    }
}

/// Reads and checks the header at `position`, which must hold the batch with
/// base offset `expected`.
fn read_header(
    segment: &Segment,
    position: u64,
    size: u64,
    expected: u64,
) -> Result<crate::BatchHeader, LogError> {
    let corrupt = |reason: String| LogError::Corrupt {
        path: segment.log_path.clone(),
        position,
        reason,
    };
    if size - position < BATCH_HEADER_BYTES as u64 {
        return Err(corrupt(format!(
            "{} bytes left, too few for a batch header",
            size - position
        )));
    }
    let mut header = [0u8; BATCH_HEADER_BYTES];
    segment
        .file
        .read_exact_at(&mut header, position)
        .map_err(LogError::io(&segment.log_path))?;
    let h = decode_header(&header).map_err(|e| corrupt(e.to_string()))?;
    if h.base_offset != expected {
        return Err(corrupt(format!(
            "base offset {} where {expected} was expected",
            h.base_offset
        )));
    }
    if h.total_bytes() > size - position {
        return Err(corrupt(format!(
            "batch of {} bytes runs past the segment end {size}",
            h.total_bytes()
        )));
    }
    Ok(h)
}

/// Appends batches of `segment` to `out` while `budget` lasts. With
/// `from = Some(offset)` starts at the batch containing it, else at the
/// segment start. Returns whether the caller should continue with the next
/// segment.
fn read_segment(
    segment: &Segment,
    from: Option<u64>,
    next_offset: u64,
    budget: &mut u64,
    out: &mut Vec<Bytes>,
) -> Result<bool, LogError> {
    let size = segment.size();
    let (mut position, mut expected) = match from {
        Some(from) => {
            let (position, relative) =
                index::lookup_offset(&segment.index.read(), from - segment.base_offset);
            let mut position = position;
            let mut expected = segment.base_offset + relative;
            // Walk headers to the batch that contains `from`.
            loop {
                if position >= size {
                    return Ok(true);
                }
                let h = read_header(segment, position, size, expected)?;
                if h.last_offset() >= from {
                    break;
                }
                position += h.total_bytes();
                expected = h.last_offset().saturating_add(1);
            }
            (position, expected)
        }
        None => (0, segment.base_offset),
    };
    while position < size && expected < next_offset {
        // One pread for as many whole batches as the budget allows.
        let first = read_header(segment, position, size, expected)?;
        if !out.is_empty() && first.total_bytes() > *budget {
            return Ok(false);
        }
        let chunk_len = (*budget).max(first.total_bytes()).min(size - position);
        let chunk = read_fresh(&segment.file, chunk_len as usize, position)
            .map_err(LogError::io(&segment.log_path))?
            .freeze();
        let mut at = 0u64;
        while at < chunk_len && expected < next_offset {
            let rest = &chunk[at as usize..];
            let Ok(h) = decode_header(rest) else { break };
            if h.total_bytes() > rest.len() as u64 {
                break; // continues with the next pread
            }
            let end = (at + h.total_bytes()) as usize;
            let batch = chunk.slice(at as usize..end);
            let corrupt = |reason: String| LogError::Corrupt {
                path: segment.log_path.clone(),
                position: position + at,
                reason,
            };
            let h = verify_batch(&batch).map_err(|e| corrupt(e.to_string()))?;
            if h.base_offset != expected {
                return Err(corrupt(format!(
                    "base offset {} where {expected} was expected",
                    h.base_offset
                )));
            }
            if !out.is_empty() && h.total_bytes() > *budget {
                return Ok(false);
            }
            *budget = budget.saturating_sub(h.total_bytes());
            out.push(batch);
            expected = h.last_offset().saturating_add(1);
            at = end as u64;
            if *budget == 0 {
                return Ok(false);
            }
        }
        if at == 0 {
            // The header decoded above but not inside the chunk: impossible
            // unless the file changed underneath; report instead of looping.
            return Err(LogError::Corrupt {
                path: segment.log_path.clone(),
                position,
                reason: "batch header changed while reading".to_string(),
            });
        }
        position += at;
    }
    Ok(true)
}
