//! The storage interface the provenance semantics ([`crate::Provenance`])
//! are written against. A backend stores and looks things up; every rule
//! (cycle refusal, cascades, versions, actions) lives above it, once.
//!
//! Implementations: [`crate::sqlite::SqliteBackend`] (embedded default) and
//! [`crate::postgres::PgBackend`]. Both pass `tests/store.rs`.

use crate::model::*;

/// Upper bound on ids in one `IN (…)` lookup; callers pass any number, a
/// backend splits.
pub const LOOKUP_CHUNK: usize = 512;

/// A provenance store.
pub trait Backend: Send {
    /// A short description (`sqlite:/path`, `postgres://host/db`).
    fn describe(&self) -> String;

    /// The store's namespace: a random id made when the store was created,
    /// used to name its records in exported documents.
    fn namespace(&self) -> String;

    /// Reserves `n` consecutive record ids and returns the first.
    fn allocate_ids(&mut self, n: usize) -> Result<RecordId>;

    /// Stores records (ids already set, times set) with their parent edges,
    /// tags, URIs, item locations and origins, in one durable transaction.
    /// An id that exists already is an error.
    fn insert_records(&mut self, recs: &[Record]) -> Result<()>;

    /// Adds edges between existing records, in one durable transaction.
    /// Edges that exist already are ignored.
    fn insert_edges(&mut self, edges: &[Edge]) -> Result<()>;

    /// The records with these ids (those that exist, any order).
    fn records(&mut self, ids: &[RecordId]) -> Result<Vec<Record>>;

    /// Those of `ids` that exist.
    fn existing(&mut self, ids: &[RecordId]) -> Result<Vec<RecordId>>;

    /// Edges whose parent is one of `ids`.
    fn children(&mut self, ids: &[RecordId]) -> Result<Vec<Edge>>;

    /// Edges whose child is one of `ids`.
    fn parents(&mut self, ids: &[RecordId]) -> Result<Vec<Edge>>;

    /// Records with this name (not item records), ascending id, at most `limit`.
    fn find_name(&mut self, name: &str, limit: usize) -> Result<Vec<RecordId>>;

    /// Records with tag `key` whose canonical value text is `value`.
    fn find_tag(&mut self, key: &str, value: &str, limit: usize) -> Result<Vec<RecordId>>;

    /// Of `among`, those with tag `key` = `value`.
    fn with_tag(&mut self, key: &str, value: &str, among: &[RecordId]) -> Result<Vec<RecordId>>;

    /// Records with this URI.
    fn find_uri(&mut self, uri: &str, limit: usize) -> Result<Vec<RecordId>>;

    /// Item records of `topic`/`partition` with offsets in `from..=to`,
    /// ascending offset, at most `limit`.
    fn find_items(
        &mut self,
        topic: &str,
        partition: u32,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, RecordId)>>;

    /// The record imported under this origin IRI.
    fn find_origin(&mut self, origin: &str) -> Result<Option<RecordId>>;

    /// Versions of model `name`: (version, id, time_us), ascending version.
    fn model_versions(&mut self, name: &str) -> Result<Vec<(i64, RecordId, i64)>>;

    /// Ids greater than `after`, ascending, at most `limit` (for export).
    fn ids_after(&mut self, after: RecordId, limit: usize) -> Result<Vec<RecordId>>;

    /// Records an invalidation event and marks `rows` (record, parent)
    /// invalid, skipping records already invalid, in one durable
    /// transaction. Sets the event's `invalidated` count. Returns the
    /// event id and the records newly invalidated.
    fn insert_invalidation(
        &mut self,
        event: &InvalidationEvent,
        rows: &[(RecordId, Option<RecordId>)],
    ) -> Result<(i64, Vec<RecordId>)>;

    /// The invalidity of those of `ids` that are invalid.
    fn invalid(&mut self, ids: &[RecordId]) -> Result<Vec<Invalid>>;

    /// One invalidation event.
    fn event(&mut self, id: i64) -> Result<Option<InvalidationEvent>>;

    /// Registers an action; returns its id.
    fn insert_action(&mut self, target: &ActionTarget, kind: &ActionKind) -> Result<i64>;

    /// Every registered action.
    fn actions(&mut self) -> Result<Vec<Action>>;

    /// Records action outcomes (one transaction).
    fn insert_action_runs(&mut self, runs: &[ActionRun]) -> Result<()>;

    /// Recorded action outcomes, for one record or all, newest last, at most `limit`.
    fn action_runs(&mut self, record: Option<RecordId>, limit: usize) -> Result<Vec<ActionRun>>;

    /// Store-wide counts.
    fn counts(&mut self) -> Result<Counts>;
}

/// A record's columns as both stores keep them: parents packed
/// ([`crate::sqlite::pack_parents`]), tags and URIs as JSON
/// ([`extra_json`]), an item record's name left NULL.
pub(crate) struct StoredRecord {
    pub id: RecordId,
    pub kind: i64,
    pub name: Option<String>,
    pub time_us: i64,
    pub item: Option<ItemRef>,
    pub version: Option<i64>,
    pub origin: Option<String>,
    pub parents: Option<Vec<u8>>,
    pub extra: Option<String>,
}

/// Tags and URIs of a record, kept as JSON in its row (they are indexed
/// separately for queries).
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Extra {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    uris: Vec<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    tags: std::collections::BTreeMap<String, (i64, String)>,
}

/// The JSON column of a record's tags (typed) and URIs; `None` if it has neither.
pub(crate) fn extra_json(r: &Record) -> Option<String> {
    if r.tags.is_empty() && r.uris.is_empty() {
        return None;
    }
    let extra = Extra {
        uris: r.uris.clone(),
        tags: r
            .tags
            .iter()
            .map(|(k, t)| (k.clone(), (t.type_code(), t.text())))
            .collect(),
    };
    Some(serde_json::to_string(&extra).expect("serializable"))
}

impl StoredRecord {
    /// The record; anything that does not decode is [`ProvError::Corrupt`].
    pub fn into_record(self) -> Result<Record> {
        let id = self.id;
        let extra: Extra = match self.extra {
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
            kind: Kind::from_code(self.kind)?,
            name: match (self.name, &self.item) {
                (Some(n), _) => n,
                (None, Some(loc)) => loc.to_string(),
                (None, None) => String::new(),
            },
            time_us: self.time_us,
            uris: extra.uris,
            tags,
            item: self.item,
            version: self.version,
            origin: self.origin,
            parents: self
                .parents
                .as_deref()
                .map(crate::sqlite::unpack_parents)
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// Adds `e`'s parent to a child's parents unless it is there already;
/// returns whether it was added.
pub(crate) fn add_parent(parents: &mut Vec<(RecordId, EdgeKind)>, e: &Edge) -> bool {
    if parents.iter().any(|(p, _)| *p == e.parent) {
        return false;
    }
    parents.push((e.parent, e.kind));
    true
}

/// A row's packed parents with `e`'s parent added; `None` if it had it.
pub(crate) fn packed_with_parent(blob: Option<&[u8]>, e: &Edge) -> Result<Option<Vec<u8>>> {
    let mut parents = blob
        .map(crate::sqlite::unpack_parents)
        .transpose()?
        .unwrap_or_default();
    Ok(add_parent(&mut parents, e).then(|| crate::sqlite::pack_parents(&parents)))
}
