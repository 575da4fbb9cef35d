//! Resilient data views over diaspora streams (work in progress: the spec
//! and the pure join engine; the fabric shell, liveness against provenance,
//! snapshots on disk, the CLI and the benchmark come next).
//!
//! A view is a **metastream**: each view item holds references (topic,
//! partition, offset) and the join key of its members, never copies of
//! their payloads, and is emitted once its constraints hold.
#![warn(missing_docs)]

pub mod bench;
pub mod engine;
pub mod spec;

pub use engine::{JoinEngine, Member, ViewItem};
pub use spec::{Mode, SourceSpec, ViewSpec};

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
}
