//! Versioned, listable, crash-safe snapshots of a view's state on disk.
//!
//! A snapshot file is one header line of JSON ([`SnapshotHeader`]: format,
//! view, version, time, length and CRC-32C of the state, a free-form
//! summary), a `\n`, then the state bytes. The header can be read without
//! the state, so listing a thousand snapshots reads a thousand short lines;
//! the length and checksum let a load tell a torn or flipped file from a
//! good one, so a view falls back to its previous snapshot instead of
//! restoring garbage.
//!
//! [`encode`] and [`decode`] are the pure codec (no I/O; `decode` never
//! panics, whatever the bytes). [`SnapshotStore`] is the thin shell that
//! keeps them in a directory:
//!
//! ```text
//! DIR/<view>/v0000000001.snap
//! DIR/<view>/v0000000002.snap
//! DIR/<view>/.tmp-0000000003      (a save that crashed: ignored, removed by the next save)
//! ```
//!
//! A save writes a temporary file, fsyncs it, renames it to its final name
//! and fsyncs the directory, so a crash leaves either the whole new
//! snapshot or none of it. One process saves a given view at a time: two
//! concurrent savers of the same view would pick the same version.
//!
//! ```
//! use diaspora_view::snapshot::SnapshotStore;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = SnapshotStore::open(dir.path()).unwrap().keep(3);
//! let info = store.save("orders", &vec![1u32, 2, 3], serde_json::json!({"pending": 3})).unwrap();
//! assert_eq!(info.version, 1);
//! let (info, state): (_, Vec<u32>) = store.load("orders", None).unwrap();
//! assert_eq!((info.version, state), (1, vec![1, 2, 3]));
//! ```

use crate::ViewError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

/// The snapshot file format this build writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// Bound on the header line (JSON, without its `\n`), in bytes.
pub const HEADER_BYTES_MAX: usize = 64 * 1024;
/// Bound on the state that follows the header, in bytes.
pub const STATE_BYTES_MAX: u64 = 1 << 30;
/// Snapshots kept per view unless [`SnapshotStore::keep`] says otherwise.
pub const KEEP_DEFAULT: usize = 10;
/// Bound on a view name's length, in characters.
pub const VIEW_NAME_CHARS_MAX: usize = 128;

/// Prefix of a save's temporary file (a leftover one is a crashed save).
const TMP_PREFIX: &str = ".tmp-";
/// Damaged versions named in the error of a [`SnapshotStore::load_latest_valid`]
/// that found none valid.
const DAMAGED_NAMED_MAX: usize = 5;

/// Header of a snapshot file (its first line, JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// File format, [`SNAPSHOT_FORMAT`]; a build refuses any other.
    pub format: u32,
    /// The view whose state this is.
    pub view: String,
    /// Version within the view: 1, 2, 3… in the order they were saved.
    pub version: u64,
    /// When it was taken, µs since the Unix epoch.
    pub taken_us: i64,
    /// Length of the state that follows the header line, in bytes.
    pub state_bytes: u64,
    /// CRC-32C of the state bytes.
    pub state_crc32c: u32,
    /// Free-form facts for listings (pending and emitted counts, …).
    #[serde(default)]
    pub summary: serde_json::Value,
}

impl SnapshotHeader {
    /// The header of `state`: its length and checksum filled in.
    ///
    /// ```
    /// use diaspora_view::snapshot::{SnapshotHeader, SNAPSHOT_FORMAT};
    /// let h = SnapshotHeader::for_state("v", 7, 0, b"abc", serde_json::Value::Null);
    /// assert_eq!((h.format, h.version, h.state_bytes), (SNAPSHOT_FORMAT, 7, 3));
    /// ```
    pub fn for_state(
        view: &str,
        version: u64,
        taken_us: i64,
        state: &[u8],
        summary: serde_json::Value,
    ) -> SnapshotHeader {
        SnapshotHeader {
            format: SNAPSHOT_FORMAT,
            view: view.to_string(),
            version,
            taken_us,
            state_bytes: state.len() as u64,
            state_crc32c: crc32c::crc32c(state),
            summary,
        }
    }
}

