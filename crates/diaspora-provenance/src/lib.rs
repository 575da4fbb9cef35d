//! Provenance and invalidation for diaspora, after Braid-DB, at stream rates.
//!
//! - **Records** ([`model::Record`]) of kind fact, data, model or activity,
//!   with a name, URIs, typed tags, a time and, for streamed items, their
//!   fabric location (the fabric's [`ItemRef`], re-exported in [`model`]).
//! - **Derivations** form a DAG: [`Provenance::derive`] refuses an edge that
//!   would close a cycle. Model updates make new, timestamped versions
//!   ([`Provenance::update_model`]), so "what did model M know at time t"
//!   is a query ([`Provenance::model_at`]).
//! - **Invalidation** ([`Provenance::invalidate`]) cascades to everything
//!   derived (opt-out per call), records each record's parent invalidation
//!   and the event (so [`Provenance::why`] walks back to the cause), is
//!   idempotent, runs registered **actions** (command, fabric publish, Rust
//!   callback) and records their outcomes, and publishes notices on a
//!   fabric topic.
//! - **Per-item lineage** from the stream layer is recorded in batches by
//!   [`lineage::LineageRecorder`], which implements the fabric's
//!   [`AckHook`](diaspora_fabric::item::AckHook): any producer that calls
//!   the hook (a QoS stream, a view) feeds it, and this crate does not
//!   depend on diaspora-stream. Tags are metadata values in the fabric's
//!   one text form ([`diaspora_fabric::item::meta`]: a float `1.0` reads
//!   `1`).
//! - **Stores**: embedded SQLite ([`sqlite::SqliteBackend`], the default)
//!   and PostgreSQL ([`postgres::PgBackend`]), behind [`backend::Backend`].
//! - **Interchange**: W3C PROV-JSON export and import/merge, Graphviz DOT
//!   and Mermaid ([`interchange`]).
//!
//! # Modules
//!
//! | module | holds |
//! |---|---|
//! | [`model`] | the data: records, tags, edges, item locations, invalidation events, actions, errors |
//! | [`store`] | [`Provenance`]: the semantics, written once over any [`Backend`] (adding, cycle refusal, versions, cascades, notices, queries) |
//! | [`actions`] | running the actions an invalidation triggers, their template placeholders, recording outcomes |
//! | [`backend`] | the [`Backend`] trait a store implements (storage only, no rules) |
//! | [`codec`] | the row encoding both stores share: packed parents, item-batch blobs, the tags/URIs column |
//! | [`sqlite`], [`postgres`] | the two stores; each depends on [`backend`] and [`codec`], never on the other |
//! | [`pg_tls`] | TLS for PostgreSQL connections: `sslmode`/`sslrootcert` from the URL, rustls (ring) connector |
//! | [`lineage`] | [`lineage::LineageRecorder`], per-item lineage from the stream layer |
//! | [`fabric`] | the fabric side: the notice sink and the invalidation feed |
//! | [`interchange`] | PROV-JSON export, parse and import; DOT and Mermaid rendering (one submodule per job) |
//! | [`bench`](mod@bench) | the `diaspora prov bench` workloads |
//! | [`fuzzing`] | bodies of the `fuzz/` targets, also run by the unit tests |
//!
//! # What it does not do
//!
//! - It keeps no item payloads: a streamed item is its fabric location.
//! - It does not decide what a notice means to a consumer (a view's
//!   policy does).
//! - It is blocking: call [`Provenance`] from a plain thread or
//!   `spawn_blocking`, not from an async task.
//! - Actions run inside [`Provenance::invalidate`], in the calling
//!   process; a Rust callback runs only where it was registered.
//! - Interchange reads and writes PROV-JSON only (no PROV-N or PROV-XML);
//!   on import, agents, bundles and relations other than derivation,
//!   usage, generation and communication are ignored and counted.
//! - It has no command line: `diaspora prov …` lives in the root package.
#![warn(missing_docs)]

pub mod actions;
pub mod backend;
pub mod bench;
pub mod codec;
pub mod fabric;
pub mod fuzzing;
pub mod interchange;
pub mod lineage;
pub mod model;
pub mod pg_tls;
pub mod postgres;
pub mod sqlite;
pub mod store;

pub use backend::Backend;
pub use model::*;
pub use postgres::redact_url;
pub use store::{
    ActionContext, Direction, EventSink, InvalidationReport, Limits, Lineage, ModelKnowledge,
    Provenance, Target, Validity, WhyChain,
};

use serde::{Deserialize, Serialize};

/// The fabric topic invalidation notices go to by default.
pub const NOTICE_TOPIC: &str = "prov.invalidations";

/// An invalidation notice as published on the fabric (JSON). A large
/// invalidation is split into `parts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// Event id.
    pub event: i64,
    /// Cause.
    pub cause: String,
    /// What was asked for.
    pub target: String,
    /// When, µs since the Unix epoch.
    pub time_us: i64,
    /// The records the target named.
    pub roots: Vec<RecordId>,
    /// This part's index.
    pub part: u32,
    /// Number of parts.
    pub parts: u32,
    /// Records newly invalid (this part).
    pub records: Vec<RecordId>,
    /// Their fabric locations, for those that are streamed items.
    pub items: Vec<ItemRef>,
}

/// Opens a backend by URL: `postgres://…` or `postgresql://…`, else a
/// SQLite file path (optionally written `sqlite:PATH`).
pub fn open_backend(url: &str) -> Result<Box<dyn Backend>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(postgres::PgBackend::connect(url)?))
    } else {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() {
            return Err(ProvError::Invalid("empty store path".into()));
        }
        Ok(Box::new(sqlite::SqliteBackend::open(path)?))
    }
}

/// The default store location: `$DIASPORA_PROV_STORE`, else
/// `./diaspora-prov.sqlite`.
pub fn default_store() -> String {
    std::env::var("DIASPORA_PROV_STORE").unwrap_or_else(|_| "diaspora-prov.sqlite".into())
}

/// A random namespace for a new store (128 bits, hex).
pub(crate) fn new_namespace() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}
