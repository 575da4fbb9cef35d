//! The local-disk spill tier of a QoS producer's buffer.
//!
//! When the producer's memory tier is full, items are written to a
//! [`SpillStore`] in the spill directory, read back later (in order) to be
//! sent, and released once the fabric has acknowledged them.
//!
//! Items live in segment files named `{counter:020}.spill`; each holds a run
//! of records laid out by [`encode_record`]. A segment is deleted as soon as
//! every record in it is released and it is no longer the one being appended
//! to, so the directory's size ([`SpillStore::used`]) tracks the backlog and
//! is bounded by `spill_bytes_max` ([`SpillStore::cap`]).
//!
//! # Durability
//!
//! None, on purpose. Spill files are scratch space for this process: nothing
//! is fsynced, and [`SpillStore::open`] deletes stale `*.spill` files left by
//! an earlier run instead of recovering them. The spill tier only extends
//! the producer-side buffer while memory is full; a spilled item has been
//! *accepted*, never *acknowledged*, so after a crash it is lost exactly as
//! it would have been in memory. Durability starts at the fabric's ack.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use diaspora_proto::v1::Item;
use prost::Message;

/// Magic number that starts every record: "SPIL" as a `u32`, stored
/// little-endian (so the first bytes on disk read `LIPS`).
pub const RECORD_MAGIC: u32 = 0x5350_494C;
/// Bytes of a record header: magic, body length, CRC32C (`u32` LE each), seq (`u64` LE).
pub const RECORD_HEADER_BYTES: usize = 20;
/// Largest record body (encoded [`Item`]) [`decode_record`] accepts: 64 MiB
/// of payload plus 1 MiB for everything else.
pub const RECORD_BODY_MAX: usize = (64 << 20) + (1 << 20);
/// File extension of spill segment files.
const SEGMENT_EXT: &str = "spill";