/// A snapshot file: the header line, `\n`, the state bytes.
///
/// It fills nothing in itself: build the header with
/// [`SnapshotHeader::for_state`]. Panics if the header's `state_bytes`
/// does not match `state` (a caller's bug that would write a file no load
/// accepts).
///
/// ```
/// use diaspora_view::snapshot::{decode, encode, SnapshotHeader};
/// let h = SnapshotHeader::for_state("v", 1, 0, b"state", serde_json::json!({"pending": 2}));
/// let bytes = encode(&h, b"state");
/// assert_eq!(decode(&bytes).unwrap(), (h, &b"state"[..]));
/// ```
pub fn encode(header: &SnapshotHeader, state: &[u8]) -> Vec<u8> {
    assert_eq!(
        header.state_bytes,
        state.len() as u64,
        "snapshot header of view {:?} v{} gives the wrong state length",
        header.view,
        header.version
    );
    debug_assert_eq!(header.state_crc32c, crc32c::crc32c(state));
    let mut out = serde_json::to_vec(header).expect("a header serialises (string keys only)");
    // serde_json escapes control characters in strings, so the compact
    // form never holds a raw newline: the first `\n` ends the header.
    debug_assert!(!out.contains(&b'\n'));
    out.reserve_exact(1 + state.len());
    out.push(b'\n');
    out.extend_from_slice(state);
    out
}

/// The header and state of a snapshot file, checked: the header line's
/// size bound and format, the state's length against `state_bytes`
/// (truncated or trailing bytes) and its CRC-32C. Never panics, whatever
/// the bytes.
///
/// ```
/// use diaspora_view::snapshot::{decode, encode, SnapshotHeader};
/// let h = SnapshotHeader::for_state("v", 1, 0, b"state", serde_json::Value::Null);
/// let bytes = encode(&h, b"state");
/// let err = decode(&bytes[..bytes.len() - 2]).unwrap_err();
/// assert!(err.to_string().contains("truncated: 3 of 5 state bytes"), "{err}");
/// ```
pub fn decode(bytes: &[u8]) -> Result<(SnapshotHeader, &[u8]), ViewError> {
    let scan = &bytes[..bytes.len().min(HEADER_BYTES_MAX + 1)];
    let Some(newline) = scan.iter().position(|&b| b == b'\n') else {
        return Err(if bytes.len() > HEADER_BYTES_MAX {
            ViewError::Snapshot(format!(
                "no header line within the first {HEADER_BYTES_MAX} bytes (the limit)"
            ))
        } else {
            ViewError::Snapshot(format!(
                "truncated: no end to the header line in {} bytes",
                bytes.len()
            ))
        });
    };
    let header = parse_header_line(&bytes[..newline])?;
    let state = &bytes[newline + 1..];
    let have = state.len() as u64;
    let want = header.state_bytes;
    if have < want {
        return Err(ViewError::Snapshot(format!(
            "truncated: {have} of {want} state bytes"
        )));
    }
    if have > want {
        return Err(ViewError::Snapshot(format!(
            "{} trailing bytes after the {want} state bytes",
            have - want
        )));
    }
    let crc = crc32c::crc32c(state);
    if crc != header.state_crc32c {
        return Err(ViewError::Snapshot(format!(
            "state crc32c {crc:#010x} does not match the header's {:#010x} (damaged state)",
            header.state_crc32c
        )));
    }
    Ok((header, state))
}

