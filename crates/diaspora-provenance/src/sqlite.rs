//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`,
//! so a returned call is durable; every write is one batched transaction
//! with multi-row inserts.
//!
//! Layout: a record's parents are stored inline in its row (a packed blob,
//! so an upstream step is one row read) and once more in `down`, a
//! clustered `(parent, child)` table that makes a downstream step one range
//! scan. Streamed items carry their location in the row (the topic
//! interned) under a partial index; names, tags and URIs are indexed only
//! for the records that have them.

use crate::backend::Backend;
use crate::model::*;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Rows per multi-row `INSERT`.
const ROWS_PER_INSERT: usize = 64;
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
CREATE INDEX IF NOT EXISTS records_item ON records(topic, part, off) WHERE topic IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS records_origin ON records(origin) WHERE origin IS NOT NULL;
CREATE TABLE IF NOT EXISTS down(parent INTEGER NOT NULL, child INTEGER NOT NULL, kind INTEGER NOT NULL,
  PRIMARY KEY(parent, child)) WITHOUT ROWID;
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

/// Tags and URIs of a record, kept as JSON in its row (they are indexed
/// separately for queries).
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Extra {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    uris: Vec<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    tags: std::collections::BTreeMap<String, (i64, String)>,
}

/// Packs parent edges: 9 bytes each (id LE, kind).
pub(crate) fn pack_parents(parents: &[(RecordId, EdgeKind)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parents.len() * 9);
    for (p, k) in parents {
        v.extend_from_slice(&p.to_le_bytes());
        v.push(k.code() as u8);
    }
    v
}

/// Unpacks [`pack_parents`]' output; a malformed blob is an error.
pub(crate) fn unpack_parents(b: &[u8]) -> Result<Vec<(RecordId, EdgeKind)>> {
    if b.len() % 9 != 0 {
        return Err(ProvError::Corrupt(format!("parents blob of {} bytes", b.len())));
    }
    b.chunks_exact(9)
        .map(|c| {
            let id = i64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
            Ok((id, EdgeKind::from_code(c[8] as i64)?))
        })
        .collect()
}

fn ids_value(ids: &[RecordId]) -> Rc<Vec<Value>> {
    Rc::new(ids.iter().map(|&i| Value::Integer(i)).collect())
}