/// Errors of the spill tier.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// Writing the record would take the directory over its byte cap.
    #[error("spill directory full: need {need} bytes, {used} of {cap} used (spill_bytes_max)")]
    Full {
        /// Bytes the record needs on disk.
        need: u64,
        /// Bytes of spill files currently on disk.
        used: u64,
        /// The cap (`spill_bytes_max`).
        cap: u64,
    },
    /// An I/O operation on a spill file or the directory failed.
    #[error("spill I/O on {}: {source}", path.display())]
    Io {
        /// The file or directory operated on.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A record read back from disk failed its checks.
    #[error("spilled record for seq {seq} is corrupt: {reason}")]
    Corrupt {
        /// The seq that was read.
        seq: u64,
        /// What was wrong.
        reason: String,
    },
    /// No record is spilled for this seq.
    #[error("no spilled record for seq {seq}")]
    Missing {
        /// The seq asked for.
        seq: u64,
    },
    /// A record buffer could not be decoded (or an item cannot be made into one).
    #[error("bad spill record: {0}")]
    Record(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpillError + '_ {
    move |source| SpillError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Encodes `item` as the on-disk record for `seq`:
///
/// | bytes  | field                                         |
/// |--------|-----------------------------------------------|
/// | 0..4   | magic [`RECORD_MAGIC`], `u32` LE              |
/// | 4..8   | body length, `u32` LE                         |
/// | 8..12  | CRC32C over `seq ++ body`, `u32` LE           |
/// | 12..20 | seq, `u64` LE                                 |
/// | 20..   | body: the prost-encoded [`Item`]              |
///
/// # Panics
///
/// If the item encodes to more than `u32::MAX` bytes ([`SpillStore::put`]
/// refuses anything over [`RECORD_BODY_MAX`] before getting here).
///
/// ```
/// use diaspora_stream::spill::{decode_record, encode_record};
/// let item = diaspora_fabric::item::Item { timestamp_us: 7, ..Default::default() };
/// let rec = encode_record(42, &item);
/// assert_eq!(decode_record(&rec).unwrap(), (42, item, rec.len()));
/// ```
pub fn encode_record(seq: u64, item: &Item) -> Vec<u8> {
    let mut buf = Vec::with_capacity(RECORD_HEADER_BYTES + item.encoded_len());
    buf.extend_from_slice(&[0; 12]);
    buf.extend_from_slice(&seq.to_le_bytes());
    item.encode(&mut buf).expect("a Vec grows as needed");
    seal(&mut buf);
    buf
}

/// A record with an arbitrary (not necessarily valid) body; for fuzzing.
pub(crate) fn frame_record(seq: u64, body: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(RECORD_HEADER_BYTES + body.len());
    buf.extend_from_slice(&[0; 12]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(body);
    seal(&mut buf);
    buf
}

/// Fills in magic, length and CRC of a record whose seq and body are in place.
fn seal(buf: &mut [u8]) {
    let len = u32::try_from(buf.len() - RECORD_HEADER_BYTES).expect("spill record body over 4 GiB");
    let crc = crc32c::crc32c(&buf[12..]);
    buf[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    buf[4..8].copy_from_slice(&len.to_le_bytes());
    buf[8..12].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Decodes the record at the start of `buf`, returning `(seq, item, bytes
/// consumed)`; bytes after the record are ignored. Never panics: checks the
/// magic, that the body length is at most [`RECORD_BODY_MAX`] and within
/// `buf`, the CRC, and that the body decodes as an [`Item`], and returns
/// [`SpillError::Record`] when any check fails.
pub fn decode_record(buf: &[u8]) -> Result<(u64, Item, usize), SpillError> {
    let bad = |reason: String| Err(SpillError::Record(reason));
    if buf.len() < RECORD_HEADER_BYTES {
        return bad(format!("{} bytes, shorter than a record header", buf.len()));
    }
    let magic = u32_at(buf, 0);
    if magic != RECORD_MAGIC {
        return bad(format!(
            "magic {magic:#010x}, expected {RECORD_MAGIC:#010x}"
        ));
    }
    let len = u32_at(buf, 4) as usize;
    if len > RECORD_BODY_MAX {
        return bad(format!(
            "body length {len} over the {RECORD_BODY_MAX}-byte limit"
        ));
    }
    let end = RECORD_HEADER_BYTES + len;
    if buf.len() < end {
        return bad(format!(
            "body length {len} but only {} bytes follow the header",
            buf.len() - RECORD_HEADER_BYTES
        ));
    }
    let (stored, actual) = (u32_at(buf, 8), crc32c::crc32c(&buf[12..end]));
    if stored != actual {
        return bad(format!("crc32c {actual:#010x}, header says {stored:#010x}"));
    }
    let seq = u64::from_le_bytes(buf[12..20].try_into().expect("8 bytes"));
    let item = Item::decode(&buf[RECORD_HEADER_BYTES..end])
        .map_err(|e| SpillError::Record(format!("item does not decode: {e}")))?;
    Ok((seq, item, end))
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    /// Bytes written (live and released records).
    size: u64,
    /// Records not yet released.
    live: usize,
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u64,
}

/// The spill directory of one producer: items by seq, in append-only segment
/// files. The directory must not be shared with another store.
#[derive(Debug)]
pub struct SpillStore {
    dir: PathBuf,
    cap: u64,
    segment_bytes: u64,
    segments: BTreeMap<u64, Segment>,
    /// The segment appended to, if any.
    active: Option<u64>,
    next_segment: u64,
    index: HashMap<u64, Loc>,
    used: u64,
}

impl SpillStore {
    /// Opens (creating it if needed) the spill directory `dir`, holding at
    /// most `cap_bytes` of spill files in segments of about `segment_bytes`.
    ///
    /// Spill files are scratch for this process: stale `*.spill` files from
    /// an earlier run in `dir` are deleted, not recovered. Items spilled
    /// before a crash are gone, as they would be from memory; durability
    /// comes from the fabric once it acks (see the [module docs](self)).
    pub fn open(dir: &Path, cap_bytes: u64, segment_bytes: u64) -> Result<SpillStore, SpillError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            if path.extension().is_some_and(|e| e == SEGMENT_EXT) && path.is_file() {
                fs::remove_file(&path).map_err(io_err(&path))?;
                tracing::debug!(path = %path.display(), "removed stale spill file");
            }
        }
        Ok(SpillStore {
            dir: dir.to_path_buf(),
            cap: cap_bytes,
            segment_bytes,
            segments: BTreeMap::new(),
            active: None,
            next_segment: 0,
            index: HashMap::new(),
            used: 0,
        })
    }

    /// Writes `item` as the record for `seq` and returns its size on disk.
    /// A record already spilled for `seq` is replaced (and released).
    ///
    /// Appends to the active segment, first rotating to a new segment file
    /// when the record would take the active one over `segment_bytes` (a
    /// record larger than that gets a segment of its own). Fails with
    /// [`SpillError::Full`] when `used() + size > cap()`, and with
    /// [`SpillError::Record`] when the item encodes to more than
    /// [`RECORD_BODY_MAX`]; nothing is written then.
    pub fn put(&mut self, seq: u64, item: &Item) -> Result<u64, SpillError> {
        let body_len = item.encoded_len();
        if body_len > RECORD_BODY_MAX {
            return Err(SpillError::Record(format!(
                "item for seq {seq} encodes to {body_len} bytes, over the {RECORD_BODY_MAX}-byte limit"
            )));
        }
        let need = (RECORD_HEADER_BYTES + body_len) as u64;
        if self.used.saturating_add(need) > self.cap {
            return Err(SpillError::Full {
                need,
                used: self.used,
                cap: self.cap,
            });
        }
        let record = encode_record(seq, item);
        let id = self.segment_for(need)?;
        let seg = self.segments.get_mut(&id).expect("active segment is open");
        let offset = seg.size;
        if let Err(source) = seg.file.write_all_at(&record, offset) {
            let _ = seg.file.set_len(offset); // best effort: drop a partial record
            return Err(SpillError::Io {
                path: seg.path.clone(),
                source,
            });
        }
        seg.size += need;
        seg.live += 1;
        self.used += need;
        if let Some(old) = self.index.insert(
            seq,
            Loc {
                segment: id,
                offset,
                len: need,
            },
        ) {
            self.release(old)?;
        }
        Ok(need)
    }

    /// The segment a record of `need` bytes goes to, rotating if needed.
    fn segment_for(&mut self, need: u64) -> Result<u64, SpillError> {
        if let Some(id) = self.active {
            let size = self.segments[&id].size;
            if size == 0 || size.saturating_add(need) <= self.segment_bytes {
                return Ok(id);
            }
            // Sealed from now on. It has live records: an active segment
            // whose records are all released is reset to empty right away.
            self.active = None;
        }
        let id = self.next_segment;
        self.next_segment += 1;
        let path = self.dir.join(format!("{id:020}.{SEGMENT_EXT}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        self.segments.insert(
            id,
            Segment {
                path,
                file,
                size: 0,
                live: 0,
            },
        );
        self.active = Some(id);
        Ok(id)
    }

    /// Reads back the item spilled for `seq`, verifying the record's length,
    /// CRC32C and stored seq ([`SpillError::Corrupt`] if any is off).
    pub fn get(&self, seq: u64) -> Result<Item, SpillError> {
        let loc = *self.index.get(&seq).ok_or(SpillError::Missing { seq })?;
        let seg = &self.segments[&loc.segment];
        let corrupt = |reason: String| SpillError::Corrupt { seq, reason };
        let mut buf = vec![0; loc.len as usize];
        seg.file
            .read_exact_at(&mut buf, loc.offset)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::UnexpectedEof {
                    corrupt(format!("{} is shorter than written", seg.path.display()))
                } else {
                    SpillError::Io {
                        path: seg.path.clone(),
                        source,
                    }
                }
            })?;
        let (stored, item, consumed) = decode_record(&buf).map_err(|e| match e {
            SpillError::Record(reason) => corrupt(reason),
            other => other,
        })?;
        if consumed != buf.len() {
            return Err(corrupt(format!(
                "record of {consumed} bytes, {} were written",
                buf.len()
            )));
        }
        if stored != seq {
            return Err(corrupt(format!("record holds seq {stored}")));
        }
        Ok(item)
    }

    /// Releases the record of `seq` ([`SpillError::Missing`] if there is
    /// none). A segment other than the active one is deleted once all its
    /// records are released, and its bytes leave [`used`](Self::used); the
    /// active segment is truncated to empty instead. An `Io` error means that
    /// deleting or truncating the file failed; the record is released anyway.
    pub fn remove(&mut self, seq: u64) -> Result<(), SpillError> {
        let loc = self.index.remove(&seq).ok_or(SpillError::Missing { seq })?;
        self.release(loc)
    }

    fn release(&mut self, loc: Loc) -> Result<(), SpillError> {
        let seg = self
            .segments
            .get_mut(&loc.segment)
            .expect("indexed segment is open");
        seg.live -= 1;
        if seg.live > 0 {
            return Ok(());
        }
        if self.active == Some(loc.segment) {
            seg.file.set_len(0).map_err(io_err(&seg.path))?;
            self.used -= seg.size;
            seg.size = 0;
            return Ok(());
        }
        match fs::remove_file(&seg.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SpillError::Io {
                    path: seg.path.clone(),
                    source,
                })
            }
        }
        self.used -= seg.size;
        self.segments.remove(&loc.segment);
        Ok(())
    }

    /// Whether a record is spilled for `seq`.
    pub fn contains(&self, seq: u64) -> bool {
        self.index.contains_key(&seq)
    }

    /// Number of spilled (unreleased) records.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no record is spilled.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes of spill files currently on disk: live and released records of
    /// segments not yet deleted. This is what [`cap`](Self::cap) bounds.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The byte cap of the directory (`spill_bytes_max`).
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// The spill directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use diaspora_proto::v1::{value::Kind, ProducerKey, Quality, Value};
    use proptest::collection::{hash_map, vec};
    use proptest::prelude::*;

    fn item(payload: &[u8]) -> Item {
        Item {
            payload: Bytes::copy_from_slice(payload),
            timestamp_us: 1,
            ..Default::default()
        }
    }

    fn spill_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "spill"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn put_get_remove_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = SpillStore::open(tmp.path(), 1 << 20, 1 << 16).unwrap();
        assert!(s.is_empty());
        let mut total = 0;
        for seq in 10..20 {
            let n = s.put(seq, &item(&[seq as u8; 100])).unwrap();
            assert_eq!(n, encode_record(seq, &item(&[seq as u8; 100])).len() as u64);
            total += n;
        }
        assert_eq!(
            (s.len(), s.used(), s.cap(), s.dir()),
            (10, total, 1 << 20, tmp.path())
        );
        let on_disk: u64 = spill_files(tmp.path())
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(on_disk, total);
        for seq in 10..20 {
            assert!(s.contains(seq));
            assert_eq!(s.get(seq).unwrap(), item(&[seq as u8; 100]));
            s.remove(seq).unwrap();
            assert!(!s.contains(seq));
        }
        assert!(s.is_empty());
        assert_eq!(s.used(), 0);
        assert!(matches!(s.get(10), Err(SpillError::Missing { seq: 10 })));
        assert!(matches!(s.remove(10), Err(SpillError::Missing { seq: 10 })));
    }

    #[test]
    fn put_same_seq_replaces_record() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = SpillStore::open(tmp.path(), 1 << 20, 1 << 16).unwrap();
        s.put(1, &item(b"old")).unwrap();
        s.put(1, &item(b"new")).unwrap();
        assert_eq!((s.len(), s.get(1).unwrap()), (1, item(b"new")));
        s.remove(1).unwrap();
        assert_eq!((s.len(), s.used()), (0, 0));
    }

    #[test]
    fn full_writes_nothing_and_names_the_numbers() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = SpillStore::open(tmp.path(), 300, 1 << 16).unwrap();
        let n = s.put(1, &item(&[0; 200])).unwrap();
        let err = s.put(2, &item(&[0; 200])).unwrap_err();
        let SpillError::Full { need, used, cap } = err else {
            panic!("{err:?}")
        };
        assert_eq!((need, used, cap), (n, n, 300));
        assert_eq!(
            err.to_string(),
            format!("spill directory full: need {n} bytes, {n} of 300 used (spill_bytes_max)")
        );
        assert_eq!((s.len(), s.used(), s.contains(2)), (1, n, false));
        assert_eq!(fs::metadata(&spill_files(tmp.path())[0]).unwrap().len(), n);
        s.remove(1).unwrap();
        s.put(2, &item(&[0; 200])).unwrap();
    }

    #[test]
    fn oversized_item_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = SpillStore::open(tmp.path(), u64::MAX, 1 << 20).unwrap();
        let big = item(&vec![0; RECORD_BODY_MAX + 1]);
        assert!(matches!(s.put(1, &big), Err(SpillError::Record(_))));
        assert_eq!((s.len(), s.used()), (0, 0));
    }

    #[test]
    fn segments_rotate_and_are_deleted_when_released() {
        let tmp = tempfile::tempdir().unwrap();
        let rec = encode_record(0, &item(&[7; 100])).len() as u64;
        // Three records per segment.
        let mut s = SpillStore::open(tmp.path(), 1 << 20, 3 * rec).unwrap();
        for seq in 0..7 {
            s.put(seq, &item(&[7; 100])).unwrap();
        }
        let files = spill_files(tmp.path());
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].file_name().unwrap(), "00000000000000000000.spill");
        assert_eq!(s.used(), 7 * rec);
        // Releasing part of a segment frees nothing.
        s.remove(0).unwrap();
        s.remove(2).unwrap();
        assert_eq!((s.used(), spill_files(tmp.path()).len()), (7 * rec, 3));
        s.remove(1).unwrap();
        assert_eq!(s.used(), 4 * rec);
        assert!(!files[0].exists());
        assert_eq!(s.get(3).unwrap(), item(&[7; 100]));
        // Out of order release of the second segment.
        for seq in [5, 3, 4] {
            s.remove(seq).unwrap();
        }
        assert!(!files[1].exists());
        assert_eq!(s.used(), rec);
        // The active segment is reset, not deleted, when emptied.
        s.remove(6).unwrap();
        assert_eq!(s.used(), 0);
        assert_eq!(fs::metadata(&files[2]).unwrap().len(), 0);
        s.put(9, &item(b"again")).unwrap();
        assert_eq!(s.get(9).unwrap(), item(b"again"));
        assert_eq!(spill_files(tmp.path()), vec![files[2].clone()]);
    }

    #[test]
    fn record_larger_than_segment_gets_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = SpillStore::open(tmp.path(), 1 << 20, 10).unwrap();
        for seq in 0..3 {
            s.put(seq, &item(&[1; 50])).unwrap();
        }
        assert_eq!(spill_files(tmp.path()).len(), 3);
        assert_eq!(s.get(1).unwrap(), item(&[1; 50]));
    }

    #[test]
    fn open_removes_stale_spill_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/spill");
        {
            let mut s = SpillStore::open(&dir, 1 << 20, 1 << 16).unwrap();
            s.put(1, &item(b"stale")).unwrap();
        }
        fs::write(dir.join("00000000000000000042.spill"), b"junk").unwrap();
        fs::write(dir.join("keep.txt"), b"not ours").unwrap();
        assert_eq!(spill_files(&dir).len(), 2);
        let mut s = SpillStore::open(&dir, 1 << 20, 1 << 16).unwrap();
        assert!(spill_files(&dir).is_empty());
        assert!(dir.join("keep.txt").exists());
        assert!(!s.contains(1) && s.is_empty() && s.used() == 0);
        s.put(1, &item(b"fresh")).unwrap();
        assert_eq!(s.get(1).unwrap(), item(b"fresh"));
    }

    #[test]
    fn corrupt_byte_on_disk_gives_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = SpillStore::open(tmp.path(), 1 << 20, 1 << 16).unwrap();
        let a = s.put(1, &item(b"first record")).unwrap();
        s.put(2, &item(b"second record")).unwrap();
        let path = spill_files(tmp.path()).remove(0);
        let clean = fs::read(&path).unwrap();
        // Every byte of the second record: a flipped byte is always caught.
        for i in a as usize..clean.len() {
            let mut bytes = clean.clone();
            bytes[i] ^= 0x40;
            fs::write(&path, &bytes).unwrap();
            let err = s.get(2).unwrap_err();
            assert!(
                matches!(err, SpillError::Corrupt { seq: 2, .. }),
                "byte {i}: {err:?}"
            );
            assert_eq!(s.get(1).unwrap(), item(b"first record"));
        }
        // A truncated file too.
        fs::write(&path, &clean[..clean.len() - 1]).unwrap();
        assert!(matches!(s.get(2), Err(SpillError::Corrupt { seq: 2, .. })));
        // A valid record of another seq at the recorded place.
        let mut swapped = clean[..a as usize].to_vec();
        swapped.extend_from_slice(&encode_record(3, &item(b"second record")));
        fs::write(&path, &swapped).unwrap();
        let err = s.get(2).unwrap_err();
        assert!(err.to_string().contains("holds seq 3"), "{err}");
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(None),
            ".{0,8}".prop_map(|s| Some(Kind::S(s))),
            any::<i64>().prop_map(|i| Some(Kind::I(i))),
            (-1e300f64..1e300).prop_map(|f| Some(Kind::F(f))),
            any::<bool>().prop_map(|b| Some(Kind::B(b))),
            vec(any::<u8>(), 0..16).prop_map(|v| Some(Kind::Raw(v.into()))),
        ]
        .prop_map(|kind| Value { kind })
    }

    fn arb_item() -> impl Strategy<Value = Item> {
        (
            hash_map(".{0,12}", arb_value(), 0..4),
            hash_map(".{0,8}", ".{0,8}", 0..4),
            vec(any::<u8>(), 0..512),
            any::<i64>(),
            vec(any::<u8>(), 0..16),
            proptest::option::of(any::<(u64, u64)>()),
            proptest::option::of((0i32..3, ".{0,8}")),
        )
            .prop_map(
                |(metadata, headers, payload, timestamp_us, key, pk, q)| Item {
                    metadata,
                    headers,
                    payload: payload.into(),
                    producer_key: pk.map(|(producer_id, sequence)| ProducerKey {
                        producer_id,
                        sequence,
                    }),
                    lineage: None,
                    quality: q.map(|(kind, method)| Quality { kind, method }),
                    timestamp_us,
                    key: key.into(),
                },
            )
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(seq in any::<u64>(), item in arb_item(), tail in vec(any::<u8>(), 0..8)) {
            let mut rec = encode_record(seq, &item);
            let len = rec.len();
            prop_assert_eq!(len, RECORD_HEADER_BYTES + item.encoded_len());
            rec.extend_from_slice(&tail);
            let (s, it, used) = decode_record(&rec).unwrap();
            prop_assert_eq!((s, used), (seq, len));
            prop_assert_eq!(it, item);
        }

        #[test]
        fn decode_arbitrary_bytes_never_panics(data in vec(any::<u8>(), 0..256)) {
            let _ = decode_record(&data);
            let mut forged = RECORD_MAGIC.to_le_bytes().to_vec();
            forged.extend_from_slice(&data);
            let _ = decode_record(&forged);
        }

        #[test]
        fn truncated_record_is_err(seq in any::<u64>(), item in arb_item(), cut in any::<prop::sample::Index>()) {
            let rec = encode_record(seq, &item);
            let cut = cut.index(rec.len());
            prop_assert!(decode_record(&rec[..cut]).is_err());
        }

        #[test]
        fn single_bit_flip_is_err(seq in any::<u64>(), item in arb_item(), bit in any::<prop::sample::Index>()) {
            let mut rec = encode_record(seq, &item);
            let bit = bit.index(rec.len() * 8);
            rec[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_record(&rec).is_err(), "bit {} of {}", bit, rec.len());
        }

        #[test]
        fn fuzz_body_on_random_inputs(
            seq in any::<u64>(),
            item in arb_item(),
            data in vec(any::<u8>(), 0..128),
            flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        ) {
            crate::fuzzing::spill_record(&data);
            let mut rec = encode_record(seq, &item);
            crate::fuzzing::spill_record(&rec);
            crate::fuzzing::spill_record(&rec[RECORD_HEADER_BYTES..]);
            for (i, b) in flips {
                let i = i.index(rec.len());
                rec[i] ^= b;
            }
            crate::fuzzing::spill_record(&rec);
        }
    }
}
