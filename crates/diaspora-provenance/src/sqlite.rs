//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`,
//! so a returned call is durable; every write is one batched transaction
//! with multi-row inserts.
//!
//! Layout: a record's parents are stored inline in its row (a packed blob,
//! so an upstream step is one row read) and once more, for downstream
//! steps, as *runs* in clustered tables keyed by parent:
//!
//! - `down(parent, child, count)`: children `child .. child+count` of one
//!   parent (a single edge is a run of one; a fan-out batch is one row);
//! - `down_seq(parent, child, count)`: edges `parent+k → child+k` for
//!   `k < count` (a stream derived item by item from another: the k-th
//!   reconstruction from the k-th pattern is one row per batch).
//!
//! Streamed items — the bulk of a store — are kept column-wise: a run of
//! up to [`BATCH_MAX`] plain item records (consecutive ids, consecutive
//! offsets of one partition, no name, tags or URIs of their own) is one
//! `item_batches` row holding their times and parents in a packed blob,
//! found by first id or by location. So recording stream lineage costs a
//! few bytes per item, not a row and index entries per item. Other item
//! records keep their location in their row and are found through
//! `item_runs(topic, part, off, count, id)`, where consecutive offsets with
//! consecutive ids are one row. Runs are at most [`RUN_MAX`] long, which bounds the window a
//! lookup scans. Names, tags and URIs are indexed only for the records that
//! have them.

use crate::backend::Backend;
use crate::codec::{
    action_columns, action_from_row, batch_with_parent, decode_batch_item, encode_batch,
    extra_json, offset_column, packed_with_parent, parent_edges, parents_column, tag_rows,
    unpack_optional, uri_rows, StoredRecord,
};
use crate::model::*;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Rows per multi-row `INSERT`.
const ROWS_PER_INSERT: usize = 256;
/// Longest run of `down_seq` or `item_runs` (lookups scan a window this wide).
pub const RUN_MAX: i64 = 4096;
/// Most items in one `item_batches` row.
pub const BATCH_MAX: i64 = 1024;
/// Longest run of `down` (children of one parent in one row).
const FAN_RUN_MAX: i64 = 1 << 20;

/// Ids reserved per allocation (one small transaction each).
const ID_BLOCK: i64 = 1 << 16;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS records(
  id INTEGER PRIMARY KEY,
  kind INTEGER NOT NULL,
  name TEXT,
  time_us INTEGER NOT NULL,
  topic INTEGER, part INTEGER, off INTEGER,
  version INTEGER,
  origin TEXT,
  parents BLOB,
  extra TEXT);