/// The embedded SQLite store.
pub struct SqliteBackend {
    conn: Connection,
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
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "cache_size", -131072)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.execute_batch(SCHEMA)?;
        rusqlite::vtab::array::load_module(&conn)?;
        let ns: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key='namespace'", [], |r| r.get(0))
            .optional()?;
        let ns = match ns {
            Some(ns) => ns,
            None => {
                let ns = crate::new_namespace();
                conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('namespace', ?1)",
                    [&ns],
                )?;
                conn.query_row("SELECT value FROM meta WHERE key='namespace'", [], |r| r.get(0))?
            }
        };
        let mut me = SqliteBackend {
            conn,
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
        let id: i64 = conn.query_row("SELECT id FROM topics WHERE name=?1", [name], |r| r.get(0))?;
        topics.insert(name.to_string(), id);
        names.insert(id, name.to_string());
        Ok(id)
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
        Ok((|| {
            let item = match topic {
                Some(t) => Some(ItemLoc {
                    topic: self
                        .topic_names
                        .get(&t)
                        .cloned()
                        .ok_or_else(|| ProvError::Corrupt(format!("unknown topic id {t}")))?,
                    partition: part.unwrap_or(0) as u32,
                    offset: off.unwrap_or(0) as u64,
                }),
                None => None,
            };
            let extra: Extra = match extra {
                Some(s) => serde_json::from_str(&s)
                    .map_err(|e| ProvError::Corrupt(format!("record {id} extra: {e}")))?,
                None => Extra::default(),
            };
            let mut tags = std::collections::BTreeMap::new();
            for (k, (code, text)) in extra.tags {
                tags.insert(k, TagValue::from_stored(code, &text)?);
            }
            Ok(Record {
                id,
                kind: Kind::from_code(kind)?,
                name: match (&name, &item) {
                    (Some(n), _) => n.clone(),
                    (None, Some(loc)) => loc.to_string(),
                    (None, None) => String::new(),
                },
                time_us,
                uris: extra.uris,
                tags,
                item,
                version,
                origin,
                parents: parents.as_deref().map(unpack_parents).transpose()?.unwrap_or_default(),
            })
        })())
    }

    fn ids_query(&mut self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<RecordId>> {
        let mut st = self.conn.prepare_cached(sql)?;
        let rows = st.query_map(args, |r| r.get::<_, i64>(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

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
        let sql = format!("{head} VALUES {}", vec![tuple.as_str(); chunk.len()].join(","));
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
            let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let stored: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key='next_id'", [], |r| r.get(0))
                .optional()?;
            let max: i64 = tx.query_row("SELECT coalesce(max(id), 0) + 1 FROM records", [], |r| r.get(0))?;
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
        for r in recs {
            topic_ids.push(match &r.item {
                Some(loc) => Some(Self::topic_id(&tx, &mut self.topics, &mut self.topic_names, &loc.topic)?),
                None => None,
            });
        }
        let rows: Vec<(&Record, Option<i64>)> = recs.iter().zip(topic_ids).collect();
        insert_rows(
            &tx,
            "INSERT INTO records(id,kind,name,time_us,topic,part,off,version,origin,parents,extra)",
            11,
            &rows,
            |(r, topic), v| {
                v.push(Value::Integer(r.id));
                v.push(Value::Integer(r.kind.code()));
                v.push(match (&r.item, r.name.is_empty()) {
                    (Some(loc), _) if r.name == loc.to_string() => Value::Null,
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
                v.push(if r.parents.is_empty() {
                    Value::Null
                } else {
                    Value::Blob(pack_parents(&r.parents))
                });
                v.push(if r.tags.is_empty() && r.uris.is_empty() {
                    Value::Null
                } else {
                    let extra = Extra {
                        uris: r.uris.clone(),
                        tags: r
                            .tags
                            .iter()
                            .map(|(k, t)| (k.clone(), (t.type_code(), t.text())))
                            .collect(),
                    };
                    Value::Text(serde_json::to_string(&extra).expect("serializable"))
                });
            },
        )?;
        let edges: Vec<(i64, i64, i64)> = recs
            .iter()
            .flat_map(|r| r.parents.iter().map(move |(p, k)| (*p, r.id, k.code())))
            .collect();
        insert_rows(&tx, "INSERT OR IGNORE INTO down(parent,child,kind)", 3, &edges, |e, v| {
            v.extend([Value::Integer(e.0), Value::Integer(e.1), Value::Integer(e.2)])
        })?;
        let tags: Vec<(&str, String, i64)> = recs
            .iter()
            .flat_map(|r| r.tags.iter().map(move |(k, t)| (k.as_str(), t.text(), r.id)))
            .collect();
        if !tags.is_empty() {
            insert_rows(&tx, "INSERT OR IGNORE INTO tags(key,value,record)", 3, &tags, |t, v| {
                v.extend([Value::Text(t.0.to_string()), Value::Text(t.1.clone()), Value::Integer(t.2)])
            })?;
        }
        let uris: Vec<(&str, i64)> = recs
            .iter()
            .flat_map(|r| r.uris.iter().map(move |u| (u.as_str(), r.id)))
            .collect();
        if !uris.is_empty() {
            insert_rows(&tx, "INSERT OR IGNORE INTO uris(uri,record)", 2, &uris, |u, v| {
                v.extend([Value::Text(u.0.to_string()), Value::Integer(u.1)])
            })?;
        }
        tx.commit()?;
        Ok(())
    }

    fn insert_edges(&mut self, edges: &[Edge]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for e in edges {
            let blob: Option<Option<Vec<u8>>> = tx
                .query_row("SELECT parents FROM records WHERE id=?1", [e.child], |r| r.get(0))
                .optional()?;
            let Some(blob) = blob else {
                return Err(ProvError::NotFound(e.child.to_string()));
            };
            let mut parents = blob.as_deref().map(unpack_parents).transpose()?.unwrap_or_default();
            if parents.iter().any(|(p, _)| *p == e.parent) {
                continue;
            }
            parents.push((e.parent, e.kind));
            tx.execute(
                "UPDATE records SET parents=?1 WHERE id=?2",
                params![pack_parents(&parents), e.child],
            )?;
            tx.execute(
                "INSERT OR IGNORE INTO down(parent,child,kind) VALUES (?1,?2,?3)",
                params![e.parent, e.child, e.kind.code()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn records(&mut self, ids: &[RecordId]) -> Result<Vec<Record>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id,kind,name,time_us,topic,part,off,version,origin,parents,extra FROM records WHERE id IN rarray(?1)",
        )?;
        let mut rows = st.query([ids_value(ids)])?;
        let mut out = Vec::with_capacity(ids.len());
        while let Some(r) = rows.next()? {
            out.push(self.row_to_record(r)??);
        }
        Ok(out)
    }

    fn existing(&mut self, ids: &[RecordId]) -> Result<Vec<RecordId>> {
        let arr = ids_value(ids);
        self.ids_query("SELECT id FROM records WHERE id IN rarray(?1)", &[&arr])
    }

    fn children(&mut self, ids: &[RecordId]) -> Result<Vec<Edge>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT parent, child, kind FROM down WHERE parent IN rarray(?1)")?;
        let mut rows = st.query([ids_value(ids)])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(Edge {
                parent: r.get(0)?,
                child: r.get(1)?,
                kind: EdgeKind::from_code(r.get(2)?)?,
            });
        }
        Ok(out)
    }

    fn parents(&mut self, ids: &[RecordId]) -> Result<Vec<Edge>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, parents FROM records WHERE id IN rarray(?1) AND parents IS NOT NULL")?;
        let mut rows = st.query([ids_value(ids)])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let child: i64 = r.get(0)?;
            let blob: Vec<u8> = r.get(1)?;
            for (parent, kind) in unpack_parents(&blob)? {
                out.push(Edge { parent, child, kind });
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
        let mut st = self.conn.prepare_cached(
            "SELECT off, id FROM records WHERE topic=?1 AND part=?2 AND off BETWEEN ?3 AND ?4 ORDER BY off LIMIT ?5",
        )?;
        let rows = st.query_map(
            params![t, partition as i64, from.min(i64::MAX as u64) as i64, to.min(i64::MAX as u64) as i64, limit as i64],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?)),
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
        self.ids_query(
            "SELECT id FROM records WHERE id > ?1 ORDER BY id LIMIT ?2",
            &[&after, &(limit as i64)],
        )
    }

    fn insert_invalidation(
        &mut self,
        event: &InvalidationEvent,
        rows: &[(RecordId, Option<RecordId>)],
    ) -> Result<(i64, Vec<RecordId>)> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO events(time_us, cause, target, cascade, invalidated) VALUES (?1,?2,?3,?4,0)",
            params![event.time_us, event.cause, event.target, event.cascade as i64],
        )?;
        let ev = tx.last_insert_rowid();
        let mut newly = Vec::new();
        {
            let tuple = "(?,?,?)";
            let mut vals: Vec<Value> = Vec::with_capacity(3 * ROWS_PER_INSERT);
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let sql = format!(
                    "INSERT OR IGNORE INTO invalid(record,event,parent) VALUES {} RETURNING record",
                    vec![tuple; chunk.len()].join(",")
                );
                let mut st = tx.prepare_cached(&sql)?;
                vals.clear();
                for (r, p) in chunk {
                    vals.extend([Value::Integer(*r), Value::Integer(ev), p.map_or(Value::Null, Value::Integer)]);
                }
                for (i, v) in vals.iter().enumerate() {
                    st.raw_bind_parameter(i + 1, v)?;
                }
                let mut q = st.raw_query();
                while let Some(r) = q.next()? {
                    newly.push(r.get::<_, i64>(0)?);
                }
            }
        }
        tx.execute(
            "UPDATE events SET invalidated=?1 WHERE id=?2",
            params![newly.len() as i64, ev],
        )?;
        tx.commit()?;
        Ok((ev, newly))
    }

    fn invalid(&mut self, ids: &[RecordId]) -> Result<Vec<Invalid>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT record, event, parent FROM invalid WHERE record IN rarray(?1)")?;
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
            .prepare_cached("SELECT id,time_us,cause,target,cascade,invalidated FROM events WHERE id=?1")?
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
        self.conn.execute(
            "INSERT INTO actions(target, kind) VALUES (?1, ?2)",
            params![
                serde_json::to_string(target).expect("serializable"),
                serde_json::to_string(kind).expect("serializable")
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn actions(&mut self) -> Result<Vec<Action>> {
        let mut st = self.conn.prepare_cached("SELECT id, target, kind FROM actions ORDER BY id")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, t, k) = row?;
            out.push(Action {
                id,
                target: serde_json::from_str(&t).map_err(|e| ProvError::Corrupt(format!("action {id}: {e}")))?,
                kind: serde_json::from_str(&k).map_err(|e| ProvError::Corrupt(format!("action {id}: {e}")))?,
            });
        }
        Ok(out)
    }

    fn insert_action_runs(&mut self, runs: &[ActionRun]) -> Result<()> {
        let tx = self.conn.transaction()?;
        insert_rows(&tx, "INSERT INTO action_runs(action,record,event,time_us,ok,detail)", 6, runs, |a, v| {
            v.extend([
                Value::Integer(a.action),
                Value::Integer(a.record),
                Value::Integer(a.event),
                Value::Integer(a.time_us),
                Value::Integer(a.ok as i64),
                Value::Text(a.detail.clone()),
            ])
        })?;
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
            records: q("SELECT count(*) FROM records")?,
            edges: q("SELECT count(*) FROM down")?,
            invalid: q("SELECT count(*) FROM invalid")?,
            events: q("SELECT count(*) FROM events")?,
            actions: q("SELECT count(*) FROM actions")?,
            action_runs: q("SELECT count(*) FROM action_runs")?,
        })
    }
}