/// The header from its line (without the `\n`): size bound, format, fields
/// and the state bound. The format is checked before the other fields, so
/// a newer format says so rather than failing on a field it changed.
fn parse_header_line(line: &[u8]) -> Result<SnapshotHeader, ViewError> {
    if line.len() > HEADER_BYTES_MAX {
        return Err(ViewError::Snapshot(format!(
            "header line of {} bytes exceeds the limit of {HEADER_BYTES_MAX}",
            line.len()
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| ViewError::Snapshot(format!("header line is not JSON: {e}")))?;
    let format = match value.get("format") {
        None => {
            return Err(ViewError::Snapshot(
                "header has no format field (not a snapshot file?)".into(),
            ))
        }
        Some(f) => f.as_u64().ok_or_else(|| {
            ViewError::Snapshot(format!("header format {f} is not an unsigned integer"))
        })?,
    };
    if format != u64::from(SNAPSHOT_FORMAT) {
        return Err(ViewError::Snapshot(format!(
            "format {format} not supported (this build reads {SNAPSHOT_FORMAT})"
        )));
    }
    let header: SnapshotHeader =
        serde_json::from_value(value).map_err(|e| ViewError::Snapshot(format!("header: {e}")))?;
    if header.state_bytes > STATE_BYTES_MAX {
        return Err(ViewError::Snapshot(format!(
            "state_bytes {} exceeds the limit of {STATE_BYTES_MAX}",
            header.state_bytes
        )));
    }
    Ok(header)
}

/// Versions [`SnapshotStore::load_latest_valid`] skipped as damaged, newest
/// first, each with its error.
pub type Skipped = Vec<(u64, String)>;

/// One snapshot as a listing shows it (from its header line).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotInfo {
    /// The view.
    pub view: String,
    /// Its version.
    pub version: u64,
    /// When it was taken, µs since the Unix epoch.
    pub taken_us: i64,
    /// Size of the file (header line and state), in bytes.
    pub bytes: u64,
    /// The file.
    pub path: PathBuf,
    /// The header's free-form summary.
    pub summary: serde_json::Value,
}

impl SnapshotInfo {
    fn new(header: SnapshotHeader, bytes: u64, path: PathBuf) -> SnapshotInfo {
        SnapshotInfo {
            view: header.view,
            version: header.version,
            taken_us: header.taken_us,
            bytes,
            path,
            summary: header.summary,
        }
    }
}

/// Snapshots of views in a directory, one subdirectory per view:
/// `DIR/<view>/v<version, 10 digits>.snap`. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    keep: usize,
}

impl SnapshotStore {
    /// The store in `dir`, created if needed; keeps [`KEEP_DEFAULT`]
    /// snapshots per view.
    pub fn open(dir: impl Into<PathBuf>) -> Result<SnapshotStore, ViewError> {
        let dir = dir.into();
        fs::create_dir_all(&dir)
            .map_err(|e| io_error(&dir, "creating the snapshot directory", e))?;
        Ok(SnapshotStore {
            dir,
            keep: KEEP_DEFAULT,
        })
    }

    /// Keeps at most `n` snapshots per view (at least 1): after a
    /// successful save, older ones are deleted.
    pub fn keep(mut self, n: usize) -> SnapshotStore {
        self.keep = n.max(1);
        self
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saves `state` (as JSON) as the view's next version (the latest
    /// existing one + 1, or 1), durably: a temporary file, fsynced, renamed
    /// to its final name, the directory fsynced. Then removes leftover
    /// temporary files and versions beyond [`keep`](Self::keep).
    ///
    /// The view name must be 1..=128 characters of `[A-Za-z0-9._-]`, not
    /// starting with `.` ([`ViewError::Spec`] otherwise).
    pub fn save<T: Serialize>(
        &self,
        view: &str,
        state: &T,
        summary: serde_json::Value,
    ) -> Result<SnapshotInfo, ViewError> {
        check_view_name(view)?;
        let view_dir = self.dir.join(view);
        if !view_dir.is_dir() {
            fs::create_dir_all(&view_dir)
                .map_err(|e| io_error(&view_dir, "creating the view's directory", e))?;
            // The view's directory entry must survive a crash too.
            sync_dir(&self.dir)?;
        }
        remove_tmp_files(&view_dir)?;
        let version = match version_files(&view_dir)?.last() {
            Some((v, path)) => v.checked_add(1).ok_or_else(|| {
                ViewError::Snapshot(format!("{}: no version after {v}", path.display()))
            })?,
            None => 1,
        };
        let path = view_dir.join(file_name(version));
        let state_bytes = serde_json::to_vec(state).map_err(|e| {
            ViewError::Snapshot(format!(
                "{}: state of view {view} does not serialise: {e}",
                path.display()
            ))
        })?;
        if state_bytes.len() as u64 > STATE_BYTES_MAX {
            return Err(ViewError::Snapshot(format!(
                "{}: state of {} bytes exceeds the limit of {STATE_BYTES_MAX}",
                path.display(),
                state_bytes.len()
            )));
        }
        let header = SnapshotHeader::for_state(
            view,
            version,
            diaspora_fabric::item::now_us(),
            &state_bytes,
            summary,
        );
        let bytes = encode(&header, &state_bytes);
        let header_len = bytes.len() - state_bytes.len() - 1;
        if header_len > HEADER_BYTES_MAX {
            return Err(ViewError::Snapshot(format!(
                "{}: header line of {header_len} bytes exceeds the limit of {HEADER_BYTES_MAX} \
                 (a smaller summary?)",
                path.display()
            )));
        }
        drop(state_bytes);
        debug_assert!(decode(&bytes).is_ok());

        let tmp = view_dir.join(format!("{TMP_PREFIX}{version:010}"));
        write_synced(&tmp, &bytes)?;
        fs::rename(&tmp, &path)
            .map_err(|e| io_error(&path, &format!("renaming {} to it", tmp.display()), e))?;
        sync_dir(&view_dir)?;
        let info = SnapshotInfo::new(header, bytes.len() as u64, path);
        self.prune(&view_dir)?;
        Ok(info)
    }

    /// The view's snapshots, ascending by version, from each file's header
    /// line only (the state is not read or checked). Files whose header
    /// does not parse, or names another view or version than the file
    /// name, are left out ([`load_latest_valid`](Self::load_latest_valid)
    /// reports them).
    pub fn list(&self, view: &str) -> Result<Vec<SnapshotInfo>, ViewError> {
        check_view_name(view)?;
        let mut out = Vec::new();
        for (version, path) in version_files(&self.dir.join(view))? {
            if let Ok(info) = read_info(&path, view, version) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// The views that have at least one snapshot file, sorted.
    pub fn views(&self) -> Result<Vec<String>, ViewError> {
        let mut out = Vec::new();
        let entries =
            fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, "listing views", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&self.dir, "listing views", e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if check_view_name(&name).is_err() || !entry.path().is_dir() {
                continue;
            }
            if !version_files(&entry.path())?.is_empty() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Loads a version of the view (`None`: the latest file, damaged or
    /// not), checking its length and CRC and decoding its JSON state.
    pub fn load<T: DeserializeOwned>(
        &self,
        view: &str,
        version: Option<u64>,
    ) -> Result<(SnapshotInfo, T), ViewError> {
        check_view_name(view)?;
        let view_dir = self.dir.join(view);
        let (version, path) = match version {
            Some(v) => (v, view_dir.join(file_name(v))),
            None => version_files(&view_dir)?.pop().ok_or_else(|| {
                ViewError::Snapshot(format!(
                    "{}: no snapshots of view {view}",
                    view_dir.display()
                ))
            })?,
        };
        load_file(&path, view, version)
    }

    /// The latest version of the view that loads cleanly, with the newer
    /// versions skipped as damaged (newest first, each with its error).
    /// An error if none loads.
    pub fn load_latest_valid<T: DeserializeOwned>(
        &self,
        view: &str,
    ) -> Result<(SnapshotInfo, T, Skipped), ViewError> {
        check_view_name(view)?;
        let view_dir = self.dir.join(view);
        let mut skipped = Vec::new();
        for (version, path) in version_files(&view_dir)?.into_iter().rev() {
            match load_file(&path, view, version) {
                Ok((info, state)) => return Ok((info, state, skipped)),
                Err(e) => skipped.push((version, e.to_string())),
            }
        }
        if skipped.is_empty() {
            return Err(ViewError::Snapshot(format!(
                "{}: no snapshots of view {view}",
                view_dir.display()
            )));
        }
        let named: Vec<String> = skipped
            .iter()
            .take(DAMAGED_NAMED_MAX)
            .map(|(v, e)| format!("v{v}: {e}"))
            .collect();
        Err(ViewError::Snapshot(format!(
            "{}: none of the {} snapshots of view {view} loads ({}{})",
            view_dir.display(),
            skipped.len(),
            named.join("; "),
            if skipped.len() > DAMAGED_NAMED_MAX {
                "; …"
            } else {
                ""
            }
        )))
    }

    /// Deletes the view's versions beyond the newest `keep`.
    fn prune(&self, view_dir: &Path) -> Result<(), ViewError> {
        let files = version_files(view_dir)?;
        let excess = files.len().saturating_sub(self.keep);
        for (_, path) in &files[..excess] {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(path, "removing an old snapshot after a save", e)),
            }
        }
        Ok(())
    }
}

/// Refuses a view name that is not 1..=128 characters of `[A-Za-z0-9._-]`
/// or starts with `.` (it names a directory: no separators, no `..`, no
/// hidden files).
fn check_view_name(view: &str) -> Result<(), ViewError> {
    let ok_chars = view
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let len = view.chars().count();
    if len == 0 || len > VIEW_NAME_CHARS_MAX || !ok_chars || view.starts_with('.') {
        return Err(ViewError::Spec(format!(
            "view name {view:?}: must be 1..={VIEW_NAME_CHARS_MAX} characters of \
             [A-Za-z0-9._-], not starting with '.'"
        )));
    }
    Ok(())
}

/// `v<version, at least 10 digits>.snap`.
fn file_name(version: u64) -> String {
    format!("v{version:010}.snap")
}

/// The version a snapshot file name gives (only the exact form
/// [`file_name`] writes).
fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix('v')?.strip_suffix(".snap")?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let version: u64 = digits.parse().ok()?;
    (file_name(version) == name).then_some(version)
}

/// The snapshot files of a view's directory, ascending by version (by file
/// name; their contents are not read). None when the directory does not
/// exist.
fn version_files(view_dir: &Path) -> Result<Vec<(u64, PathBuf)>, ViewError> {
    let entries = match fs::read_dir(view_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(view_dir, "listing snapshots", e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(view_dir, "listing snapshots", e))?;
        if let Some(version) = entry.file_name().to_str().and_then(parse_file_name) {
            out.push((version, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(v, _)| *v);
    Ok(out)
}

/// Removes the temporary files of saves that crashed.
fn remove_tmp_files(view_dir: &Path) -> Result<(), ViewError> {
    let entries = fs::read_dir(view_dir).map_err(|e| io_error(view_dir, "listing snapshots", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(view_dir, "listing snapshots", e))?;
        let is_tmp = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TMP_PREFIX));
        if is_tmp {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path, "removing a crashed save's file", e)),
            }
        }
    }
    Ok(())
}

/// The listing of one file from its header line, checked against the
/// view and version its name gives.
fn read_info(path: &Path, view: &str, version: u64) -> Result<SnapshotInfo, ViewError> {
    let file = File::open(path).map_err(|e| io_error(path, "opening", e))?;
    let bytes = file
        .metadata()
        .map_err(|e| io_error(path, "reading metadata", e))?
        .len();
    let mut line = Vec::with_capacity(1024);
    file.take(HEADER_BYTES_MAX as u64 + 1)
        .read_to_end(&mut line)
        .map_err(|e| io_error(path, "reading the header", e))?;
    let Some(newline) = line.iter().position(|&b| b == b'\n') else {
        return Err(ViewError::Snapshot(format!(
            "{}: no header line within its first {} bytes",
            path.display(),
            line.len()
        )));
    };
    let header = parse_header_line(&line[..newline]).map_err(|e| in_file(path, e))?;
    check_names(path, &header, view, version)?;
    Ok(SnapshotInfo::new(header, bytes, path.to_path_buf()))
}

/// A whole snapshot file, checked and decoded.
fn load_file<T: DeserializeOwned>(
    path: &Path,
    view: &str,
    version: u64,
) -> Result<(SnapshotInfo, T), ViewError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(ViewError::Snapshot(format!(
                "{}: no snapshot version {version} of view {view}",
                path.display()
            )))
        }
        Err(e) => return Err(io_error(path, "opening", e)),
    };
    let len = file
        .metadata()
        .map_err(|e| io_error(path, "reading metadata", e))?
        .len();
    let len_max = HEADER_BYTES_MAX as u64 + 1 + STATE_BYTES_MAX;
    if len > len_max {
        return Err(ViewError::Snapshot(format!(
            "{}: file of {len} bytes exceeds the limit of {len_max}",
            path.display()
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    (&mut file)
        .take(len_max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, "reading", e))?;
    let (header, state) = decode(&bytes).map_err(|e| in_file(path, e))?;
    check_names(path, &header, view, version)?;
    let value: T = serde_json::from_slice(state).map_err(|e| {
        ViewError::Snapshot(format!(
            "{}: state does not decode as {}: {e}",
            path.display(),
            std::any::type_name::<T>()
        ))
    })?;
    let info = SnapshotInfo::new(header, bytes.len() as u64, path.to_path_buf());
    Ok((info, value))
}

/// Refuses a header that names another view or version than its file (a
/// file copied or renamed by hand).
fn check_names(
    path: &Path,
    header: &SnapshotHeader,
    view: &str,
    version: u64,
) -> Result<(), ViewError> {
    if header.view != view || header.version != version {
        return Err(ViewError::Snapshot(format!(
            "{}: header names view {:?} version {}, the file name view {view:?} version {version}",
            path.display(),
            header.view,
            header.version
        )));
    }
    Ok(())
}

/// Writes `bytes` to a new file at `path` and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ViewError> {
    let mut file = File::create(path).map_err(|e| io_error(path, "creating", e))?;
    file.write_all(bytes)
        .map_err(|e| io_error(path, "writing", e))?;
    file.sync_all().map_err(|e| io_error(path, "fsyncing", e))
}

/// Fsyncs a directory, so the entries just created or renamed in it
/// survive a crash.
fn sync_dir(dir: &Path) -> Result<(), ViewError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, "fsyncing the directory", e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> ViewError {
    ViewError::Snapshot(format!("{}: {what}: {e}", path.display()))
}

/// A codec error with the file it came from.
fn in_file(path: &Path, e: ViewError) -> ViewError {
    match e {
        ViewError::Snapshot(m) => ViewError::Snapshot(format!("{}: {m}", path.display())),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn store(keep: usize) -> (tempfile::TempDir, SnapshotStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path().join("snaps"))
            .unwrap()
            .keep(keep);
        (dir, store)
    }

    fn snapshot_err<T: std::fmt::Debug>(r: Result<T, ViewError>) -> String {
        match r {
            Err(ViewError::Snapshot(m)) => m,
            other => panic!("expected a snapshot error, got {other:?}"),
        }
    }

    #[test]
    fn save_list_load_round_trip() {
        let (_dir, store) = store(10);
        assert!(store.list("orders").unwrap().is_empty());
        assert!(store.views().unwrap().is_empty());
        for n in 1..=3u64 {
            let info = store
                .save("orders", &vec![n; n as usize], json!({ "pending": n }))
                .unwrap();
            assert_eq!(info.version, n);
            assert_eq!(info.view, "orders");
            assert_eq!(info.path, store.dir().join("orders").join(file_name(n)));
            assert_eq!(info.bytes, fs::metadata(&info.path).unwrap().len());
        }
        store.save("alerts", &"x", json!(null)).unwrap();

        let listed = store.list("orders").unwrap();
        let versions: Vec<u64> = listed.iter().map(|i| i.version).collect();
        assert_eq!(versions, [1, 2, 3]);
        assert_eq!(listed[1].summary, json!({ "pending": 2 }));
        assert!(listed.windows(2).all(|w| w[0].taken_us <= w[1].taken_us));

        let (info, state): (_, Vec<u64>) = store.load("orders", None).unwrap();
        assert_eq!((info.version, state), (3, vec![3, 3, 3]));
        assert_eq!(info, listed[2]);
        let (info, state): (_, Vec<u64>) = store.load("orders", Some(1)).unwrap();
        assert_eq!((info.version, state), (1, vec![1]));
        assert!(snapshot_err(store.load::<Vec<u64>>("orders", Some(9)))
            .contains("no snapshot version 9 of view orders"));
        assert!(snapshot_err(store.load::<Vec<u64>>("none", None)).contains("no snapshots"));
        assert!(snapshot_err(store.load::<String>("orders", Some(2)))
            .contains("state does not decode as"));

        assert_eq!(store.views().unwrap(), ["alerts", "orders"]);

        // A reopened store continues the numbering.
        let again = SnapshotStore::open(store.dir()).unwrap();
        assert_eq!(
            again
                .save("orders", &vec![4u64], json!({}))
                .unwrap()
                .version,
            4
        );
    }

    #[test]
    fn keep_prunes_oldest() {
        let (_dir, store) = store(2);
        for n in 1..=5u32 {
            store.save("v", &n, json!(null)).unwrap();
        }
        let versions: Vec<u64> = store.list("v").unwrap().iter().map(|i| i.version).collect();
        assert_eq!(versions, [4, 5]);
        assert_eq!(fs::read_dir(store.dir().join("v")).unwrap().count(), 2);
        // keep(0) means keep(1).
        let store = SnapshotStore::open(store.dir()).unwrap().keep(0);
        store.save("v", &6u32, json!(null)).unwrap();
        let versions: Vec<u64> = store.list("v").unwrap().iter().map(|i| i.version).collect();
        assert_eq!(versions, [6]);
    }

    #[test]
    fn truncated_file_falls_back() {
        let (_dir, store) = store(10);
        store.save("v", &"first".to_string(), json!(null)).unwrap();
        let info = store.save("v", &"second".to_string(), json!(null)).unwrap();
        let bytes = fs::read(&info.path).unwrap();
        fs::write(&info.path, &bytes[..bytes.len() - 3]).unwrap();

        let err = snapshot_err(store.load::<String>("v", None));
        assert!(err.contains("truncated: 5 of 8 state bytes"), "{err}");
        assert!(err.contains(&info.path.display().to_string()), "{err}");

        let (info1, state, skipped) = store.load_latest_valid::<String>("v").unwrap();
        assert_eq!((info1.version, state.as_str()), (1, "first"));
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].0, 2);
        assert!(skipped[0].1.contains("truncated"), "{skipped:?}");

        // Truncated inside the header: not listed, but still reported.
        fs::write(&info.path, &bytes[..10]).unwrap();
        assert_eq!(store.list("v").unwrap().len(), 1);
        let (_, _, skipped) = store.load_latest_valid::<String>("v").unwrap();
        assert!(
            skipped[0].1.contains("no end to the header line"),
            "{skipped:?}"
        );
        // The damaged version is not reused.
        assert_eq!(
            store
                .save("v", &"third".to_string(), json!(null))
                .unwrap()
                .version,
            3
        );
    }

    #[test]
    fn flipped_byte_falls_back() {
        let (_dir, store) = store(10);
        store.save("v", &vec![1u8, 2, 3], json!({"n": 1})).unwrap();
        let info = store.save("v", &vec![4u8, 5, 6], json!({"n": 2})).unwrap();
        let mut bytes = fs::read(&info.path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x01; // '6' → '7': still valid JSON, wrong checksum
        fs::write(&info.path, &bytes).unwrap();

        // The header still reads, so it is listed.
        assert_eq!(store.list("v").unwrap().len(), 2);
        let err = snapshot_err(store.load::<Vec<u8>>("v", Some(2)));
        assert!(err.contains("does not match the header's"), "{err}");
        let (info1, state, skipped) = store.load_latest_valid::<Vec<u8>>("v").unwrap();
        assert_eq!((info1.version, state), (1, vec![1, 2, 3]));
        assert_eq!(skipped.iter().map(|s| s.0).collect::<Vec<_>>(), [2]);
        assert!(skipped[0].1.contains("crc32c"), "{skipped:?}");

        // None valid: an error naming each.
        fs::write(store.dir().join("v").join(file_name(1)), b"junk").unwrap();
        let err = snapshot_err(store.load_latest_valid::<Vec<u8>>("v"));
        assert!(err.contains("none of the 2 snapshots"), "{err}");
        assert!(err.contains("v2: ") && err.contains("v1: "), "{err}");
    }

    #[test]
    fn other_format_and_wrong_names_refused() {
        let (_dir, store) = store(10);
        let info = store.save("v", &1u8, json!(null)).unwrap();
        let bytes = fs::read(&info.path).unwrap();
        let text = String::from_utf8(bytes)
            .unwrap()
            .replacen("\"format\":1", "\"format\":7", 1);
        fs::write(&info.path, text).unwrap();
        let err = snapshot_err(store.load::<u8>("v", None));
        assert!(
            err.contains("format 7 not supported (this build reads 1)"),
            "{err}"
        );

        // A file renamed by hand: the header disagrees with the name.
        let info = store.save("v", &2u8, json!(null)).unwrap();
        let moved = info.path.with_file_name(file_name(5));
        fs::rename(&info.path, &moved).unwrap();
        let err = snapshot_err(store.load::<u8>("v", Some(5)));
        assert!(err.contains("header names view \"v\" version 2"), "{err}");
        assert!(store.list("v").unwrap().is_empty());
    }

    #[test]
    fn leftover_tmp_ignored_then_cleaned() {
        let (_dir, store) = store(10);
        store.save("v", &1u8, json!(null)).unwrap();
        let view_dir = store.dir().join("v");
        let tmp = view_dir.join(".tmp-0000000002");
        fs::write(&tmp, b"{\"format\":1, half a save").unwrap();
        fs::write(view_dir.join("notes.txt"), b"not a snapshot").unwrap();

        assert_eq!(store.list("v").unwrap().len(), 1);
        let (info, state): (_, u8) = store.load("v", None).unwrap();
        assert_eq!((info.version, state), (1, 1));
        let (_, _, skipped) = store.load_latest_valid::<u8>("v").unwrap();
        assert!(skipped.is_empty());

        assert_eq!(store.save("v", &2u8, json!(null)).unwrap().version, 2);
        assert!(!tmp.exists());
        assert!(view_dir.join("notes.txt").exists());
    }

    #[test]
    fn bad_view_names_refused() {
        let (_dir, store) = store(10);
        let long = "x".repeat(VIEW_NAME_CHARS_MAX + 1);
        for bad in [
            "",
            ".hidden",
            "..",
            "a/b",
            "../up",
            "a b",
            "é",
            long.as_str(),
        ] {
            for r in [
                store.save(bad, &1u8, json!(null)).map(|_| ()),
                store.list(bad).map(|_| ()),
                store.load::<u8>(bad, None).map(|_| ()),
                store.load_latest_valid::<u8>(bad).map(|_| ()),
            ] {
                match r {
                    Err(ViewError::Spec(m)) => assert!(m.contains("[A-Za-z0-9._-]"), "{m}"),
                    other => panic!("{bad:?} accepted: {other:?}"),
                }
            }
        }
        let ok = "x".repeat(VIEW_NAME_CHARS_MAX);
        for good in ["a", "a.b-c_D9", ok.as_str()] {
            store.save(good, &1u8, json!(null)).unwrap();
        }
        assert_eq!(store.views().unwrap().len(), 3);
    }

    #[test]
    fn file_names_are_exact() {
        assert_eq!(file_name(3), "v0000000003.snap");
        assert_eq!(parse_file_name("v0000000003.snap"), Some(3));
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "v3.snap",
            "v+000000003.snap",
            "v0000000003.snap.bak",
            ".tmp-0000000003",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn decode_limits() {
        let long = vec![b' '; HEADER_BYTES_MAX + 1];
        assert!(snapshot_err(decode(&long)).contains("within the first 65536 bytes"));
        let mut h = SnapshotHeader::for_state("v", 1, 0, b"", json!(null));
        h.state_bytes = STATE_BYTES_MAX + 1;
        let mut bytes = serde_json::to_vec(&h).unwrap();
        bytes.push(b'\n');
        assert!(snapshot_err(decode(&bytes)).contains("exceeds the limit"));
        let good = encode(
            &SnapshotHeader::for_state("v", 1, 0, b"ab", json!(null)),
            b"ab",
        );
        let mut extra = good.clone();
        extra.push(b'c');
        assert!(snapshot_err(decode(&extra)).contains("1 trailing bytes after the 2 state bytes"));
        assert!(snapshot_err(decode(b"[1]\nab")).contains("no format field"));
        assert!(snapshot_err(decode(b"{\"format\":\"1\"}\n")).contains("not an unsigned integer"));
        assert!(snapshot_err(decode(b"{\"format\":1}\n")).contains("header: missing field"));
    }

    fn header_strategy() -> impl Strategy<Value = (String, u64, i64, serde_json::Value)> {
        (
            any::<String>(),
            any::<u64>(),
            any::<i64>(),
            prop_oneof![
                Just(serde_json::Value::Null),
                (any::<u64>(), any::<String>())
                    .prop_map(|(n, s)| json!({ "pending": n, "note": s })),
            ],
        )
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            (view, version, taken_us, summary) in header_strategy(),
            state in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let h = SnapshotHeader::for_state(&view, version, taken_us, &state, summary);
            let bytes = encode(&h, &state);
            let (h2, state2) = decode(&bytes).unwrap();
            prop_assert_eq!(h2, h);
            prop_assert_eq!(state2, &state[..]);
        }

        #[test]
        fn decode_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = decode(&bytes);
            // The same bytes behind a plausible header line.
            let mut framed = format!("{{\"format\":1,\"view\":\"v\",\"version\":1,\"taken_us\":0,\"state_bytes\":{},\"state_crc32c\":0}}\n", bytes.len()).into_bytes();
            framed.extend_from_slice(&bytes);
            let _ = decode(&framed);
        }

        #[test]
        fn decode_mutated_encoding_never_panics(
            state in proptest::collection::vec(any::<u8>(), 0..256),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let h = SnapshotHeader::for_state("view", 3, 1, &state, json!({"pending": 1}));
            let mut bytes = encode(&h, &state);
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            let _ = decode(&bytes);
        }

        #[test]
        fn any_truncation_is_an_error(
            (view, version, taken_us, summary) in header_strategy(),
            state in proptest::collection::vec(any::<u8>(), 0..512),
            cut in any::<prop::sample::Index>(),
        ) {
            let h = SnapshotHeader::for_state(&view, version, taken_us, &state, summary);
            let bytes = encode(&h, &state);
            let cut = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..cut]).is_err());
        }

        #[test]
        fn any_state_bit_flip_is_an_error(
            (view, version, taken_us, summary) in header_strategy(),
            state in proptest::collection::vec(any::<u8>(), 1..512),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let h = SnapshotHeader::for_state(&view, version, taken_us, &state, summary);
            let mut bytes = encode(&h, &state);
            let start = bytes.len() - state.len();
            let i = start + at.index(state.len());
            bytes[i] ^= 1 << bit;
            let err = decode(&bytes).unwrap_err().to_string();
            prop_assert!(err.contains("crc32c"), "{}", err);
        }
    }
}