CREATE INDEX IF NOT EXISTS records_name ON records(name) WHERE name IS NOT NULL;
CREATE TABLE IF NOT EXISTS item_batches(first_id INTEGER PRIMARY KEY, count INTEGER NOT NULL,
  topic INTEGER NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS item_batches_loc ON item_batches(topic, part, off);
CREATE TABLE IF NOT EXISTS item_runs(topic INTEGER NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL,
  count INTEGER NOT NULL, id INTEGER NOT NULL, PRIMARY KEY(topic, part, off, id)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS records_origin ON records(origin) WHERE origin IS NOT NULL;
CREATE TABLE IF NOT EXISTS down(parent INTEGER NOT NULL, child INTEGER NOT NULL, count INTEGER NOT NULL,
  kind INTEGER NOT NULL, PRIMARY KEY(parent, child)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS down_seq(parent INTEGER NOT NULL, child INTEGER NOT NULL, count INTEGER NOT NULL,
  kind INTEGER NOT NULL, PRIMARY KEY(parent, child)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags(key TEXT NOT NULL, value TEXT NOT NULL, record INTEGER NOT NULL,
  PRIMARY KEY(key, value, record)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uris(uri TEXT NOT NULL, record INTEGER NOT NULL,
  PRIMARY KEY(uri, record)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, time_us INTEGER NOT NULL, cause TEXT NOT NULL,
  target TEXT NOT NULL, cascade INTEGER NOT NULL, invalidated INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS invalid(record INTEGER PRIMARY KEY, event INTEGER NOT NULL, parent INTEGER);
CREATE TABLE IF NOT EXISTS actions(id INTEGER PRIMARY KEY, target TEXT NOT NULL, kind TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS action_runs(id INTEGER PRIMARY KEY, action INTEGER NOT NULL, record INTEGER NOT NULL,
  event INTEGER NOT NULL, time_us INTEGER NOT NULL, ok INTEGER NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS action_runs_record ON action_runs(record);
";

/// `(min, max)` of `ids` when there are many and they span at most twice
/// their number: then a range scan reads little besides what is wanted.
fn dense_span(ids: &[RecordId]) -> Option<(RecordId, RecordId)> {
    if ids.len() < 1024 {
        return None;
    }
    let lo = *ids.iter().min()?;
    let hi = *ids.iter().max()?;
    (((hi - lo) as u128) < 2 * ids.len() as u128).then_some((lo, hi))
}

/// Membership in a dense span of ids, one bit each.
struct SpanSet {
    lo: RecordId,
    bits: Vec<u64>,
}

impl SpanSet {
    fn new(lo: RecordId, hi: RecordId, ids: &[RecordId]) -> SpanSet {
        let mut bits = vec![0u64; ((hi - lo) as usize >> 6) + 1];
        for &i in ids {
            let k = (i - lo) as usize;
            bits[k >> 6] |= 1 << (k & 63);
        }
        SpanSet { lo, bits }
    }

    fn contains(&self, id: RecordId) -> bool {
        let Some(k) = id.checked_sub(self.lo).filter(|k| *k >= 0) else {
            return false;
        };
        let k = k as usize;
        self.bits
            .get(k >> 6)
            .is_some_and(|w| w & (1 << (k & 63)) != 0)
    }
}

fn ids_value(ids: &[RecordId]) -> Rc<Vec<Value>> {
    Rc::new(ids.iter().map(|&i| Value::Integer(i)).collect())
}

/// WAL bytes past which the writer itself checkpoints (bounding the WAL
/// when the background thread falls behind).
const WAL_BYTES_MAX: u64 = 1 << 30;

/// Checkpoints the WAL every 100 ms from its own connection and thread
/// (`PRAGMA wal_checkpoint(PASSIVE)`: it never blocks the writer), so a
/// commit only appends to the WAL.
struct Checkpointer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    join: Option<std::thread::JoinHandle<()>>,
    wal: PathBuf,
}

impl Checkpointer {
    fn start(db: &Path) -> Result<Checkpointer> {
        let conn = Connection::open(db)?;
        conn.busy_timeout(std::time::Duration::from_millis(50))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let join = std::thread::Builder::new()
            .name("prov-checkpoint".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(error = %e, "background checkpoint");
                    }
                }
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            })
            .map_err(|e| ProvError::Store(format!("checkpoint thread: {e}")))?;
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Ok(Checkpointer {
            stop,
            join: Some(join),
            wal: PathBuf::from(wal),
        })
    }

    fn wal_bytes(&self) -> u64 {
        std::fs::metadata(&self.wal).map(|m| m.len()).unwrap_or(0)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// How long opening a store waits for other processes opening or writing
/// it (the busy timeout, and the retries below).
const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sets the connection up (WAL, durability, the schema, the namespace),
/// retrying while another process holds the lock it needs. Switching a new
/// file to WAL and creating the schema upgrade a read lock to a write lock;
/// when two connections do that at once SQLite answers one of them
/// "database is locked" at once, without waiting out the busy timeout (it
/// would deadlock), so several stages opening one new store together need
/// the retry. Each step is idempotent.
fn initialise_retrying(conn: &Connection, path: &Path) -> Result<String> {
    let deadline = std::time::Instant::now() + OPEN_WAIT;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match initialise(conn) {
            Ok(ns) => return Ok(ns),
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                tracing::debug!(store = %path.display(), error = %e, "store busy while opening; retrying");
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
            Err(e) => {
                return Err(ProvError::Store(format!(
                    "setting up {}: {e}{}",
                    path.display(),
                    if is_busy(&e) {
                        " (still locked by another process after 10 s)"
                    } else {
                        ""
                    }
                )))
            }
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn initialise(conn: &Connection) -> rusqlite::Result<String> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -131072)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints (copying the WAL into the database file) run on a
    // background thread, off the writer's path; see `Checkpointer`.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // The write lock up front (the busy timeout applies to taking it), not
    // upgraded halfway through.
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
        .inspect_err(|_| {
            let _ = conn.execute_batch("ROLLBACK");
        })?;
    let ns: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key='namespace'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match ns {
        Some(ns) => Ok(ns),
        None => {
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('namespace', ?1)",
                [crate::new_namespace()],
            )?;
            conn.query_row("SELECT value FROM meta WHERE key='namespace'", [], |r| {
                r.get(0)
            })
        }
    }
}

/// The embedded SQLite store.
pub struct SqliteBackend {
    conn: Connection,
    checkpointer: Checkpointer,
    path: PathBuf,
    ns: String,
    next_id: i64,
    id_end: i64,
    topics: HashMap<String, i64>,
    topic_names: HashMap<i64, String>,
}

impl SqliteBackend {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteBackend> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| ProvError::Store(format!("create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(&path)
            .map_err(|e| ProvError::Store(format!("open {}: {e}", path.display())))?;
        conn.busy_timeout(OPEN_WAIT)?;
        let ns = initialise_retrying(&conn, &path)?;
        rusqlite::vtab::array::load_module(&conn)?;
        let checkpointer = Checkpointer::start(&path)?;
        let mut me = SqliteBackend {
            conn,
            checkpointer,
            path,
            ns,
            next_id: 0,
            id_end: 0,
            topics: HashMap::new(),
            topic_names: HashMap::new(),
        };
        me.load_topics()?;
        Ok(me)
    }

    fn load_topics(&mut self) -> Result<()> {
        let mut st = self.conn.prepare("SELECT id, name FROM topics")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (id, name) = row?;
            self.topics.insert(name.clone(), id);
            self.topic_names.insert(id, name);
        }
        Ok(())
    }

    /// The topic's interned id, creating it inside the open transaction.
    fn topic_id(
        conn: &Connection,
        topics: &mut HashMap<String, i64>,
        names: &mut HashMap<i64, String>,
        name: &str,
    ) -> Result<i64> {
        if let Some(&id) = topics.get(name) {
            return Ok(id);
        }
        conn.execute("INSERT OR IGNORE INTO topics(name) VALUES (?1)", [name])?;
        let id: i64 =
            conn.query_row("SELECT id FROM topics WHERE name=?1", [name], |r| r.get(0))?;
        topics.insert(name.to_string(), id);
        names.insert(id, name.to_string());
        Ok(id)
    }

    /// Checkpoints in the writer when the background checkpointer has let
    /// the WAL grow past [`WAL_BYTES_MAX`] (readers kept it from finishing).
    fn bound_wal(&mut self) -> Result<()> {
        if self.checkpointer.wal_bytes() > WAL_BYTES_MAX {
            self.conn
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
        }
        Ok(())
    }

    /// The item batches that hold any of `ids` (each once).
    fn batches_covering(&mut self, ids: &[RecordId]) -> Result<Vec<BatchRow>> {
        let mut out: Vec<BatchRow> = Vec::new();
        if ids.is_empty() {
            return Ok(out);
        }
        if let Some((lo, hi)) = dense_span(ids) {
            let mut st = self.conn.prepare_cached(&format!(
                "SELECT {BATCH_COLS} FROM item_batches WHERE first_id BETWEEN ?1 AND ?2"
            ))?;
            let mut rows = st.query([lo.saturating_sub(BATCH_MAX - 1), hi])?;
            while let Some(r) = rows.next()? {
                let b = BatchRow::from_row(r)?;
                if ids.iter().any(|i| b.covers(*i)) {
                    out.push(b);
                }
            }
            return Ok(out);
        }
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {BATCH_COLS} FROM item_batches WHERE first_id <= ?1 ORDER BY first_id DESC LIMIT 1"
        ))?;
        for id in sorted {
            if out.last().is_some_and(|b| b.covers(id)) {
                continue;
            }
            if let Some(b) = st.query_row([id], BatchRow::from_row).optional()? {
                if b.covers(id) {
                    out.push(b);
                }
            }
        }
        Ok(out)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn row_to_record(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Record>> {
        let id: i64 = r.get(0)?;
        let kind: i64 = r.get(1)?;
        let name: Option<String> = r.get(2)?;
        let time_us: i64 = r.get(3)?;
        let topic: Option<i64> = r.get(4)?;
        let part: Option<i64> = r.get(5)?;
        let off: Option<i64> = r.get(6)?;
        let version: Option<i64> = r.get(7)?;
        let origin: Option<String> = r.get(8)?;
        let parents: Option<Vec<u8>> = r.get(9)?;
        let extra: Option<String> = r.get(10)?;
        Ok(StoredRecord {
            id,
            kind,
            name,
            time_us,
            topic: topic.map(|t| (t, self.topic_names.get(&t).cloned())),
            part,
            off,
            version,
            origin,
            parents,
            extra,
        }
        .into_record())
    }

    fn ids_query(&mut self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<RecordId>> {
        let mut st = self.conn.prepare_cached(sql)?;
        let rows = st.query_map(args, |r| r.get::<_, i64>(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

/// An edge run: `count` edges from `parent` (+k if `seq`) to `child`+k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub parent: RecordId,
    pub child: RecordId,
    pub count: i64,
    pub seq: bool,
    pub kind: EdgeKind,
}

/// Groups the parent edges of `recs` (in order) into runs: for each parent
/// slot, consecutive records (consecutive ids) with the same parent extend
/// a fan run, with consecutive parents a sequence run.
pub(crate) fn edge_runs(recs: &[Record]) -> Vec<Run> {
    let mut out = Vec::new();
    let mut open: Vec<Option<Run>> = Vec::new();
    let mut prev_id = None;
    for r in recs {
        let consecutive = prev_id.is_some_and(|p: RecordId| p + 1 == r.id);
        prev_id = Some(r.id);
        if open.len() < r.parents.len() {
            open.resize(r.parents.len(), None);
        }
        for (j, slot) in open.iter_mut().enumerate() {
            let Some(&(p, kind)) = r.parents.get(j) else {
                if let Some(run) = slot.take() {
                    out.push(run);
                }
                continue;
            };
            if let Some(run) = slot.as_mut().filter(|run| consecutive && run.kind == kind) {
                let last = run.parent + if run.seq { run.count - 1 } else { 0 };
                let extends_fan =
                    (run.count == 1 || !run.seq) && p == run.parent && run.count < FAN_RUN_MAX;
                let extends_seq =
                    (run.count == 1 || run.seq) && p == last + 1 && run.count < RUN_MAX;
                if extends_fan {
                    run.seq = false;
                    run.count += 1;
                    continue;
                }
                if extends_seq {
                    run.seq = true;
                    run.count += 1;
                    continue;
                }
            }
            if let Some(run) = slot.take() {
                out.push(run);
            }
            *slot = Some(Run {
                parent: p,
                child: r.id,
                count: 1,
                seq: false,
                kind,
            });
        }
    }
    out.extend(open.into_iter().flatten());
    out
}

/// Groups item records (consecutive offsets of one partition with
/// consecutive ids) into runs: (topic, part, off, count, id).
fn item_runs(recs: &[(&Record, Option<i64>)]) -> Vec<(i64, i64, i64, i64, i64)> {
    let mut out: Vec<(i64, i64, i64, i64, i64)> = Vec::new();
    let mut last: Option<(i64, i64, i64, i64)> = None; // topic, part, off, id of the previous item
    for (r, topic) in recs {
        let (Some(loc), Some(t)) = (&r.item, topic) else {
            last = None;
            continue;
        };
        let (part, off) = (loc.partition as i64, loc.offset as i64);
        match (last, out.last_mut()) {
            (Some((lt, lp, lo, lid)), Some(run))
                if lt == *t
                    && lp == part
                    && lo + 1 == off
                    && lid + 1 == r.id
                    && run.3 < RUN_MAX =>
            {
                run.3 += 1;
            }
            _ => out.push((*t, part, off, 1, r.id)),
        }
        last = Some((*t, part, off, r.id));
    }
    out
}

/// Whether a record can live in an `item_batches` row: a plain data item.
fn batchable(r: &Record) -> bool {
    r.kind == Kind::Data
        && r.tags.is_empty()
        && r.uris.is_empty()
        && r.version.is_none()
        && r.origin.is_none()
        && r.item
            .as_ref()
            .is_some_and(|loc| r.name.is_empty() || r.name == loc.to_string())
}

/// A batch being assembled: (first id, topic, partition, first offset,
/// per item its time and parents).
type PendingBatch<'a> = (i64, i64, i64, i64, Vec<(i64, &'a [(RecordId, EdgeKind)])>);

/// One `item_batches` row.
struct BatchRow {
    first_id: i64,
    count: i64,
    topic: i64,
    part: i64,
    off: i64,
    data: Vec<u8>,
}

impl BatchRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BatchRow> {
        Ok(BatchRow {
            first_id: r.get(0)?,
            count: r.get(1)?,
            topic: r.get(2)?,
            part: r.get(3)?,
            off: r.get(4)?,
            data: r.get(5)?,
        })
    }

    fn covers(&self, id: RecordId) -> bool {
        id >= self.first_id && id < self.first_id + self.count
    }
}

const BATCH_COLS: &str = "first_id, count, topic, part, off, data";

/// Runs a multi-row insert of `rows`, `width` parameters each.
fn insert_rows<T>(
    tx: &Connection,
    head: &str,
    width: usize,
    rows: &[T],
    bind: impl Fn(&T, &mut Vec<Value>),
) -> Result<()> {
    let tuple = format!("({})", vec!["?"; width].join(","));
    let mut vals: Vec<Value> = Vec::with_capacity(width * ROWS_PER_INSERT);
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "{head} VALUES {}",
            vec![tuple.as_str(); chunk.len()].join(",")
        );
        let mut st = tx.prepare_cached(&sql)?;
        vals.clear();
        for r in chunk {
            bind(r, &mut vals);
        }
        for (i, v) in vals.iter().enumerate() {
            st.raw_bind_parameter(i + 1, v)?;
        }
        st.raw_execute()?;
    }
    Ok(())
}

impl Backend for SqliteBackend {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn namespace(&self) -> String {
        self.ns.clone()
    }

    fn allocate_ids(&mut self, n: usize) -> Result<RecordId> {
        let n = n as i64;
        if self.next_id + n > self.id_end {
            let want = n.max(ID_BLOCK);
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let stored: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key='next_id'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            let max: i64 = tx.query_row(
                "SELECT max((SELECT coalesce(max(id), 0) FROM records),
                            (SELECT coalesce((SELECT first_id + count - 1 FROM item_batches
                                              ORDER BY first_id DESC LIMIT 1), 0))) + 1",
                [],
                |r| r.get(0),
            )?;
            let start = stored
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(1)
                .max(max);
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('next_id', ?1) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [(start + want).to_string()],
            )?;
            tx.commit()?;
            self.next_id = start;
            self.id_end = start + want;
        }
        let first = self.next_id;
        self.next_id += n;
        Ok(first)
    }

    fn insert_records(&mut self, recs: &[Record]) -> Result<()> {
        let tx = self.conn.transaction()?;
        // Intern topics first (rare inserts, inside the same transaction).
        let mut topic_ids = Vec::with_capacity(recs.len());
        let mut last: Option<(&str, i64)> = None;
        for r in recs {
            topic_ids.push(match &r.item {
                Some(loc) => match last {
                    Some((name, id)) if name == &*loc.topic => Some(id),
                    _ => {
                        let id = Self::topic_id(
                            &tx,
                            &mut self.topics,
                            &mut self.topic_names,
                            &loc.topic,
                        )?;
                        last = Some((&loc.topic, id));
                        Some(id)
                    }
                },
                None => None,
            });
        }
        let all: Vec<(&Record, Option<i64>)> = recs.iter().zip(topic_ids).collect();
        // Runs of plain items go column-wise into item_batches.
        let mut batches: Vec<PendingBatch<'_>> = Vec::new();
        let mut rows: Vec<(&Record, Option<i64>)> = Vec::with_capacity(all.len());
        for (r, topic) in &all {
            let (Some(t), true) = (topic, batchable(r)) else {
                rows.push((r, *topic));
                continue;
            };
            let loc = r.item.as_ref().expect("batchable items have a location");
            let (part, off) = (loc.partition as i64, loc.offset as i64);
            match batches.last_mut() {
                Some(b)
                    if b.1 == *t
                        && b.2 == part
                        && b.3 + b.4.len() as i64 == off
                        && b.0 + b.4.len() as i64 == r.id
                        && (b.4.len() as i64) < BATCH_MAX =>
                {
                    b.4.push((r.time_us, &r.parents));
                }
                _ => batches.push((r.id, *t, part, off, vec![(r.time_us, &r.parents)])),
            }
        }
        insert_rows(
            &tx,
            "INSERT INTO item_batches(first_id,count,topic,part,off,data)",
            6,
            &batches,
            |b, v| {
                v.extend([b.0, b.4.len() as i64, b.1, b.2, b.3].map(Value::Integer));
                v.push(Value::Blob(encode_batch(&b.4)));
            },
        )?;
        insert_rows(
            &tx,
            "INSERT INTO records(id,kind,name,time_us,topic,part,off,version,origin,parents,extra)",
            11,
            &rows,
            |(r, topic), v| {
                v.push(Value::Integer(r.id));
                v.push(Value::Integer(r.kind.code()));
                v.push(match (&r.item, r.name.is_empty()) {
                    (Some(loc), false) if r.name == loc.to_string() => Value::Null,
                    (_, true) => Value::Null,
                    _ => Value::Text(r.name.clone()),
                });
                v.push(Value::Integer(r.time_us));
                match (&r.item, topic) {
                    (Some(loc), Some(t)) => {
                        v.push(Value::Integer(*t));
                        v.push(Value::Integer(loc.partition as i64));
                        v.push(Value::Integer(loc.offset as i64));
                    }
                    _ => v.extend([Value::Null, Value::Null, Value::Null]),
                }
                v.push(r.version.map_or(Value::Null, Value::Integer));
                v.push(r.origin.clone().map_or(Value::Null, Value::Text));
                v.push(parents_column(&r.parents).map_or(Value::Null, Value::Blob));
                v.push(extra_json(r).map_or(Value::Null, Value::Text));
            },
        )?;
        let items = item_runs(&rows);
        insert_rows(
            &tx,
            "INSERT INTO item_runs(topic,part,off,count,id)",
            5,
            &items,
            |r, v| v.extend([r.0, r.1, r.2, r.3, r.4].map(Value::Integer)),
        )?;
        let (seq, fan): (Vec<Run>, Vec<Run>) = edge_runs(recs).into_iter().partition(|r| r.seq);
        for (table, runs) in [("down", fan), ("down_seq", seq)] {
            insert_rows(
                &tx,
                &format!("INSERT OR IGNORE INTO {table}(parent,child,count,kind)"),
                4,
                &runs,
                |r, v| v.extend([r.parent, r.child, r.count, r.kind.code()].map(Value::Integer)),
            )?;
        }
        let tags = tag_rows(recs);
        if !tags.is_empty() {
            insert_rows(
                &tx,
                "INSERT OR IGNORE INTO tags(key,value,record)",
                3,
                &tags,
                |t, v| {
                    v.extend([
                        Value::Text(t.0.to_string()),
                        Value::Text(t.1.clone()),
                        Value::Integer(t.2),
                    ])
                },
            )?;
        }
        let uris = uri_rows(recs);
        if !uris.is_empty() {
            insert_rows(
                &tx,
                "INSERT OR IGNORE INTO uris(uri,record)",
                2,
                &uris,
                |u, v| v.extend([Value::Text(u.0.to_string()), Value::Integer(u.1)]),
            )?;
        }
        tx.commit()?;
        self.bound_wal()?;
        Ok(())
    }

    fn insert_edges(&mut self, edges: &[Edge]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for e in edges {
            let blob: Option<Option<Vec<u8>>> = tx
                .query_row("SELECT parents FROM records WHERE id=?1", [e.child], |r| {
                    r.get(0)
                })
                .optional()?;
            let added = match blob {
                Some(blob) => match packed_with_parent(blob.as_deref(), e)? {
                    Some(packed) => {
                        tx.execute(
                            "UPDATE records SET parents=?1 WHERE id=?2",
                            params![packed, e.child],
                        )?;
                        true
                    }
                    None => false,
                },
                None => {
                    // A batched item: rewrite its batch's blob.
                    let mut st = tx.prepare_cached(&format!(
                        "SELECT {BATCH_COLS} FROM item_batches WHERE first_id <= ?1 ORDER BY first_id DESC LIMIT 1"
                    ))?;
                    let b = st
                        .query_row([e.child], BatchRow::from_row)
                        .optional()?
                        .filter(|b| b.covers(e.child))
                        .ok_or_else(|| ProvError::NotFound(e.child.to_string()))?;
                    let k = (e.child - b.first_id) as usize;
                    match batch_with_parent(&b.data, b.count as usize, k, e)? {
                        Some(data) => {
                            tx.execute(
                                "UPDATE item_batches SET data=?1 WHERE first_id=?2",
                                params![data, b.first_id],
                            )?;
                            true
                        }
                        None => false,
                    }
                }
            };
            if added {
                tx.execute(
                    "INSERT OR IGNORE INTO down(parent,child,count,kind) VALUES (?1,?2,1,?3)",
                    params![e.parent, e.child, e.kind.code()],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn records(&mut self, ids: &[RecordId]) -> Result<Vec<Record>> {
        let mut out = Vec::with_capacity(ids.len());
        {
            let mut st = self.conn.prepare_cached(
                "SELECT id,kind,name,time_us,topic,part,off,version,origin,parents,extra FROM records WHERE id IN rarray(?1)",
            )?;
            let mut rows = st.query([ids_value(ids)])?;
            while let Some(r) = rows.next()? {
                out.push(self.row_to_record(r)??);
            }
        }
        if out.len() < ids.len() {
            let found: std::collections::HashSet<RecordId> = out.iter().map(|r| r.id).collect();
            let missing: Vec<RecordId> =
                ids.iter().copied().filter(|i| !found.contains(i)).collect();
            for b in self.batches_covering(&missing)? {
                let n = b.count as usize;
                let topic =
                    self.topic_names.get(&b.topic).cloned().ok_or_else(|| {
                        ProvError::Corrupt(format!("unknown topic id {}", b.topic))
                    })?;
                for &id in missing.iter().filter(|i| b.covers(**i)) {
                    let k = (id - b.first_id) as usize;
                    let (time_us, parents) = decode_batch_item(&b.data, n, k)?;
                    let loc = ItemRef {
                        topic: topic.as_str().into(),
                        partition: b.part as u32,
                        offset: (b.off + k as i64) as u64,
                    };
                    let mut r = Record::new(Kind::Data, loc.to_string());
                    r.id = id;
                    r.time_us = time_us;
                    r.item = Some(loc);
                    r.parents = parents;
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    fn existing(&mut self, ids: &[RecordId]) -> Result<Vec<RecordId>> {
        let mut out = Vec::new();
        if let Some((lo, hi)) = dense_span(ids) {
            // A rowid range scan instead of an ephemeral index of the ids.
            let set = SpanSet::new(lo, hi, ids);
            let mut st = self
                .conn
                .prepare_cached("SELECT id FROM records WHERE id BETWEEN ?1 AND ?2")?;
            let mut rows = st.query([lo, hi])?;
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(0)?;
                if set.contains(id) {
                    out.push(id);
                }
            }
        } else {
            let arr = ids_value(ids);
            out = self.ids_query("SELECT id FROM records WHERE id IN rarray(?1)", &[&arr])?;
        }
        if out.len() < ids.len() {
            let found: std::collections::HashSet<RecordId> = out.iter().copied().collect();
            let missing: Vec<RecordId> =
                ids.iter().copied().filter(|i| !found.contains(i)).collect();
            let batches = self.batches_covering(&missing)?;
            out.extend(
                missing
                    .into_iter()
                    .filter(|i| batches.iter().any(|b| b.covers(*i))),
            );
        }
        Ok(out)
    }

    fn children(&mut self, ids: &[RecordId]) -> Result<Vec<Edge>> {
        let mut out = Vec::new();
        let expand = |r: &rusqlite::Row<'_>,
                      seq: bool,
                      want: &dyn Fn(RecordId) -> bool,
                      out: &mut Vec<Edge>|
         -> Result<()> {
            let (parent, child, count): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let kind = EdgeKind::from_code(r.get(3)?)?;
            if seq {
                for k in 0..count {
                    if want(parent + k) {
                        out.push(Edge {
                            parent: parent + k,
                            child: child + k,
                            kind,
                        });
                    }
                }
            } else if want(parent) {
                out.extend((0..count).map(|k| Edge {
                    parent,
                    child: child + k,
                    kind,
                }));
            }
            Ok(())
        };
        if let Some((lo, hi)) = dense_span(ids) {
            // Many ids close together (a cascade's frontier usually is): one
            // range scan of each clustered table beats a probe per id.
            let set = SpanSet::new(lo, hi, ids);
            let want = |p: RecordId| set.contains(p);
            for (table, seq, from) in [
                ("down", false, lo),
                ("down_seq", true, lo.saturating_sub(RUN_MAX - 1)),
            ] {
                let mut st = self.conn.prepare_cached(&format!(
                    "SELECT parent, child, count, kind FROM {table} WHERE parent BETWEEN ?1 AND ?2"
                ))?;
                let mut rows = st.query([from, hi])?;
                while let Some(r) = rows.next()? {
                    expand(r, seq, &want, &mut out)?;
                }
            }
        } else {
            let set: std::collections::HashSet<RecordId> = ids.iter().copied().collect();
            let want = |p: RecordId| set.contains(&p);
            {
                let mut st = self.conn.prepare_cached(
                    "SELECT parent, child, count, kind FROM down WHERE parent IN rarray(?1)",
                )?;
                let mut rows = st.query([ids_value(ids)])?;
                while let Some(r) = rows.next()? {
                    expand(r, false, &want, &mut out)?;
                }
            }
            // A sequence run covering p starts within RUN_MAX before it.
            let mut st = self.conn.prepare_cached(
                "SELECT parent, child, count, kind FROM down_seq WHERE parent BETWEEN ?1 AND ?2",
            )?;
            let mut seen_runs = std::collections::HashSet::new();
            for &p in ids {
                let mut rows = st.query([p.saturating_sub(RUN_MAX - 1), p])?;
                while let Some(r) = rows.next()? {
                    let key: (i64, i64) = (r.get(0)?, r.get(1)?);
                    if seen_runs.insert(key) {
                        expand(r, true, &want, &mut out)?;
                    }
                }
            }
        }
        Ok(out)
    }

    fn parents(&mut self, ids: &[RecordId]) -> Result<Vec<Edge>> {
        let mut out = Vec::new();
        let mut found = std::collections::HashSet::new();
        {
            let mut st = self
                .conn
                .prepare_cached("SELECT id, parents FROM records WHERE id IN rarray(?1)")?;
            let mut rows = st.query([ids_value(ids)])?;
            while let Some(r) = rows.next()? {
                let child: i64 = r.get(0)?;
                found.insert(child);
                let blob: Option<Vec<u8>> = r.get(1)?;
                out.extend(parent_edges(child, unpack_optional(blob.as_deref())?));
            }
        }
        if found.len() < ids.len() {
            let missing: Vec<RecordId> =
                ids.iter().copied().filter(|i| !found.contains(i)).collect();
            for b in self.batches_covering(&missing)? {
                for &child in missing.iter().filter(|i| b.covers(**i)) {
                    let (_, parents) = decode_batch_item(
                        &b.data,
                        b.count as usize,
                        (child - b.first_id) as usize,
                    )?;
                    out.extend(parent_edges(child, parents));
                }
            }
        }
        Ok(out)
    }

    fn find_name(&mut self, name: &str, limit: usize) -> Result<Vec<RecordId>> {
        self.ids_query(
            "SELECT id FROM records WHERE name=?1 ORDER BY id LIMIT ?2",
            &[&name, &(limit as i64)],
        )
    }

    fn find_tag(&mut self, key: &str, value: &str, limit: usize) -> Result<Vec<RecordId>> {
        self.ids_query(
            "SELECT record FROM tags WHERE key=?1 AND value=?2 ORDER BY record LIMIT ?3",
            &[&key, &value, &(limit as i64)],
        )
    }

    fn with_tag(&mut self, key: &str, value: &str, among: &[RecordId]) -> Result<Vec<RecordId>> {
        let arr = ids_value(among);
        self.ids_query(
            "SELECT record FROM tags WHERE key=?1 AND value=?2 AND record IN rarray(?3)",
            &[&key, &value, &arr],
        )
    }

    fn find_uri(&mut self, uri: &str, limit: usize) -> Result<Vec<RecordId>> {
        self.ids_query(
            "SELECT record FROM uris WHERE uri=?1 ORDER BY record LIMIT ?2",
            &[&uri, &(limit as i64)],
        )
    }

    fn find_items(
        &mut self,
        topic: &str,
        partition: u32,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, RecordId)>> {
        let Some(&t) = self.topics.get(topic) else {
            // Another process may have interned it since we opened.
            self.load_topics()?;
            if !self.topics.contains_key(topic) {
                return Ok(Vec::new());
            }
            return self.find_items(topic, partition, from, to, limit);
        };
        let (from, to) = (offset_column(from), offset_column(to));
        let mut st = self.conn.prepare_cached(
            "SELECT off, count, id FROM item_runs WHERE topic=?1 AND part=?2 AND off BETWEEN ?3 AND ?4 ORDER BY off, id",
        )?;
        let mut rows = st.query(params![
            t,
            partition as i64,
            from.saturating_sub(RUN_MAX - 1),
            to
        ])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let (off, count, id): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            for k in 0..count {
                if (from..=to).contains(&(off + k)) {
                    out.push(((off + k) as u64, id + k));
                }
            }
        }
        let mut st = self.conn.prepare_cached(
            "SELECT off, count, first_id FROM item_batches WHERE topic=?1 AND part=?2 AND off BETWEEN ?3 AND ?4",
        )?;
        let mut rows = st.query(params![
            t,
            partition as i64,
            from.saturating_sub(BATCH_MAX - 1),
            to
        ])?;
        while let Some(r) = rows.next()? {
            let (off, count, id): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            for k in 0..count {
                if (from..=to).contains(&(off + k)) {
                    out.push(((off + k) as u64, id + k));
                }
            }
        }
        out.sort_unstable();
        out.truncate(limit);
        Ok(out)
    }

    fn find_origin(&mut self, origin: &str) -> Result<Option<RecordId>> {
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM records WHERE origin=?1")?
            .query_row([origin], |r| r.get(0))
            .optional()?)
    }

    fn model_versions(&mut self, name: &str) -> Result<Vec<(i64, RecordId, i64)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT version, id, time_us FROM records WHERE name=?1 AND kind=2 AND version IS NOT NULL ORDER BY version",
        )?;
        let rows = st.query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn ids_after(&mut self, after: RecordId, limit: usize) -> Result<Vec<RecordId>> {
        let mut ids = self.ids_query(
            "SELECT id FROM records WHERE id > ?1 ORDER BY id LIMIT ?2",
            &[&after, &(limit as i64)],
        )?;
        let mut st = self.conn.prepare_cached(
            "SELECT first_id, count FROM item_batches WHERE first_id > ?1 ORDER BY first_id",
        )?;
        let mut rows = st.query([after.saturating_sub(BATCH_MAX)])?;
        let mut batched = Vec::new();
        while let Some(r) = rows.next()? {
            let (first, count): (i64, i64) = (r.get(0)?, r.get(1)?);
            batched.extend((first..first + count).filter(|i| *i > after));
            if batched.len() >= limit {
                break;
            }
        }
        ids.extend(batched);
        ids.sort_unstable();
        ids.truncate(limit);
        Ok(ids)
    }

    fn insert_invalidation(
        &mut self,
        event: &InvalidationEvent,
        rows: &[(RecordId, Option<RecordId>)],
    ) -> Result<(i64, Vec<RecordId>)> {
        // The write lock first, so nobody invalidates between the check of
        // what is invalid already and the insert.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO events(time_us, cause, target, cascade, invalidated) VALUES (?1,?2,?3,?4,0)",
            params![event.time_us, event.cause, event.target, event.cascade as i64],
        )?;
        let ev = tx.last_insert_rowid();
        let ids: Vec<RecordId> = rows.iter().map(|r| r.0).collect();
        let already: std::collections::HashSet<RecordId> = {
            let mut set = std::collections::HashSet::new();
            if let Some((lo, hi)) = dense_span(&ids) {
                let mut st =
                    tx.prepare_cached("SELECT record FROM invalid WHERE record BETWEEN ?1 AND ?2")?;
                let mut q = st.query([lo, hi])?;
                while let Some(r) = q.next()? {
                    set.insert(r.get::<_, i64>(0)?);
                }
            } else {
                for chunk in ids.chunks(1 << 16) {
                    let mut st =
                        tx.prepare_cached("SELECT record FROM invalid WHERE record IN rarray(?1)")?;
                    let mut q = st.query([ids_value(chunk)])?;
                    while let Some(r) = q.next()? {
                        set.insert(r.get::<_, i64>(0)?);
                    }
                }
            }
            set
        };
        let fresh: Vec<(RecordId, Option<RecordId>)> = rows
            .iter()
            .filter(|r| !already.contains(&r.0))
            .copied()
            .collect();
        insert_rows(
            &tx,
            "INSERT INTO invalid(record,event,parent)",
            3,
            &fresh,
            |(r, p), v| {
                v.extend([
                    Value::Integer(*r),
                    Value::Integer(ev),
                    p.map_or(Value::Null, Value::Integer),
                ])
            },
        )?;
        tx.execute(
            "UPDATE events SET invalidated=?1 WHERE id=?2",
            params![fresh.len() as i64, ev],
        )?;
        tx.commit()?;
        self.bound_wal()?;
        Ok((ev, fresh.into_iter().map(|r| r.0).collect()))
    }

    fn invalid(&mut self, ids: &[RecordId]) -> Result<Vec<Invalid>> {
        let mut st = self.conn.prepare_cached(
            "SELECT record, event, parent FROM invalid WHERE record IN rarray(?1)",
        )?;
        let rows = st.query_map([ids_value(ids)], |r| {
            Ok(Invalid {
                record: r.get(0)?,
                event: r.get(1)?,
                parent: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn event(&mut self, id: i64) -> Result<Option<InvalidationEvent>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id,time_us,cause,target,cascade,invalidated FROM events WHERE id=?1",
            )?
            .query_row([id], |r| {
                Ok(InvalidationEvent {
                    id: r.get(0)?,
                    time_us: r.get(1)?,
                    cause: r.get(2)?,
                    target: r.get(3)?,
                    cascade: r.get::<_, i64>(4)? != 0,
                    invalidated: r.get(5)?,
                })
            })
            .optional()?)
    }

    fn insert_action(&mut self, target: &ActionTarget, kind: &ActionKind) -> Result<i64> {
        let (target, kind) = action_columns(target, kind);
        self.conn.execute(
            "INSERT INTO actions(target, kind) VALUES (?1, ?2)",
            params![target, kind],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn actions(&mut self) -> Result<Vec<Action>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, target, kind FROM actions ORDER BY id")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, t, k) = row?;
            out.push(action_from_row(id, &t, &k)?);
        }
        Ok(out)
    }

    fn insert_action_runs(&mut self, runs: &[ActionRun]) -> Result<()> {
        let tx = self.conn.transaction()?;
        insert_rows(
            &tx,
            "INSERT INTO action_runs(action,record,event,time_us,ok,detail)",
            6,
            runs,
            |a, v| {
                v.extend([
                    Value::Integer(a.action),
                    Value::Integer(a.record),
                    Value::Integer(a.event),
                    Value::Integer(a.time_us),
                    Value::Integer(a.ok as i64),
                    Value::Text(a.detail.clone()),
                ])
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    fn action_runs(&mut self, record: Option<RecordId>, limit: usize) -> Result<Vec<ActionRun>> {
        let mut st = self.conn.prepare_cached(
            "SELECT action,record,event,time_us,ok,detail FROM (
               SELECT * FROM action_runs WHERE ?1 IS NULL OR record=?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
        )?;
        let rows = st.query_map(params![record, limit as i64], |r| {
            Ok(ActionRun {
                action: r.get(0)?,
                record: r.get(1)?,
                event: r.get(2)?,
                time_us: r.get(3)?,
                ok: r.get::<_, i64>(4)? != 0,
                detail: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn counts(&mut self) -> Result<Counts> {
        let q = |sql: &str| -> Result<i64> { Ok(self.conn.query_row(sql, [], |r| r.get(0))?) };
        Ok(Counts {
            records: q("SELECT count(*) FROM records")?
                + q("SELECT coalesce(sum(count), 0) FROM item_batches")?,
            edges: q("SELECT coalesce(sum(count), 0) FROM down")?
                + q("SELECT coalesce(sum(count), 0) FROM down_seq")?,
            invalid: q("SELECT count(*) FROM invalid")?,
            events: q("SELECT count(*) FROM events")?,
            actions: q("SELECT count(*) FROM actions")?,
            action_runs: q("SELECT count(*) FROM action_runs")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Provenance;
    use proptest::prelude::*;

    /// A batch shape: how each record picks its parents and location.
    #[derive(Debug, Clone)]
    enum Shape {
        /// Same parent for the whole batch (fan-out).
        Fan(usize),
        /// The k-th record derives from the (start+k)-th existing record.
        Seq(usize),
        /// Random parents.
        Random(Vec<usize>),
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            (0usize..1000).prop_map(Shape::Fan),
            (0usize..1000).prop_map(Shape::Seq),
            proptest::collection::vec(0usize..1000, 0..3).prop_map(Shape::Random),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Whatever the run compression makes of a batch, downstream edges
        /// and item lookups are exactly those of the records' own parents.
        #[test]
        fn runs_answer_like_plain_edges(
            batches in proptest::collection::vec((shape(), 1usize..1500, 0u32..2, any::<bool>(), any::<bool>()), 1..8),
            probe in proptest::collection::vec(0usize..2000, 1..50),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut p = Provenance::open(&dir.path().join("s.sqlite").display().to_string()).unwrap();
            let mut ids: Vec<RecordId> = p
                .add_batch((0..5).map(|i| Record::new(Kind::Fact, format!("f{i}"))).collect())
                .unwrap();
            let mut next_off = [0u64; 2];
            let mut locs: Vec<(u32, u64, RecordId)> = Vec::new();
            for (shape, n, part, gap, tagged) in batches {
                if gap {
                    next_off[part as usize] += 3;
                }
                let have = ids.len();
                let recs: Vec<Record> = (0..n)
                    .map(|k| {
                        let mut r = Record::item(ItemRef { topic: "t".into(), partition: part, offset: next_off[part as usize] + k as u64 });
                        if tagged && k % 2 == 0 {
                            r.tags.insert("scan".into(), TagValue::Int(k as i64)); // not batchable
                        }
                        match &shape {
                            Shape::Fan(i) => r.parents.push((ids[i % have], EdgeKind::Derived)),
                            Shape::Seq(i) => r.parents.push((ids[(i + k) % have], EdgeKind::Derived)),
                            Shape::Random(v) => {
                                for (j, i) in v.iter().enumerate() {
                                    let pid = ids[(i * 31 + k * 7 + j) % have];
                                    if !r.parents.iter().any(|x| x.0 == pid) {
                                        r.parents.push((pid, EdgeKind::Used));
                                    }
                                }
                            }
                        }
                        r
                    })
                    .collect();
                let new = p.add_batch(recs).unwrap();
                for (k, id) in new.iter().enumerate() {
                    locs.push((part, next_off[part as usize] + k as u64, *id));
                }
                next_off[part as usize] += n as u64;
                ids.extend(new);
            }
            // The model: every record's parents, inverted.
            let all = p.backend().records(&ids).unwrap();
            let mut model: Vec<Edge> = all
                .iter()
                .flat_map(|r| r.parents.iter().map(move |(pa, k)| Edge { parent: *pa, child: r.id, kind: *k }))
                .collect();
            model.sort();
            // Sparse probes, and a dense span.
            let sparse: Vec<RecordId> = probe.iter().map(|i| ids[i % ids.len()]).collect();
            let dense: Vec<RecordId> = ids.iter().copied().filter(|i| i % 3 != 0).collect();
            for q in [sparse, dense] {
                let qs: std::collections::HashSet<RecordId> = q.iter().copied().collect();
                let mut got = p.backend().children(&q).unwrap();
                got.sort();
                got.dedup();
                let want: Vec<Edge> = model.iter().copied().filter(|e| qs.contains(&e.parent)).collect();
                prop_assert_eq!(got, want);
            }
            prop_assert_eq!(p.counts().unwrap().edges as usize, model.len());
            prop_assert_eq!(p.counts().unwrap().records as usize, ids.len());
            let mut after = Vec::new();
            let mut last = 0;
            loop {
                let page = p.backend().ids_after(last, 333).unwrap();
                let Some(&l) = page.last() else { break };
                last = l;
                after.extend(page);
            }
            prop_assert_eq!(&after, &ids);
            prop_assert_eq!(all.len(), ids.len());
            for r in all.iter().filter(|r| r.kind == Kind::Data) {
                let loc = r.item.as_ref().unwrap();
                prop_assert_eq!(&r.name, &loc.to_string());
            }
            let mut up = p.backend().parents(&ids).unwrap();
            up.sort();
            prop_assert_eq!(&up, &model);
            for part in 0..2u32 {
                let mut want: Vec<(u64, RecordId)> = locs.iter().filter(|l| l.0 == part).map(|l| (l.1, l.2)).collect();
                want.sort_unstable();
                let got = p.backend().find_items("t", part, 0, u64::MAX, usize::MAX).unwrap();
                prop_assert_eq!(&got, &want);
                if let Some(&(o, id)) = want.get(want.len() / 2) {
                    prop_assert_eq!(p.backend().find_items("t", part, o, o, 10).unwrap(), vec![(o, id)]);
                }
            }
        }
    }

    #[test]
    fn edge_runs_group_fans_and_sequences() {
        let mk = |id: RecordId, parents: &[RecordId]| {
            let mut r = Record::new(Kind::Data, "x");
            r.id = id;
            r.parents = parents.iter().map(|p| (*p, EdgeKind::Derived)).collect();
            r
        };
        let recs = vec![
            mk(10, &[1, 5]),
            mk(11, &[1, 6]),
            mk(12, &[1, 7]),
            mk(14, &[1]),
            mk(15, &[2]),
        ];
        let runs = edge_runs(&recs);
        let fan = |parent, child, count| Run {
            parent,
            child,
            count,
            seq: false,
            kind: EdgeKind::Derived,
        };
        assert!(runs.contains(&fan(1, 10, 3)));
        assert!(runs.contains(&Run {
            parent: 5,
            child: 10,
            count: 3,
            seq: true,
            kind: EdgeKind::Derived
        }));
        // The id gap breaks the fan; 1→14 then 2→15 is a sequence.
        assert!(runs.contains(&Run {
            parent: 1,
            child: 14,
            count: 2,
            seq: true,
            kind: EdgeKind::Derived
        }));
        assert_eq!(runs.iter().map(|r| r.count).sum::<i64>(), 8);
    }
}
