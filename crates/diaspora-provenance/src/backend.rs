//! The storage interface the provenance semantics ([`crate::Provenance`])
//! are written against. A backend stores and looks things up; every rule
//! (cycle refusal, cascades, versions, actions) lives above it, once.
//!
//! Implementations: [`crate::sqlite::SqliteBackend`] (embedded default) and
//! [`crate::postgres::PgBackend`]. Both pass `tests/store.rs`, and both
//! encode rows through [`crate::codec`]; this module depends on neither.

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
