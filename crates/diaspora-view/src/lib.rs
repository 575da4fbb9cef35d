//! Resilient data views over diaspora streams.
//!
//! A view is a **metastream**: each view item holds references (topic,
//! partition, offset) and the join key of its members, never copies of
//! their payloads, and is emitted once its constraints hold.
//!
//! - [`spec`]: the declarative view (TOML or a builder).
//! - [`engine`]: the pure join engine — K:1, all-of/any-of by key, time
//!   windows, replay-proof, snapshot/restore.
//! - [`runner`] (feature `fabric`, on by default): a view on the fabric —
//!   source readers, in-process delivery sharing payloads, an output topic
//!   of references, liveness (`discard`/`pin`) from provenance notices and
//!   retention, lineage of view items, snapshots.
//! - [`serve`] (feature `fabric`): the loop behind `diaspora view run` — a
//!   view delivered as JSON lines until a limit or a
//!   [`Stop`](diaspora_fabric::Stop).
//! - [`snapshot`]: versioned, crash-safe snapshot files.
//! - [`wire`]: the metastream's messages.
//! - [`bench`]: the benchmarks behind `diaspora view bench`.
//!
//! A member reference is the fabric's [`ItemRef`](diaspora_fabric::item::ItemRef);
//! a join key is a metadata value's text as the fabric writes it
//! ([`meta_text`](diaspora_fabric::item::meta::meta_text): the float `17.0`
//! and the int `17` are the same key). The crate depends on the fabric even
//! without the `fabric` feature, for that vocabulary and [`ViewError`]'s
//! wrapped [`FabricError`](diaspora_fabric::FabricError); it does not
//! depend on diaspora-stream (a view reads any topic, QoS stream or not).
//!
//! What it does not do: copy payloads into the metastream (references
//! only), keep sources alive (retention is the fabric's), or decide
//! validity (provenance notices do; a view applies its policy to them).
#![warn(missing_docs)]

pub mod bench;
pub mod engine;
pub mod fuzzing;
#[cfg(feature = "fabric")]
pub mod runner;
#[cfg(feature = "fabric")]
pub mod serve;
pub mod snapshot;
pub mod spec;
pub mod wire;

pub use engine::{JoinEngine, Member, ViewItem};
pub use spec::{Mode, SourceSpec, ViewSpec};

impl ViewError {
    /// A closure wrapping a [`FabricError`](diaspora_fabric::FabricError)
    /// with what the view was doing (`.map_err(ViewError::fabric("…"))`).
    pub fn fabric(
        context: impl Into<String>,
    ) -> impl FnOnce(diaspora_fabric::FabricError) -> ViewError {
        let context = context.into();
        move |source| ViewError::Fabric { context, source }
    }
}

/// Errors of the view layer.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// A spec that cannot be used, naming the field.
    #[error("view spec: {0}")]
    Spec(String),
    /// A bound was reached.
    #[error("limit reached: {0}")]
    Limit(String),
    /// A snapshot that cannot be restored.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// A malformed metastream message.
    #[error("view message: {0}")]
    Wire(String),
    /// The fabric failed (a source, the output topic, the invalidation
    /// feed): what the view was doing, and the fabric's error.
    #[error("fabric: {context}: {source}")]
    Fabric {
        /// What the view was doing, naming the topic.
        context: String,
        /// The fabric's error.
        #[source]
        source: diaspora_fabric::FabricError,
    },
    /// A benchmark run that did not get what it streamed.
    #[error("benchmark: {0}")]
    Bench(String),
    /// The view is closed.
    #[error("view closed: {0}")]
    Closed(String),
    /// Writing the delivered view items failed (module `serve`).
    #[error("writing the view's output")]
    Output {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
