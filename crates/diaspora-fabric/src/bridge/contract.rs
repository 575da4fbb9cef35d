//! The two contracts a bridge joins: [`BridgeSource`] (where batches come
//! from) and [`BridgeSink`] (where they go), and the small types the loop in
//! [`super::mirror`] passes between them.
//!
//! Both traits describe **one partition**: the loop runs one source and one
//! sink per partition and never coordinates partitions with each other.
//! Every method that talks to the other system answers with a
//! [`BridgeError`], classified so the loop knows whether to retry
//! ([`BridgeError::Unavailable`]) or to stop the partition
//! ([`BridgeError::Fatal`]).

use std::future::Future;
use std::pin::Pin;

use crate::item::ConsumedItem;

/// Any error of the system on the other side, kept whole (downcast it to
/// reach the typed error, e.g. a [`crate::FabricError`]).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An answer still to come: an owned future, so the loop can keep waiting
/// for it across iterations while it does other work (fetching, committing).
pub type Pending<T> = Pin<Box<dyn Future<Output = Result<T, BridgeError>> + Send>>;

/// A failure on one side of a bridge, classified for the loop.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The other side cannot be reached or asked to be retried (connection
    /// lost, node restarting, overloaded). The loop reconnects with a bounded
    /// backoff and re-sends; nothing is lost because the position only moves
    /// on an acknowledgement.
    #[error(transparent)]
    Unavailable(BoxError),
    /// A refusal that retrying cannot fix (a sequence gap, a corrupt batch,
    /// an unexpected answer). The partition stops and the error is recorded
    /// in [`super::BridgeStats::failed`].
    #[error(transparent)]
    Fatal(BoxError),
}

impl BridgeError {
    /// An [`BridgeError::Unavailable`] wrapping `e`.
    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        BridgeError::Unavailable(e.into())
    }

    /// A [`BridgeError::Fatal`] wrapping `e`.
    pub fn fatal(e: impl Into<BoxError>) -> Self {
        BridgeError::Fatal(e.into())
    }

    /// Whether the loop retries after this error.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, BridgeError::Unavailable(_))
    }
}

/// The identity of a bridged batch, by which a sink recognises a re-send.
///
/// `producer_id` is stable for a bridge partition across restarts (the
/// fabric derives it from the bridge's name, topics and partition: see
/// [`super::bridge_producer_id`]); `sequence` is the source offset of the
/// batch's first item, so the batch covers sequences
/// `sequence .. sequence + items` and consecutive batches are contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchId {
    /// Stable producer id of the bridge partition (never 0).
    pub producer_id: u64,
    /// Source offset of the batch's first item.
    pub sequence: u64,
}

/// What a fetch from a [`BridgeSource`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// Whole source batches from the requested position on, in offset order
    /// (possibly none: nothing new yet). Each inner vector is one source
    /// batch, never split or merged, with items before the requested
    /// position left out.
    Batches(Vec<Vec<ConsumedItem>>),
    /// The requested position is no longer held (the source expired it);
    /// the loop asks [`BridgeSource::earliest`] where the partition starts.
    OutOfRange,
}

/// How a [`BridgeSink`] took a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked {
    /// Appended now, durably as the sink defines it.
    Appended,
    /// The sink already held this `(producer id, sequence)` and did not
    /// append it again (a re-send after an outage or restart).
    AlreadyHeld,
}

/// Where a bridge's batches come from: one partition of a source that keeps
/// its items in an immutable, offset-ordered log and can hold the bridge's
/// durable position.
///
/// # Contract (what exactly-once needs from a source)
///
/// - **Immutable batches.** Fetching from the same position returns the same
///   batches with the same boundaries and items, every time, until the items
///   expire. The loop only ever moves the position to the end of a whole
///   batch, so a re-fetch after any restart cuts the same batches, and a
///   re-sent batch carries the same [`BatchId`] as the first send.
/// - **Contiguous offsets.** Items of a partition have consecutive offsets,
///   so batch `n + 1` starts where batch `n` ends and the sink sees a gap
///   only where the source lost items.
/// - **A durable, resumable position.** [`BridgeSource::commit`] stores a
///   position durably (the fabric: an offset of the consumer group
///   `bridge.NAME` on the source node), and [`BridgeSource::resume_position`]
///   is the last position committed, read when the source was opened. The
///   loop commits a position only once the sink acknowledged every item
///   before it, so the committed position never runs ahead of what the sink
///   holds; it may lag behind it (by up to one commit interval), and that
///   lag is exactly what a restarted bridge re-sends.
///
/// Methods that reach the other system return [`BridgeError`]: an
/// [`BridgeError::Unavailable`] makes the loop reconnect and retry, a
/// [`BridgeError::Fatal`] stops the partition.
pub trait BridgeSource: Send + 'static {
    /// The partition this source reads.
    fn partition(&self) -> u32;

    /// The position to resume from: the last one committed, or the
    /// partition's earliest item when none was.
    fn resume_position(&self) -> u64;

    /// (Re)establishes the way to the source, dropping whatever connection
    /// it held. An error makes the loop count a reconnect and back off.
    fn connect(&mut self) -> impl Future<Output = Result<(), BridgeError>> + Send;

    /// Starts a fetch of whole batches from `position` on, returning the
    /// answer to wait for. It may wait (a long poll) while nothing is new.
    /// An error here means the request was not sent: the loop reconnects
    /// before the next fetch.
    fn fetch(
        &mut self,
        position: u64,
    ) -> impl Future<Output = Result<Pending<Fetched>, BridgeError>> + Send;

    /// The partition's earliest offset still held, after a fetch answered
    /// [`Fetched::OutOfRange`]; `None` if the source no longer knows the
    /// partition. Any error stops the partition.
    fn earliest(&mut self) -> impl Future<Output = Result<Option<u64>, BridgeError>> + Send;

    /// Stores `position` durably as the bridge's position.
    fn commit(&mut self, position: u64) -> impl Future<Output = Result<(), BridgeError>> + Send;
}

/// Where a bridge's batches go: one partition of a target that appends
/// batches in order and recognises batches it already holds.
///
/// # Contract (what exactly-once needs from a sink)
///
/// - **Recognise a re-sent batch by `(producer id, sequence)`.** A batch whose
///   [`BatchId`] the sink already holds must not be appended again: answer
///   [`Acked::AlreadyHeld`] (or an error the implementation maps to it). This
///   must hold across restarts of the sink and of the bridge, for every batch
///   the bridge may re-send: anything since the last committed position,
///   however old. (The fabric keeps each producer's last sequence with the
///   log and recovers it at restart: a re-send among the producer's last
///   [`BridgeSink::DUPLICATE_WINDOW`] batches is answered with its original
///   offsets, an older one is refused as `DuplicateSequence`; both are
///   [`Acked::AlreadyHeld`].)
/// - **Refuse a gap or a partial overlap** (a batch that neither continues
///   nor repeats the producer's sequence) with [`BridgeError::Fatal`], never
///   by appending it: a silent append there is a loss or a duplicate. A sink
///   may take the first batch of a producer it does not know at any sequence
///   (the fabric does: a bridge starts wherever the source's items start);
///   the loop keeps a single batch on the wire until the sink's first
///   acknowledgement, so that batch is never overtaken by the next one.
/// - **Append in order.** Batches sent on one connection are appended in the
///   order sent, and an acknowledgement means durable as the sink defines it.
/// - **Answer in order.** The loop waits for answers oldest first.
pub trait BridgeSink: Send + 'static {
    /// A batch encoded for this sink; kept by the loop until acknowledged so
    /// a re-send is the very same batch.
    type Batch: Send + 'static;

    /// How many of a producer's latest batches the sink answers, when
    /// re-sent, as it answered the first time (the fabric: with their
    /// offsets). `in_flight_max` may not exceed it, so re-sending the
    /// in-flight window after an outage gets those plain answers.
    const DUPLICATE_WINDOW: usize;

    /// Encodes one source batch (its items in order) as one sink batch
    /// carrying `id`.
    fn encode(&self, id: BatchId, items: Vec<ConsumedItem>) -> Result<Self::Batch, BridgeError>;

    /// (Re)establishes the way to the sink, dropping whatever connection it
    /// held. An error makes the loop count a reconnect and back off.
    fn connect(&mut self) -> impl Future<Output = Result<(), BridgeError>> + Send;

    /// Writes `batch` after every batch written before on this connection
    /// and returns the acknowledgement to wait for. An error means the batch
    /// was not written: the loop reconnects and re-sends it.
    fn send(
        &mut self,
        batch: &Self::Batch,
    ) -> impl Future<Output = Result<Pending<Acked>, BridgeError>> + Send;
}
